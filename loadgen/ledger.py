"""A run's energy, by the report's and the dashboards' definitions. Pure: no HTTP, no clock.

- **J per output token** = energy ÷ output tokens; **J per token** = energy ÷ (input + output tokens), the
  tokens of the requests that finished ok in the window (the replay summary's, the comparison report's and
  the Grafana panels' quotients);
- **dynamic** = energy − loaded-idle power × the window's length, the idle power being the lowest 10 s
  average the monitor recorded in the five minutes before the run (the dashboards' idle is the lowest 10 s
  average of 15 minutes);
- the uncertainty is the monitor's (``uncertainty_j``); the idle baseline's own spread is not in it.

``EnergyLedger`` sums the energy interval by interval as the web UI polls the monitor, so a run longer
than the monitor's retention still has its total: inner interval edges cancel (the energy one interval
loses at an edge the next gains), so only the outer two edges' uncertainty remains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: The idle baseline: the lowest average of blocks this long …
IDLE_BLOCK_S = 10.0
#: … in this much of the monitor's history before the run.
IDLE_LOOKBACK_S = 300.0

ESTIMATE_NOTE = (
    "The power source is an estimate (host CPU power modelled from its utilization), not a measurement: "
    "these joules show the shape of the load, not a citable energy."
)


class Reading(Protocol):
    """What a monitor reading gives (``monitor.meter.MeterReading``)."""

    start_s: float
    end_s: float
    energy_j: float
    uncertainty_j: float
    kind: str
    sources: list[str]
    short_window: bool
    devices: dict[str, dict[str, Any]]
    unread_s: float  # the most seconds of the interval a summed device went unread


def per(value: float | None, count: int) -> float | None:
    return None if value is None or not count else value / count


def energy_figures(
    energy_j: float,
    uncertainty_j: float,
    start_s: float,
    end_s: float,
    input_tokens: int,
    output_tokens: int,
    idle_power_w: float | None = None,
    kind: str = "",
    sources: Sequence[str] = (),
    short_window: bool = False,
) -> dict[str, Any]:
    """Every figure of one window: energy, power, attributional and dynamic J per (output) token."""
    duration = end_s - start_s
    dynamic = None if idle_power_w is None else energy_j - idle_power_w * duration
    tokens = input_tokens + output_tokens
    return {
        "start_s": start_s, "end_s": end_s, "duration_s": duration,
        "energy_j": energy_j, "uncertainty_j": uncertainty_j,
        "average_power_w": energy_j / duration if duration > 0 else None,
        "idle_power_w": idle_power_w, "dynamic_energy_j": dynamic,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "j_per_output_token": per(energy_j, output_tokens), "j_per_token": per(energy_j, tokens),
        "dynamic_j_per_output_token": per(dynamic, output_tokens), "dynamic_j_per_token": per(dynamic, tokens),
        "uncertainty_j_per_output_token": per(uncertainty_j, output_tokens),
        "uncertainty_j_per_token": per(uncertainty_j, tokens),
        "kind": kind, "sources": list(sources), "estimated": "estimate" in sources, "short_window": short_window,
    }  # fmt: skip


def lowest_average_w(edges_s: Sequence[float], energy_j: Sequence[float]) -> float | None:
    """The lowest average power over consecutive slices (``edges`` one longer than ``energy``)."""
    powers = [e / (b - a) for a, b, e in zip(edges_s, edges_s[1:], energy_j, strict=False) if b > a]
    return min(powers) if powers else None


class EnergyLedger:
    """The energy since ``base_s``, one contiguous interval at a time (``add``)."""

    def __init__(self, base_s: float) -> None:
        self.base_s = base_s
        self.end_s = base_s
        self.energy_j = 0.0
        self.devices: dict[str, dict[str, Any]] = {}  # key → energy_j, kind, source
        self.kind = ""
        self.sources: list[str] = []
        self.short_window = False
        self.intervals = 0
        self.unread_s = 0.0  # over the intervals: the energy misses this much of the ledger's span
        self._first_u = 0.0
        self._last_u = 0.0

    def add(self, reading: Reading) -> None:
        if not math.isclose(reading.start_s, self.end_s, abs_tol=1e-6):
            raise ValueError(f"interval starts at {reading.start_s}, the ledger ends at {self.end_s}")
        self.end_s = reading.end_s
        self.energy_j += reading.energy_j
        self.unread_s += reading.unread_s
        self.kind, self.sources = reading.kind, list(reading.sources)
        self.short_window = self.short_window or (self.intervals == 0 and reading.short_window)
        for key, d in reading.devices.items():
            entry = self.devices.setdefault(key, {"energy_j": 0.0, "kind": d["kind"], "source": d["source"]})
            entry["energy_j"] += d["energy_j"]
        if self.intervals == 0:
            self._first_u = reading.uncertainty_j
        self._last_u = reading.uncertainty_j
        self.intervals += 1

    @property
    def uncertainty_j(self) -> float:
        # Each interval's uncertainty is its two edges'; the sum keeps only the outer two.
        return self._first_u if self.intervals == 1 else math.hypot(self._first_u, self._last_u)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.base_s


def fmt(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, trailing zeros kept, so a column reads alike (``7.000``, ``6.800``)."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:#.{digits}g}"
    return text.rstrip(".") if "e" not in text else text


def fmt_fixed(value: float | None, unit: str, decimals: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:,.{decimals}f} {unit}"


def with_uncertainty(value: float | None, u: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return fmt(value, digits) if u is None else f"{fmt(value, digits)} ± {fmt(u, 2)}"


def figure_rows(f: Mapping[str, Any], idle_note: str = "") -> list[tuple[str, str, str]]:
    """(figure, value, definition) rows of ``energy_figures`` for a table."""
    u = f.get("uncertainty_j")
    # An estimate's ± would be the monitor's interpolation term alone, a fraction of a percent, while the
    # model's own error is tens of percent and not known here: no ± beside an estimate.
    estimated = bool(f.get("estimated"))
    plus_minus = (lambda v, _u: fmt(v)) if estimated else with_uncertainty
    joules = "–" if f.get("energy_j") is None else fmt_fixed(f["energy_j"], "J") + (
        " (estimated)" if estimated else f" ± {fmt(u, 2)} J")  # fmt: skip
    measured = f"all energy of the measured devices ({f.get('kind') or '–'}) in the window"
    idle_note = idle_note or f"lowest {IDLE_BLOCK_S:g} s average in the {IDLE_LOOKBACK_S:g} s before the run"
    return [
        ("Energy", joules, measured + ("; estimated from CPU utilization: its error, tens of %, is not known "
                                       "here, so no ± is shown" if estimated else "")),
        ("Average power", fmt_fixed(f.get("average_power_w"), "W"), "energy ÷ the window's length"),
        ("Loaded-idle power", fmt_fixed(f.get("idle_power_w"), "W"), idle_note),
        ("Dynamic energy", fmt_fixed(f.get("dynamic_energy_j"), "J"), "energy − loaded-idle power × the window"),
        ("Tokens in / out", f"{f.get('input_tokens', 0):,} / {f.get('output_tokens', 0):,}",
         "of the requests that finished ok in the window"),
        ("J / output token", plus_minus(f.get("j_per_output_token"), f.get("uncertainty_j_per_output_token")),
         "energy ÷ output tokens"),
        ("J / token", plus_minus(f.get("j_per_token"), f.get("uncertainty_j_per_token")),
         "energy ÷ (input + output tokens), as the Grafana panels"),
        ("Dynamic J / output token", fmt(f.get("dynamic_j_per_output_token")), "dynamic energy ÷ output tokens"),
        ("Dynamic J / token", fmt(f.get("dynamic_j_per_token")), "dynamic energy ÷ (input + output tokens)"),
    ]  # fmt: skip
