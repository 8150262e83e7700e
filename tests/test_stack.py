"""The compose stack's monitoring, for real: Debian's Prometheus with the stack's own config and rules
scrapes the monitor (its own process; a fake GPU at the NVML boundary, plus the CPU estimate), vLLM's
CPU build serving the tiny preset, and Locust's master over two workers replaying a trace. Every panel
query of every dashboard must return data, and the J/token recording rule must agree with the report's
figure for the same window."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from paths import FAKE_GPU, ROOT
from stack_checks import RULE_WINDOW_S, SCRAPE_S, check_every_panel, loadgen_counts, rule_against_report, wait_http
from synthetic import azure_trace

from joulebench.processes import Child, free_port
from loadgen.records import read_records
from server.launch import VllmServer
from server.models import resolve_model
from server.options import EngineOptions

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (make test-tools, as root)"),
]

REQUESTS, SECONDS = 150, 75.0  # 2 requests a second


def prometheus_config(tmp: Path, targets: dict[str, str]) -> Path:
    """The stack's prometheus.yml and rules.yml, with this test's addresses for the compose hostnames."""
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    shutil.copy(ROOT / "dashboards" / "prometheus" / "rules.yml", tmp / "rules.yml")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml"


def alive(child: Child):
    def check() -> None:
        if child.poll() is not None:
            raise child.failed("exited")

    return check


def test_every_panel_has_data_and_the_rule_agrees_with_the_report(tmp_path):
    trace = azure_trace(tmp_path / "trace.csv", REQUESTS, SECONDS)
    spec = resolve_model("tiny", tmp_path / "models")
    vllm = VllmServer(spec, EngineOptions(max_model_len=1024, max_num_seqs=8), tmp_path / "vllm.log", port=free_port())
    vllm.start()
    children: list[Child] = []
    try:
        vllm.wait_ready(timeout_s=600)
        fake_gpu = FAKE_GPU
        monitor = Child("monitor", [sys.executable, str(fake_gpu), "--", "monitor", "--port", "0", "--source",
                                    "nvml,estimate", "--quiet"], tmp_path / "monitor.log").start()  # fmt: skip
        children.append(monitor)
        monitor_url = monitor.wait_for_line(r"listening on (http://\S+)", 60).group(1)
        web, bus, prom_port = free_port(), free_port(), free_port()
        config = prometheus_config(tmp_path, {
            "monitor": monitor_url.removeprefix("http://"), "vllm": f"127.0.0.1:{vllm.port}",
            "locust": f"127.0.0.1:{web}",
        })  # fmt: skip
        prom = f"http://127.0.0.1:{prom_port}"
        children.append(Child("prometheus", [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log").start())  # fmt: skip
        wait_http(f"{prom}/-/ready", 60, alive(children[-1]))
        locust = [sys.executable, "-m", "joulebench", "locust", "--jb-runs-dir", str(tmp_path)]
        children.append(Child("locust master", [
            *locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(bus),
            "--web-host", "127.0.0.1", "--web-port", str(web), "--autostart", "--expect-workers", "2",
            "--users", "2", "--spawn-rate", "2", "--host", vllm.url, "--jb-trace", str(trace),
            "--jb-duration", str(SECONDS), "--jb-monitor", monitor_url,
        ], tmp_path / "locust-master.log").start())  # fmt: skip
        for i in range(2):
            children.append(Child(f"locust worker {i}", [
                *locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(bus),
            ], tmp_path / f"locust-worker{i}.log").start())  # fmt: skip
        ui = f"http://127.0.0.1:{web}"
        wait_http(ui, 60, alive(children[1]))

        deadline = time.monotonic() + SECONDS + 180
        while (c := loadgen_counts(ui)).get("finished_total", 0) < REQUESTS:
            assert time.monotonic() < deadline, f"the replay did not finish: {c}"
            time.sleep(1.0)
        assert c["scheduled_total"] == c["sent_total"] == REQUESTS and c["in_flight"] == 0
        records = [r for f in sorted(tmp_path.glob("*/requests.worker*.jsonl")) for r in read_records(f)]
        assert len(records) == REQUESTS and {r["status"] for r in records} == {"ok"}
        start = min(r["scheduled_s"] for r in records)
        at = start + RULE_WINDOW_S + 8.0  # inside the replay, with a full minute of traffic behind it
        while time.time() < at + 3 * SCRAPE_S:
            time.sleep(0.5)

        check_every_panel(prom, at, reference=False)
        rule = rule_against_report(prom, monitor_url, records, at)
        print(rule)
        assert rule.low_j <= rule.rule_j <= rule.high_j
    finally:
        for child in reversed(children):
            child.stop()
        vllm.stop()
