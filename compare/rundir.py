"""A comparison's run directory: its layout (names), and the one reader and writer of each of its files.

::

    RUN_DIR/config.json                 options, devices, settings, problems (``CONFIG``)
    RUN_DIR/idle.json                   device-idle and loaded-idle power (``IDLE``)
    RUN_DIR/energy.csv                  every replay's energy slices (``ENERGY``, ``ENERGY_COLUMNS``)
    RUN_DIR/online/<rate>x-<segment>/   one replay: requests.jsonl, polls.jsonl, window.json, replay.json
    RUN_DIR/online/load<L>-<segment>/   the same on the load axis (a share of the server's capacity)
    RUN_DIR/online/reference-<segment>/ the saturate replay against the server (its rate is ``REFERENCE_RATE``)
    RUN_DIR/online/profile-<n>/         the profile's closed loop at n running (rate n, segment ``PROFILE_SEGMENT``)
    RUN_DIR/profile.json                the profile fitted from them and the references (``predict.profile``)
    RUN_DIR/offline/offline.json        the offline engine's sets (``OFFLINE``)
    RUN_DIR/counterfactual/             the counterfactual check's runs and counterfactual.json
    RUN_DIR/summary.json, per_request.csv, report.md, report.html, plots/   the analysis and its rendering

Raw data (``RAW``) may travel gzipped (``compress_raw``); every reader takes ``name`` or ``name.gz``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from joulebench.files import open_text
from loadgen.errors import LoadgenError

CONFIG, IDLE, ENERGY, SUMMARY = "config.json", "idle.json", "energy.csv", "summary.json"
OFFLINE = Path("offline") / "offline.json"
COUNTERFACTUAL = Path("counterfactual") / "counterfactual.json"
ENERGY_COLUMNS = ("phase", "rate", "segment", "start_s", "end_s", "energy_j", "uncertainty_j")
#: What the analysis' summary carries beside ``summary.json``'s figures, for the rendering: each request's
#: energy (``per_request.csv``) and the power series of the plotted replays.
SUMMARY_EXTRAS = ("per_request", "power_series")
#: The ``rate`` column of the saturate replays' rows in ``energy.csv``.
REFERENCE_RATE = -1.0
#: The ``segment`` column of the profile's closed loops in ``energy.csv`` (their ``rate`` column: the loop's n).
PROFILE_SEGMENT = -1


def rate_label(value: float, axis: str = "rate") -> str:
    """A rung of the ladder: ``0.5x`` the trace's own rate, or ``load 0.25`` of the server's capacity."""
    return f"{value:g}x" if axis == "rate" else f"load {value:g}"


def replay_dir(run_dir: Path, value: float, segment: int, axis: str = "rate") -> Path:
    return run_dir / "online" / (f"{value:g}x-{segment}" if axis == "rate" else f"load{value:g}-{segment}")


def reference_dir(run_dir: Path, segment: int) -> Path:
    return run_dir / "online" / f"reference-{segment}"


def profile_dir(run_dir: Path, running: int) -> Path:
    return run_dir / "online" / f"profile-{running}"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def read_json(path: Path) -> Any:
    try:
        with open_text(path) as f:
            return json.load(f)
    except OSError:
        return None
    except json.JSONDecodeError as err:
        raise LoadgenError(f"{path}: not JSON ({err})") from None


def read_energy_series(path: Path) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """energy.csv (or its .gz) → (rate, segment) → (edges, energy J, uncertainty J)."""
    rows: dict[tuple[float, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    try:
        with open_text(path) as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    key = (float(row["rate"]), int(row["segment"]))
                    rows[key].append((float(row["start_s"]), float(row["end_s"]), float(row["energy_j"]),
                                      float(row["uncertainty_j"])))  # fmt: skip
                except (KeyError, TypeError, ValueError) as err:
                    raise LoadgenError(f"{path}:{line}: bad row ({err})") from None
    except OSError:
        return {}
    out = {}
    for key, r in rows.items():
        a = np.array(sorted(r))
        out[key] = (np.append(a[:, 0], a[-1, 1]), a[:, 2], a[:, 3])
    return out


def reading_json(reading: Any) -> dict[str, Any]:
    """A ``MeterReading`` as ``window.json`` keeps it: the sum, and each device's share of it."""
    return {
        "start_s": reading.start_s, "end_s": reading.end_s, "energy_j": reading.energy_j,
        "uncertainty_j": reading.uncertainty_j, "short_window": reading.short_window, "kind": reading.kind,
        "method": reading.method, "energy_by_kind_j": reading.energy_by_kind_j(), "devices": reading.devices,
        "uncovered_s": reading.uncovered_s,
    }  # fmt: skip


def append_series(path: Path, phase: str, rate: float, segment: int, series: Any) -> None:
    """A replay's energy slices, appended to ``energy.csv`` (``ENERGY_COLUMNS``; the header first, if new)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(ENERGY_COLUMNS)
        for k in range(len(series.energy_j)):
            w.writerow([phase, rate, segment, repr(float(series.edges[k])), repr(float(series.edges[k + 1])),
                        repr(float(series.energy_j[k])), repr(float(series.uncertainty_j[k]))])  # fmt: skip


def read_polls(path: Path) -> list[dict[str, Any]]:
    try:
        with open_text(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """``summary.json``: the analysis' summary less what travels beside it (``compare.analysis.EXTRAS``)."""
    path = run_dir / SUMMARY
    write_json(path, {k: v for k, v in summary.items() if k not in SUMMARY_EXTRAS})
    return path


def write_per_request(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """``per_request.csv``: each request's attributed energy (an empty file where there is none)."""
    path = run_dir / "per_request.csv"
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path


#: The raw data a run directory keeps, by file name: what ``compress_raw`` gzips.
RAW = ("requests.jsonl", "polls.jsonl", "energy.csv")


def compress_raw(run_dir: Path) -> list[Path]:
    """Gzip the run directory's raw data in place (``RAW``; the readers take the ``.gz``)."""
    import gzip
    import shutil

    done = []
    for path in sorted(p for name in RAW for p in run_dir.rglob(name)):
        target = path.with_name(path.name + ".gz")
        with path.open("rb") as src, gzip.open(target, "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
        done.append(target)
    return done
