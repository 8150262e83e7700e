"""The compose stack's files: the compose file validates, the Prometheus config and J/token rules (promtool
unit tests on known series), and the Grafana dashboards (Grafana's own types, in sync with their builder,
units, datasource). The live check of every panel query is tests/test_stack.py and tests/test_compose.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from paths import ROOT

DASHBOARDS = ROOT / "dashboards"
GRAFANA_TYPES = ROOT / "tests" / "grafana"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs Debian's prometheus package (make test-tools, as root)"
)


needs_grafana_types = pytest.mark.skipif(
    shutil.which("node") is None or not (GRAFANA_TYPES / "node_modules" / "@grafana" / "schema").is_dir(),
    reason="needs Node.js and npm's @grafana/schema with its checker (make test installs them in tests/grafana)",
)


def compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


needs_compose = pytest.mark.skipif(
    not compose_available(), reason="needs the docker CLI's compose plugin (make test-tools, as root)"
)


def compose_config(profiles: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GRAFANA_", "LOCUST_"))}
    environ.update(COMPOSE_PROFILES=profiles, **env)
    return subprocess.run(
        ["docker", "compose", "--project-directory", str(ROOT), "--env-file", str(ROOT / ".env.example"),
         "config", "--format", "json"],
        capture_output=True, text=True, env=environ, timeout=60,
    )  # fmt: skip


@needs_compose
@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_validates_and_publishes_only_the_two_uis(profile):
    run = compose_config(profile, GRAFANA_ADMIN_PASSWORD="a-password-of-my-own", LOCUST_PASSWORD="and-another")
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"grafana", "locust-master"}
    assert all(p["host_ip"] == "127.0.0.1" for ports in published.values() for p in ports)
    assert {p["target"] for ports in published.values() for p in ports} == {3000, 8089}
    assert services["locust-master"]["environment"]["JOULEBENCH_LOCUST_PASSWORD"] == "and-another"
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "a-password-of-my-own"
    prometheus = " ".join(services["prometheus"]["command"])
    assert "--storage.tsdb.retention.time=15d" in prometheus
    if profile == "gpu":
        vllm = services["vllm"]
        assert vllm["image"].startswith("vllm/vllm-openai:v") and "--load-format dummy" in " ".join(vllm["command"])
        for name in ("vllm", "monitor"):
            (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia"
    else:
        assert "vllm" in services["vllm-cpu"]["networks"]["default"]["aliases"]
        assert "monitor" in services["monitor-cpu"]["networks"]["default"]["aliases"]
        assert "tiny" in services["vllm-cpu"]["command"]


@needs_compose
def test_compose_refuses_to_run_without_a_grafana_or_a_locust_password():
    run = compose_config("cpu", LOCUST_PASSWORD="set")
    assert run.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in run.stderr
    run = compose_config("cpu", GRAFANA_ADMIN_PASSWORD="set")
    assert run.returncode != 0 and "LOCUST_PASSWORD" in run.stderr


def test_the_images_run_as_a_user_and_bake_in_no_secret():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dockerfile.split("\nFROM ")
    assert "USER joulebench" in dockerfile and "useradd --uid 10001" in dockerfile
    assert all("ENV" not in s or "PASSWORD" not in s for s in stages)
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


@needs_promtool
def test_prometheus_config_and_recording_rules():
    check = subprocess.run([PROMTOOL, "check", "config", str(DASHBOARDS / "prometheus" / "prometheus.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    rules = ROOT / "tests" / "prometheus" / "rules_test.yml"
    run = subprocess.run([PROMTOOL, "test", "rules", rules.name], cwd=rules.parent, capture_output=True, text=True)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_prometheus_scrapes_every_second():
    config = yaml.safe_load((DASHBOARDS / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "1s"
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {"monitor": ["monitor:9400"], "vllm": ["vllm:8000"], "locust": ["locust-master:8089"]}


def load_builder():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboards_are_what_the_builder_writes():
    build = load_builder()
    for name, d in build.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text() == build.render(d), f"run: python dashboards/build.py ({name})"


def test_every_panel_has_a_unit_a_query_and_the_provisioned_datasource():
    datasource = yaml.safe_load((DASHBOARDS / "grafana" / "datasource.yml").read_text())["datasources"][0]
    titles = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(path.read_text())
        titles.add(d["title"])
        assert d["uid"].startswith("joulebench-")
        for p in d["panels"]:
            assert p["fieldConfig"]["defaults"]["unit"], (path.name, p["title"])
            assert p["datasource"]["uid"] == datasource["uid"]
            assert p["targets"] and all(t["expr"] and t["datasource"]["uid"] == datasource["uid"] for t in p["targets"])
    assert titles == {"joulebench — Energy", "joulebench — Serving", "joulebench — Run"}
    dashboards = [json.loads(path.read_text()) for path in DASHBOARDS.glob("*.json")]
    assert {v["name"] for d in dashboards for v in d["templating"]["list"]} == {"gpu", "model"}


def grafana_errors(paths: list[Path]) -> dict[str, list[str]]:
    """Each dashboard file's errors against Grafana's own types (tests/grafana/validate.mjs)."""
    run = subprocess.run(["node", str(GRAFANA_TYPES / "validate.mjs"), *map(str, paths)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode in (0, 1) and run.stdout, run.stderr
    return json.loads(run.stdout)


#: A typo in each part Grafana types: (what, the misspelt key, how to make the typo in a dashboard).
TYPOS = [
    ("dashboard", "schemaversion", lambda d: d.__setitem__("schemaversion", d.pop("schemaVersion"))),
    ("panel", "gridPoss", lambda d: d["panels"][0].__setitem__("gridPoss", d["panels"][0].pop("gridPos"))),
    ("field config", "units", lambda d: d["panels"][0]["fieldConfig"]["defaults"].__setitem__("units", "watt")),
    ("timeseries options", "legnd", lambda d: d["panels"][0]["options"].__setitem__("legnd", {})),
    ("stat options", "colourMode", lambda d: d["panels"][4]["options"].__setitem__("colourMode", "value")),
    ("variable", "multiple", lambda d: d["templating"]["list"][0].__setitem__("multiple", True)),
]


@needs_grafana_types
def test_dashboards_are_grafanas_types_and_a_typo_is_not(tmp_path):
    real = sorted(DASHBOARDS.glob("*.json"))
    typod = []
    for what, _, typo in TYPOS:
        d = json.loads((DASHBOARDS / "energy.json").read_text())
        typo(d)
        typod.append(tmp_path / f"{what.replace(' ', '-')}.json")
        typod[-1].write_text(json.dumps(d))
    errors = grafana_errors(real + typod)
    assert {p.name: errors[str(p)] for p in real} == {p.name: [] for p in real}
    for (what, key, _), path in zip(TYPOS, typod, strict=True):
        assert any(key in e for e in errors[str(path)]), (what, errors[str(path)])
