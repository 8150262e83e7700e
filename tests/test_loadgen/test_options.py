"""The replay's options, checked before any traffic: nonsense is a one-line error naming the option, and no
schedule can exhaust memory. Targets are normalised. Pure: no server."""

from __future__ import annotations

import argparse
import math

import pytest

from loadgen.cli import validate_locust
from loadgen.client import normalize_target
from loadgen.errors import LoadgenError
from loadgen.options import CHOICES, LOCUST_OPTIONS, MAX_REQUESTS, OPTIONS, build_schedule, check_options


def options(tmp_path, **kw) -> argparse.Namespace:
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},10,5\n" for i in range(20)))
    base = {name: default for name, (default, _) in OPTIONS.items()}
    return argparse.Namespace(**{**base, "jb_trace": str(trace), **kw})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"jb_duration": 0.0}, "--duration 0.0: give seconds > 0"),
        ({"jb_duration": -5.0}, "--duration -5.0: give seconds > 0"),
        ({"jb_duration": math.inf}, "--duration inf"),
        ({"jb_rate": math.nan}, "--rate nan: give a finite number > 0"),
        ({"jb_rate": 0.0}, "--rate 0.0"),
        ({"jb_cv": -1.0}, "--cv -1.0"),
        ({"jb_timeout": 0.0}, "--timeout 0.0: give seconds > 0"),
        ({"jb_timeout": -1.0}, "--timeout -1.0"),
        ({"jb_max_model_len": 1}, "--max-model-len 1: give 0 (the server's) or a context of at least 2 tokens"),
        ({"jb_max_model_len": -3}, "--max-model-len -3"),
        ({"jb_vocab": 2}, "--vocab 2"),
        ({"jb_first": -1}, "--first -1"),
        ({"jb_first": MAX_REQUESTS + 1}, f"--first {MAX_REQUESTS + 1}"),
        ({"jb_seed": -1}, "--seed -1: give an integer ≥ 0"),
        ({"jb_start": math.nan}, "--start nan"),
        ({"jb_process": "zigzag"}, "--process 'zigzag': give one of trace, trace-resample, poisson"),
        ({"jb_overlong": "trim"}, "--overlong 'trim': give one of drop, clip, error"),
        ({"jb_records": " "}, "--records ' ': give a path"),
        ({"jb_columns": "start=t"}, "--columns 'start=t': give KEY=COLUMN"),
        ({"jb_columns": "input=n", "jb_trace": "azure-conv"}, "--columns is for a CSV/JSONL path"),
        ({"jb_monitor": "ftp://x"}, "--monitor 'ftp://x': give http(s)://HOST[:PORT]"),
        ({"jb_steady_s": 5.0}, "--steady-s ends a closed loop: give --process saturate with it"),
        ({"jb_send_s": 5.0, "jb_process": "poisson"}, "--send-s ends a closed loop: give --process saturate"),
        ({"jb_steady_s": -1.0, "jb_process": "saturate"}, "--steady-s -1.0: give seconds ≥ 0"),
    ],
)
def test_nonsense_is_one_line_naming_the_option(tmp_path, kw, message):
    with pytest.raises(LoadgenError) as err:
        check_options(options(tmp_path, **kw))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_locust_names_its_own_flags(tmp_path):
    with pytest.raises(LoadgenError, match=r"^--jb-rate nan"):
        check_options(options(tmp_path, jb_rate=math.nan), locust=True)
    check_options(options(tmp_path))  # the defaults are valid


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        # 536 GiB of arrivals before: refused from the estimate, before a byte is drawn
        ({"jb_process": "poisson", "jb_rate": 1e12}, r"poisson at rate 1e\+12 would draw about 6e\+13 arrivals"),
        ({"jb_process": "constant", "jb_rate": 1e12}, r"constant at rate 1e\+12 would draw"),
        ({"jb_process": "trace-resample", "jb_rate": 1e9}, r"trace-resample at rate 1e\+09 would draw"),
        ({"jb_process": "trace-resample", "jb_rate": 1e-9, "jb_first": 10}, r"trace-resample at rate 1e-09"),
        ({"jb_process": "poisson", "jb_rate": 1e-9, "jb_first": 10}, r"would last more than 30 days"),
        ({"jb_rate": 1e-300, "jb_first": 10}, r"would last more than 30 days"),
        ({"jb_max_model_len": 12}, r"no request to replay from --start 0 s: 20 of 20 requests .* dropped"),
        ({"jb_start": 1e6}, r"no request to replay from --start 1e\+06 s$"),
    ],
)
def test_no_schedule_can_exhaust_memory_or_outlast_a_month(tmp_path, kw, message):
    with pytest.raises(LoadgenError, match=message):
        build_schedule(options(tmp_path, **kw))


def test_a_fixed_workload_at_a_high_rate_draws_about_its_size(tmp_path):
    _, schedule = build_schedule(options(tmp_path, jb_process="poisson", jb_rate=1e9, jb_first=10))
    assert len(schedule) == 10  # before: 2n/rate + 10 s of arrivals, 10¹⁰ draws at this rate


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("localhost:8000/v1", "http://localhost:8000"),
        ("http://h:1/v1/", "http://h:1"),
        ("https://api.example.com/llm/v1", "https://api.example.com/llm"),
        (" http://[::1]:9/ ", "http://[::1]:9"),
    ],
)
def test_targets_are_normalised(given, url):
    assert normalize_target(given) == url


@pytest.mark.parametrize("given", ["http://h:70000", "h:0", "ftp://h", ":80", "http://h:port", "https://"])
def test_a_bad_target_is_one_line(given):
    with pytest.raises(LoadgenError, match=r"^--target "):
        normalize_target(given)


def test_joulebench_locust_checks_the_replay_options_before_starting_locust():
    validate_locust(["--headless", "--jb-rate", "2", "-u", "1", "--jb-trace=x.csv"])
    for extra, message in [
        (["--jb-rate", "nan"], "--jb-rate nan"),
        (["--jb-duration", "0"], "--jb-duration 0.0"),
        (["--jb-first", "x"], "argument --jb-first: invalid int value: 'x'"),
        (["--host", "http://h:99999"], "--host 'http://h:99999'"),
    ]:
        with pytest.raises(LoadgenError, match=message):
            validate_locust(extra)


def test_the_options_come_in_the_order_a_person_fills_them_and_locust_keeps_runs_in_directories():
    assert list(OPTIONS)[:5] == ["jb_trace", "jb_process", "jb_rate", "jb_duration", "jb_first"]
    assert "jb_records" not in LOCUST_OPTIONS and "jb_append" not in LOCUST_OPTIONS
    assert LOCUST_OPTIONS["jb_runs_dir"][0] == "runs" and "jb_runs_dir" not in OPTIONS
    assert "saturate" in CHOICES["jb_process"] and "azure-conv" in CHOICES["jb_trace"]
    with pytest.raises(LoadgenError, match="--jb-runs-dir ' ': give a folder"):
        validate_locust(["--jb-runs-dir", " "])
