"""A Locust run's directory: its records by run id, the energy summary as CSV, the timeline, one line
when it cannot be written. Pure: files under tmp_path."""

from __future__ import annotations

import csv
import json

import pytest

from loadgen import rundir
from loadgen.errors import LoadgenError


def test_records_are_the_runs_own_from_every_workers_file(tmp_path):
    for i, ids in enumerate((["a", "a", "b"], ["a"])):
        (tmp_path / rundir.records_name(i, 2)).write_text("".join(json.dumps({"run_id": r}) + "\n" for r in ids))
    records, files = rundir.run_records(tmp_path, "a")
    assert len(records) == 3 and files == ["requests.worker0.jsonl", "requests.worker1.jsonl"]
    assert rundir.records_name(0, 1) == "requests.jsonl"


def test_the_energy_csv_is_one_row_of_the_figures_and_the_timeline_one_row_a_bin(tmp_path):
    figures = {"energy_j": 10.0, "j_per_token": 0.5, "sources": ["nvml", "rapl"], "idle_power_w": None}
    (row,) = csv.DictReader(rundir.energy_csv(figures, "run1", "/runs/run1").splitlines())
    assert row["run_id"] == "run1" and row["j_per_token"] == "0.5" and row["sources"] == "nvml,rapl"
    assert row["idle_power_w"] == "" and row["run_dir"] == "/runs/run1"
    assert rundir.energy_csv(None, "run1", "/r").strip() == ",".join(rundir.ENERGY_FIELDS)
    series = {"t_s": [2.0, 4.0], "power_w": {"gpu0": [100.0, None]}, "sent_per_s": [1.0, 2.0]}
    rows = list(csv.reader(rundir.timeline_csv(series).splitlines()))
    assert rows == [["end_s", "power_w:gpu0", "sent_per_s"], ["2.0", "100.0", "1.0"], ["4.0", "", "2.0"]]
    rundir.finish(tmp_path / "run1", {"start_s": 1.0}, {"requests": 0}, series, "x\n")
    assert {p.name for p in (tmp_path / "run1").iterdir()} == {"window.json", "summary.json", "energy.csv",
                                                               "timeline.csv"}  # fmt: skip


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LoadgenError, match=r"^cannot write the run directory's config.json in .*file/r1: "):
        rundir.start(tmp_path / "file" / "r1", {"run_id": "r1"})
