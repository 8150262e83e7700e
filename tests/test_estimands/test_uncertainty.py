"""The uncertainty budget: its terms on synthetic values, how they combine, which one dominates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimands.uncertainty import budget, idle_uncertainty_w, sensor_term


def test_type_a_alone_is_students_t_over_segments():
    b = budget([1.0, 2.0, 3.0])
    assert b["mean"] == 2.0 and b["n"] == 3 and b["k"] == pytest.approx(4.303)
    assert b["low"] == pytest.approx(2.0 - 4.303 / math.sqrt(3)) and b["terms"] == {
        "type_a": pytest.approx(0.5 / 3**0.5 * 2 / 2)
    }
    assert b["dominant"] == "type_a"


def test_independent_terms_shrink_with_segments_and_common_ones_do_not():
    values = [10.0] * 4  # no spread: type A is zero, type B alone sets the interval
    b = budget(values, {"interpolation": ([0.02] * 4, False), "idle_power": ([0.02] * 4, True)})
    assert b["terms"]["interpolation"] == pytest.approx(0.02 / 2)  # √4 segments
    assert b["terms"]["idle_power"] == pytest.approx(0.02)  # one idle measurement for all of them
    assert b["dominant"] == "idle_power"
    assert b["u_combined"] == pytest.approx(math.hypot(0.01, 0.02))
    assert b["k"] == pytest.approx(1.96)  # type A is zero: the degrees of freedom are the type B terms' (∞)
    assert b["high"] - b["mean"] == pytest.approx(1.96 * 10.0 * math.hypot(0.01, 0.02))


def test_welch_satterthwaite_widens_k_only_as_far_as_type_a_weighs():
    rng = np.random.default_rng(0)
    values = (5 + rng.normal(0, 0.5, 3)).tolist()
    a_only = budget(values)
    with_b = budget(values, {"sensor": ([0.5] * 3, True)})  # a big common term: many degrees of freedom
    assert a_only["k"] == pytest.approx(4.303)
    assert 1.96 <= with_b["k"] < a_only["k"]
    assert with_b["dominant"] == "sensor"


def test_ratios_are_budgeted_on_the_log_scale():
    b = budget([2.0, 8.0], {"interpolation": ([0.01, 0.01], False)}, log=True)
    assert b["mean"] == pytest.approx(4.0)  # the geometric mean
    assert b["low"] * b["high"] == pytest.approx(16.0)  # symmetric in the log
    assert b["terms"]["interpolation"] == pytest.approx(0.01 / math.sqrt(2))


def test_one_segment_says_that_type_a_was_not_measured_and_gives_no_interval():
    b = budget([3.0], {"interpolation": ([0.1], False)})
    assert b["n"] == 1 and "type_a" not in b["terms"] and "no type A" in b["note"]
    assert b["low"] is None and b["high"] is None  # its type B terms are kept, but no 95 % interval
    assert b["terms"]["interpolation"] == pytest.approx(0.1) and b["u_combined"] == pytest.approx(0.1)
    assert budget([5.0])["low"] is None  # nothing known about its uncertainty: no interval
    assert budget([None, float("nan")])["mean"] is None


def test_the_sensor_and_idle_terms():
    assert sensor_term(["nvml"]) == pytest.approx(0.05 / math.sqrt(3))
    assert sensor_term(["nvml", "estimate"]) == pytest.approx(0.5 / math.sqrt(3))
    assert sensor_term([]) == 0.0
    assert idle_uncertainty_w({"spread_w": 1.2, "stable": True}) == pytest.approx(1.2 / math.sqrt(12))
    assert idle_uncertainty_w({"spread_w": 1.2, "stable": False}) == pytest.approx(0.6)
    assert idle_uncertainty_w(None) == 0.0
