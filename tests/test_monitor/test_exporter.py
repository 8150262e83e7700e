"""The exporter's HTTP API over a sampler on fake GPUs, through Starlette's test client."""

from __future__ import annotations

import os
import time

import pynvml
import pytest
from fake_nvml import FakeNvml, make_gpus
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from monitor.exporter import create_app
from monitor.processes import PidRoots, ProcessTree
from monitor.sampler import Sampler
from monitor.sources import EstimateSource, NvmlSource
from monitor.sources.attributed import attribute


@pytest.fixture
def gpus():
    lib = FakeNvml(make_gpus(2, power_w=300.0, period_s=0.05))
    src = NvmlSource(lib=lib, visible_devices=None)
    est = EstimateSource()
    sampler = Sampler([(src, src.open()), (est, est.open())], interval_s=0.005, status_interval_s=0.1)
    with sampler, TestClient(create_app(sampler)) as client:
        time.sleep(0.4)
        yield client, sampler, lib


def wait_stale(sampler: Sampler, index: int) -> None:
    deadline = time.monotonic() + 3
    while not sampler.states()[index].stale:
        assert time.monotonic() < deadline, f"device {index} never went stale"
        time.sleep(0.01)


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_metrics_follow_the_naming_conventions(gpus):
    client, _, lib = gpus
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    energy = m["joulebench_gpu_energy_joules_total"]
    assert {(s.labels["gpu"], s.labels["uuid"]) for s in energy} == {("0", lib.gpus[0].uuid), ("1", lib.gpus[1].uuid)}
    assert all(s.value > 0 for s in energy)
    kinds = {(s.labels["gpu"], s.labels["kind"]): s.value for s in m["joulebench_gpu_power_watts"]}
    assert kinds[("0", "instant")] == pytest.approx(300.0) and kinds[("1", "average")] == pytest.approx(300.0)
    assert m["joulebench_gpu_sm_clock_hertz"][0].value == pytest.approx(1.98e9)
    assert m["joulebench_gpu_power_limit_watts"][0].value == pytest.approx(700.0)
    assert m["joulebench_gpu_utilization_ratio"][0].value == pytest.approx(0.87)
    active = {
        s.labels["reason"] for s in m["joulebench_gpu_throttle_active"] if s.value == 1 and s.labels["gpu"] == "0"
    }
    assert active == {"sw_power_cap"}
    assert m["joulebench_host_power_watts"][0].labels == {"source": "estimate"}
    assert m["joulebench_host_energy_joules_total"][0].value >= 0
    assert m["joulebench_monitor_polls_total"][0].value > 10
    assert m["joulebench_monitor_stale_devices"][0].value == 0
    assert "joulebench_monitor_poll_lag_seconds" in m
    for name in m:
        assert name.startswith("joulebench_")


def test_stale_device_shows_in_metrics_and_health(gpus):
    client, sampler, lib = gpus
    lib.gpus[0].fail(pynvml.NVML_ERROR_TIMEOUT)
    wait_stale(sampler, 0)
    m = samples(client.get("/metrics").text)
    stale = {s.labels["device"]: s.value for s in m["joulebench_device_stale"]}
    assert stale == {"gpu0": 1.0, "gpu1": 0.0, "host": 0.0}
    assert m["joulebench_monitor_stale_devices"][0].value == 1
    health = client.get("/healthz").json()
    assert health["stale_devices"] == ["gpu0"] and health["status"] == "ok"


def test_a_window_a_stale_device_was_not_read_in_is_answered_for_the_others(gpus):
    client, sampler, lib = gpus
    lib.gpus[1].fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    wait_stale(sampler, 1)
    start = sampler.now()
    time.sleep(0.3)
    body = client.get("/v1/energy", params={"start": start, "end": sampler.now() - 0.06}).json()
    by = {d["device"]: d for d in body["devices"]}
    assert by["gpu1"]["stale"] and by["gpu1"]["covered_s"] == 0.0 and by["gpu1"]["energy_j"] == 0.0
    assert not by["gpu0"]["stale"] and by["gpu0"]["covered_s"] > 0.2 and by["gpu0"]["energy_j"] > 0


def test_energy_grows_with_the_window(gpus):
    client, sampler, _ = gpus
    end = sampler.now() - 0.06
    small = client.get("/v1/energy", params={"start": end - 0.1, "end": end}).json()
    large = client.get("/v1/energy", params={"start": end - 0.3, "end": end}).json()
    for a, b in zip(small["devices"], large["devices"], strict=True):
        assert a["device"] == b["device"]
        assert 0 <= a["energy_j"] < b["energy_j"]
        assert a["uncertainty_j"] >= 0
    gpu0 = large["devices"][0]
    assert gpu0["source"] == "nvml" and gpu0["energy_j"] == pytest.approx(90.0, rel=0.25)
    assert gpu0["short_window"] is False and gpu0["samples"] > 0
    one = client.get("/v1/energy", params={"start": end - 0.3, "end": end, "device": "host"}).json()
    assert [d["device"] for d in one["devices"]] == ["host"] and one["devices"][0]["source"] == "estimate"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"end": "1"}, "missing query parameter 'start'"),
        ({"start": "abc", "end": "1"}, "not a number"),
        ({"start": "nan", "end": "1"}, "finite"),
        ({"start": "2", "end": "1"}, "must be after start"),
        ({"start": "0", "end": "4e9"}, "in the future"),
        ({"start": "0", "end": "1000"}, "outside the recorded data"),
        ({"start": "NOW-5e6", "end": "NOW"}, "longer than the retention"),
        ({"start": "NOW-1", "end": "NOW", "device": "gpu7"}, "no device 'gpu7'"),
    ],
)
def test_bad_queries_get_400(gpus, params, message):
    client, sampler, _ = gpus
    now = sampler.now()
    params = {k: str(eval(v.replace("NOW", repr(now)))) if "NOW" in v else v for k, v in params.items()}
    r = client.get("/v1/energy", params=params)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_devices_lists_everything(gpus):
    client, _, lib = gpus
    body = client.get("/v1/devices").json()
    keys = [d["device"] for d in body["devices"]]
    assert keys == ["gpu0", "gpu1", "host"]
    gpu0 = body["devices"][0]
    assert gpu0["uuid"] == lib.gpus[0].uuid and gpu0["status"]["throttle_reasons"] == ["sw_power_cap"]
    assert gpu0["power_w"] == pytest.approx(300.0)


def test_a_simulated_gpu_is_said_so_in_every_answer(gpus):
    client, _, _ = gpus
    assert {d["device"]: d["simulated"] for d in client.get("/v1/devices").json()["devices"]} == {
        "gpu0": None, "gpu1": None, "host": None}  # fmt: skip
    lib = FakeNvml(make_gpus(1, power_w=80.0, period_s=0.05))
    lib.SIMULATED = "a fake GPU"
    src = NvmlSource(lib=lib, visible_devices=None)
    with Sampler([(src, src.open())], interval_s=0.005, status_interval_s=0.1) as s, TestClient(create_app(s)) as c:
        time.sleep(0.4)
        now = s.now()
        assert [d["simulated"] for d in c.get("/v1/devices").json()["devices"]] == ["a fake GPU"]
        energy = c.get("/v1/energy", params={"start": now - 0.3, "end": now}).json()
        assert [d["simulated"] for d in energy["devices"]] == ["a fake GPU"]


def test_the_api_is_read_only(gpus):
    client, _, _ = gpus
    assert client.post("/v1/energy").status_code == 405
    assert client.delete("/metrics").status_code == 405


def test_energy_series_slices_add_up_to_the_window(gpus):
    client, sampler, _ = gpus
    end = sampler.now() - 0.06
    # Both answers must read the same samples and the same learnt power lag: a live sampler may append the
    # sample past `end` or re-learn the lag between the two queries (a loaded CI machine did).
    sampler.stop()
    body = client.get("/v1/energy/series", params={"start": end - 0.3, "end": end, "step": 0.05}).json()
    whole = client.get("/v1/energy", params={"start": end - 0.3, "end": end}).json()
    assert len(body["edges"]) == 7 and body["edges"][0] == pytest.approx(end - 0.3)
    for d, w in zip(body["devices"], whole["devices"], strict=True):
        assert d["device"] == w["device"] and len(d["energy_j"]) == len(d["uncertainty_j"]) == 6
        assert sum(d["energy_j"]) == pytest.approx(w["energy_j"], rel=1e-9)


@pytest.mark.parametrize(
    ("step", "message"), [("0.001", "at least 0.01 s"), ("abc", "not a number of seconds"), (None, "missing")]
)
def test_bad_series_steps_get_400(gpus, step, message):
    client, sampler, _ = gpus
    now = sampler.now()
    params = {"start": now - 0.3, "end": now} | ({"step": step} if step else {})
    r = client.get("/v1/energy/series", params=params)
    assert r.status_code == 400 and message in r.json()["error"]


def test_the_attributed_share_is_labelled_beside_the_host_total():
    est = EstimateSource()
    opened, _ = attribute([(est, est.open())], ProcessTree(PidRoots(os.getpid())))
    sampler = Sampler(opened, interval_s=0.01, status_interval_s=0.1)
    with sampler, TestClient(create_app(sampler)) as client:
        deadline = time.monotonic() + 5.0  # the share needs two host updates and a busy CPU between them
        while "joulebench_attributed_share_ratio" not in (m := samples(client.get("/metrics").text)):
            assert time.monotonic() < deadline, "no share after 5 s"
            time.sleep(0.05)
        labels = {"source": "estimate", "method": "cpu_time_share", "target": f"the process tree of pid {os.getpid()}"}
        for name in ("joulebench_attributed_energy_joules_total", "joulebench_attributed_power_watts",
                     "joulebench_attributed_share_ratio", "joulebench_attributed_processes",
                     "joulebench_attributed_host_idle_watts"):  # fmt: skip
            assert [s.labels for s in m[name]] == [labels], name
        assert m["joulebench_attributed_processes"][0].value == 1
        assert m["joulebench_host_energy_joules_total"][0].labels == {"source": "estimate"}  # the total stays
        now = sampler.now()
        body = client.get("/v1/energy", params={"start": now - 0.3, "end": now}).json()
        by_device = {d["device"]: d for d in body["devices"]}
        assert by_device["attributed"]["kind"] == "attributed" and by_device["attributed"]["method"] == "cpu_time_share"
        assert by_device["host"]["method"] is None
        assert 0 <= by_device["attributed"]["energy_j"] <= by_device["host"]["energy_j"]
        devices = client.get("/v1/devices").json()["devices"]
        assert devices[-1]["method"] == "cpu_time_share" and devices[-1]["status"]["processes"] == 1
