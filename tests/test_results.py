"""Committed GPU runs re-derive: ``joulebench report`` on a copy of each committed run directory that keeps
its raw data (records, polls, energy series) gives back its committed ``summary.json``."""

from __future__ import annotations

import json
import shutil

import pytest
from paths import ROOT

from compare.report import write_report

RUNS = sorted(p.parent for p in (ROOT / "results").rglob("energy.csv.gz"))


def test_there_is_a_committed_run_with_its_raw_data():
    assert RUNS, "no committed run directory keeps its raw data"


@pytest.mark.parametrize("run", RUNS, ids=[str(p.relative_to(ROOT / "results")) for p in RUNS])
def test_a_committed_run_reproduces_its_summary(tmp_path, run):
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("summary.json", "report.*", "plots", "per_request.csv"))
    again = json.loads(write_report(copy)["summary"].read_text())
    assert again == json.loads((run / "summary.json").read_text())
