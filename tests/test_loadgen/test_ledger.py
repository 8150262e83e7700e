"""A run's energy figures by the report's definitions, the ledger that sums them poll by poll, the idle
baseline's block average and the table's formatting. Pure: no server."""

from __future__ import annotations

import math

import pytest

from loadgen.ledger import EnergyLedger, energy_figures, figure_rows, fmt, lowest_average_w
from monitor.meter import MeterReading


def reading(t0: float, t1: float, energy_j: float, u: float = 0.1) -> MeterReading:
    devices = {"gpu0": {"energy_j": energy_j, "uncertainty_j": u, "kind": "gpu", "source": "nvml"}}
    return MeterReading(t0, t1, energy_j, u, "gpu", ["nvml"], False, devices)


def test_figures_divide_by_output_tokens_and_by_all_tokens_and_take_off_the_idle_power():
    f = energy_figures(1000.0, 10.0, 100.0, 110.0, input_tokens=3000, output_tokens=1000, idle_power_w=60.0,
                       kind="gpu", sources=["nvml"])  # fmt: skip
    assert f["j_per_output_token"] == 1.0 and f["j_per_token"] == 0.25
    assert f["average_power_w"] == 100.0 and f["dynamic_energy_j"] == 1000.0 - 60.0 * 10.0
    assert f["dynamic_j_per_output_token"] == 0.4 and f["dynamic_j_per_token"] == 0.1
    assert f["uncertainty_j_per_output_token"] == 0.01 and not f["estimated"]
    none = energy_figures(5.0, 0.1, 0.0, 1.0, 0, 0, sources=["estimate"])
    assert none["j_per_token"] is None and none["dynamic_energy_j"] is None and none["estimated"]


def test_the_ledger_sums_contiguous_polls_and_keeps_only_the_outer_edges_uncertainty():
    ledger = EnergyLedger(100.0)
    for i, u in enumerate([3.0, 1.0, 1.0, 4.0]):
        ledger.add(reading(100.0 + 2 * i, 102.0 + 2 * i, 50.0, u))
    assert ledger.energy_j == 200.0 and ledger.duration_s == 8.0 and ledger.devices["gpu0"]["energy_j"] == 200.0
    assert ledger.uncertainty_j == pytest.approx(5.0)  # √(3² + 4²): the inner edges cancel
    with pytest.raises(ValueError, match="starts at 110"):
        ledger.add(reading(110.0, 112.0, 1.0))  # a gap is never summed over silently


def test_the_ledger_counts_the_seconds_its_polls_left_unread():
    ledger = EnergyLedger(100.0)
    ledger.add(reading(100.0, 102.0, 50.0))
    partly = reading(102.0, 104.0, 20.0)
    ledger.add(MeterReading(**{**{f: getattr(partly, f) for f in partly.__slots__}, "uncovered_s": {"gpu0": 1.5}}))
    assert ledger.unread_s == 1.5 and partly.unread_s == 0.0


def test_the_idle_baseline_is_the_lowest_block_average():
    assert lowest_average_w([0.0, 10.0, 20.0, 30.0], [1200.0, 1180.0, 1250.0]) == 118.0
    assert lowest_average_w([0.0], []) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(7.0, "7.000"), (6.8, "6.800"), (0.05702, "0.05702"), (1234.5, "1234"), (1.5e-05, "1.500e-05"),
     (None, "–"), (math.nan, "–")],
)  # fmt: skip
def test_numbers_keep_their_digits_so_a_column_reads_alike(value, text):
    assert fmt(value) == text


def test_the_table_names_both_quotients_and_the_dynamic_ones():
    rows = {r[0]: r for r in figure_rows(energy_figures(100.0, 1.0, 0.0, 10.0, 300, 100, 5.0, "host"), "measured")}
    assert rows["J / output token"][1] == "1.000 ± 0.010" and rows["J / token"][1] == "0.2500 ± 0.0025"
    assert rows["Dynamic J / output token"][1] == "0.5000" and rows["Loaded-idle power"][2] == "measured"
    assert rows["Energy"][1] == "100.0 J ± 1.0 J"


def test_an_estimate_gets_no_plus_minus_it_has_not_got():
    f = energy_figures(169.4, 0.028, 0.0, 10.0, 300, 100, 5.0, "host", sources=["estimate"])
    rows = {r[0]: r for r in figure_rows(f)}
    assert rows["Energy"][1] == "169.4 J (estimated)" and "no ± is shown" in rows["Energy"][2]
    assert rows["J / output token"][1] == "1.694" and rows["J / token"][1] == "0.4235"
