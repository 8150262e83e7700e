"""Committed GPU runs re-derive: ``joulebench report`` on a copy of each committed run directory that keeps
its raw data (records, polls, energy series) gives back its committed ``summary.json``: every string, count
and flag exactly, every float to ``REL`` (least squares and trend fits go through BLAS, whose kernels differ
by processor in the last digits: an AMD EPYC re-derives the CPU runs' trend t 3.8393199806 as 3.8393199820)."""

from __future__ import annotations

import json
import shutil

import pytest
from paths import ROOT

from compare.report import write_report

#: How close a re-derived float must come to the committed one, relative.
REL = 1e-6

RUNS = sorted(p.parent for p in (ROOT / "results").rglob("energy.csv.gz"))


def test_there_is_a_committed_run_with_its_raw_data():
    assert RUNS, "no committed run directory keeps its raw data"


@pytest.mark.parametrize("run", RUNS, ids=[str(p.relative_to(ROOT / "results")) for p in RUNS])
def test_a_committed_run_reproduces_its_summary(tmp_path, run):
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("summary.json", "report.*", "plots", "per_request.csv"))
    again = json.loads(write_report(copy)["summary"].read_text())
    assert differences(again, json.loads((run / "summary.json").read_text())) == []


def differences(got: object, want: object, where: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: structure, strings, counts and flags exactly, floats to ``REL``."""
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if got == pytest.approx(want, rel=REL, abs=1e-12) else [f"{where}: {got!r} != {want!r}"]
    if type(got) is not type(want):
        return [f"{where}: {got!r} != {want!r}"]
    if isinstance(want, dict):
        if got.keys() != want.keys():
            return [f"{where}: keys {sorted(got.keys() ^ want.keys())} differ"]
        return [d for k in want for d in differences(got[k], want[k], f"{where}/{k}")]
    if isinstance(want, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def test_the_comparison_finds_a_changed_figure():
    """The check above can fail: a float off by more than REL, a count, a string and a key each differ."""
    want = {"a": 1.0, "n": [3, {"s": "x"}], "k": True}
    assert differences(want, want) == []
    assert differences({"a": 1.0 + 1e-9, "n": [3, {"s": "x"}], "k": True}, want) == []
    assert len(differences({"a": 1.001, "n": [4, {"s": "y"}], "k": False}, want)) == 4
    assert differences({"a": 1.0, "n": [3, {"s": "x"}]}, want) == [": keys ['k'] differ"]
