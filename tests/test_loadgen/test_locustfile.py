"""Locust's web UI with joulebench's replay: the start form's fields and the live Energy tab."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from paths import LOCUSTFILE
from servers import mock_server

from joulebench.processes import free_port

pytestmark = pytest.mark.integration


def test_the_web_ui_offers_the_replay_and_shows_live_energy(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.05},40,8\n" for i in range(200)))
    with subprocess.Popen(
        [sys.executable, "-m", "monitor", "--port", "0", "--source", "estimate", "--quiet"],
        stdout=subprocess.PIPE, text=True,
    ) as monitor, mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:  # fmt: skip
        try:
            monitor_url = re.search(r"listening on (\S+)", monitor.stdout.readline() + monitor.stdout.readline())
            assert monitor_url
            port = free_port()
            ui = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1",
                 "--web-port", str(port), "--host", url, "--jb-trace", str(trace), "--jb-duration", "30",
                 "--jb-monitor", monitor_url.group(1), "--jb-records", str(tmp_path / "requests.jsonl")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        page = httpx2.get(base, timeout=2).text
                        break
                    except httpx2.TransportError:
                        assert time.monotonic() < deadline, "the web UI did not start"
                        time.sleep(0.3)
                for field in ("jb_trace", "jb_process", "jb_rate", "jb_duration", "jb_monitor", "joulebench-energy"):
                    assert field in page
                r = httpx2.post(f"{base}/swarm", data={"user_count": 1, "spawn_rate": 1, "host": url}, timeout=10)
                assert r.status_code == 200 and r.json()["success"], r.text
                time.sleep(4.0)
                stats = httpx2.get(f"{base}/stats/requests", timeout=10).json()
                counted = sum(s["num_requests"] for s in stats["stats"] if s["name"] == "Aggregated")
                assert counted > 20
                (tab,) = stats["extended_stats"]
                assert tab["key"] == "joulebench-energy"
                total = tab["data"][-1]
                assert total["device"] == "total (host)" and total["source"] == "estimate"
                assert total["energy_j"] > 0 and total["output_tokens"] > 0 and total["j_per_output_token"] > 0
                metrics = httpx2.get(f"{base}/metrics", timeout=10)
                assert metrics.headers["content-type"].startswith("text/plain")
                values = dict(re.findall(r"^(joulebench_loadgen_\w+_total) (\S+)$", metrics.text, re.M))
                assert float(values["joulebench_loadgen_requests_sent_total"]) > 20
                assert float(values["joulebench_loadgen_requests_scheduled_total"]) >= 20
            finally:
                ui.terminate()
                ui.wait(timeout=30)
        finally:
            monitor.terminate()
            monitor.wait(timeout=30)
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) >= counted  # records were written too


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (`make test` installs them where it runs as root)",
)
def test_a_person_starts_a_replay_from_the_web_ui(tmp_path):
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},40,5\n" for i in range(60)))
    records = tmp_path / "requests.jsonl"
    port = free_port()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(arg)
    with mock_server("--ttft-ms", "5", "--itl-ms", "1") as url, subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port", str(port),
         "--host", url, "--jb-trace", str(trace), "--jb-duration", "60", "--jb-records", str(records)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as ui:  # fmt: skip
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx2.get(f"http://127.0.0.1:{port}", timeout=2)
                    break
                except httpx2.TransportError:
                    assert time.monotonic() < deadline, "the web UI did not start"
                    time.sleep(0.3)
            driver.get(f"http://127.0.0.1:{port}")
            driver.implicitly_wait(10)
            driver.find_element(By.XPATH, "//button[normalize-space()='Custom parameters']").click()
            rate = driver.find_element(By.NAME, "jbRate")  # the replay's own field in Locust's start form
            rate.clear()
            rate.send_keys("4")
            driver.find_element(By.XPATH, "//form//button[@type='submit']").click()
            counted = 0
            deadline = time.monotonic() + 30
            while counted < 8:
                assert time.monotonic() < deadline, driver.find_element(By.TAG_NAME, "body").text
                m = re.search(r"Aggregated\s+(\d+)\s+0\b", driver.find_element(By.TAG_NAME, "body").text)
                counted = int(m.group(1)) if m else 0
                time.sleep(0.5)
            assert "ENERGY" in driver.find_element(By.TAG_NAME, "body").text.upper()
        finally:
            driver.quit()
            ui.terminate()
            ui.wait(timeout=30)
    times = sorted(json.loads(line)["scheduled_s"] for line in records.read_text().splitlines())
    assert len(times) >= 8
    assert times[1] - times[0] == pytest.approx(0.25, abs=1e-6)  # 1 s apart in the trace, ×4 from the form
