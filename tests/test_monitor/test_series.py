"""The per-device series: change points, power samples, bounded memory, resets, views."""

from __future__ import annotations

import itertools
import math

import pytest

from monitor.series import DeviceSeries


def test_keeps_change_points_and_power_samples():
    s = DeviceSeries(capacity=100)
    for i in range(30):
        t = i * 0.01
        if i % 10 == 0:
            s.append(t, 10.0 * (i // 10), 50.0 + i, gap_s=0.01)
        else:
            s.append_power(t, 50.0 + i)
    v = s.view(0.0, 1.0)
    assert list(v.update_energy_j) == [0.0, 10.0, 20.0]
    assert list(v.update_t_s) == pytest.approx([0.0, 0.1, 0.2])
    assert list(v.update_gap_s) == pytest.approx([0.01, 0.01, 0.01])
    assert len(v.power_t_s) == 30 and v.power_w[-1] == pytest.approx(79.0)
    assert v.last_t_s == pytest.approx(0.29)
    assert v.power_lag_s == 0.0


def test_memory_is_bounded_and_the_newest_is_kept():
    s = DeviceSeries(capacity=50)
    for i in range(1000):
        s.append(float(i), float(i), 1.0)
    v = s.view(0.0, 2000.0)
    assert len(v.update_t_s) == 50 and len(v.power_t_s) == 50
    assert v.update_t_s[0] == 950.0 and v.update_t_s[-1] == 999.0
    assert s.first_t_s() == 950.0
    mid = s.view(970.2, 975.5)  # two change points of padding on each side
    assert list(mid.update_t_s) == [969.0, 970.0, 971.0, 972.0, 973.0, 974.0, 975.0, 976.0, 977.0]


def test_reset_starts_a_segment_and_the_total_stays_monotone():
    s = DeviceSeries(capacity=100)
    totals = []
    for t, e in [(0.0, 1000.0), (0.1, 1010.0), (0.2, 1020.0), (0.3, 4.0), (0.4, 14.0)]:
        s.append(t, e)
        totals.append(s.latest().energy_total_j)
    assert totals == pytest.approx([0.0, 10.0, 20.0, 24.0, 34.0])
    assert all(b >= a for a, b in itertools.pairwise(totals))
    v = s.view(0.0, 1.0)
    assert list(v.update_segment) == [0, 0, 0, 1, 1]
    assert s.latest().segments == 2


def test_nan_power_is_not_stored():
    s = DeviceSeries(capacity=10)
    s.append(0.0, 1.0, math.nan)
    s.append_power(0.1, math.nan)
    assert len(s.view(0.0, 1.0).power_t_s) == 0
    assert math.isnan(s.latest().power_w)
    assert s.latest().t_s == pytest.approx(0.1)


def test_empty_series():
    s = DeviceSeries(capacity=10)
    assert s.latest() is None and s.first_t_s() is None
    assert len(s.view(0.0, 1.0).update_t_s) == 0
