"""``joulebench predict`` on a known profile and a small trace: its files, and one-line errors."""

from __future__ import annotations

import json

import pytest
from known_profiles import saturating

from joulebench.cli import main
from predict.profile import save


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.csv"
    rows = [f"{i * 0.5},{100 + 37 * i % 400},{20 + 13 * i % 90}" for i in range(60)]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return path


def test_predict_writes_its_rows_and_plot(tmp_path, trace, capsys):
    save(saturating(rel_se=0.02), tmp_path)
    code = main(["predict", "--profile", str(tmp_path), "--trace", str(trace), "--loads", "0.2,0.6",
                 "--requests", "60", "--replicates", "3"])  # fmt: skip
    assert code == 0
    out = json.loads((tmp_path / "predict.json").read_text())
    assert [round(r["load"], 6) for r in out["rows"]] == [0.2, 0.6]
    low, high = out["rows"]
    assert low["j_per_output_token"]["median"] > high["j_per_output_token"]["median"] > 0
    assert low["premium"]["low"] > 1
    assert (tmp_path / "predict.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loads", "0.5,1"], "a load of 1 or more saturates"),
        (["--loads", "a,b"], "give numbers separated by commas"),
        (["--rates", "-1"], "every value must be a positive number"),
        (["--requests", "5"], "at least 20 requests"),
    ],
)
def test_bad_options_are_one_line(tmp_path, trace, capsys, extra, message):
    save(saturating(), tmp_path)
    assert main(["predict", "--profile", str(tmp_path), "--trace", str(trace), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
