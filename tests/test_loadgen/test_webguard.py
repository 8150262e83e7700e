"""Who may drive Locust's web UI and where its form may point (``loadgen.webguard``): the rules alone, then a
real Locust with joulebench loaded, asked as a page of another origin, a rebinding page and a stranger would."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import httpx2
import pytest
from browser import chromium, needs_chromium
from servers import locust, mock_server, wait_for
from synthetic import azure_trace

from joulebench.processes import free_port
from loadgen.errors import LoadgenError
from loadgen.options import LOCUST_OPTIONS
from loadgen.webguard import PASSWORD_ENV, USER, Confines, confine_form, refusal


def options(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{**{k: d for k, (d, _) in LOCUST_OPTIONS.items()}, "csv_prefix": None, **kw})


@pytest.fixture
def configured(tmp_path) -> tuple[argparse.Namespace, Confines]:
    (tmp_path / "traces").mkdir()
    opts = options(jb_trace=str(tmp_path / "traces" / "mine.csv"), jb_runs_dir=str(tmp_path / "runs"),
                   jb_monitor="http://127.0.0.1:9400")  # fmt: skip
    return opts, Confines.of(opts, "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("host", "http://10.9.8.7:80", "host 'http://10.9.8.7:80': this Locust sends load to http://127.0.0.1:8000"),
        ("jb_trace", "/etc/passwd", "--jb-trace '/etc/passwd': the form takes a named trace"),
        ("jb_trace", "{tmp}/traces/../secret.csv", "--jb-trace '{tmp}/traces/../secret.csv': the form takes"),
        ("jb_runs_dir", "/tmp/elsewhere", "--jb-runs-dir '/tmp/elsewhere': the form takes {tmp}/runs"),
        ("jb_trace_dir", "/", "--jb-trace-dir '/': the form takes none"),
        ("jb_monitor", "http://169.254.169.254", "--jb-monitor 'http://169.254.169.254': the form takes "
                                                 "http://127.0.0.1:9400"),
        ("csv_prefix", "/tmp/x", "csv_prefix: not a field of the start form"),
    ],
)  # fmt: skip
def test_the_form_stays_where_the_command_line_put_it(configured, tmp_path, field, value, message):
    opts, confines = configured
    with pytest.raises(LoadgenError) as err:
        confine_form({field: value.format(tmp=tmp_path)}, opts, confines)
    assert str(err.value).startswith(message.format(tmp=tmp_path)) and "\n" not in str(err.value)


def test_inside_its_confines_the_form_is_free(configured, tmp_path):
    opts, confines = configured
    confine_form({"host": "127.0.0.1:8000/v1", "jb_trace": str(tmp_path / "traces" / "other.jsonl"),
                  "jb_runs_dir": str(tmp_path / "runs" / "mine"), "jb_monitor": "", "user_count": "2",
                  "spawn_rate": "2"}, opts, confines)  # fmt: skip
    confine_form({"jb_trace": "azure-code", "jb_monitor": "http://127.0.0.1:9400/"}, opts, confines)
    with pytest.raises(LoadgenError, match="without --host on its command line, this Locust sends load to this"):
        confine_form({"host": "http://example.com"}, opts, Confines.of(opts, None))
    confine_form({"host": "http://localhost:8000"}, opts, Confines.of(opts, None))


def test_only_a_page_of_the_uis_own_host_may_change_anything():
    post = {"REQUEST_METHOD": "POST", "HTTP_HOST": "ui.example:8089", "wsgi.url_scheme": "http"}
    assert refusal({**post, "HTTP_ORIGIN": "https://ui.example:8089"}, False) is None  # TLS ended by a proxy
    assert refusal(post, False) is None  # no browser: curl, a script
    for origin in ("http://evil.example", "null", "http://ui.example:8090"):
        assert "may not drive this UI" in refusal({**post, "HTTP_ORIGIN": origin}, False)
    assert refusal({**post, "HTTP_ORIGIN": "http://evil.example", "REQUEST_METHOD": "GET"}, False) is None
    assert "is not this machine" in refusal({**post, "REQUEST_METHOD": "GET"}, True)
    assert refusal({**post, "HTTP_HOST": "[::1]:8089", "HTTP_ORIGIN": "http://[::1]:8089"}, True) is None


@pytest.mark.integration
def test_a_page_of_another_origin_cannot_start_or_stop_a_run_nor_read_the_ui(tmp_path):
    (tmp_path / "traces").mkdir()
    trace = azure_trace(tmp_path / "traces" / "trace.csv", n=3, seconds=0.3)
    secret = tmp_path / "secret.csv"
    secret.write_text("SECRET-LINE\n")
    runs, port = tmp_path / "runs", free_port()
    with mock_server("--ttft-ms", "1", "--itl-ms", "1") as url:  # noqa: SIM117
        with locust("--web-port", str(port), "--host", url, "--jb-trace", str(trace), "--jb-runs-dir", str(runs),
                    log=tmp_path / "locust.log"):  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            wait_for("the web UI", lambda: httpx2.get(base, timeout=2).status_code == 200)
            form = {"user_count": 1, "spawn_rate": 1, "host": url}
            evil = "http://evil.example"
            r = httpx2.post(f"{base}/swarm", data=form, headers={"Origin": evil}, timeout=10)
            assert r.status_code == 403 and "same origin only" in r.text
            r = httpx2.post(f"{base}/swarm", data=form, headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
            assert r.status_code == 403
            # a rebinding page: its name resolves here, so its requests are same-origin with itself
            rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
            assert httpx2.post(f"{base}/swarm", data=form, headers=rebound, timeout=10).status_code == 403
            assert httpx2.get(f"{base}/joulebench/live", headers=rebound, timeout=10).status_code == 403
            preflight = httpx2.options(f"{base}/swarm", headers={"Origin": evil, "Access-Control-Request-Method":
                                                                 "POST"}, timeout=10)  # fmt: skip
            read = httpx2.get(f"{base}/joulebench/live", headers={"Origin": evil}, timeout=10)
            for reply in (preflight, read):
                assert not [h for h in reply.headers if h.lower().startswith("access-control-")], reply.headers
            assert read.json() == {"phase": "idle"} and not runs.exists()  # nothing started
            assert httpx2.get(f"{base}/stats/requests", timeout=10).json()["state"] == "ready"

            r = httpx2.post(f"{base}/swarm", data={**form, "jb_trace": str(secret)}, headers={"Origin": base},
                            timeout=10)  # fmt: skip
            assert not r.json()["success"] and f"--jb-trace '{secret}'" in r.json()["message"]
            assert "SECRET" not in r.json()["message"]
            r = httpx2.post(f"{base}/swarm", data={**form, "jb_runs_dir": str(tmp_path / "made")}, timeout=10)
            assert not r.json()["success"] and not (tmp_path / "made").exists()
            r = httpx2.post(f"{base}/swarm", data={**form, "host": "http://10.9.8.7"}, timeout=10)
            assert not r.json()["success"] and "sends load to" in r.json()["message"]

            r = httpx2.post(f"{base}/swarm", data=form, headers={"Origin": base, "Sec-Fetch-Site": "same-origin"},
                            timeout=10)  # fmt: skip
            assert r.json()["success"], r.text
            wait_for("the run's end", lambda: httpx2.get(f"{base}/joulebench/live").json()["phase"] == "final")


@pytest.mark.integration
def test_with_web_login_only_the_operator_drives_the_ui(tmp_path, monkeypatch):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    refused = subprocess.run([sys.executable, "-m", "joulebench", "locust", "--web-login", "--web-port", str(port)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and f"set {PASSWORD_ENV}" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-of-the-operator")
    with locust("--web-login", "--web-port", str(port), "--host", "http://127.0.0.1:9", "--jb-runs-dir",
                str(tmp_path / "runs"), log=tmp_path / "locust.log"):  # fmt: skip
        wait_for("the web UI", lambda: httpx2.get(f"{base}/login", timeout=2).status_code == 200)
        with httpx2.Client(base_url=base, timeout=10) as stranger:
            assert stranger.get("/").status_code == 302  # to the login page
            assert stranger.get("/joulebench/live").status_code == 302
            r = stranger.post("/swarm", data={"user_count": 1, "spawn_rate": 1})
            assert r.status_code == 302 and not (tmp_path / "runs").exists()
            r = stranger.post("/joulebench/login", data={"username": USER, "password": "guess"})
            assert r.status_code == 302 and r.headers["location"].endswith("/login")
            assert stranger.get("/joulebench/live").status_code == 302
            assert stranger.get("/metrics").status_code == 200  # Prometheus scrapes it: counts, no control
        with httpx2.Client(base_url=base, timeout=10) as operator:
            r = operator.post("/joulebench/login", data={"username": USER, "password": os.environ[PASSWORD_ENV]})
            assert r.status_code == 302
            assert operator.get("/joulebench/live").json() == {"phase": "idle"}
            assert "window.templateArgs" in operator.get("/").text


@pytest.mark.integration
@needs_chromium
def test_a_page_of_another_origin_in_chromium_cannot_start_a_run(tmp_path):
    """A real browser: a page served from another origin (another port) posts Locust's start form as soon as
    it loads, as a hostile page would. Before, the run started."""
    import functools
    import http.server
    import threading

    trace = azure_trace(tmp_path / "trace.csv", n=3, seconds=0.3)
    port, runs = free_port(), tmp_path / "runs"
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with mock_server("--ttft-ms", "1", "--itl-ms", "1") as url, http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), handler
    ) as hostile:  # fmt: skip
        threading.Thread(target=hostile.serve_forever, daemon=True).start()
        (site / "index.html").write_text(
            f'<form id="f" method="POST" action="http://127.0.0.1:{port}/swarm"><input name="user_count" value="1">'
            f'<input name="spawn_rate" value="1"><input name="host" value="{url}"></form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        with locust("--web-port", str(port), "--host", url, "--jb-trace", str(trace), "--jb-runs-dir", str(runs),
                    log=tmp_path / "locust.log"):  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            wait_for("the web UI", lambda: httpx2.get(base, timeout=2).status_code == 200)
            driver = chromium(tmp_path)
            try:
                driver.get(f"http://127.0.0.1:{hostile.server_address[1]}/")
                wait_for("the form's post", lambda: driver.current_url.startswith(f"{base}/swarm"))
                assert "same origin only" in driver.page_source
            finally:
                driver.quit()
                hostile.shutdown()
            assert httpx2.get(f"{base}/joulebench/live", timeout=10).json() == {"phase": "idle"}
            assert httpx2.get(f"{base}/stats/requests", timeout=10).json()["state"] == "ready" and not runs.exists()
