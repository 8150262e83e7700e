"""Locust's web UI with joulebench's replay, against the real mock server and a real monitor (its estimate
source): the start form, the Energy tab, the run's window and its end, run directories, Locust's report and
CSV, distributed mode, RESET, a replay that cannot start.

The final figures are checked against the monitor's own ``/v1/energy`` over the window computed here from
the records (first scheduled send → last request's end) and the records' tokens.
"""

from __future__ import annotations

import csv
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
import pytest
from browser import chromium, needs_chromium
from servers import locust, mock_server, monitor, wait_for

from estimands import prices
from estimands.reference import work_price
from joulebench.processes import free_port
from loadgen.records import read_records

pytestmark = pytest.mark.integration

#: The idle baseline needs one 10 s block of the monitor's history before the run.
IDLE_HISTORY_S = 11.0


def write_trace(path: Path, n: int, gap_s: float) -> Path:
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * gap_s},40,8\n" for i in range(n)))
    return path


def expected_figures(monitor_url: str, records: list[dict], start_s: float | None = None) -> dict[str, float]:
    """J/output-token and J/token from the monitor's /v1/energy over the window the records give: first
    scheduled send (or ``start_s``) → last request's end, with the tokens of the requests that ended in it."""
    start = min(r["scheduled_s"] for r in records) if start_s is None else start_s
    end = max(r["last_token_s"] for r in records)
    ok = [r for r in records if r["status"] == "ok" and r["last_token_s"] >= start]
    body = httpx2.get(f"{monitor_url}/v1/energy", params={"start": repr(start), "end": repr(end)}, timeout=10).json()
    energy = sum(d["energy_j"] for d in body["devices"])
    n_out = sum(r["usage_output_tokens"] for r in ok)
    n_in = sum(r["usage_input_tokens"] for r in ok)
    return {"start_s": start, "end_s": end, "energy_j": energy, "j_per_output_token": energy / n_out,
            "j_per_token": energy / (n_in + n_out)}  # fmt: skip


def the_run(runs: Path) -> tuple[Path, dict]:
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    return folder, json.loads((folder / "summary.json").read_text())


def test_a_run_stops_by_itself_and_leaves_its_energy_in_the_run_directory_report_and_csv(tmp_path):
    """One process, started over HTTP as the form does: the run ends when its requests have drained, its
    final figures are the monitor's over its window, and the report, the CSVs and the run directory say so."""
    trace = write_trace(tmp_path / "trace.csv", 30, 0.1)
    runs, html = tmp_path / "runs", tmp_path / "report.html"
    port = free_port()
    with monitor() as (monitor_url, started), mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:  # noqa: SIM117
        with locust(
            "--web-port", str(port), "--host", url, "--jb-trace", str(trace), "--jb-monitor", monitor_url,
            "--jb-runs-dir", str(runs), "--csv", str(tmp_path / "locust"), "--html", str(html),
            log=tmp_path / "locust.log",
        ) as ui:  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            page = wait_for("the web UI", lambda: httpx2.get(base, timeout=2).text)
            assert "joulebench/static/energy.js" in page and "uPlot.iife.min.js" in page
            time.sleep(max(0.0, started + IDLE_HISTORY_S - time.time()))
            r = httpx2.post(f"{base}/swarm", data={"user_count": 5, "spawn_rate": 1, "host": url}, timeout=10)
            assert r.json()["success"], r.text
            live = wait_for("the final figures", lambda: (d := httpx2.get(f"{base}/joulebench/live").json())
                            ["phase"] == "final" and d, timeout_s=60)  # fmt: skip
            assert httpx2.get(f"{base}/stats/requests").json()["state"] == "stopped"  # it stopped by itself
            folder, summary = the_run(runs)
            records = read_records(folder / "requests.jsonl")
            assert len(records) == 30 and {r["run_id"] for r in records} == {live["run_id"]}
            want = expected_figures(monitor_url, records)
            got = summary["energy"]
            assert got["start_s"] == pytest.approx(want["start_s"], abs=1e-6)
            assert got["end_s"] == pytest.approx(want["end_s"], abs=1e-6)
            for key in ("energy_j", "j_per_output_token", "j_per_token"):
                assert got[key] == pytest.approx(want[key], rel=0.01), key
            assert live["figures"]["j_per_output_token"] == got["j_per_output_token"]
            assert got["idle_power_w"] > 0 and got["dynamic_j_per_token"] is not None and got["estimated"]
            assert summary["requests"] == summary["ok"] == 30 and summary["window"]["stopped_by"] == "drained"
            assert {p.name for p in folder.iterdir()} >= {"requests.jsonl", "summary.json", "window.json",
                                                          "energy.csv", "timeline.csv", "config.json"}  # fmt: skip
            report = httpx2.get(f"{base}/stats/report", timeout=10).text
            assert "Energy (joulebench)" in report and str(folder) in report
            download = httpx2.get(f"{base}/joulebench/energy.csv", timeout=10).text
            (row,) = csv.DictReader(download.splitlines())
            assert float(row["j_per_output_token"]) == pytest.approx(got["j_per_output_token"])
            assert (tmp_path / "locust_energy.csv").read_text() == download  # beside Locust's own --csv files
            ui.send_signal(signal.SIGINT)  # Locust writes its --html report on the way out
            ui.wait(timeout=30)
    assert "Energy (joulebench)" in html.read_text() and "J / output token" in html.read_text()


def test_headless_a_run_longer_than_the_monitors_retention_ends_by_itself_with_the_sum_of_its_polls(tmp_path):
    """The monitor keeps 4 s; an 8 s run (headless: Locust exits when the run has drained) still has its
    energy, summed poll by poll, and says how."""
    trace = write_trace(tmp_path / "trace.csv", 40, 0.2)
    runs = tmp_path / "runs"
    with monitor("--retention-s", "4") as (monitor_url, _), mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:
        run = subprocess.run(
            [sys.executable, "-m", "joulebench", "locust", "--headless", "--users", "3", "--host", url,
             "--jb-trace", str(trace), "--jb-monitor", monitor_url, "--jb-runs-dir", str(runs)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    folder, summary = the_run(runs)
    energy = summary["energy"]
    assert energy["how"].startswith("the sum of the polls") and "retention" in energy["how"]
    assert energy["duration_s"] > 7 and energy["energy_j"] > 0 and energy["output_tokens"] == 40 * 8
    assert energy["j_per_output_token"] == pytest.approx(energy["energy_j"] / 320)
    assert energy["idle_power_w"] is None and "no idle baseline" in energy["idle_how"]
    assert summary["requests"] == 40 and summary["window"]["stopped_by"] == "drained"
    assert len(read_records(folder / "requests.jsonl")) == 40  # 3 users asked for, one dispatcher ran


def headless(tmp_path: Path, url: str, trace: Path, *extra: str) -> list[str]:
    return ["--headless", "--host", url, "--jb-trace", str(trace), "--jb-runs-dir", str(tmp_path / "runs"), *extra]


def test_headless_a_run_that_could_not_start_or_write_its_records_exits_2(tmp_path):
    trace = write_trace(tmp_path / "trace.csv", 30, 0.05)
    cmd = [sys.executable, "-m", "joulebench", "locust"]
    nobody = subprocess.run([*cmd, *headless(tmp_path, "http://127.0.0.1:9", trace)], capture_output=True,
                            text=True, timeout=90)  # fmt: skip
    assert nobody.returncode == 2 and "no OpenAI server answers at http://127.0.0.1:9" in nobody.stderr
    with mock_server("--ttft-ms", "5", "--itl-ms", "20") as url:  # the records may grow to 3000 bytes
        full = subprocess.run([*cmd, *headless(tmp_path, url, trace)], capture_output=True, text=True, timeout=90,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000)))  # fmt: skip
    assert full.returncode == 2 and "cannot write the request records" in full.stderr, full.stderr[-3000:]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_headless_a_run_a_signal_cuts_short_exits_128_plus_the_signal(tmp_path, sig, code):
    trace = write_trace(tmp_path / "trace.csv", 200, 0.05)  # 10 s
    with mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:  # noqa: SIM117
        with locust(*headless(tmp_path, url, trace), log=tmp_path / "locust.log") as proc:
            wait_for("records", lambda: any(p.stat().st_size for p in (tmp_path / "runs").glob("*/requests.jsonl")))
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == code, (tmp_path / "locust.log").read_text()[-3000:]
    folder, summary = the_run(tmp_path / "runs")  # the run directory is written, cut short as it is
    rows = read_records(folder / "requests.jsonl")
    assert 0 < len(rows) < 200 and {r["status"] for r in rows} <= {"ok", "interrupted"}  # what was recorded is kept
    assert summary["requests"] == len(rows) and summary["window"]["stopped_by"] == "stop"
    assert (folder / "window.json").exists() and (folder / "energy.csv").exists()


def energy_tab(base: str) -> dict[str, str]:
    """The Energy tab's table as Locust's page gets it: figure → value."""
    (tab,) = httpx2.get(f"{base}/stats/requests", timeout=10).json()["extended_stats"]
    return {r["figure"]: r["value"] for r in tab["data"]}


def gauge(metrics_text: str, name: str) -> float | None:
    m = re.search(rf"^{name}{{[^}}]*}} (\S+)$", metrics_text, re.MULTILINE)
    return None if m is None else float(m.group(1))


def test_a_saturate_run_becomes_the_stacks_reference_kept_across_restarts_and_the_next_run_shows_its_premium(
    tmp_path,
):
    """A saturate run started from the web UI's form (closed loop, 4 in flight) measures the reference: kept
    in the runs folder and published on /metrics; a Locust started later on the same folder publishes it
    again, and a trace run there shows its premium over it in the Energy tab; `joulebench replay
    --process saturate --keep-reference` measures one the same way."""
    trace = write_trace(tmp_path / "trace.csv", 80, 0.05)  # 4 in flight, ~0.2 s a request: a steady part of ~3 s
    runs = tmp_path / "runs"
    with monitor() as (monitor_url, started), mock_server("--ttft-ms", "20", "--itl-ms", "20") as url:
        args = ("--host", url, "--jb-trace", str(trace), "--jb-monitor", monitor_url, "--jb-runs-dir", str(runs))
        port = free_port()
        with locust("--web-port", str(port), *args, log=tmp_path / "locust-1.log"):
            base = f"http://127.0.0.1:{port}"
            wait_for("the web UI", lambda: httpx2.get(base, timeout=2).text)
            assert gauge(httpx2.get(f"{base}/metrics").text, "joulebench_reference_joules_per_token") is None
            time.sleep(max(0.0, started + IDLE_HISTORY_S - time.time()))
            form = {"user_count": 1, "spawn_rate": 1, "host": url, "jb_process": "saturate", "jb_concurrency": 4}
            assert httpx2.post(f"{base}/swarm", data=form, timeout=10).json()["success"]
            live = wait_for("the reference", lambda: (d := httpx2.get(f"{base}/joulebench/live").json())
                            ["phase"] == "final" and d, timeout_s=60)  # fmt: skip
            ref = live["run_reference"]
            assert ref["valid"], ref["reasons"]
            assert ref["concurrency"] == 4 and ref["workload"]["requests"] == 80 and ref["completed"] >= 20
            assert json.loads((runs / "reference.json").read_text())["run_id"] == live["run_id"]
            text = httpx2.get(f"{base}/metrics").text
            assert gauge(text, "joulebench_reference_joules_per_token") == pytest.approx(ref["j_per_token"])
            assert ref["prices"], "a steady part of ~3 s: its saturated prices are fitted"
            r = ref["prices"]["prefill_per_decode_token"]
            assert gauge(text, "joulebench_reference_price_ratio") == pytest.approx(r)
            assert gauge(text, "joulebench_reference_joules_per_work_unit") == pytest.approx(work_price(ref)[0])
            tab = energy_tab(base)  # the Energy tab's table
            assert "Reference J / token" in tab and tab["Reference prices"].startswith("r = ")

        port = free_port()  # a new process on the same runs folder: the reference is still the stack's
        with locust("--web-port", str(port), *args, log=tmp_path / "locust-2.log"):
            base = f"http://127.0.0.1:{port}"
            wait_for("the web UI", lambda: httpx2.get(base, timeout=2).text)
            text = httpx2.get(f"{base}/metrics").text
            assert gauge(text, "joulebench_reference_joules_per_token") == pytest.approx(ref["j_per_token"])
            form = {"user_count": 1, "spawn_rate": 1, "host": url, "jb_process": "trace", "jb_rate": 2}
            assert httpx2.post(f"{base}/swarm", data=form, timeout=10).json()["success"]
            live = wait_for("the run's end", lambda: (d := httpx2.get(f"{base}/joulebench/live").json())
                            ["phase"] == "final" and d, timeout_s=60)  # fmt: skip
            figures, premium = live["figures"], live["premium"]
            assert live["reference"]["run_id"] == ref["run_id"] and premium["reference_run_id"] == ref["run_id"]
            # one premium: the run's energy ÷ its own tokens at the reference's saturated prices
            tokens, ref_tokens = (
                (figures["input_tokens"], figures["output_tokens"]),
                (ref["input_tokens"], ref["output_tokens"]),
            )
            want = prices.premium(figures["energy_j"], tokens, ref["energy_j"], ref_tokens, r)
            assert premium["premium"] == pytest.approx(want)
            assert energy_tab(base)["Premium"].startswith(f"{premium['premium']:#.4g}"[:4])
            page = httpx2.get(f"{base}/stats/report", timeout=10).text
            assert "Premium" in page and "Reference prices" in page and "Reference J / token" in page

        kept = tmp_path / "kept"
        run = subprocess.run(
            [sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace), "--process",
             "saturate", "--concurrency", "4", "--monitor", monitor_url, "--keep-reference", str(kept),
             "--records", str(tmp_path / "requests.jsonl"), "--summary", str(tmp_path / "summary.json")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["reference"]["valid"] and summary["reference"]["kept_in"] == str(kept / "reference.json")
        assert "saturated reference:" in run.stdout and "J/token" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "joulebench", "replay", "--target", "http://127.0.0.1:9",
                          "--keep-reference", str(kept)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "--keep-reference keeps a saturated reference" in bad.stderr


@needs_chromium
def test_a_person_runs_replays_from_the_web_ui_on_two_workers(tmp_path):
    """In headless Chromium, as a person would, on a master with two workers: the form (its fields, their
    order, its choices, its values after a reload, a wrong value refused); a run started with 1 user sends
    every request; the Energy tab's charts grow while it runs; it stops by itself with the monitor's
    figures, the same after a reload; RESET in a second run re-bases energy and tokens together; a trace
    that cannot be read stops a third run with its one-line error on the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = os.environ.get("JB_SCREENSHOTS")  # a folder: screenshots for the README (taken by hand, not in CI)
    trace = write_trace(tmp_path / "trace.csv", 48, 0.5)  # ×2 from the form: 48 requests in 12 s
    runs = tmp_path / "runs"
    web, bus = free_port(), free_port()
    common = ("--master-port", str(bus))
    with monitor() as (monitor_url, started), mock_server("--ttft-ms", "20", "--itl-ms", "5") as url:  # noqa: SIM117
        with locust(
            "--master", "--master-bind-port", str(bus), "--web-port", str(web), "--host", url,
            "--jb-trace", str(trace), "--jb-monitor", monitor_url, "--jb-runs-dir", str(runs),
            log=tmp_path / "master.log",
        ), locust("--worker", *common, log=tmp_path / "worker0.log"), locust(
            "--worker", *common, log=tmp_path / "worker1.log"
        ):  # fmt: skip
            base = f"http://127.0.0.1:{web}"
            wait_for("two workers", lambda: httpx2.get(f"{base}/worker-count", timeout=2).json()["worker_count"] == 2)
            driver = chromium(tmp_path, "--window-size=1400,1300")
            driver.implicitly_wait(10)
            body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731

            def live() -> dict:
                return httpx2.get(f"{base}/joulebench/live", timeout=5).json()

            def open_form() -> None:
                if driver.find_elements(By.XPATH, "//button[normalize-space()='New']"):
                    driver.find_element(By.XPATH, "//button[normalize-space()='New']").click()
                driver.find_element(By.XPATH, "//button[normalize-space()='Custom parameters']").click()

            def field(name: str):
                return driver.find_element(By.XPATH, f"//form//*[@name='{name}']")

            def start(users: str = "1", rate: str = "2") -> str:
                before = live().get("run_id")
                users_field = field("userCount")
                users_field.clear()
                users_field.send_keys(users)
                field("jbRate").clear()
                field("jbRate").send_keys(rate)
                driver.find_element(By.XPATH, "//form//button[@type='submit']").click()
                return wait_for("the run", lambda: (d := live()).get("run_id") != before and d["run_id"])

            def energy_tab() -> None:
                driver.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Energy']").click()

            def final(run_id: str) -> dict:
                return wait_for("the run's end", lambda: (d := live())["run_id"] == run_id and d["phase"] in (
                    "final", "failed") and d, timeout_s=60)  # fmt: skip

            try:
                time.sleep(max(0.0, started + IDLE_HISTORY_S - time.time()))
                driver.get(base)
                open_form()
                fields = driver.find_elements(By.XPATH, "//form//*[starts-with(@name, 'jb')]")
                names = [e.get_attribute("name") for e in fields]
                assert names[:5] == ["jbTrace", "jbProcess", "jbRate", "jbDuration", "jbFirst"], names
                assert str(trace) in [o.text for o in Select(field("jbTrace")).options]
                assert {"azure-conv", "poisson", "saturate"} <= {
                    o.text for n in ("jbTrace", "jbProcess") for o in Select(field(n)).options
                }
                assert field("userCount").get_attribute("value") == "2"  # one dispatcher per worker

                # Run 1 (12 s): the form's user count set to 1, as the issue found it; every request is sent.
                run1 = start(users="1")
                energy_tab()
                first = wait_for("the charts", lambda: int(driver.find_element(By.ID, "jb-cockpit").get_attribute(
                    "data-points") or 0))  # fmt: skip
                wait_for("the charts to grow", lambda: int(driver.find_element(By.ID, "jb-cockpit").get_attribute(
                    "data-points")) > first, timeout_s=10)  # fmt: skip
                wait_for("the live figures", lambda: "J / output token" in body() and "running" in body())
                if shots:
                    driver.save_screenshot(str(Path(shots) / "energy-tab-running.png"))
                done = final(run1)
                assert done["phase"] == "final", done
                wait_for("the page to say so", lambda: "STOPPED" in body().upper() and "final:" in body())
                records = [r for f in sorted((runs / run1).glob("requests.worker*.jsonl")) for r in read_records(f)]
                assert len(records) == 48 and len({r["request_id"] for r in records}) == 48
                metrics = httpx2.get(f"{base}/metrics", timeout=5).text
                assert re.search(r"^joulebench_loadgen_requests_sent_total 48\.0$", metrics, re.M)
                want = expected_figures(monitor_url, records)
                shown = re.search(r"J / output token\s+(\S+)", body()).group(1)
                assert "J (estimated)" in body() and f"J / output token\n{shown} ±" not in body()  # no ± it lacks
                assert float(shown) == pytest.approx(want["j_per_output_token"], rel=0.01)
                assert done["figures"]["j_per_token"] == pytest.approx(want["j_per_token"], rel=0.01)
                if shots:
                    driver.save_screenshot(str(Path(shots) / "energy-tab-final.png"))
                driver.refresh()  # the stored result, not a new reading
                energy_tab()
                wait_for("the final figures after a reload", lambda: f"J / output token\n{shown}" in body()
                         or re.search(rf"J / output token\s+{re.escape(shown)}", body()))  # fmt: skip

                # Run 2 (12 s): RESET mid-run; the final figures are from the RESET on, energy and tokens alike.
                open_form()
                assert field("jbRate").get_attribute("value") in ("2", "2.0")  # kept across the reload
                run2 = start()
                wait_for("requests to finish", lambda: (live().get("figures") or {}).get("output_tokens", 0) > 40)
                driver.find_element(By.XPATH, "//button[normalize-space()='Reset']").click()
                done = final(run2)
                reset_s = done["window"]["reset_s"]
                assert reset_s is not None and done["window"]["base_s"] == reset_s
                records = [r for f in sorted((runs / run2).glob("requests.worker*.jsonl")) for r in read_records(f)]
                want = expected_figures(monitor_url, records, start_s=reset_s)
                assert done["figures"]["output_tokens"] < sum(r["usage_output_tokens"] for r in records)
                assert done["figures"]["j_per_output_token"] == pytest.approx(want["j_per_output_token"], rel=0.01)

                # Run 3: a wrong value is refused at the form; a trace that cannot be read stops the run.
                open_form()
                field("jbDuration").clear()
                field("jbDuration").send_keys("0")
                driver.find_element(By.XPATH, "//form//button[@type='submit']").click()
                wait_for("the form's refusal", lambda: "--jb-duration 0.0: give seconds > 0" in body())
                field("jbDuration").clear()
                field("jbDuration").send_keys("60")
                trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,40,8\n1,forty,8\n")
                run3 = start()
                done = final(run3)
                assert done["phase"] == "failed" and "line 3" in done["error"], done
                banner = wait_for("the banner", lambda: driver.find_element(By.ID, "jb-banner").text)
                assert banner.startswith("joulebench: the replay could not start:") and "line 3" in banner
                assert "Traceback" not in banner and "\n" not in done["error"]
                severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert severe == [], severe
            finally:
                driver.quit()
