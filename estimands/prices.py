"""What work costs at saturation, and the premium of a window on the same work.

At saturation the engine's energy is close to linear in the work it does: E ≈ a·(prefill tokens) +
b·(decode tokens), with no intercept (the loaded-idle power is part of each price, spread over the work,
as in every attributional J/token). ``fit_prices`` estimates the ratio r = a/b — what one prefill token
costs in decode tokens — by non-negative least squares over rows of (energy, prefill tokens, decode
tokens): the energy slices of the saturated references' steady parts and, where the offline engine ran
them, its prefill-heavy and decode-heavy calibration sets (each weighted as the slices its time spans).
The scale comes from each segment's own reference: b_k = E_ref,k ÷ W_k, a_k = r·b_k, with

    W = r·n_in + n_out,    the work in decode-token equivalents.

The **premium** of a window is its energy ÷ what the same work costs at saturation:

    premium = E_window ÷ (a_k·n_in + b_k·n_out) = (E_window ÷ W_window) ÷ (E_ref,k ÷ W_ref,k).

It is one number whatever the tokens are counted as: a J/token premium or a J/output-token premium compare
two different mixes as soon as the window's input ÷ output differs from the reference's; this one prices the
window's own mix. Where the two mixes agree it is the J/token ratio exactly, whatever r is; the further they
are apart, the more r's uncertainty counts (``ratio_term``). The dynamic premium does the same with dynamic
energies (less loaded-idle power × time) and its own ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from estimands.attribution import nnls, slices


@dataclass(frozen=True, slots=True)
class Prices:
    """r = a/b (a prefill token's cost in decode tokens) at saturation, with its standard uncertainty."""

    ratio: float
    ratio_se: float
    r2: float  # of the fit, over its rows: how linear the saturated cost is in the two counts
    rows: int
    groups: int
    method: str

    def record(self) -> dict[str, Any]:
        return {"prefill_per_decode_token": self.ratio, "uncertainty": self.ratio_se, "r2": self.r2,
                "rows": self.rows, "groups": self.groups, "method": self.method}  # fmt: skip

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Prices:
        """The prices ``record`` wrote (a reference's ``prices``, read back from its JSON)."""
        return cls(float(record["prefill_per_decode_token"]), float(record["uncertainty"]), float(record["r2"]),
                   int(record["rows"]), int(record["groups"]), str(record["method"]))  # fmt: skip


def fit_prices(
    energy_j: Sequence[float],
    prefill_tokens: Sequence[float],
    decode_tokens: Sequence[float],
    groups: Sequence[int],
    weights: Sequence[float] | None = None,
) -> Prices | None:
    """The ratio r = a/b from rows (energy, prefill tokens, decode tokens), weighted; its uncertainty by the
    jackknife over ``groups`` (one per reference or calibration set) where there are three or more, else from
    the fit's residuals (the slices of one run: its within-run noise only). None without decode cost or rows."""
    y = np.asarray(energy_j, dtype=float)
    x = np.column_stack([np.asarray(prefill_tokens, dtype=float), np.asarray(decode_tokens, dtype=float)])
    if len(y) < 3:
        return None
    w = np.sqrt(np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float))
    xs, ys = x * w[:, None], y * w
    a, b = nnls(xs, ys)
    if b <= 0:
        return None
    resid = ys - xs @ np.array([a, b])
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / total if total > 0 else math.nan
    g = np.asarray(groups)
    labels = sorted(set(g.tolist()))
    if len(labels) >= 3:
        reps = []
        for label in labels:
            ka, kb = nnls(xs[g != label], ys[g != label])
            if kb > 0:
                reps.append(ka / kb)
        n, groups_n = len(reps), len(labels)  # the jackknife's factor is the groups', not the fits that succeeded
        se = (
            math.sqrt((groups_n - 1) / groups_n * sum((v - float(np.mean(reps))) ** 2 for v in reps))
            if n >= 3
            else math.nan
        )
        method = f"jackknife over {len(labels)} groups"
    else:
        s2 = float(resid @ resid) / max(len(y) - 2, 1)
        try:
            cov = s2 * np.linalg.inv(xs.T @ xs)
        except np.linalg.LinAlgError:
            cov = np.full((2, 2), math.nan)
        # delta method for a/b; zero where a was held at its bound
        grad = np.array([1 / b, -a / b**2])
        se = math.sqrt(max(float(grad @ cov @ grad), 0.0)) if a > 0 else math.nan
        method = f"the fit's residuals ({len(labels)} group(s): within-run noise only)"
    return Prices(float(a / b), float(se), r2, len(y), len(labels), method)


def span_prices(
    records: Sequence[Mapping[str, Any]], edges: Sequence[float], energy_j: Sequence[float]
) -> Prices | None:
    """The prices of one closed loop's span from its energy slices (``edges``, ``energy_j``) and its records:
    prefill placed without the engine's rate (``estimands.tokens``), decode at each chunk."""
    if len(edges) < 4:
        return None
    f = slices(records, edges, None).features()
    return fit_prices(energy_j, f[:, 1], f[:, 2], [0] * len(f))


def work(input_tokens: float, output_tokens: float, ratio: float) -> float:
    """Work in decode-token equivalents: r·input + output."""
    return ratio * input_tokens + output_tokens


def premium(
    energy_j: float,
    tokens: tuple[float, float],
    reference_j: float,
    reference_tokens: tuple[float, float],
    ratio: float,
) -> float | None:
    """A window's energy ÷ the cost of its work (``tokens``: input, output) at the reference's prices."""
    w, w_ref = work(*tokens, ratio), work(*reference_tokens, ratio)
    if energy_j <= 0 or reference_j <= 0 or w <= 0 or w_ref <= 0:
        return None
    return (energy_j / w) / (reference_j / w_ref)


def ratio_term(tokens: tuple[float, float], reference_tokens: tuple[float, float], prices: Prices | None) -> float:
    """The premium's relative standard uncertainty from r's: |∂ ln premium / ∂r|·u(r); nothing where the
    window's mix is the reference's. Where u(r) is unknown (too few groups for the jackknife, r held at its
    bound) it is taken as r itself: an unknown uncertainty is not a zero one."""
    if prices is None:
        return 0.0
    r = prices.ratio
    u_r = prices.ratio_se if math.isfinite(prices.ratio_se) else r
    w, w_ref = work(*tokens, r), work(*reference_tokens, r)
    if w <= 0 or w_ref <= 0:
        return 0.0
    return abs(reference_tokens[0] / w_ref - tokens[0] / w) * u_r
