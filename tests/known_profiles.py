"""Profiles with known parameters, for the prediction's tests."""

from __future__ import annotations

import numpy as np

from predict.monotone import Curve
from predict.profile import Profile

LEVELS = (1, 2, 4, 8, 16, 32, 64)


def flat(
    power_w: float = 300.0,
    step_s: float = 0.01,
    tau: float = 0.0,
    gamma: float = 0.0,
    max_num_seqs: int = 64,
    budget: int = 2048,
    idle_w: float = 100.0,
) -> Profile:
    """Power and step time the same at every n."""
    return Profile(max_num_seqs, budget, idle_w, 0.0, Curve((1.0,), (power_w,), (0.0,)),
                   Curve((1.0,), (step_s,), (0.0,)), tau, 0.0, gamma, 0.0, "flat")  # fmt: skip


def saturating(rel_se: float = 0.0) -> Profile:
    """Power rising to a 700 W cap, step time growing with n, prefill with a time and an energy."""
    n = np.array(LEVELS, dtype=float)
    p = 100 + 600 * (1 - np.exp(-n / 6))
    d = 0.005 + 0.0001 * n
    power = Curve(tuple(n), tuple(p), tuple(rel_se * p))
    step = Curve(tuple(n), tuple(d), tuple(rel_se * d), "linear")
    return Profile(64, 2048, 100.0, 0.0, power, step, 2e-5, 0.0, 0.005, 0.0, "saturating")
