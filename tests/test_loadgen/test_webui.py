"""joulebench's parts of Locust's web UI that need no browser: the start form's fields (order, choices,
values kept), the check of a start, the Energy tab's table, the report's section. Pure: no server."""

from __future__ import annotations

import argparse
import json

import pytest

from estimands.reference import NO_PRICES, premiums
from loadgen.errors import LoadgenError
from loadgen.options import LOCUST_OPTIONS
from loadgen.webui import add_report_section, check_form, form_args, rewrite_index, table_rows


def options(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**{k: d for k, (d, _) in LOCUST_OPTIONS.items()}, **kw})


def locust_args() -> dict:
    """Locust's templateArgs as it sends them: custom options alphabetically, the command line's values."""
    extra = {k: {"default_value": d, "help_text": h, "choices": None, "is_secret": False, "is_required": False,
                 "is_multiple": False} for k, (d, h) in sorted(LOCUST_OPTIONS.items())}  # fmt: skip
    extra["jb_trace"]["default_value"] = "/data/trace.csv"
    extra["other_plugin"] = {"default_value": "x"}
    return {"extra_options": extra, "num_users": 1, "spawn_rate": 1, "host": "http://h"}


def test_the_form_lists_fields_in_fill_order_as_choices_with_the_last_runs_values():
    args = form_args(locust_args(), options(jb_trace="azure-code", jb_rate=4.0), dispatchers=3)
    names = list(args["extra_options"])
    assert names[:4] == ["jb_trace", "jb_process", "jb_rate", "jb_duration"] and names[-1] == "other_plugin"
    trace = args["extra_options"]["jb_trace"]
    assert trace["default_value"] == "azure-code" and trace["choices"][:1] == ["/data/trace.csv"]
    assert {"azure-conv", "azure-code"} <= set(trace["choices"])  # the command line's path stays a choice
    assert "saturate" in args["extra_options"]["jb_process"]["choices"]
    assert args["extra_options"]["jb_rate"]["default_value"] == 4.0  # kept: the last start's value
    assert args["num_users"] == args["spawn_rate"] == 3 and args["host"] == "http://h"


def test_after_a_saturate_run_the_form_is_no_reference_run_again():
    last = options(jb_process="saturate", jb_first=64, jb_concurrency=8, jb_steady_s=20.0, jb_send_s=60.0, jb_rate=3.0)
    fields = {k: e["default_value"] for k, e in form_args(locust_args(), last, 2)["extra_options"].items()}
    assert (fields["jb_process"], fields["jb_first"], fields["jb_concurrency"]) == ("trace", 0, 256)
    assert (fields["jb_steady_s"], fields["jb_send_s"]) == (0.0, 0.0)  # a closed loop's own, not kept
    assert fields["jb_rate"] == 3.0  # the rest keeps the last start's values
    again = form_args(locust_args(), options(jb_process="poisson", jb_first=64), 2)["extra_options"]
    assert again["jb_process"]["default_value"] == "poisson" and again["jb_first"]["default_value"] == 64


def test_the_page_gets_its_arguments_back_and_the_charts_scripts():
    page = ("<html><head></head><body><div id=root></div><script>\n      window.templateArgs = "
            + json.dumps(locust_args()) + "\n    </script></body></html>")  # fmt: skip
    out = rewrite_index(page, options(), 2, ".")
    args = json.loads(out.split("window.templateArgs = ")[1].split("\n")[0])
    assert args["num_users"] == 2 and next(iter(args["extra_options"])) == "jb_trace"
    assert '<script src="./joulebench/static/uPlot.iife.min.js"></script>' in out
    assert 'href="./joulebench/static/energy.css"' in out.split("</head>")[0]
    assert rewrite_index("<html>no arguments</html>", options(), 2, ".") == "<html>no arguments</html>"


@pytest.mark.parametrize(
    ("form", "message"),
    [({"jb_rate": "abc"}, "--jb-rate 'abc': give a number"),
     ({"jb_first": "1.5"}, "--jb-first '1.5': give a whole"),
     ({"jb_duration": "0"}, "--jb-duration 0.0: give seconds > 0"),
     ({"jb_process": "poison"}, "--jb-process 'poison'")],
)  # fmt: skip
def test_a_wrong_start_is_one_line_naming_the_field(form, message):
    with pytest.raises(LoadgenError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check_form(form, options())


def test_a_right_start_passes():
    check_form({"jb_rate": "2", "jb_process": "poisson", "jb_chat": "false", "user_count": "1"}, options())


def test_the_table_says_what_each_phase_is_and_what_went_wrong():
    assert [r["figure"] for r in table_rows({"phase": "idle"})] == ["State"]
    failed = table_rows({"phase": "failed", "error": "the replay could not start: t.csv line 3: bad", "run_dir": "/r",
                         "window": {}, "monitor": None})  # fmt: skip
    rows = {r["figure"]: r for r in failed}
    assert rows["Error"]["value"].endswith("line 3: bad") and rows["Energy"]["value"] == "no monitor"
    live = {"phase": "final", "run_dir": "/r", "monitor": "http://m", "window": {"base_s": 10.0, "end_s": 20.0},
            "figures": {"energy_j": 50.0, "uncertainty_j": 0.5, "input_tokens": 30, "output_tokens": 10,
                        "j_per_output_token": 5.0, "j_per_token": 1.25, "kind": "host", "sources": ["estimate"]},
            "kind": "host", "note": "an estimate"}  # fmt: skip
    rows = {r["figure"]: r for r in table_rows(live)}
    assert rows["J / token"]["value"] == "1.250" and rows["Source"]["note"] == "an estimate"
    assert rows["Window"]["value"].endswith("(10.0 s)") and "Current power" not in rows
    simulated = table_rows(live | {"kind": "gpu", "simulated": ["a fake GPU"], "note": "Simulated, not measured: …"})
    source = {r["figure"]: r for r in simulated}["Source"]
    assert source["value"] == "gpu (estimate, simulated)" and source["note"].startswith("Simulated, not measured")
    section = add_report_section("<html><body><div id=root></div></body></html>", live)
    assert section.index("Energy (joulebench)") < section.index("<div id=root>") and "1.250" in section


def test_the_table_shows_one_premium_with_the_mixes_beside_it_and_none_without_prices():
    ref = {"run_id": "r1", "workload": {"trace": "azure-conv"}, "energy_j": 600.0, "uncertainty_j": 6.0,
           "input_tokens": 400.0, "output_tokens": 100.0, "j_per_token": 1.2,
           "prices": {"prefill_per_decode_token": 0.5, "uncertainty": 0.1, "r2": 0.99, "rows": 40, "groups": 1,
                      "method": "the fit's residuals"}}  # fmt: skip
    figures = {"energy_j": 900.0, "uncertainty_j": 9.0, "input_tokens": 300, "output_tokens": 300}
    live = {"phase": "final", "run_dir": "/r", "monitor": "http://m", "window": {"base_s": 10.0, "end_s": 20.0},
            "figures": figures, "reference": ref, "premium": premiums(figures, ref),
            "options": {"jb_trace": "azure-conv"}}  # fmt: skip
    rows = {r["figure"]: r for r in table_rows(live)}
    assert rows["Premium"]["value"].startswith("1.000 ± ")  # its energy is its work at the reference's prices
    assert rows["Input ÷ output tokens"]["value"] == "1.00 (reference 4.00)"
    assert rows["Reference prices"]["value"] == "r = 0.500 ± 0.10; b = 2.000 ± 0.020 J"
    assert "Premium per token" not in rows and "Premium per output token" not in rows
    assert {r["figure"]: r for r in table_rows(live | {"estimated": True})}["Premium"]["value"] == "1.000"
    unpriced = ref | {"prices": None}
    rows = {r["figure"]: r for r in table_rows(live | {"reference": unpriced, "premium": premiums(figures, unpriced)})}
    assert rows["Premium"]["value"] == "–" and rows["Premium"]["note"] == NO_PRICES
    assert rows["Reference prices"]["value"] == "none"
