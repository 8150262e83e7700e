"""Synthetic input files for tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def azure_trace(path: Path, n: int = 40, seconds: float = 20.0) -> Path:
    """A trace in the Azure LLM inference format: ``n`` requests evenly over ``seconds``, varied lengths."""
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(n):
        t = i * seconds / n
        rows.append(f"2023-11-16 18:{int(t // 60):02d}:{t % 60:09.6f},{40 + 37 * i % 200},{4 + 7 * i % 24}")
    path.write_text("\n".join(rows) + "\n")
    return path


@dataclass
class Served:
    """What ``simulate`` returns: the records as a replay writes them, the energy slices, and the truth."""

    records: list[dict]
    edges: np.ndarray
    energy_j: np.ndarray
    prefill: list[tuple[float, float]]  # each request's true prefill interval (admission → first token)


def simulate(
    arrivals_s: Sequence[float],
    lengths: Sequence[tuple[int, int]],
    slots: int = 4,
    prefill_tokens_per_s: float = 20000.0,
    itl_s: float = 0.02,
    idle_w: float = 100.0,
    prefill_j_per_token: float = 0.001,
    decode_j_per_token: float = 0.05,
    step_j: float = 0.0,
    slice_s: float = 0.25,
    start_s: float = 1000.0,
    noise_w: float = 0.0,
    seed: int = 0,
    closed_loop: bool = False,
) -> Served:
    """A server with ``slots`` requests in service at once (FIFO queue beyond), each prefilled at
    ``prefill_tokens_per_s`` after admission, then decoded one token every ``itl_s``; its power is idle
    plus a cost per prefill token (spread over the prefill), per decode token (at the token) and per
    engine step (a slice's steps: the most tokens any request decoded in it), and white noise of
    ``noise_w`` watts. ``closed_loop``: each request is sent when it is admitted (a saturate replay's records:
    arrivals all at 0 and ``slots`` in flight)."""
    from loadgen.records import RequestRecord

    free = [start_s] * slots
    records, prefill = [], []
    for i, (t, (n_in, n_out)) in enumerate(zip(arrivals_s, lengths, strict=True)):
        t = start_s + t
        k = int(np.argmin(free))
        admitted = max(t, free[k])
        first = admitted + n_in / prefill_tokens_per_s
        chunks = [(first + j * itl_s, 1) for j in range(n_out)]
        free[k] = chunks[-1][0]
        sent = admitted if closed_loop else t
        r = RequestRecord(request_id=str(i), trace_index=i, scheduled_s=t, input_tokens=n_in, output_tokens=n_out,
                          sent_s=sent, first_token_s=first, last_token_s=chunks[-1][0], chunks=chunks,
                          usage_input_tokens=n_in, usage_output_tokens=n_out, status="ok")  # fmt: skip
        records.append(r.to_json())
        prefill.append((admitted, first))
    end = max(r["last_token_s"] for r in records)
    edges = np.arange(start_s + min(arrivals_s), end + 2 * slice_s, slice_s)
    energy = idle_w * np.diff(edges)
    steps = np.zeros(len(energy))
    for (lo, hi), r in zip(prefill, records, strict=True):
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
        energy += prefill_j_per_token * r["usage_input_tokens"] * overlap / max(hi - lo, 1e-12)
        mine = np.zeros(len(energy))
        for c, n in r["chunks"]:
            mine[min(int(np.searchsorted(edges, c, side="right")) - 1, len(energy) - 1)] += n
        energy += decode_j_per_token * mine
        steps = np.maximum(steps, mine)
    energy += step_j * steps
    if noise_w:
        energy += np.random.default_rng(seed).normal(0.0, noise_w, len(energy)) * np.diff(edges)
    return Served(records, edges, energy, prefill)


def _offline_result(label: str, served: Served, idle_w: float, batch: int) -> dict:
    e = float(served.energy_j.sum())
    span = float(served.edges[-1] - served.edges[0])
    n_in = sum(r["usage_input_tokens"] for r in served.records)
    n_out = sum(r["usage_output_tokens"] for r in served.records)
    dyn = e - idle_w * span
    return {"label": label, "bin": None, "batch_size": batch, "requests": len(served.records), "input_tokens": n_in,
            "output_tokens": n_out, "duration_s": span, "energy_j": e, "uncertainty_j": 0.5, "idle_power_w": idle_w,
            "energy_kind": "gpu", "energy_sources": ["nvml"], "short_window": False, "average_power_w": e / span,
            "output_tokens_per_s": n_out / span, "dynamic_energy_j": dyn, "j_per_output_token": e / n_out,
            "j_per_token": e / (n_in + n_out), "dynamic_j_per_output_token": dyn / n_out,
            "dynamic_j_per_token": dyn / (n_in + n_out), "uncertainty_j_per_output_token": 0.5 / n_out}  # fmt: skip


def _steady_part(served: Served, batch: int, idle_w: float) -> dict:
    """The saturated reference's steady part of a closed-loop simulation, by ``estimands.reference``'s rule
    (the start cohort's last end → the last admission), with its halves' energy and tokens and its pool's
    tokens, as ``server.offline`` keeps them."""
    from estimands.reference import pool_mix

    cohort = sorted(served.records, key=lambda r: r["sent_s"])[:batch]
    a, b = max(r["last_token_s"] for r in cohort), max(lo for lo, _ in served.prefill)
    k = (served.edges[:-1] >= a) & (served.edges[1:] <= b)
    a, b = float(served.edges[:-1][k][0]), float(served.edges[1:][k][-1])
    e = float(served.energy_j[k].sum())

    def tokens(lo: float, hi: float) -> tuple[int, int]:
        n_out = sum(1 for r in served.records for t, _ in r["chunks"] if lo <= t < hi)
        return sum(r["usage_input_tokens"] for r in served.records if lo <= r["first_token_s"] < hi), n_out

    n_in, n_out = tokens(a, b)
    m = (a + b) / 2
    halves = []
    for lo, hi in ((a, m), (m, b)):
        inside = (served.edges[:-1] >= lo - 1e-9) & (served.edges[1:] <= hi + 1e-9)
        h_in, h_out = tokens(lo, hi)
        halves.append({"energy_j": float(served.energy_j[inside].sum()), "input_tokens": h_in, "output_tokens": h_out})
    dyn = e - idle_w * (b - a)
    steps = round((b - a) / 0.02)  # simulate's default: a token every 20 ms for each running request
    return {"start_s": a, "end_s": b, "duration_s": b - a, "steps": steps, "running_min": batch,
            "running_max": batch, "input_tokens": n_in, "output_tokens": n_out, "energy_j": e, "uncertainty_j": 0.5,
            "short_window": False, "average_power_w": e / (b - a), "dynamic_energy_j": dyn,
            "j_per_output_token": e / n_out, "j_per_token": e / (n_in + n_out),
            "dynamic_j_per_output_token": dyn / n_out, "dynamic_j_per_token": dyn / (n_in + n_out),
            "uncertainty_j_per_output_token": 0.5 / n_out,
            "output_tokens_per_s": n_out / (b - a), "idle_share": idle_w * (b - a) / e,
            "pool_tokens": list(pool_mix(served.records)), "halves_measured": halves}  # fmt: skip


def write_run(
    run_dir: Path,
    rates: Sequence[float] = (0.5, 2.0),
    segments: int = 2,
    requests: int = 150,
    trace_rate: float = 4.0,
    slots: int = 8,
    idle_w: float = 100.0,
    estimated: bool = False,
    options: dict | None = None,
    gpus: int = 1,
    stale: tuple[float, int] | None = None,
    online_reference: bool = True,
    reference_batches: int = 30,
) -> Path:
    """A compare run directory as the experiment writes it, from simulated replays of one workload per
    segment at each rate, and simulated offline runs (the same requests at once, the saturated reference).

    ``gpus`` > 1: the monitor's reading of each replay splits its energy over that many GPUs (GPU i's share
    ∝ i + 1); ``stale`` = (rate, segment): there the last GPU was not read for the last 5 s.
    ``online_reference``: the saturate replay against the server too (``online/reference-K``), of the same
    ``reference_batches`` × ``slots`` requests as the offline reference."""
    import csv
    import json

    from estimands.windows import choose_window

    opts = {"rates": list(rates), "segments": segments, "requests": requests, "min_requests": 50,
            "warmup_share": 0.2, **(options or {})}  # fmt: skip
    source = "estimate" if estimated else "nvml"
    header = ["phase", "rate", "segment", "start_s", "end_s", "energy_j", "uncertainty_j"]
    workload: list[dict] = []
    energy_rows: list[list] = [header]
    offline: list[dict] = []
    for k in range(segments):
        rng = np.random.default_rng(100 + k)
        gaps = rng.exponential(1.0 / trace_rate, requests)
        lengths = [(int(i), int(o)) for i, o in zip(rng.integers(100, 2000, requests), rng.integers(5, 60, requests),
                                                    strict=True)]  # fmt: skip
        arrivals = np.cumsum(gaps) - gaps[0]
        workload.append({"segment": k, "start_s": 600.0 * k, "requests": requests, "span_s": float(arrivals[-1]),
                         "input_tokens": sum(i for i, _ in lengths), "output_tokens": sum(o for _, o in lengths),
                         "input_tokens_mean": float(np.mean([i for i, _ in lengths])),
                         "output_tokens_mean": float(np.mean([o for _, o in lengths])),
                         "overlong": None, "lengths": lengths})  # fmt: skip
        for m in rates:
            served = simulate(arrivals / m, lengths, slots=slots, idle_w=idle_w, start_s=1000.0 * (1 + k) + 100 * m)
            d = run_dir / "online" / f"{m:g}x-{k}"
            d.mkdir(parents=True)
            (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in served.records))
            tokens = sum(i for i, _ in lengths)
            polls = [{"t": float(served.edges[0]), "server": {"prefill_s_sum": 0.0, "prefill_count": 0,
                                                               "prompt_tokens": 0, "running": 0, "waiting": 0}},
                     {"t": float(served.edges[-1]), "server": {"prefill_s_sum": tokens / 20000.0,
                                                                "prefill_count": requests, "prompt_tokens": tokens,
                                                                "running": 0, "waiting": 0}}]  # fmt: skip
            (d / "polls.jsonl").write_text("".join(json.dumps(p) + "\n" for p in polls))
            w = choose_window(served.records, served.edges, opts["warmup_share"])
            total, weights = float(served.energy_j.sum()), np.arange(1, gpus + 1) / sum(range(1, gpus + 1))
            span = float(served.edges[-1] - served.edges[0])
            missed = {f"gpu{gpus - 1}": 5.0} if stale == (m, k) else {}
            devices = {f"gpu{i}": {"device": f"gpu{i}", "kind": "gpu", "source": source, "energy_j": total * x,
                                   "uncertainty_j": 0.05, "short_window": False, "gap_s": 0.0,
                                   "covered_s": span - missed.get(f"gpu{i}", 0.0), "stale": f"gpu{i}" in missed}
                       for i, x in enumerate(weights)}  # fmt: skip
            span_reading = {"start_s": float(served.edges[0]), "end_s": float(served.edges[-1]), "energy_j": total,
                            "uncertainty_j": 0.05 * gpus**0.5, "short_window": False, "kind": "gpu", "method": "",
                            "devices": devices, "uncovered_s": missed}  # fmt: skip
            (d / "window.json").write_text(json.dumps({
                "rate": m, "segment": k, "offered_rate_per_s": m * trace_rate, "series": [float(served.edges[0]),
                float(served.edges[-1])], "energy_j": float(served.energy_j.sum()), "kind": "gpu",
                "sources": [source], "drain_cut": False, "clock": {"offset_s": 0.001, "round_trip_s": 0.002},
                "overlong": None, "window": None if w is None else w.record(), "reading": None,
                "span_reading": span_reading,
            }))  # fmt: skip
            energy_rows += [["online", m, k, a, b, e, 0.05] for a, b, e in
                            zip(served.edges[:-1], served.edges[1:], served.energy_j, strict=True)]  # fmt: skip
        same = simulate(np.zeros(requests), lengths, slots=requests, idle_w=idle_w)
        offline.append(_offline_result(f"same requests s{k}", same, idle_w, requests))
        pick = rng.integers(0, requests, reference_batches * slots)
        pool = [lengths[i] for i in pick]
        ref = simulate(np.zeros(len(pick)), pool, slots=slots, idle_w=idle_w, slice_s=0.02, closed_loop=True)
        offline.append({**_offline_result(f"reference s{k}", ref, idle_w, slots), "saturated": True,
                        "steady": _steady_part(ref, slots, idle_w)})  # fmt: skip
        if online_reference:
            sat = simulate(np.zeros(len(pick)), pool, slots=slots, idle_w=idle_w, closed_loop=True,
                           start_s=50000.0 + 1000.0 * k)  # fmt: skip
            d = run_dir / "online" / f"reference-{k}"
            d.mkdir(parents=True)
            (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sat.records))
            tokens = sum(i for i, _ in pool)
            polls = [{"t": float(sat.edges[0]), "server": {"prefill_s_sum": 0.0, "prefill_count": 0,
                                                            "prompt_tokens": 0, "running": 0, "waiting": 0}},
                     {"t": float(sat.edges[-1]), "server": {"prefill_s_sum": tokens / 20000.0,
                                                             "prefill_count": len(pool), "prompt_tokens": tokens,
                                                             "running": 0, "waiting": 0}}]  # fmt: skip
            (d / "polls.jsonl").write_text("".join(json.dumps(x) + "\n" for x in polls))
            (d / "window.json").write_text(json.dumps({"rate": None, "segment": k, "kind": "online reference",
                                                       "concurrency": slots, "drain_cut": False}))  # fmt: skip
            energy_rows += [["reference", -1.0, k, a, b, e, 0.05] for a, b, e in
                            zip(sat.edges[:-1], sat.edges[1:], sat.energy_j, strict=True)]  # fmt: skip
    (run_dir / "offline").mkdir(parents=True)
    config = {"joulebench": "0", "command": ["joulebench", "compare"], "model": "m", "preset": "tiny",
              "weights": "dummy", "engine": {"max_num_seqs": slots},
              "devices": [{"device": f"gpu{i}", "kind": "gpu", "source": source} for i in range(gpus)],
              "trace": {"name": "azure-conv", "requests": 9999, "rate_per_s": trace_rate, "duration_s": 3000.0},
              "options": opts, "workload": workload, "complete": True}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    per_gpu = {f"gpu{i}": idle_w / gpus for i in range(gpus)}
    (run_dir / "idle.json").write_text(
        json.dumps({"loaded": {"power_w": idle_w, "stable": True, "devices_w": per_gpu}})
    )
    with (run_dir / "energy.csv").open("w", newline="") as f:
        csv.writer(f).writerows(energy_rows)
    (run_dir / "offline" / "offline.json").write_text(json.dumps({"idle_power_w": idle_w, "results": offline}))
    return run_dir
