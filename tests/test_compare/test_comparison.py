"""The comparison's estimands and its report, on simulated replays and energy: no servers."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from synthetic import simulate, write_run

from compare.analysis import binning_gap
from estimands.energy import online_result, premiums
from estimands.prices import Prices
from estimands.tokens import tokens_in_window
from estimands.windows import choose_window
from monitor.meter import MeterReading, settled, stable_power
from server.binning import BatchEnergy


def record(i: int, scheduled: float, sent: float, first: float, n_in: int, chunks: list[float], status="ok") -> dict:
    return {
        "request_id": str(i), "trace_index": i, "scheduled_s": scheduled, "sent_s": sent, "first_token_s": first,
        "last_token_s": chunks[-1] if chunks else None, "chunks": [(t, 1) for t in chunks], "input_tokens": n_in,
        "output_tokens": len(chunks), "usage_input_tokens": n_in, "usage_output_tokens": len(chunks),
        "status": status, "ttft_s": first - sent, "tpot_s": 0.1, "e2e_s": (chunks[-1] if chunks else first) - sent,
        "ttft_from_schedule_s": first - scheduled, "schedule_lag_s": sent - scheduled,
    }  # fmt: skip


def served(rate: float = 4.0, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = [(int(i), int(o)) for i, o in zip(rng.integers(100, 2000, n), rng.integers(5, 60, n), strict=True)]
    return simulate(np.cumsum(rng.exponential(1.0 / rate, n)), lengths, slots=8)


def test_online_j_per_token_is_the_windows_energy_over_its_tokens():
    s = served()
    w = choose_window(s.records, s.edges)
    polls = [{"t": 0.0, "server": {"prefill_s_sum": 0.0, "prefill_count": 0, "prompt_tokens": 0}},
             {"t": 9e9, "server": {"prefill_s_sum": 10.0, "prefill_count": 300, "prompt_tokens": 200000}}]  # fmt: skip
    result = online_result(s.records, s.edges, s.energy_j, 100.0, w, {"clock": {"offset_s": 0.0}}, polls, 50)
    k = (s.edges[:-1] >= w.start_s - 1e-9) & (s.edges[1:] <= w.end_s + 1e-9)
    e = float(s.energy_j[k].sum())
    n_in, n_out = tokens_in_window(s.records, w.start_s, w.end_s, 20000.0)
    assert result["prefill"]["tokens_per_s"] == pytest.approx(20000.0)
    assert result["energy_j"] == pytest.approx(e) and result["j_per_output_token"] == pytest.approx(e / n_out)
    assert result["j_per_token"] == pytest.approx(e / (n_in + n_out))
    assert result["dynamic_j_per_output_token"] == pytest.approx((e - 100.0 * w.duration_s) / n_out)
    assert result["verdict"]["valid"], result["verdict"]
    assert result["same_requests"]["online_energy_j"] == pytest.approx(s.energy_j.sum())
    reading = {"start_s": w.start_s, "end_s": w.end_s, "energy_j": 123.0, "uncertainty_j": 0.4, "short_window": True}
    read = online_result(s.records, s.edges, s.energy_j, 100.0, w, {"reading": reading}, polls, 50)
    assert read["energy_j"] == 123.0 and read["uncertainty_j"] == 0.4  # the monitor's reading of this window
    assert "shorter than two updates of the energy counter" in read["verdict"]["reasons"]
    none = online_result(s.records, s.edges, s.energy_j, 100.0, None, {}, polls, 50)
    assert not none["verdict"]["valid"] and "no window" in none["verdict"]["reasons"][0]


def test_premiums_price_the_window_s_work_and_divide_by_the_same_requests_offline():
    # the window: 40 J (20 J dynamic over 2 s at 10 W idle) for 400 input and 100 output tokens
    online = {"energy_j": 40.0, "loaded_idle_power_w": 10.0, "window": {"duration_s": 2.0},
              "tokens": {"input": 400.0, "output": 100.0},
              "same_requests": {"online_energy_j": 300.0, "online_dynamic_energy_j": 90.0, "ok": True}}  # fmt: skip
    # the reference: 30 J (24 J dynamic) for 1000 input and 400 output tokens
    ref = {"energy_j": 30.0, "dynamic_energy_j": 24.0, "input_tokens": 1000.0, "output_tokens": 400.0}
    prices, dynamic = Prices(0.1, 0.01, 1.0, 9, 3, "test"), Prices(0.5, 0.0, 1.0, 9, 3, "test")
    p = premiums(online, ref, {"energy_j": 100.0, "dynamic_energy_j": 60.0}, prices, dynamic)
    # work at r = 0.1: window 40 + 100 = 140, reference 100 + 400 = 500; at r = 0.5: 300 and 900
    assert p == pytest.approx({"premium": (40 / 140) / (30 / 500), "dynamic_premium": (20 / 300) / (24 / 900),
                               "same_requests_premium": 3.0, "same_requests_dynamic_premium": 1.5})  # fmt: skip
    assert premiums(online, None, None, prices, dynamic) == dict.fromkeys(p)
    assert premiums(online, ref, None, None, None)["premium"] is None  # no prices, no premium
    failed = {**online, "same_requests": {**online["same_requests"], "ok": False}}  # not the same requests then
    assert premiums(failed, ref, {"energy_j": 100.0}, prices, dynamic)["same_requests_premium"] is None


def test_one_premium_whatever_the_tokens_are_counted_as():
    """With the window's mix equal to the reference's the premium is the J/token ratio (and the J/output-token
    ratio) whatever r is; r's uncertainty then costs nothing, and more the further the mixes are apart."""
    from estimands.prices import premium, ratio_term

    for r in (0.0, 0.05, 2.0):
        assert premium(50.0, (300.0, 100.0), 30.0, (600.0, 200.0), r) == pytest.approx((50 / 400) / (30 / 800))
    prices = Prices(0.1, 0.02, 1.0, 9, 3, "test")
    assert ratio_term((300.0, 100.0), (600.0, 200.0), prices) == pytest.approx(0.0)
    assert ratio_term((100.0, 100.0), (600.0, 200.0), prices) > ratio_term((250.0, 100.0), (600.0, 200.0), prices)


def test_the_binning_gap_checks_offline_then_online_with_and_without_idle():
    records = [
        record(0, 0, 0, 0.1, 20, [0.2] * 5),
        record(1, 0, 0, 0.1, 20, [0.3] * 5),
        record(2, 0, 0, 0.1, 20, [0.4] * 600),
    ]  # fmt: skip  (the third is beyond the largest bin)
    bins = {(32, 8): BatchEnergy(batch_size=2, energy_j=10.0, uncertainty_j=1.0, duration_s=0.5)}
    same = {"energy_j": 90.0}
    gap = binning_gap(records, np.array([30.0, 30.0, 40.0]), 200.0, 20.0, 5.0, bins, same)
    assert (gap["included"], gap["excluded"]) == (2, 1) and gap["batch_sizes"] == [2]
    assert gap["estimate_j"] == pytest.approx(10.0) and gap["busy_s"] == pytest.approx(0.5)
    assert gap["ceiling_inflation"] == pytest.approx((32 + 8) / (20 + 5))  # both requests in the (32, 8) bin
    assert gap["offline_same_requests_j"] == pytest.approx(90.0 * 50 / 670)  # their share of the set's tokens
    assert gap["measured_j"] == pytest.approx(200.0 * 0.6)  # their share of the attributed energy
    assert gap["gap_percent"] == pytest.approx(100.0 * (10.0 - 120.0) / 120.0)
    assert gap["estimate_with_idle_j"] == pytest.approx(10.0 + 5.0 * (20.0 - 0.5) * 0.6)
    assert abs(gap["gap_with_idle_percent"]) < abs(gap["gap_percent"])  # idle was most of what it missed


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


def test_the_report_of_a_run_directory(tmp_path):
    from compare.report import write_report

    run = write_run(tmp_path / "run")
    paths = write_report(run)
    summary = json.loads(paths["summary"].read_text())
    assert summary["workload"]["identical_across_rates"]
    assert [r["label"] for r in summary["rates"]] == ["0.5x", "2x"]
    ref = summary["reference"]["j_per_output_token"]
    assert ref["n"] == 2 and ref["low"] < ref["mean"] < ref["high"]
    for r in summary["rates"]:
        assert [w["segment"] for w in r["segments"]] == [0, 1] and r["valid_segments"] == [0, 1]
        p = r["premium"]
        assert p["n"] == 2 and p["low"] < p["mean"] < p["high"] and p["mean"] > 1  # online costs more than the floor
        ratio = summary["prices"]["attributional"]["prefill_per_decode_token"]
        for w in r["segments"]:
            refk = summary["reference"]["segments"][w["segment"]]
            work = ratio * w["tokens"]["input"] + w["tokens"]["output"]
            ref_work = ratio * refk["input_tokens"] + refk["output_tokens"]
            assert w["premium"] == pytest.approx((w["energy_j"] / work) / (refk["energy_j"] / ref_work))
            a = w["attribution"]["attributional"]
            assert a["requests_j"] + a["unattributed_j"] == pytest.approx(w["attribution"]["replay_energy_j"])
    low, high = summary["rates"]
    assert low["premium"]["mean"] > high["premium"]["mean"]  # fewer arrivals, more idle per token
    assert [x["label"] for x in summary["headline"]["rates"]] == ["0.5x", "2x"]
    md = paths["md"].read_text()
    assert "saturated reference" in md and "weights: dummy" in md and "What each figure estimates" in md
    assert "ESTIMATED" not in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 5
    assert page.index("alt='premium'") < page.index("<h2>Provenance")  # the answer on the first screen
    assert not re.search(r"(src|href)=['\"]https?://", page)  # opens offline
    for name in (
        "premium_vs_load",
        "j_per_token_vs_rate",
        "power_over_time",
        "per_request_energy",
        "latency_vs_energy",
    ):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000


def test_two_gpus_are_broken_down_and_a_stale_one_leaves_its_window_out(tmp_path):
    from compare.report import write_report

    paths = write_report(write_run(tmp_path / "run", gpus=2, stale=(2.0, 1)))
    summary = json.loads(paths["summary"].read_text())
    for r in summary["rates"]:
        for w in r["segments"]:
            b = w["devices"]
            assert [d["device"] for d in b["devices"]] == ["gpu0", "gpu1"] and b["over"] == "replay"
            assert sum(d["energy_j"] for d in b["devices"]) == pytest.approx(b["energy_j"])
            assert [d["share"] for d in b["devices"]] == pytest.approx([1 / 3, 2 / 3])
            stale = (r["rate"], w["segment"]) == (2.0, 1)
            assert b["uncovered_s"] == ({"gpu1": 5.0} if stale else {})
            reason = "energy incomplete: gpu1 was not read for 5.0 s of it (stale)"
            assert (reason in w["verdict"]["reasons"]) is stale and w["same_requests"]["ok"] is not stale
    assert [r["valid_segments"] for r in summary["rates"]] == [[0, 1], [0]]
    md = paths["md"].read_text()
    table = md[md.index("## Energy per device") : md.index("## Uncertainty budget")]
    assert "| 2x | 1 | replay | gpu1 (stale) |" in table and table.count("| gpu0 |") == 4
    assert "| 50 | – |" in table  # each GPU's loaded-idle power beside it


def test_the_reference_does_not_move_with_the_warmup(tmp_path):
    from compare.analysis import analyze

    run = write_run(tmp_path / "run", options={"warmup_share": 0.2})
    before = analyze(run)
    config = json.loads((run / "config.json").read_text())
    config["options"].update(warmup_share=0.4)  # doubled
    (run / "config.json").write_text(json.dumps(config))
    after = analyze(run)
    assert after["reference"] == before["reference"] and after["prices"] == before["prices"]
    ratio = after["prices"]["attributional"]["prefill_per_decode_token"]
    durations = [[w["window"]["duration_s"] for w in r["segments"]] for r in (before["rates"][0], after["rates"][0])]
    assert durations[0] != durations[1]  # the windows did change
    for b, a in zip(before["rates"], after["rates"], strict=True):  # the premium moves only with the online side
        for wb, wa in zip(b["segments"], a["segments"], strict=True):
            assert wa["premium"] / wb["premium"] == pytest.approx(
                (wa["energy_j"] / (ratio * wa["tokens"]["input"] + wa["tokens"]["output"]))
                / (wb["energy_j"] / (ratio * wb["tokens"]["input"] + wb["tokens"]["output"]))
            )


def test_a_saturated_rate_is_not_a_premium(tmp_path):
    from compare.analysis import analyze

    run = write_run(tmp_path / "run", rates=(0.5, 8.0), slots=1, trace_rate=3.0)
    s = analyze(run)
    high = s["rates"][1]
    assert high["saturated"] and not high["valid_segments"]
    assert all(any(r.startswith("saturated") for r in w["verdict"]["reasons"]) for w in high["segments"])
    assert [x["label"] for x in s["headline"]["left_out"]] == ["8x"]
    assert "throughput" in s["headline"]["left_out"][0]["why"]


def test_a_measured_run_does_not_say_estimated_and_a_committed_run_reads_compressed(tmp_path):
    from compare.report import write_report
    from compare.rundir import compress_raw

    run = write_run(tmp_path / "run", segments=1)
    first = json.loads(write_report(run)["summary"].read_text())
    p = first["rates"][0]["premium"]
    assert "type_a" not in p["terms"] and "no type A" in p["note"]  # one segment: type B only
    assert p["low"] is None and p["high"] is None  # and so no interval
    assert "(one segment: no interval)" in (run / "report.md").read_text()
    assert len(compress_raw(run)) == 1 + 2 * len(list(run.glob("online/*")))
    assert not list(run.rglob("*.jsonl")) and (run / "energy.csv.gz").exists()
    for stale in ("summary.json", "report.md", "report.html", "per_request.csv"):
        (run / stale).unlink()
    shutil.rmtree(run / "plots")
    again = json.loads(write_report(run)["summary"].read_text())
    assert again == first  # the committed, compressed raw data give the same summary


def test_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "joulebench", "report", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 2 and "not a joulebench compare run directory" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
