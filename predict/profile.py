"""A server's profile: what a step costs as a function of the number of running requests, and its fit.

The profile holds, for ``n`` running requests (1 … ``max_num_seqs``):

- ``power_w`` P(n): the mean power while ``n`` requests run (the board's, or whatever the monitor
  measures), a monotone curve that saturates where the power cap holds it — not a linear token model;
- ``step_s`` d(n): the time of a decode step of ``n`` requests (its inverse times n: decode tokens/s);

and beside them the loaded-idle power P(0), and the prefill cost: ``prefill_s_per_token`` τ (the time a
prompt token adds to its step) and ``prefill_j_per_token`` γ (the energy it adds above P(n) × that time).
A step of ``n`` requests with ``k`` prompt tokens takes d(n) + τ·k and spends P(n)·(d(n) + τ·k) + γ·k.
Every figure has a standard error; ``draw`` gives a parametric bootstrap draw for prediction intervals.

``fit`` reads them off measured runs (``predict.observe.Run``): a closed-loop ladder (each level
at one n) or any replays whose occupancy covers the range. Two regressions on bins of n:

- time: every interval between two chunks of a request lasted (its tokens) × d(n) + τ × (prompt tokens
  the engine prefilled in it), n the running requests at its middle;
- energy: every energy slice spent Σ_n P(n) × (its seconds at n running) + γ × (its prompt tokens), with
  P(0) the loaded-idle power measured apart;

each bin's estimate then made monotone in n (isotonic, weighted by 1/se²).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from predict.errors import PredictError
from predict.monotone import Curve, isotonic
from predict.observe import Run, chunk_intervals, intervals, prompt_per_slice, seconds_at

PROFILE_FILE = "profile.json"
VERSION = 1
#: A bin of running requests spans at most this ratio of its largest to its smallest count...
BIN_RATIO = 1.25
#: ...and closes as soon as it holds this many seconds of the runs' time; one that holds less than a
#: quarter of it (a transient: a closed loop's occupancy dips as requests turn over) joins its neighbour.
BIN_SECONDS = 1.0


@dataclass(frozen=True)
class Profile:
    max_num_seqs: int
    token_budget: int  # max_num_batched_tokens: prompt + decode tokens in one step
    idle_w: float  # loaded idle: the server up, nothing running
    idle_se_w: float
    power_w: Curve  # P(n)
    step_s: Curve  # d(n)
    prefill_s_per_token: float  # τ
    prefill_s_per_token_se: float
    prefill_j_per_token: float  # γ, above P(n) × τ
    prefill_j_per_token_se: float
    source: str = ""  # what it was fitted from, in words

    def power(self, n: float) -> float:
        """P(n): loaded idle at 0, the curve from 1 (linear between the two below 1)."""
        if n <= 0:
            return self.idle_w
        p1 = float(self.power_w(1.0))
        return self.idle_w + (p1 - self.idle_w) * n if n < 1 else float(self.power_w(n))

    def step(self, n: float) -> float:
        return float(self.step_s(max(n, 1.0)))

    def draw(self, rng: np.random.Generator) -> Profile:
        """One parametric bootstrap draw of every fitted figure (positive ones stay positive)."""

        def positive(v: float, se: float) -> float:
            if v <= 0:
                return max(0.0, rng.normal(v, se))
            rel = se / v
            return v * math.exp(rng.normal(0.0, rel) - rel**2 / 2)

        return replace(
            self,
            idle_w=positive(self.idle_w, self.idle_se_w),
            power_w=self.power_w.draw(rng),
            step_s=self.step_s.draw(rng),
            prefill_s_per_token=positive(self.prefill_s_per_token, self.prefill_s_per_token_se),
            prefill_j_per_token=positive(self.prefill_j_per_token, self.prefill_j_per_token_se),
        )

    def record(self) -> dict[str, Any]:
        return {
            "version": VERSION, "max_num_seqs": self.max_num_seqs, "token_budget": self.token_budget,
            "idle_w": self.idle_w, "idle_se_w": self.idle_se_w, "power_w": self.power_w.record(),
            "step_s": self.step_s.record(), "prefill_s_per_token": self.prefill_s_per_token,
            "prefill_s_per_token_se": self.prefill_s_per_token_se, "prefill_j_per_token": self.prefill_j_per_token,
            "prefill_j_per_token_se": self.prefill_j_per_token_se, "source": self.source,
            "definitions": DEFINITIONS,
        }  # fmt: skip

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Profile:
        return cls(
            int(d["max_num_seqs"]), int(d["token_budget"]), float(d["idle_w"]), float(d["idle_se_w"]),
            Curve.from_record(d["power_w"]), Curve.from_record(d["step_s"]), float(d["prefill_s_per_token"]),
            float(d["prefill_s_per_token_se"]), float(d["prefill_j_per_token"]),
            float(d["prefill_j_per_token_se"]), str(d.get("source", "")),
        )  # fmt: skip


DEFINITIONS = {
    "power_w": "mean power while n requests run (P(n)), monotone in n, at the bins' mean n",
    "step_s": "time of a decode step of n running requests (d(n)), monotone in n",
    "prefill_s_per_token": "time a prompt token adds to its step (τ)",
    "prefill_j_per_token": "energy a prompt token adds above P(n) × τ (γ)",
    "idle_w": "loaded-idle power: the server up, nothing running (P(0))",
}


def save(profile: Profile, path: Path) -> Path:
    """Write ``profile.json`` (``path`` a file or a run directory); the path written."""
    path = Path(path)
    target = path / PROFILE_FILE if path.is_dir() else path
    target.write_text(json.dumps(profile.record(), indent=2) + "\n", encoding="utf-8")
    return target


def load(path: Path) -> Profile:
    """A profile from ``profile.json`` or a run directory holding one; a PredictError saying what is wrong."""
    path = Path(path)
    target = path / PROFILE_FILE if path.is_dir() else path
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictError(f"{target}: no such profile (profile.json, or a run directory holding one)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PredictError(f"{target}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise PredictError(f"{target}: not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise PredictError(f"{target}: not a version-{VERSION} profile")
    try:
        return Profile.from_record(data)
    except (KeyError, TypeError, ValueError) as err:
        raise PredictError(f"{target}: not a profile ({type(err).__name__}: {err})") from None


def bins_of(seconds_at: np.ndarray) -> list[tuple[int, int]]:
    """Bins of running requests [lo, hi] over levels 1 … len − 1, from the seconds spent at each: single
    counts where the data are dense, wider (at most ``BIN_RATIO``) where they are sparse; levels never
    seen are left out."""
    bins: list[tuple[int, int]] = []
    lo, held = None, 0.0
    for n in range(1, len(seconds_at)):
        if seconds_at[n] <= 0 and lo is None:
            continue
        if lo is not None and n > lo * BIN_RATIO:
            bins.append((lo, n - 1))
            lo, held = None, 0.0
        if seconds_at[n] > 0 and lo is None:
            lo = n
        held += seconds_at[n]
        if lo is not None and held >= BIN_SECONDS:
            bins.append((lo, n))
            lo, held = None, 0.0
    if lo is not None:
        bins.append((lo, len(seconds_at) - 1))
    held_by = [float(seconds_at[a : b + 1].sum()) for a, b in bins]
    merged: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(bins):
        if held_by[i] < BIN_SECONDS / 4 and len(bins) > 1:
            if i + 1 < len(bins):  # into the next bin
                bins[i + 1] = (a, bins[i + 1][1])
                held_by[i + 1] += held_by[i]
            else:  # the last: into the previous
                merged[-1] = (merged[-1][0], b)
            continue
        merged.append((a, b))
    # trim each bin to the levels it saw
    out = []
    for a, b in merged:
        seen = [n for n in range(a, b + 1) if seconds_at[n] > 0]
        if seen:
            out.append((seen[0], seen[-1]))
    return out


def _lag1(residuals: np.ndarray, groups: np.ndarray) -> float:
    """Lag-one autocorrelation of residuals within groups, clipped to [0, 0.9]."""
    same = groups[1:] == groups[:-1]
    a, b = residuals[:-1][same], residuals[1:][same]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.clip(np.corrcoef(a, b)[0, 1], 0.0, 0.9))


@dataclass(frozen=True)
class Normal:
    """A least-squares problem y ≈ X β held as its normal equations, with X's product for residuals.
    The last coefficient is the prompt tokens'; the others are the bins'."""

    xtx: np.ndarray
    xty: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    predict: Any  # β → X β

    @classmethod
    def dense(cls, cols: np.ndarray, prompt: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Normal:
        x = np.column_stack([cols, prompt])
        return cls(x.T @ x, x.T @ y, y, groups, lambda beta: x @ beta)

    @classmethod
    def one_per_row(
        cls, bin_of: np.ndarray, amount: np.ndarray, prompt: np.ndarray, y: np.ndarray, groups: np.ndarray, bins: int
    ) -> Normal:
        """Rows with a single bin each (``amount`` of it): the normal equations without the dense matrix."""
        xtx = np.zeros((bins + 1, bins + 1))
        xtx[np.arange(bins), np.arange(bins)] = np.bincount(bin_of, amount**2, bins)
        xtx[:bins, bins] = xtx[bins, :bins] = np.bincount(bin_of, amount * prompt, bins)
        xtx[bins, bins] = prompt @ prompt
        xty = np.append(np.bincount(bin_of, amount * y, bins), prompt @ y)
        return cls(xtx, xty, y, groups, lambda beta: beta[bin_of] * amount + beta[bins] * prompt)

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """Estimates and standard errors (NaN for a bin without data). The residual variance is inflated by
        (1 + ρ)/(1 − ρ), ρ the residuals' lag-one correlation: slices and chunks in a row are correlated."""
        keep = np.diag(self.xtx) > 0
        a = self.xtx[np.ix_(keep, keep)]
        beta = np.full(len(keep), np.nan)
        beta[keep] = np.linalg.lstsq(a, self.xty[keep], rcond=None)[0]
        resid = self.y - self.predict(np.nan_to_num(beta))
        rho = _lag1(resid, self.groups)
        dof = max(len(self.y) - int(keep.sum()), 1)
        cov = np.linalg.pinv(a) * float(resid @ resid) / dof * (1 + rho) / (1 - rho)
        se = np.full(len(keep), np.nan)
        se[keep] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        return beta, se


def curve(n: np.ndarray, value: np.ndarray, se: np.ndarray, beyond: str) -> Curve:
    """Bins' estimates as a monotone curve: bins without a positive estimate left out, the rest made
    non-decreasing (weighted by 1/se²)."""
    ok = np.isfinite(value) & (value > 0) & np.isfinite(se)
    if not ok.any():
        raise PredictError("the runs give no positive estimate at any number of running requests")
    n, v, se = n[ok], value[ok], np.maximum(se[ok], 1e-6 * value[ok])
    mono = isotonic(v, 1.0 / se**2)
    return Curve(tuple(float(x) for x in n), tuple(float(x) for x in mono), tuple(float(x) for x in se), beyond)


def fit(
    runs: Sequence[Run],
    idle_w: float,
    idle_se_w: float,
    max_num_seqs: int,
    token_budget: int,
    source: str = "",
    tau_s: float | None = None,
    idle_from_runs: bool = True,
) -> Profile:
    """The profile of measured runs (a closed-loop ladder, or replays whose occupancy covers the range).

    ``idle_from_runs``: P(0) fitted where the runs spend a second or more with nothing running (replays at
    traffic's own pace), else ``idle_w``, measured apart. Closed loops pass False: their moments with nothing
    running are the gaps between a request's end and the next send, where the server is still at work (on
    vLLM's CPU build the fit put P(0) at 5.5 W against 0.06 W of measured loaded idle).

    Without ``tau_s`` (the engine's seconds per prompt token, e.g. from vLLM's own prefill timing) prompts
    are first placed from their send, τ fitted, and the fit redone with prompts placed by that τ."""
    if not runs:
        raise PredictError("no runs to fit a profile from")
    passes = 1 if tau_s else 2
    for _ in range(passes):
        profile = _fit_once(runs, idle_w, idle_se_w, max_num_seqs, token_budget, source, tau_s, idle_from_runs)
        tau_s = profile.prefill_s_per_token or None
    return profile


def _fit_once(
    runs: Sequence[Run],
    idle_w: float,
    idle_se_w: float,
    max_n: int,
    budget: int,
    source: str,
    tau_s: float | None,
    idle_from_runs: bool = True,
) -> Profile:
    seconds, prompts, energy = [], [], []
    for run in runs:
        edges, joules = run.slices()
        if not len(joules):
            continue
        admitted, _, _, last, _ = intervals(run.records, tau_s)
        seconds.append(seconds_at(admitted, last, edges, max_n))
        prompts.append(prompt_per_slice(run.records, edges, tau_s))
        energy.append(joules)
    if not seconds:
        raise PredictError("the runs hold no energy slice inside their spans: nothing to fit")
    s = np.vstack(seconds)
    at_level = s.sum(axis=0)
    bins = bins_of(at_level)
    if not bins:
        raise PredictError("the runs never had a request running: nothing to fit")
    level_bin = np.full(max_n + 1, -1)
    for b, (lo, hi) in enumerate(bins):
        level_bin[lo : hi + 1] = b
    n_of = np.array([np.average(np.arange(lo, hi + 1), weights=at_level[lo : hi + 1]) for lo, hi in bins])
    onehot = np.zeros((max_n + 1, len(bins)))
    onehot[np.arange(max_n + 1)[level_bin >= 0], level_bin[level_bin >= 0]] = 1.0
    slice_groups = np.concatenate([np.full(len(e), g) for g, e in enumerate(energy)])
    # P(0) is fitted where the runs spend time with nothing running (the power between requests, which
    # on some sources stays above a long pause's), else it is the loaded idle measured apart.
    free_idle = idle_from_runs and at_level[0] >= BIN_SECONDS
    cols = np.column_stack([s[:, 0], s @ onehot]) if free_idle else s @ onehot
    y = np.concatenate(energy) - (0.0 if free_idle else idle_w * s[:, 0])
    p_beta, p_se = Normal.dense(cols, np.concatenate(prompts), y, slice_groups).solve()
    if free_idle:
        idle_w, idle_se_w = float(p_beta[0]), float(p_se[0])
        p_beta, p_se = p_beta[1:], p_se[1:]
    # the bins' coefficients are energy per second at n running: watts
    chunks = [chunk_intervals(run.records, tau_s, max_n, 1_000_000 * g, run.span) for g, run in enumerate(runs)]
    rows = np.concatenate([level_bin[c.running] for c in chunks])
    use = rows >= 0
    time_fit = Normal.one_per_row(
        rows[use], np.concatenate([c.tokens for c in chunks])[use], np.concatenate([c.prompt for c in chunks])[use],
        np.concatenate([c.seconds for c in chunks])[use], np.concatenate([c.group for c in chunks])[use], len(bins),
    )  # fmt: skip
    d_beta, d_se = time_fit.solve()
    k = len(bins)
    tau, tau_se = (float(d_beta[k]), float(d_se[k])) if np.isfinite(d_beta[k]) else (0.0, 0.0)
    gamma, gamma_se = (float(p_beta[k]), float(p_se[k])) if np.isfinite(p_beta[k]) else (0.0, 0.0)
    return Profile(
        max_num_seqs=max_n, token_budget=budget, idle_w=idle_w, idle_se_w=idle_se_w,
        power_w=curve(n_of, p_beta[:k], p_se[:k], "flat"), step_s=curve(n_of, d_beta[:k], d_se[:k], "linear"),
        prefill_s_per_token=max(tau, 0.0), prefill_s_per_token_se=tau_se,
        prefill_j_per_token=gamma, prefill_j_per_token_se=gamma_se, source=source,
    )  # fmt: skip
