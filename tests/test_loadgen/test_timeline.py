"""The run over time: each event in the bin of its own time, rates as trailing means, latency
percentiles per bin, old bins reduced, long runs merged for the browser. Pure: no server."""

from __future__ import annotations

import pytest

from loadgen.timeline import MAX_POINTS, Timeline


def test_events_land_in_the_bins_of_their_own_times_even_when_told_late():
    t = Timeline(1000.0, bin_s=2.0)
    t.add_sends([(1000.0 + 0.5 * i, 1000.0 + 0.5 * i + 0.01) for i in range(8)])  # 2 req/s for 4 s
    t.add_ends([{"end_s": 1001.0, "ttft_s": 0.1, "tpot_s": 0.01}, {"end_s": 1003.5, "ttft_s": 0.3, "tpot_s": None}])
    t.add_power(1000.0, {"gpu0": 120.0})
    t.add_power(1002.0, {"gpu0": 180.0})
    s = t.series()
    assert s["t_s"] == [1002.0, 1004.0]
    assert s["scheduled_per_s"] == [2.0, 2.0] and s["sent_per_s"] == [2.0, 2.0]
    assert s["finished_per_s"] == [0.5, 0.5]
    assert s["ttft_p50_s"] == [pytest.approx(0.1), pytest.approx(0.3)] and s["tpot_p50_s"][1] is None
    assert s["lag_p99_s"][0] == pytest.approx(0.01)
    assert s["power_w"] == {"gpu0": [120.0, 180.0]}
    t.add_ends([{"end_s": 1001.5, "ttft_s": 0.5, "tpot_s": 0.02}])  # a worker's report, seconds late
    assert t.series()["ttft_p99_s"][0] == pytest.approx(0.496)


def test_old_bins_keep_their_percentiles_and_drop_their_values():
    t = Timeline(0.0, bin_s=2.0)
    t.add_ends([{"end_s": 1.0, "ttft_s": v, "tpot_s": None} for v in (0.1, 0.2, 0.3)])
    t.add_sends([(100.0, 100.0)])  # time moves on
    s = t.series()
    assert s["ttft_p50_s"][0] == pytest.approx(0.2)
    t.add_ends([{"end_s": 1.0, "ttft_s": 9.0, "tpot_s": None}])  # too late for a closed bin: left out
    assert t.series()["ttft_p50_s"][0] == pytest.approx(0.2)


def test_a_long_run_is_merged_to_at_most_max_points():
    t = Timeline(0.0, bin_s=2.0)
    n = 3 * MAX_POINTS + 1
    for k in range(n):
        t.add_power(2.0 * k, {"host": float(k % 2)})
    s = t.series()
    assert len(s["t_s"]) == len(s["power_w"]["host"]) == 541 <= MAX_POINTS  # 4 bins a point, the last alone
    assert s["t_s"][:2] == [8.0, 16.0] and s["t_s"][-1] == 2.0 * n
    assert s["power_w"]["host"][0] == 0.5 and s["power_w"]["host"][-1] == 0.0
