"""Headless replay (Locust as a library) against the real mock server: counts, records, signals, bad input,
failing requests, overlong requests, targets, chat calibration, the monitor, run ids."""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
from paths import LOCUSTFILE
from servers import joulebench, mock_server, monitor, running, self_signed_certificate, wait_for

from loadgen.records import read_records

pytestmark = pytest.mark.integration


@pytest.fixture
def trace(tmp_path) -> str:
    """A small trace of its own, so the test does not depend on the shared files."""
    p = tmp_path / "trace.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.1},{50 + i},{5 + i % 7}\n" for i in range(30))
    )
    return str(p)


def replay(url: str, records: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "joulebench", "replay", "--target", url, "--records", str(records), *args]


def test_replays_a_schedule_and_records_every_request(tmp_path, trace):
    records, summary = tmp_path / "run" / "requests.jsonl", tmp_path / "summary.json"
    with mock_server("--ttft-ms", "10", "--itl-ms", "1") as url:
        run = subprocess.run(
            replay(
                url,
                records,
                "--trace",
                trace,
                "--process",
                "constant",
                "--rate",
                "20",
                "--duration",
                "2",
                "--summary",
                str(summary),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = read_records(records)
    assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
    assert all(r["usage_output_tokens"] == r["output_tokens"] for r in rows)
    s = json.loads(summary.read_text())
    assert s["requests"] == 40 and s["achieved_rate_per_s"] == pytest.approx(20.0, rel=0.05)
    assert s["schedule_lag_s"]["p99"] < 0.05
    assert "40/40 ok" in run.stdout


def test_saturate_keeps_its_requests_in_flight_and_drops_none(tmp_path, trace):
    """Closed loop: three in flight from the first send to the last, every request sent once, each of the
    later ones as a slot frees."""
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "20", "--itl-ms", "5") as url:
        run = subprocess.run(replay(url, records, "--trace", trace, "--process", "saturate", "--concurrency", "3",
                                    "--first", "30"), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rs = read_records(records)
    assert len(rs) == 30 and {r["status"] for r in rs} == {"ok"} and len({r["trace_index"] for r in rs}) == 30
    events = sorted([(r["sent_s"], 1) for r in rs] + [(r["last_token_s"], -1) for r in rs])
    in_flight = np.cumsum([d for _, d in events])
    assert in_flight.max() == 3
    last_send = max(r["sent_s"] for r in rs)
    # Held: between the third send and the last, a slot is empty only from a request's end to the next send
    # (a moment, stretched when the machine is busy): the time-weighted mean in flight stays near three.
    t = np.array([e for e, _ in events])
    spans = np.diff(np.clip(t, events[2][0], last_send))
    assert float(np.sum(in_flight[:-1] * spans) / np.sum(spans)) >= 2.5
    ends = sorted(r["last_token_s"] for r in rs)
    for k, r in enumerate(sorted(rs, key=lambda r: r["sent_s"])[3:]):
        assert r["sent_s"] >= ends[k] - 1e-3  # the k-th later send waits for the k-th end


def test_a_closed_loop_with_send_s_stops_sending_and_lets_its_requests_finish(tmp_path, trace):
    """``--send-s``: no send after that many seconds of the loop; those in flight end normally (none cut), and
    the rest of the pool is never sent."""
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "50", "--itl-ms", "20") as url:  # ~0.1–0.2 s a request: ~30 in 1 s at 3
        run = subprocess.run(replay(url, records, "--trace", trace, "--process", "saturate", "--concurrency", "3",
                                    "--first", "30", "--send-s", "0.5"), capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rs = read_records(records)
    assert 3 < len(rs) < 30 and {r["status"] for r in rs} == {"ok"}
    first, last = min(r["sent_s"] for r in rs), max(r["sent_s"] for r in rs)
    assert last - first <= 0.5 + 0.05
    assert max(r["last_token_s"] for r in rs) > last  # the last ones were served after the sends stopped


def test_a_closed_loop_with_steady_s_holds_that_much_steady_part_after_its_slowest_first_request(tmp_path):
    """``--steady-s``: sends go on until that long after every request of the start cohort has ended (here one
    of them runs ~1 s, 30 times the others), then stop, those in flight finishing: the steady part
    (``estimands.reference.steady_span``) lasts the seconds asked, the cohort's long request behind it, and the
    rest of the pool is never sent."""
    from estimands.reference import steady_span

    trace = tmp_path / "trace.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n0,20,200\n" + "".join(f"{i},20,5\n" for i in range(1, 3000))
    )
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "10", "--itl-ms", "5") as url:
        run = subprocess.run(replay(url, records, "--trace", str(trace), "--process", "saturate", "--concurrency",
                                    "3", "--first", "3000", "--steady-s", "0.5"), capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rs = read_records(records)
    assert 20 < len(rs) < 3000 and {r["status"] for r in rs} == {"ok"}
    long = next(r for r in rs if r["output_tokens"] == 200)
    assert long["last_token_s"] - long["sent_s"] > 0.9  # the cohort's slow request ran its second
    span = steady_span(rs, 3)
    assert span is not None and span[0] == pytest.approx(long["last_token_s"], abs=1e-6)
    assert 0.5 <= span[1] - span[0] <= 0.5 + 0.3  # the last send: the first slot freed after the 0.5 s


def test_the_trace_own_timestamps_scaled(tmp_path, trace):
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        run = subprocess.run(replay(url, records, "--trace", trace, "--rate", "2", "--duration", "60"),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = sorted(read_records(records), key=lambda r: r["scheduled_s"])
    assert len(rows) == 30
    gaps = [b["scheduled_s"] - a["scheduled_s"] for a, b in itertools.pairwise(rows)]
    assert gaps == pytest.approx([0.05] * 29, abs=1e-6)  # 0.1 s apart in the trace, twice as fast


def test_ctrl_c_keeps_what_finished_and_marks_what_was_in_flight(tmp_path, trace):
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "10", "--itl-ms", "100") as url:
        proc = subprocess.Popen(
            replay(url, records, "--trace", trace, "--process", "constant", "--rate", "20", "--duration", "5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        proc.stderr.readline()  # the line before the schedule starts: from here, not from the (loaded) start-up
        time.sleep(2.0)  # requests take 0.41–1.01 s: some have finished, some are in flight
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    rows = read_records(records)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"ok", "interrupted"} and "interrupted" in statuses and "ok" in statuses
    assert len({r["request_id"] for r in rows}) == len(rows)  # none written twice


@pytest.mark.parametrize("client", ["http.client", "geventhttpclient"])
def test_ctrl_c_ends_a_stream_whose_event_line_never_ends(tmp_path, client):
    """The server sends an event line without end as fast as it is read. Before, parsing it cost the whole line
    so far at each read (``loadgen.sse``): the server refilled the socket meanwhile, http.client's reads never
    waited, so under gevent the hub never took the signal, and the replay ran on without its records."""
    trace = tmp_path / "one.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,40,8\n")
    records = tmp_path / "requests.jsonl"
    with mock_server("--fault", "endless_line", "--record-arrivals", "--ttft-ms", "1", "--itl-ms", "1") as url:  # noqa: SIM117
        with subprocess.Popen(replay(url, records, "--trace", str(trace), "--client", client),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
            try:
                wait_for("the request", lambda: httpx2.get(f"{url}/mock/arrivals", timeout=5).json()["arrivals_s"])
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:  # it ignored the signal: the test fails here, not in a hang
                    proc.kill()
    assert proc.returncode == 130, err[-2000:]
    (row,) = read_records(records)
    assert row["status"] == "interrupted" and row["usage_output_tokens"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://127.0.0.1:9"], "no OpenAI server answers at http://127.0.0.1:9"),
        (["--trace", "/nonexistent.csv"], "/nonexistent.csv: no such trace file"),
        (["--trace", "azure-cnv"], "(the named ones: azure-conv, azure-code) — did you mean azure-conv?"),
        (["--process", "zigzag"], "--process 'zigzag': give one of trace"),
        (["--records", "/dev/full"], "cannot write the request records to /dev/full: No space left on device"),
        (["--duration", "0", "--process", "poisson"], "--duration 0.0: give seconds > 0"),
        (["--duration", "-5"], "--duration -5.0"),
        (["--rate", "nan"], "--rate nan: give a finite number > 0"),
        (["--timeout", "0"], "--timeout 0.0: give seconds > 0"),
        (["--timeout", "-1"], "--timeout -1.0"),
        (["--max-model-len", "1"], "--max-model-len 1: give 0 (the server's) or a context of at least 2 tokens"),
        (["--process", "poisson", "--rate", "1e12"], "poisson at rate 1e+12 would draw about 6e+13 arrivals"),
        (["--process", "constant", "--rate", "1e12"], "constant at rate 1e+12 would draw"),
        (["--target", "http://127.0.0.1:70000"], "--target 'http://127.0.0.1:70000': the port must be a number"),
        (["--summary", "/proc/nope/s.json"], "cannot write the summary to /proc/nope/s.json"),
        (["--monitor", "http://127.0.0.1:9"], "no monitor answers at http://127.0.0.1:9"),
        (["--columns", "timestamp=when"], "line 1: the header has no 'when'"),
    ],
)
def test_bad_input_is_one_line_before_any_traffic(tmp_path, trace, args, message):
    with mock_server("--record-arrivals") as url:
        cmd = replay(url, tmp_path / "r.jsonl", "--trace", trace, *args)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        sent = httpx2.get(f"{url}/mock/arrivals").json()["arrivals_s"]
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert sent == []  # not one request


@pytest.mark.parametrize(
    ("records", "summary", "message"),
    [("r.jsonl", "trace.csv", "--summary {tmp}/trace.csv: that is the trace (--trace): give --summary another path"),
     ("r.jsonl", "r.jsonl", "--summary {tmp}/r.jsonl: that is the records file (--records)"),
     ("r.jsonl", "link.jsonl", "--summary {tmp}/link.jsonl: that is the records file (--records)"),
     ("trace.csv", "s.json", "--records {tmp}/trace.csv: that is the trace (--trace)")],
)  # fmt: skip
def test_the_summary_and_records_never_overwrite_the_trace_or_each_other(tmp_path, trace, records, summary,
                                                                         message):  # fmt: skip
    (tmp_path / "r.jsonl").write_text('{"request_id": "0", "run_id": "earlier"}\n')
    os.link(tmp_path / "r.jsonl", tmp_path / "link.jsonl")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with mock_server("--record-arrivals") as url:
        cmd = replay(url, tmp_path / records, "--trace", trace, "--append", "--summary", str(tmp_path / summary))
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        sent = httpx2.get(f"{url}/mock/arrivals").json()["arrivals_s"]
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert message.format(tmp=tmp_path) in run.stderr and "Traceback" not in run.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and sent == []


def test_a_disk_that_fills_mid_run_leaves_whole_records_and_says_how_many_requests_have_none(tmp_path, trace):
    """The records file may grow to 3000 bytes (RLIMIT_FSIZE: a write past it fails as on a full disk, part of
    it written): before, the file ended in half a record and the replay's stop was a traceback."""
    records = tmp_path / "r.jsonl"
    with mock_server("--ttft-ms", "5", "--itl-ms", "20") as url:
        run = subprocess.run(replay(url, records, "--trace", trace), capture_output=True, text=True, timeout=60,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000)))  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("error") == 1 and "Traceback" not in run.stderr, run.stderr
    m = re.search(r"cannot write the request records to \S+: File too large; (\d+) of the (\d+) requests sent "
                  r"have no record; the records so far are in ", run.stderr)  # fmt: skip
    assert m, run.stderr
    text = records.read_text()
    assert text.endswith("\n") and 0 < len(text) <= 3000
    kept = [json.loads(line) for line in text.splitlines()]  # every line whole
    assert len(kept) == int(m.group(2)) - int(m.group(1)) and int(m.group(1)) >= 1


def test_a_mock_server_port_out_of_range_is_one_line():
    run = joulebench("mock-server", "--port", "70000")
    assert run.returncode == 2
    assert run.stderr.strip() == "joulebench: error: --port 70000: give 1–65535, or 0 for a free one"


def run_replay(url: str, records: Path, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(replay(url, records, *args), capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.parametrize("policy", ["drop", "clip", "error"])
def test_every_overlong_policy_is_printed_and_summarised(tmp_path, trace, policy):
    """The fixture's inputs are 50–79 tokens, outputs 5–11: a 70-token context leaves some out."""
    records, summary = tmp_path / "r.jsonl", tmp_path / "out" / "summary.json"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        run = run_replay(url, records, "--trace", trace, "--max-model-len", "70", "--overlong", policy,
                         "--summary", str(summary))  # fmt: skip
    trace_rows = [tuple(map(int, line.split(",")[1:])) for line in Path(trace).read_text().splitlines()[1:]]
    over = [(i, o) for i, o in trace_rows if i + o > 70]
    share = f"{len(over)} of 30 requests ({100 * len(over) / 30:.1f} %"
    if policy == "error":
        assert run.returncode == 2 and share in run.stderr and "refused" in run.stderr, run.stderr
        assert not summary.exists()
        return
    assert run.returncode == 0, run.stderr[-2000:]
    assert share in run.stdout and ("dropped" if policy == "drop" else "clipped") in run.stdout
    s = json.loads(summary.read_text())  # the summary folder was made
    tokens = sum(i + o for i, o in over)
    assert s["overlong"] == {
        "policy": policy, "max_model_len": 70, "requests": len(over), "tokens": tokens, "of_requests": 30,
        "of_tokens": sum(i + o for i, o in trace_rows), "request_share": len(over) / 30,
        "token_share": tokens / sum(i + o for i, o in trace_rows),
    }  # fmt: skip
    rows = read_records(records)
    assert len(rows) == (30 if policy == "clip" else 30 - len(over))
    clipped = [r for r in rows if r["original_input_tokens"] is not None]
    if policy == "clip":
        assert sorted((r["original_input_tokens"], r["original_output_tokens"]) for r in clipped) == sorted(over)
        assert all(r["input_tokens"] + r["output_tokens"] == 70 and r["status"] == "ok" for r in clipped)
    else:
        assert clipped == []


def test_failed_requests_exit_1_with_every_record_kept(tmp_path, trace):
    records, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0", "--fault", "status:503", "--fault-every", "3") as url:
        run = run_replay(url, records, "--trace", trace, "--summary", str(summary))
    assert run.returncode == 1, run.stderr[-2000:]
    rows = read_records(records)
    assert len(rows) == 30 and sorted(r["status"] for r in rows).count("http_error") == 10
    assert json.loads(summary.read_text())["statuses"] == {"ok": 20, "http_error": 10}


@pytest.mark.parametrize(
    ("fault", "status"),
    [("deep_json", "client_error"), ("not_object", "bad_stream"), ("bad_usage", "bad_stream"),
     ("no_stream", "not_streaming")],
)  # fmt: skip
def test_a_request_whose_handling_fails_is_a_record_and_the_replay_goes_on(tmp_path, trace, fault, status):
    """Before: one request raising inside the client hung the replay forever and lost the records in flight."""
    records = tmp_path / "r.jsonl"
    with mock_server("--ttft-ms", "1", "--itl-ms", "1", "--fault", fault, "--fault-every", "2") as url:
        run = run_replay(url, records, "--trace", trace, timeout=60)
    assert run.returncode == 1, run.stderr[-2000:]
    rows = read_records(records)
    assert len(rows) == 30 and sorted({r["status"] for r in rows}) == sorted({"ok", status})
    assert all(r["error"] for r in rows if r["status"] == status)
    assert "15/30 ok" in run.stdout and "Traceback" not in run.stderr


@pytest.mark.parametrize("form", ["{host}:{port}", "http://{host}:{port}/v1", "http://{host}:{port}/v1/"])
def test_a_target_without_scheme_or_with_v1_is_the_server(tmp_path, trace, form):
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        host, port = url.removeprefix("http://").split(":")
        run = run_replay(form.format(host=host, port=port), tmp_path / "r.jsonl", "--trace", trace)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "30/30 ok" in run.stdout


def test_a_replay_over_https(tmp_path, trace):
    cert, key = self_signed_certificate(tmp_path)
    with mock_server("--ttft-ms", "1", "--itl-ms", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as url:
        run = run_replay(url, tmp_path / "r.jsonl", "--trace", trace, env={**os.environ, "SSL_CERT_FILE": str(cert)})
    assert url.startswith("https://") and run.returncode == 0, run.stderr[-2000:]
    assert "30/30 ok" in run.stdout


def test_chat_prompts_are_calibrated_before_the_schedule_starts(tmp_path, trace):
    records, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0", "--record-arrivals") as url:
        run = run_replay(url, records, "--trace", trace, "--chat", "--summary", str(summary))
        arrivals = httpx2.get(f"{url}/mock/arrivals").json()["arrivals_s"]
    assert run.returncode == 0, run.stderr[-2000:]
    s = json.loads(summary.read_text())
    before = [t for t in arrivals if t < s["schedule_start_s"]]
    assert len(before) >= 30  # one count per length at least (the fixture's 30 lengths are distinct)
    assert len(arrivals) - len(before) == 30  # inside the schedule: the replay's requests, nothing else
    assert all(r["usage_input_tokens"] == r["input_tokens"] for r in read_records(records))
    assert s["schedule_lag_s"]["p99"] < 0.05


def test_the_monitor_measures_the_run(tmp_path, trace):
    summary = tmp_path / "s.json"
    with running("monitor", "--source", "estimate", "--quiet") as (monitor, monitor_url), mock_server(
        "--ttft-ms", "5", "--itl-ms", "5"
    ) as url:  # fmt: skip
        run = run_replay(url, tmp_path / "r.jsonl", "--trace", trace, "--monitor", monitor_url,
                         "--summary", str(summary))  # fmt: skip
        monitor.terminate()
        monitor.wait(timeout=30)
    assert run.returncode == 0, run.stderr[-2000:]
    e = json.loads(summary.read_text())["energy"]
    assert e["monitor"] == monitor_url and e["kind"] == "host" and e["sources"] == ["estimate"] and e["estimated"]
    assert e["energy_j"] > 0 and e["uncertainty_j"] >= 0
    assert e["average_power_w"] == pytest.approx(e["energy_j"] / (e["end_s"] - e["start_s"]))
    assert e["j_per_output_token"] == pytest.approx(e["energy_j"] / e["output_tokens"]) and e["output_tokens"] > 0
    assert e["j_per_token"] == pytest.approx(e["energy_j"] / (e["input_tokens"] + e["output_tokens"]))
    assert "J/output token; host from estimate (ESTIMATED)" in run.stdout


def test_a_window_the_monitor_saw_only_part_of_says_how_much_it_missed():
    """The run's window starts 3 s before the monitor did: its energy is of the rest, and the summary says so
    (before: monitor_gap_s was not given, as if the window were whole)."""
    from loadgen.cli import run_energy
    from monitor.meter import MonitorClient

    with monitor() as (url, started):
        meter = MonitorClient(url)
        late = run_energy(meter, started - 3.0, [{"sent_s": started - 3.0, "last_token_s": started + 1.0}], 10, 10)
        whole = run_energy(meter, started + 1.0, [{"sent_s": started + 1.0, "last_token_s": started + 2.0}], 10, 10)
    assert 3.0 <= late["monitor_gap_s"] < 4.0 and whole["monitor_gap_s"] == 0.0


def test_columns_map_any_csv(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("\ufeffat,prompt,completion\n" + "".join(f"{i * 0.05},{10 + i},{3}\n" for i in range(10)))
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        run = run_replay(url, tmp_path / "r.jsonl", "--trace", str(p), "--columns",
                         "timestamp=at,input=prompt,output=completion")  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(r["input_tokens"] for r in read_records(tmp_path / "r.jsonl")) == list(range(10, 20))


def test_two_runs_share_a_records_file_only_with_append_and_their_run_ids(tmp_path, trace):
    records = tmp_path / "r.jsonl"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        first = run_replay(url, records, "--trace", trace, "--summary", str(tmp_path / "1.json"))
        refused = run_replay(url, records, "--trace", trace)
        second = run_replay(url, records, "--trace", trace, "--append", "--summary", str(tmp_path / "2.json"))
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert refused.returncode == 2 and "already holds records: pass --append" in refused.stderr
    runs = [json.loads((tmp_path / f"{k}.json").read_text()) for k in (1, 2)]
    rows = read_records(records)
    assert runs[0]["run_id"] != runs[1]["run_id"] and {r["run_id"] for r in rows} == {s["run_id"] for s in runs}
    assert [s["requests"] for s in runs] == [30, 30] and len(rows) == 60  # each summary counts its own run


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_right_after_the_start_keeps_and_counts_every_record(tmp_path, trace, sig, code):
    """Before: the summary said 0/0 in 4 of 14 trials (read before the requests in flight were recorded); a
    hang-up (the terminal closed) killed the replay with no record of the requests in flight."""
    records = tmp_path / "r.jsonl"
    with mock_server("--ttft-ms", "10", "--itl-ms", "500") as url:  # no request ends within 2 s
        cmd = replay(url, records, "--trace", trace, "--process", "constant", "--rate", "20", "--duration", "5")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        proc.stderr.readline()  # the line before the schedule starts
        time.sleep(1.0)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    rows = read_records(records)
    assert rows and {r["status"] for r in rows} == {"interrupted"}
    assert f"0/{len(rows)} ok" in out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_workers_split_one_schedule(tmp_path, trace):
    plugin = LOCUSTFILE
    port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(plugin), "--headless"]
    with mock_server("--ttft-ms", "5", "--itl-ms", "1") as url:
        jb = ["--jb-trace", trace, "--jb-process", "constant", "--jb-rate", "30", "--jb-duration", "3",
              "--jb-runs-dir", str(tmp_path)]  # fmt: skip
        master = subprocess.Popen(
            [*common, "--master", "--master-bind-port", str(port), "--expect-workers", "2", "-u", "2", "-r", "2",
             "-t", "12s", "--host", url, *jb],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        workers = [
            subprocess.Popen(
                [*common, "--worker", "--master-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(2)
        ]
        out, _ = master.communicate(timeout=90)
        for w in workers:
            w.wait(timeout=30)
    assert master.returncode == 0, out[-3000:]
    files = sorted(tmp_path.glob("*/requests.worker*.jsonl"))  # the run's own directory
    assert [f.name for f in files] == ["requests.worker0.jsonl", "requests.worker1.jsonl"]
    per_worker = [read_records(f) for f in files]
    assert all(len(rows) == 45 for rows in per_worker)
    ids = [r["request_id"] for rows in per_worker for r in rows]
    assert sorted(ids, key=int) == [str(i) for i in range(90)]  # every request once, none twice
    assert {r["status"] for rows in per_worker for r in rows} == {"ok"}
    starts = [min(r["scheduled_s"] for r in rows) for rows in per_worker]
    assert abs(starts[0] - starts[1]) == pytest.approx(1 / 30, abs=1e-6)  # one schedule, one clock


def test_random_arguments_through_the_replays_whole_run_up(tmp_path, trace):
    """Hypothesis drives ``replay``'s parser and everything it does before traffic (the server, the monitor, the
    trace, the schedule, the records file, the summary's path) against a real server: a one-line error or
    ready to send, never another exception; and not one request sent."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from joulebench.cli import commands
    from joulebench.commands import build_parser
    from joulebench.errors import JoulebenchError
    from loadgen.cli import prepare_replay

    parser = build_parser("joulebench", commands())
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"t": 0, "i": 3, "o": 2}\n{"t": 1, "i": 4, "o": 2}\n')
    values = {
        "--trace": [trace, str(bom), "azure-cnv", "/nonexistent.csv", str(tmp_path)],
        "--columns": ["", "timestamp=t,input=i,output=o", "start=t", "input="],
        "--process": ["trace", "trace-resample", "poisson", "constant", "gamma", "zigzag"],
        "--rate": ["1", "0.5", "1e3", "1e9", "1e-9", "0", "-1", "nan", "inf"],
        "--duration": ["1", "60", "0", "-5", "1e9", "nan"],
        "--first": ["0", "5", "29", "31", "-1", "2000000"],
        "--start": ["0", "1", "1e6", "-1", "nan"],
        "--max-model-len": ["0", "1", "2", "60", "70", "100000", "-3"],
        "--overlong": ["drop", "clip", "error", "trim"],
        "--timeout": ["1", "0", "-1", "1e12", "nan"],
        "--cv": ["0.5", "0", "nan"],
        "--vocab": ["3", "2", "2000"],
        "--seed": ["0", "-1", "7"],
        "--records": [str(tmp_path / "r" / "x.jsonl"), "/dev/full", "/proc/nope/r.jsonl", str(tmp_path)],
        "--summary": [str(tmp_path / "s" / "x.json"), "/proc/nope/s.json", str(tmp_path)],
        "--monitor": ["", "http://127.0.0.1:9", "ftp://x", "127.0.0.1:70000"],
        "--target": ["{url}", "{url}/v1", "{hostport}", "http://127.0.0.1:9", "https://h:0", "[1]"],
    }
    pair = st.sampled_from(sorted(values)).flatmap(lambda f: st.tuples(st.just(f), st.sampled_from(values[f])))
    flags = st.lists(pair, max_size=5).map(lambda ps: [w for p in ps for w in p])
    toggles = st.lists(st.sampled_from(["--append", "--chat"]), max_size=2, unique=True)

    with mock_server("--record-arrivals") as url:
        fill = {"url": url, "hostport": url.removeprefix("http://")}

        @settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(flags, toggles)
        def check(argv: list[str], extra: list[str]) -> None:
            argv = ["replay", "--trace", trace, "--records", str(tmp_path / "r.jsonl"), *extra,
                    *(w.format(**fill) for w in argv)]  # fmt: skip
            args = parser.parse_args(argv)
            try:
                prepare_replay(args)
            except JoulebenchError as err:
                assert str(err) and "\n" not in str(err), err

        check()
        assert httpx2.get(f"{url}/mock/arrivals").json()["arrivals_s"] == []
