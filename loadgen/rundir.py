"""A Locust run's directory, ``RUNS_DIR/RUN_ID/``: everything one run leaves behind.

- ``requests.jsonl`` (one process) or ``requests.workerN.jsonl`` (one per worker, written where the worker
  runs): every request's record, each with the run's id;
- ``config.json``: the options, target and plan the run started with;
- ``window.json``: the energy window (first scheduled send → last request's end; from a RESET on, if any)
  and how the run ended;
- ``summary.json``: the replay summary of the records (as ``joulebench replay --summary``) with the run's
  ``energy`` and the window;
- ``energy.csv``: the energy summary as one CSV row (Locust's ``--csv`` gets the same beside its own);
- ``timeline.csv``: power per device, rates and latency percentiles per time bin (the Energy tab's charts).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.errors import LoadgenError
from loadgen.records import read_records

ENERGY_FIELDS = (
    "run_id", "start_s", "end_s", "duration_s", "energy_j", "uncertainty_j", "average_power_w", "idle_power_w",
    "dynamic_energy_j", "input_tokens", "output_tokens", "j_per_output_token", "j_per_token",
    "dynamic_j_per_output_token", "dynamic_j_per_token", "uncertainty_j_per_output_token", "kind", "sources",
    "estimated", "run_dir",
)  # fmt: skip


def records_name(index: int, count: int) -> str:
    return "requests.jsonl" if count == 1 else f"requests.worker{index}.jsonl"


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        what = f"the run directory's {path.name} in {path.parent}"
        raise LoadgenError(f"cannot write {what}: {err.strerror or err}") from None


def write_json(path: Path, data: Any) -> None:
    _write(path, json.dumps(data, indent=2, default=str) + "\n")


def start(folder: Path, config: Mapping[str, Any]) -> None:
    """Make the run directory and write its ``config.json`` (before any traffic)."""
    write_json(folder / "config.json", dict(config))


def run_records(folder: Path, run_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's records found in its directory, and the files read."""
    files = sorted(folder.glob("requests*.jsonl"))
    records = [r for f in files for r in read_records(f) if r.get("run_id") == run_id]
    return records, [f.name for f in files]


def energy_row(figures: Mapping[str, Any], run_id: str, run_dir: str) -> dict[str, Any]:
    row = {**figures, "run_id": run_id, "run_dir": run_dir}
    row["sources"] = ",".join(figures.get("sources") or [])
    return {k: row.get(k) for k in ENERGY_FIELDS}


def energy_csv(figures: Mapping[str, Any] | None, run_id: str, run_dir: str) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ENERGY_FIELDS, lineterminator="\n")
    writer.writeheader()
    if figures:
        writer.writerow({k: "" if v is None else v for k, v in energy_row(figures, run_id, run_dir).items()})
    return out.getvalue()


def timeline_csv(series: Mapping[str, Any]) -> str:
    columns = [k for k in series if k not in ("t_s", "power_w")]
    devices = sorted(series.get("power_w", {}))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["end_s", *(f"power_w:{d}" for d in devices), *columns])
    for i, t in enumerate(series.get("t_s", [])):
        row = [t, *(series["power_w"][d][i] for d in devices), *(series[c][i] for c in columns)]
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def finish(
    folder: Path, window: Mapping[str, Any], summary: Mapping[str, Any], series: Mapping[str, Any], energy_text: str
) -> None:
    """Write what a finished run leaves: ``window.json``, ``summary.json``, ``energy.csv``, ``timeline.csv``."""
    write_json(folder / "window.json", dict(window))
    write_json(folder / "summary.json", dict(summary))
    _write(folder / "energy.csv", energy_text)
    _write(folder / "timeline.csv", timeline_csv(series))
