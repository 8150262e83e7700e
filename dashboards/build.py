"""Writes the Grafana dashboards (energy.json, serving.json, run.json) from the panel lists below.

The JSON files are committed (Grafana provisions them as they are); edit this file and run
``python dashboards/build.py`` to change them. A test checks the two agree.

Queries use the recording rules in ``prometheus/rules.yml`` for everything energy-per-token, so the
dashboards and the report divide the same joules by the same tokens. Dashboard variables: ``$gpu``
(the monitor's GPUs) and ``$model`` (vLLM's served model); ``$__range`` is the dashboard's time range.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def target(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def panel(
    title: str, unit: str, *targets: dict[str, Any], kind: str = "timeseries", desc: str = "", no_value: str = ""
) -> dict:
    """``no_value``: what the panel says when its queries return nothing (Grafana's "No data" otherwise)."""
    return {"title": title, "unit": unit, "targets": list(targets), "type": kind, "description": desc,
            "no_value": no_value}  # fmt: skip


#: The stack's saturated reference (the Locust exporter's gauges, loadgen/reference.py) and the premium over it.
NO_REFERENCE = "no priced reference yet: start a saturate run"


def quantiles(metric: str, selector: str, window: str = "1m") -> list[dict[str, Any]]:
    return [
        target(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[{window}])))", f"p{p}")
        for q, p in ((0.5, 50), (0.99, 99))
    ]


GPU = '{gpu=~"$gpu"}'
MODEL = '{model_name=~"$model"}'

ENERGY = [
    panel("Power per GPU", "watt",
          target(f"joulebench_gpu_power_watts{GPU}", "{{gpu}} {{kind}}"),
          desc="NVML: instantaneous power (field 186) and the driver's 1 s average."),
    panel("Average power per GPU (energy counter)", "watt",
          target(f"rate(joulebench_gpu_energy_joules_total{GPU}[10s])", "{{gpu}}"),
          desc="The energy counter's increase over 10 s: the ground truth the reports use."),
    panel("Measured power and idle", "watt",
          target("joulebench:power_watts:rate10s", "10 s average"),
          target("joulebench:power_watts:rate1m", "1 min average"),
          target("joulebench:idle_power_watts:min15m", "idle (lowest 10 s average in 15 min)"),
          desc="The measured kind as the report picks it: GPUs, else RAPL, else the CPU estimate."),
    panel("Host CPU power", "watt",
          target("joulebench_cpu_power_watts or joulebench_host_power_watts", "{{zone}}{{source}}"),
          desc="RAPL zones where the CPU has them, else the utilization estimate (not a measurement)."),
    panel("GPU energy in the time range", "joule",
          target(f"sum(increase(joulebench_gpu_energy_joules_total{GPU}[$__range]))", "energy"), kind="stat"),
    panel("J per output token", "joule",
          target("joulebench:joules_per_output_token:rate1m", "J / output token"),
          target("max(joulebench_reference_joules_per_output_token)", "saturated reference"),
          desc="All measured energy over the last minute divided by vLLM's generated tokens (recording rule); "
               "beneath it, the stack's saturated reference (a saturate run's steady part), once one is measured. "
               "A one-minute rate: a run shorter than a minute shares its minute with idle time and reads low "
               "(12–16 % in CI's 75 s run); the Energy tab's figures are over the run's own window."),
    panel("J per token (prompt + output)", "joule",
          target("joulebench:joules_per_token:rate1m", "J / token"),
          target("max(joulebench_reference_joules_per_token)", "saturated reference"),
          desc="All measured energy over the last minute divided by prompt plus generated tokens; beneath it, "
               "the stack's saturated reference. A one-minute rate: it reads low for a run shorter than a minute; "
               "the Energy tab's figures are over the run's own window."),
    panel("Premium over the saturated reference", "suffix:×",
          target("joulebench:premium:rate1m", "premium (same work)"),
          desc="The power over the last minute ÷ what the tokens processed in it cost at the stack's saturated "
               "reference's prices (recording rule): b · (r · input tokens/s + output tokens/s), b the joules of "
               "one output token's worth of work and r a prefill token's cost in output tokens, both from a "
               "saturate run's steady part (the Locust form's process, or `joulebench replay --process saturate "
               "--keep-reference`). How much more serving this traffic costs than the same work on the same "
               "server saturated: one premium whether J/token or J/output-token is divided, the report's "
               "definition. Empty where the reference has no prices (too short a steady part to fit r): no "
               "premium rather than one at an r nobody measured. A premium alone is workload-specific: J/token, "
               "J/output token and the input ÷ output mix are beside it; a reference of another trace compares "
               "workloads, not serving modes.",
          no_value=NO_REFERENCE),
    panel("Input ÷ output tokens", "short",
          target("joulebench:input_output_ratio:rate1m", "live"),
          target("max(joulebench_reference_input_output_ratio)", "saturated reference"),
          desc="vLLM's prompt tokens ÷ generated tokens over the last minute (recording rule), and the saturated "
               "reference's over its steady part: the mixes the premium prices. Where they differ, the ratio of "
               "the live J/token to the reference's is not the premium; the premium prices the live mix."),
    panel("Tokens per joule", "suffix: tok/J", target("joulebench:tokens_per_joule:rate1m", "tokens / J")),
    panel("Idle share", "percentunit", target("joulebench:idle_share:rate1m", "idle share"),
          desc="Idle power over average power: the part of each joule that no token caused."),
    panel("GPU clocks", "hertz",
          target(f"joulebench_gpu_sm_clock_hertz{GPU}", "{{gpu}} SM"),
          target(f"joulebench_gpu_memory_clock_hertz{GPU}", "{{gpu}} memory")),
]  # fmt: skip

SERVING = [
    panel("Requests finished per second", "reqps",
          target(f"sum by (finished_reason) (rate(vllm:request_success_total{MODEL}[30s]))", "{{finished_reason}}")),
    panel("Running and waiting", "short",
          target(f"sum(vllm:num_requests_running{MODEL})", "running"),
          target(f"sum(vllm:num_requests_waiting{MODEL})", "waiting")),
    panel("Time to first token", "s", *quantiles("vllm:time_to_first_token_seconds", MODEL),
          desc="vLLM's histogram: from the request's arrival at the server."),
    panel("Time per output token", "s", *quantiles("vllm:request_time_per_output_token_seconds", MODEL),
          desc="Per request: decode time over output tokens after the first."),
    panel("Tokens per second", "short",
          target(f"sum(rate(vllm:prompt_tokens_total{MODEL}[30s]))", "prompt"),
          target(f"sum(rate(vllm:generation_tokens_total{MODEL}[30s]))", "generated")),
    panel("KV cache usage", "percentunit", target(f"max(vllm:kv_cache_usage_perc{MODEL})", "KV cache")),
]  # fmt: skip

LOADGEN = "joulebench_loadgen"
RUN = [
    panel("Target vs achieved rate", "reqps",
          target(f"sum(rate({LOADGEN}_requests_scheduled_total[10s]))", "target (schedule)"),
          target(f"sum(rate({LOADGEN}_requests_sent_total[10s]))", "sent"),
          target(f'sum(rate({LOADGEN}_requests_finished_total{{status="ok"}}[10s]))', "finished ok"),
          desc="Open loop: requests are sent at their scheduled time whatever the server does."),
    panel("Schedule lag", "s", *quantiles(f"{LOADGEN}_schedule_lag_seconds", ""),
          desc="Send time minus scheduled time. Above a few ms the client, not the server, shapes the traffic."),
    panel("Errors", "percentunit",
          target(f'(sum(rate({LOADGEN}_requests_finished_total{{status!="ok"}}[1m])) or vector(0))'
                 f" / sum(rate({LOADGEN}_requests_finished_total[1m]))", "error share"),
          desc="Finished requests that timed out, failed or came back short."),
    panel("In flight", "short", target(f"sum({LOADGEN}_requests_in_flight)", "in flight")),
    panel("Client time to first token", "s", *quantiles(f"{LOADGEN}_ttft_seconds", ""),
          desc="Measured by the load generator from the send: compare with the Serving dashboard's TTFT."),
    panel("Requests in the time range", "short",
          target(f"sum(increase({LOADGEN}_requests_sent_total[$__range]))", "sent"),
          target(f"sum(increase({LOADGEN}_requests_finished_total[$__range]))", "finished"), kind="stat"),
]  # fmt: skip


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }  # fmt: skip


VARIABLES = {
    "gpu": variable("gpu", "GPU", "label_values(joulebench_gpu_power_watts, gpu)"),
    "model": variable("model", "Model", "label_values(vllm:num_requests_running, model_name)"),
}


#: Each panel type's options in full, as Grafana's own types have them (tests/grafana checks them).
OPTIONS: dict[str, dict[str, Any]] = {
    "timeseries": {
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    },
    "stat": {
        "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
        "percentChangeColorMode": "standard", "showPercentChange": False, "textMode": "auto", "wideLayout": True,
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    },
}  # fmt: skip


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[str]) -> dict[str, Any]:
    out = []
    for i, p in enumerate(panels):
        width = 8 if p["type"] == "stat" else 12
        out.append({
            "id": i + 1, "type": p["type"], "title": p["title"], "description": p["description"],
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": width, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": p["unit"], **({"noValue": p["no_value"]} if p["no_value"] else {})},
                            "overrides": []},
            "options": OPTIONS[p["type"]],
            "targets": [{"refId": chr(65 + k), "datasource": DATASOURCE, **t} for k, t in enumerate(p["targets"])],
        })  # fmt: skip
    return {
        "uid": uid, "title": title, "description": description, "tags": ["joulebench"],
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"}, "timezone": "browser",
        "templating": {"list": [VARIABLES[v] for v in variables]},
        "annotations": {"list": []}, "panels": out,
    }  # fmt: skip


DASHBOARDS = {
    "energy.json": dashboard(
        "joulebench-energy", "joulebench — Energy",
        "Power, energy and live J per token from the joulebench monitor and vLLM's token counters.",
        ENERGY, ["gpu"],
    ),
    "serving.json": dashboard(
        "joulebench-serving", "joulebench — Serving",
        "vLLM: request rate, running and waiting requests, TTFT, TPOT, tokens and KV cache.", SERVING, ["model"],
    ),
    "run.json": dashboard(
        "joulebench-run", "joulebench — Run",
        "The load generator (Locust): target vs achieved rate, schedule lag, errors.", RUN, [],
    ),
}  # fmt: skip


def render(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    for name, d in DASHBOARDS.items():
        (HERE / name).write_text(render(d))
        print(f"wrote {HERE / name}: {len(d['panels'])} panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
