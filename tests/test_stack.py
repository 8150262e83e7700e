"""The compose stack's monitoring, for real: Debian's Prometheus with the stack's own config and rules
scrapes the monitor (its own process; a fake GPU at the NVML boundary, plus the CPU estimate), vLLM's
CPU build serving the tiny preset, and Locust's master over two workers replaying a trace. Every panel
query of every dashboard must return data, and the J/token recording rule must agree with the report's
figure for the same window."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import httpx2
import pytest
import yaml
from paths import FAKE_GPU, ROOT
from synthetic import azure_trace

from compare.attribution import tokens_in_window
from joulebench.processes import Child, free_port
from loadgen.records import read_records
from monitor.meter import MonitorClient
from server.launch import VllmServer
from server.models import resolve_model
from server.options import EngineOptions

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (make test-tools, as root)"),
]

REQUESTS, SECONDS = 150, 75.0  # 2 requests a second
RULE_WINDOW_S = 60.0  # the [1m] of joulebench:joules_per_token:rate1m
SCRAPE_S = 1.0


def prometheus_config(tmp: Path, targets: dict[str, str]) -> Path:
    """The stack's prometheus.yml and rules.yml, with this test's addresses for the compose hostnames."""
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    shutil.copy(ROOT / "dashboards" / "prometheus" / "rules.yml", tmp / "rules.yml")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml"


def wait_http(url: str, timeout_s: float, child: Child) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        if child.poll() is not None:
            raise child.failed("exited")
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:.0f} s"
        time.sleep(0.3)


def loadgen_counts(url: str) -> dict[str, float]:
    text = httpx2.get(f"{url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("joulebench_loadgen_requests_"):
            name, value = line.split()
            key = name.removeprefix("joulebench_loadgen_requests_").split("{")[0]
            out[key] = out.get(key, 0.0) + float(value)  # finished: summed over its statuses
    return out


def instant(prom: str, expr: str, at_s: float) -> list[dict]:
    r = httpx2.get(f"{prom}/api/v1/query", params={"query": expr, "time": at_s}, timeout=10).json()
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            out += [(d["title"], f"{p['title']} [{t['refId']}]", t["expr"]) for t in p["targets"]]
    return out


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
        wait_http(f"{prom}/-/ready", 60, children[-1])
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
        wait_http(ui, 60, children[1])

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

        # Every panel query of every dashboard: no PromQL error, and data.
        for dashboard, panel, expr in panel_queries():
            q = expr.replace("$gpu", ".*").replace("$model", ".*").replace("$__range", "60s")
            result = instant(prom, q, at)
            values = [float(s["value"][1]) for s in result]
            assert any(math.isfinite(v) for v in values), f"{dashboard} / {panel}: no data for {q}"
        # The dashboard variables' label_values queries.
        for label, metric, want in (("gpu", "joulebench_gpu_power_watts", ["0"]),
                                    ("model_name", "vllm:num_requests_running", ["tiny"])):  # fmt: skip
            r = httpx2.get(f"{prom}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10).json()
            assert r["data"] == want

        # The J/token rule against the report's figure: the monitor's window energy over the tokens the
        # records put in the window (prefill and decode), for the window the rule evaluated.
        (sample,) = instant(prom, "timestamp(joulebench:joules_per_token:rate1m)", at)
        t1 = float(sample["value"][1])
        (rule,) = instant(prom, "joulebench:joules_per_token:rate1m", t1)
        rule_j = float(rule["value"][1])
        meter = MonitorClient(monitor_url)

        t0 = t1 - RULE_WINDOW_S
        reading = meter.energy(t0, t1)
        figure = reading.energy_j / sum(tokens_in_window(records, t0, t1))
        # Within the scrape resolution: Prometheus sees each counter only at scrapes, so either edge of its
        # window may be off by up to one scrape interval, for the joules and for the tokens. The band is
        # the fewest joules over the most tokens to the most joules over the fewest, plus the monitor's
        # own uncertainty.
        inner, outer = (t0 + SCRAPE_S, t1 - SCRAPE_S), (t0 - SCRAPE_S, t1 + SCRAPE_S)
        low = (meter.energy(*inner).energy_j - reading.uncertainty_j) / sum(tokens_in_window(records, *outer))
        high = (meter.energy(*outer).energy_j + reading.uncertainty_j) / sum(tokens_in_window(records, *inner))
        print(f"J/token: rule {rule_j:.5f}, report {figure:.5f}, scrape band [{low:.5f}, {high:.5f}]")
        assert low <= rule_j <= high
    finally:
        for child in reversed(children):
            child.stop()
        vllm.stop()
