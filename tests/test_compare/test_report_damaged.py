"""``joulebench report`` on a run directory that lost or damaged a file: it never replaces a report with one
that has less in it, and says in one line what went missing (exit 2, every old file kept)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import write_run

from compare.report import write_report


def report(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "joulebench", "report", str(run)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    run = write_run(tmp_path_factory.mktemp("run") / "run")
    write_report(run)
    return run


def kept(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("summary.json", "report.md", "report.html")}


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda run: (run / "online" / "2x-1" / "window.json").unlink(), "windows (2.0, 1)"),
        (lambda run: (run / "energy.csv").unlink(), "windows (0.5, 0), (0.5, 1), (2.0, 0), (2.0, 1)"),
        (lambda run: (run / "offline" / "offline.json").unlink(), "offline references 0, 1"),
        (lambda run: (run / "idle.json").unlink(), "idle power loaded"),
        (lambda run: shutil.rmtree(run / "online" / "reference-0"), "online references 0"),
    ],
    ids=["a window.json", "energy.csv", "offline.json", "idle.json", "a reference's replay"],
)
def test_a_lost_file_leaves_the_report_as_it_was(tmp_path, reported, damage, named):
    run = tmp_path / "run"
    shutil.copytree(reported, run)
    before = kept(run)
    damage(run)
    done = report(run)
    assert done.returncode == 2, done.stderr
    assert "not rewritten" in done.stderr and named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert kept(run) == before


def test_an_empty_file_beside_its_gz_is_refused_not_read(tmp_path, reported):
    run = tmp_path / "run"
    shutil.copytree(reported, run)
    before = kept(run)
    records = run / "online" / "0.5x-0" / "requests.jsonl"
    with records.open("rb") as src, gzip.open(records.with_name("requests.jsonl.gz"), "wb") as dst:
        dst.write(src.read())
    records.write_text("")  # a stray empty file would hide every record of the .gz
    done = report(run)
    assert done.returncode == 2 and "both exist" in done.stderr and "Traceback" not in done.stderr
    assert kept(run) == before


def test_a_damaged_file_is_one_line_not_a_traceback(tmp_path, reported):
    run = tmp_path / "run"
    shutil.copytree(reported, run)
    before = kept(run)
    window = run / "online" / "0.5x-0" / "window.json"
    w = json.loads(window.read_text())
    del w["drain_cut"]
    window.write_text(json.dumps(w))
    done = report(run)
    assert done.returncode == 2 and "a damaged input" in done.stderr and "Traceback" not in done.stderr
    assert kept(run) == before


def test_a_whole_run_is_rewritten_and_a_changed_figure_is_not_a_loss(tmp_path, reported):
    run = tmp_path / "run"
    shutil.copytree(reported, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["rates"][0]["segments"][0]["premium"] = 99.0  # as a changed definition would change a figure
    (run / "summary.json").write_text(json.dumps(summary))
    done = report(run)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["rates"][0]["segments"][0]["premium"] != 99.0
