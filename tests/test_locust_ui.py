"""Locust's web UI with joulebench's replay: the start form's fields and the live Energy tab."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from servers import mock_server

pytestmark = pytest.mark.integration

PLUGIN = Path(__file__).resolve().parents[1] / "loadgen" / "locustfile.py"  # not imported: it monkey-patches


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
                [sys.executable, "-m", "locust", "-f", str(PLUGIN), "--web-host", "127.0.0.1", "--web-port", str(port),
                 "--host", url, "--jb-trace", str(trace), "--jb-duration", "30", "--jb-monitor", monitor_url.group(1),
                 "--jb-records", str(tmp_path / "requests.jsonl")],
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
            finally:
                ui.terminate()
                ui.wait(timeout=30)
        finally:
            monitor.terminate()
            monitor.wait(timeout=30)
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) >= counted  # records were written too
