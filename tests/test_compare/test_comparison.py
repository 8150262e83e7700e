"""The comparison's arithmetic and its report, on synthetic records and energy: no servers."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from compare.attribution import Weights, tokens_in_window
from compare.comparison import backlog, binning_gap, online_premium, rate_result, saturation
from monitor.meter import MeterReading, settled, stable_power
from server.binning import BatchEnergy

W = Weights(0.1, 1.0, "test")


def record(i: int, scheduled: float, sent: float, first: float, n_in: int, chunks: list[float], status="ok") -> dict:
    return {
        "request_id": str(i), "trace_index": i, "scheduled_s": scheduled, "sent_s": sent, "first_token_s": first,
        "last_token_s": chunks[-1] if chunks else None, "chunks": [(t, 1) for t in chunks], "input_tokens": n_in,
        "output_tokens": len(chunks), "usage_input_tokens": n_in, "usage_output_tokens": len(chunks),
        "status": status, "ttft_s": first - sent, "tpot_s": 0.1, "e2e_s": (chunks[-1] if chunks else first) - sent,
        "ttft_from_schedule_s": first - scheduled, "schedule_lag_s": sent - scheduled,
    }  # fmt: skip


def test_tokens_in_a_window_count_only_what_was_processed_inside():
    r = record(0, 0.0, 0.0, 1.0, 100, [1.5, 2.5])
    assert tokens_in_window([r], 0.5, 2.0) == pytest.approx((50.0, 1.0))
    assert tokens_in_window([r], 0.0, 3.0) == pytest.approx((100.0, 2.0))
    assert tokens_in_window([r], 3.0, 4.0) == (0.0, 0.0)


def steady(rate: float, service_s: float, seconds: float) -> list[dict]:
    """Arrivals every 1/rate s, each served in ``service_s`` by one server: a queue when rate × service > 1."""
    out, free = [], 0.0
    for i, t in enumerate(np.arange(0.0, seconds, 1.0 / rate)):
        start = max(t, free)
        free = start + service_s
        out.append(record(i, t, t, start + 0.01, 10, [free]))
    return out


def test_a_stable_queue_is_not_saturated_and_a_growing_one_is():
    assert not saturation(steady(2.0, 0.3, 60.0), 10.0, 50.0)["saturated"]
    grows = saturation(steady(2.0, 0.7, 60.0), 10.0, 50.0)
    assert grows["saturated"] and grows["backlog_end"] > grows["backlog_start"]


def test_backlog_counts_scheduled_and_unfinished():
    rs = [record(0, 0.0, 0.0, 0.5, 1, [1.0]), record(1, 0.2, 0.2, 2.0, 1, [3.0]), record(2, 5.0, 5.0, 5.1, 1, [6.0])]
    assert [backlog(rs, t) for t in (0.1, 0.5, 2.0, 4.0, 5.5)] == [1, 2, 1, 0, 1]


def random_replay(seed: int):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(60):
        sent = float(rng.uniform(0, 50))
        first = sent + float(rng.uniform(0.05, 0.4))
        chunks = sorted((first + rng.uniform(0, 4, int(rng.integers(1, 50)))).tolist())
        records.append(record(i, sent - 0.001, sent, first, int(rng.integers(10, 2000)), chunks))
    edges = np.arange(0.0, 56.01, 0.25)
    energy = rng.uniform(25.0, 150.0, len(edges) - 1)
    return records, edges, energy


@pytest.mark.parametrize("seed", range(4))
def test_a_rate_result_conserves_energy_in_both_views(seed):
    records, edges, energy = random_replay(seed)
    window = (10.0, 40.0)
    inside = (edges[:-1] >= 10.0) & (edges[1:] <= 40.0)
    reading = {"energy_j": float(energy[inside].sum()), "uncertainty_j": 3.0}
    result, per_request = rate_result(records, window, reading, 90.0, edges, energy, W)
    a = result["attribution"]
    for view in ("attributional", "dynamic"):
        assert a[view]["requests_j"] + a[view]["idle_j"] == pytest.approx(energy.sum(), rel=1e-12)
        assert per_request[view].sum() == pytest.approx(a[view]["requests_j"], rel=1e-12)
    assert a["dynamic"]["requests_j"] < a["attributional"]["requests_j"]
    n_in, n_out = tokens_in_window(records, *window)
    assert result["j_per_token"] == pytest.approx(reading["energy_j"] / (n_in + n_out))
    assert result["dynamic_j_per_output_token"] == pytest.approx((reading["energy_j"] - 90.0 * 30.0) / n_out)
    assert result["idle_share"] == pytest.approx(90.0 * 30.0 / reading["energy_j"])


def test_the_binning_gap_compares_the_estimate_with_the_included_requests_energy():
    records = [
        record(0, 0, 0, 0.1, 20, [0.2] * 5),
        record(1, 0, 0, 0.1, 20, [0.3] * 5),
        record(2, 0, 0, 0.1, 20, [0.4] * 600),
    ]  # fmt: skip  (the third is beyond the largest bin)
    bins = {(32, 8): BatchEnergy(batch_size=2, energy_j=10.0, uncertainty_j=1.0)}
    gap = binning_gap(records, np.array([30.0, 30.0, 40.0]), 200.0, bins)
    assert (gap["included"], gap["excluded"]) == (2, 1)
    assert gap["estimate_j"] == pytest.approx(10.0) and gap["measured_j"] == pytest.approx(200.0 * 0.6)
    assert gap["gap_percent"] == pytest.approx(100.0 * (10.0 - 120.0) / 120.0)


def test_the_premium_is_a_ratio_with_an_interval_only_from_repeats():
    assert online_premium([2.0], [1.0]) == {"ratio": 2.0, "low": None, "high": None}
    p = online_premium([2.0, 2.2, 1.8], [1.0, 1.02, 0.98])
    assert p["low"] < 2.0 < p["high"]


@pytest.mark.parametrize(
    ("blocks", "ok"),
    [([100.0, 100.5, 99.8], True), ([130.0, 120.0, 110.0], False), ([5.0, 5.3], False), ([1.0, 1.4, 1.2], True)],
)
def test_settled_needs_agreeing_blocks(blocks, ok):
    assert settled(blocks, need=3, rel_tol=0.03, abs_tol_w=0.5) is ok


class DecayingMeter:
    """Power that decays from 200 W towards 100 W with a 4 s time constant, on a virtual clock that runs
    ahead 2.5 s at every look (so no real sleeping)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        self.t += 2.5
        return self.t

    def energy(self, t0: float, t1: float) -> MeterReading:
        e = 100.0 * (t1 - t0) + 100.0 * 4.0 * (np.exp(-t0 / 4.0) - np.exp(-t1 / 4.0))
        return MeterReading(t0, t1, float(e), 0.1, "gpu", ["nvml"], False)


def test_idle_power_is_measured_until_it_settles():
    p = stable_power(DecayingMeter(), block_s=2.0, need=3, max_s=300.0, rel_tol=0.01)
    assert p.stable and p.power_w == pytest.approx(100.0, rel=0.02)
    assert len(p.blocks_w) > 3 and p.blocks_w[0] > 125.0  # it waited the decay out
    short = stable_power(DecayingMeter(), block_s=2.0, need=3, max_s=4.0, rel_tol=0.01)
    assert not short.stable


def synthetic_run(run_dir, estimated: bool = True, repeats: int = 2):
    """A compare run directory as the experiment writes it, from synthetic replays."""
    source = "estimate" if estimated else "nvml"
    (run_dir / "offline").mkdir(parents=True)
    config = {"joulebench": "0", "command": ["joulebench", "compare"], "model": "m", "preset": "tiny",
              "weights": "dummy", "engine": {"max_num_seqs": 8}, "trace": {"name": "azure-conv", "requests": 9},
              "devices": [{"device": "host" if estimated else "gpu0", "source": source}],
              "options": {"rates": [0.5, 2.0], "repeats": repeats}, "complete": True}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "idle.json").write_text(json.dumps({"loaded": {"power_w": 20.0, "stable": True}}))
    rows = [["phase", "rate", "repeat", "start_s", "end_s", "energy_j", "uncertainty_j"]]
    offline = []
    for m in (0.5, 2.0):
        for j in range(repeats):
            records, edges, energy = random_replay(int(m * 10) + j)
            d = run_dir / "online" / f"{m:g}x-{j}"
            d.mkdir(parents=True)
            (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            inside = (edges[:-1] >= 10.0) & (edges[1:] <= 40.0)
            (d / "window.json").write_text(json.dumps({
                "window": [10.0, 40.0], "energy_j": float(energy[inside].sum()), "uncertainty_j": 2.0,
                "nominal_rate_per_s": m * 5.5, "drain_cut": False, "short_window": False,
            }))  # fmt: skip
            rows += [["online", m, j, a, b, e, 0.5] for a, b, e in zip(edges[:-1], edges[1:], energy, strict=True)]
            n_in = sum(r["usage_input_tokens"] for r in records)
            n_out = sum(r["usage_output_tokens"] for r in records)
            e_off = 0.2 * n_in / 10 + 0.5 * n_out + j
            offline.append({"label": f"rate {m:g}x #{j}", "bin": None, "batch_size": 8, "requests": 60,
                            "input_tokens": n_in, "output_tokens": n_out, "energy_j": e_off, "duration_s": 10.0,
                            "uncertainty_j": 0.1, "dynamic_energy_j": e_off - 50, "j_per_token": e_off / (n_in + n_out),
                            "j_per_output_token": e_off / n_out, "dynamic_j_per_token": (e_off - 50) / (n_in + n_out),
                            "dynamic_j_per_output_token": (e_off - 50) / n_out, "uncertainty_j_per_output_token": 0.001,
                            "output_tokens_per_s": n_out / 10, "average_power_w": e_off / 10})  # fmt: skip
    with (run_dir / "energy.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (run_dir / "offline" / "offline.json").write_text(json.dumps({"idle_power_w": 5.0, "results": offline}))
    return run_dir


def test_the_report_of_a_run_directory(tmp_path):
    from compare.report import write_report

    run = synthetic_run(tmp_path / "run")
    paths = write_report(run)
    summary = json.loads(paths["summary"].read_text())
    assert [r["label"] for r in summary["rates"]] == ["0.5x", "2x"]
    for r in summary["rates"]:
        assert len(r["repeats"]) == 2
        p = r["premium"]
        assert p["low"] < p["ratio"] < p["high"]
        online = np.mean([x["j_per_token"] for x in r["repeats"]])
        assert p["ratio"] == pytest.approx(online / r["offline"]["j_per_token"])
        for x in r["repeats"]:
            a = x["attribution"]
            assert a["attributional"]["requests_j"] + a["attributional"]["idle_j"] == pytest.approx(
                a["replay_energy_j"]
            )
    assert "R²" in summary["weights"]["fit"]
    md = paths["md"].read_text()
    assert "ESTIMATED" in md and "premium" in md and "weights: dummy" in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"]https?://", page)  # opens offline
    for name in ("j_per_token_vs_rate", "power_over_time", "per_request_energy", "latency_vs_energy"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000


def test_a_measured_run_does_not_say_estimated(tmp_path):
    from compare.report import write_report

    paths = write_report(synthetic_run(tmp_path / "run", estimated=False, repeats=1))
    assert "ESTIMATED" not in paths["md"].read_text()
    summary = json.loads(paths["summary"].read_text())
    assert summary["rates"][0]["premium"]["low"] is None  # one repeat: no interval


def test_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "joulebench", "report", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and "not a joulebench compare run directory" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
