"""joulebench in Locust's web UI: the start form, the Energy tab, the report and the CSV.

Through Locust's documented extension points (``extended_tabs``, ``extended_tables``, ``extended_stats``
and ``extended_csv_files``; a Flask blueprint for our own routes and files; ``after_request`` on Locust's
responses, as its ``extend_web_ui`` example does), and nothing else:

- **The form**: Locust lists custom options alphabetically with the command line's values. The page's
  ``templateArgs`` are rewritten on the way out: joulebench's fields in the order a person fills them,
  the trace and the arrival process as choices, the values of the last run started (kept across a
  reload), and the user count one dispatcher per worker (or one).
- **The stop**: a run that stops itself is reported running until it has stopped (``TRANSITIONS``), so
  the page keeps polling and shows the final figures and the stopped state.
- **Who and where** (``loadgen.webguard``): same-origin requests only, Locust's ``--web-login`` checked against
  the operator's password, and the form's host, files and folders confined to what the command line gave.
- **The start**: a ``/swarm`` whose options are wrong is refused with the one-line reason, which Locust
  shows under its form; the user count and spawn rate are set to the dispatchers (every worker gets one,
  so none of the schedule is dropped, whatever the form said).
- **The Energy tab**: Locust renders its figures as a table (``extended_stats``); ``static/energy.js``
  adds the charts above it, drawn with uPlot (vendored under ``static/``, MIT, served from here: no
  CDN), and a banner on every tab when the run failed.
- **The report and CSV**: Locust's HTML report has no extension point, so the energy summary is a
  section added to the page it serves (``/stats/report``, also the download) and to the ``--html`` file
  after Locust writes it; the CSV is a download beside Locust's and ``PREFIX_energy.csv`` with ``--csv``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estimands.reference import NO_PRICES, work_price
from loadgen.arrivals import CLOSED_LOOP
from loadgen.errors import LoadgenError
from loadgen.ledger import figure_rows, fmt, fmt_fixed, with_uncertainty
from loadgen.options import CHOICES, LOCUST_OPTIONS, check_options
from loadgen.rundir import energy_csv
from loadgen.webguard import Confines, SameOrigin, add_login, confine_form, is_loopback

if TYPE_CHECKING:  # importing the cockpit imports Locust, which monkey-patches the process with gevent
    from loadgen.cockpit import Cockpit

ENERGY_TAB = "joulebench-energy"
TABLE = [("figure", "Energy figure"), ("value", "Value"), ("note", "What it is")]
STATIC = Path(__file__).with_name("static")
_MARK = "window.templateArgs = "
#: Locust's page polls its stats only while a run is spawning or running: a run that stops itself passes
#: through these states, and a page that saw one would stop polling and show it for good. They are
#: reported as running until the run has stopped.
TRANSITIONS = ("stopping", "cleanup")
PHASES = {
    "idle": "no run yet: start one from the form",
    "starting": "starting: the schedule has not begun",
    "running": "running",
    "finishing": "finishing: the requests in flight are ending, then the window closes",
    "final": "final: the run's figures over its whole window (the same after a reload)",
    "failed": "stopped by an error",
}


def htmlsafe_json(data: Any) -> str:
    """JSON that can sit inside a <script> (as Jinja's ``tojson`` writes it)."""
    text = json.dumps(data)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(ch, esc)
    return text


#: A saturate run's own fields. After one, the form shows the command line's values for them again: the
#: last start's would make the next START another saturate run, which replaces the stack's reference.
REFERENCE_FIELDS = ("jb_process", "jb_first", "jb_concurrency", "jb_send_s", "jb_steady_s")


def form_args(args: dict[str, Any], options: Any, dispatchers: int) -> dict[str, Any]:
    """Locust's ``templateArgs`` with joulebench's fields in fill order, as choices where they are, with
    the current values (but a saturate run's own, ``REFERENCE_FIELDS``); and the user count the dispatchers'."""
    extra = dict(args.get("extra_options") or {})
    after_reference = getattr(options, "jb_process", None) == CLOSED_LOOP
    ordered: dict[str, Any] = {}
    for name in LOCUST_OPTIONS:
        if name not in extra:
            continue
        entry = dict(extra[name])
        given = entry.get("default_value")  # the command line's
        value = given if after_reference and name in REFERENCE_FIELDS else getattr(options, name, given)
        entry["default_value"] = value
        if name in CHOICES:
            choices = list(CHOICES[name])
            for v in (given, value):
                if v not in (None, "") and str(v) not in choices:
                    choices.insert(0, str(v))
            entry["choices"], entry["default_value"] = choices, str(value)
        ordered[name] = entry
    ordered.update({k: v for k, v in extra.items() if k not in ordered})
    return {**args, "extra_options": ordered, "num_users": dispatchers, "spawn_rate": dispatchers}


def rewrite_index(page: str, options: Any, dispatchers: int, base: str) -> str:
    """Locust's page with ``form_args`` and joulebench's files (the charts, the banner)."""
    at = page.find(_MARK)
    if at < 0:
        return page
    start = at + len(_MARK)
    args, length = json.JSONDecoder().raw_decode(page[start:])
    page = page[:start] + htmlsafe_json(form_args(args, options, dispatchers)) + page[start + length :]
    static = f"{base}/joulebench/static"
    head = f'<link rel="stylesheet" href="{static}/uPlot.min.css"><link rel="stylesheet" href="{static}/energy.css">'
    body = f'<script src="{static}/uPlot.iife.min.js"></script><script src="{static}/energy.js"></script>'
    return page.replace("</head>", head + "</head>", 1).replace("</body>", body + "</body>", 1)


def _convert(name: str, value: str) -> Any:
    flag = "--" + name.replace("_", "-")
    default = LOCUST_OPTIONS[name][0]
    if isinstance(default, bool):
        return value == "true"
    try:
        return type(default)(value)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise LoadgenError(f"{flag} {value!r}: give {kind}") from None


def check_form(form: Any, options: Any) -> None:
    """The start form's joulebench values, checked as the command line's are (a ``LoadgenError``)."""
    merged = argparse.Namespace(**vars(options)) if options is not None else argparse.Namespace()
    for name in LOCUST_OPTIONS:
        if name in form:
            setattr(merged, name, _convert(name, form[name]))
    check_options(merged, locust=True)


def _clock(t: float | None) -> str:
    if t is None:
        return "–"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 10)}"


def table_rows(live: dict[str, Any]) -> list[dict[str, str]]:
    """The Energy tab's table: every figure as text, formatted alike."""
    rows: list[tuple[str, str, str]] = [("State", PHASES.get(live.get("phase", "idle"), ""), "")]
    if live.get("phase", "idle") == "idle":
        return [dict(zip(("figure", "value", "note"), r, strict=True)) for r in rows]
    if live.get("error"):
        rows.append(("Error", live["error"], "the run stopped: fix this and start again"))
    rows.append(("Run directory", live.get("run_dir", ""), "records, summary.json, window.json, energy.csv"))
    w = live.get("window", {})
    start, end = w.get("base_s"), w.get("end_s") or w.get("until_s")
    span = f" ({end - start:.1f} s)" if start is not None and end is not None else ""
    rows.append(
        (
            "Window",
            f"{_clock(start)} → {_clock(end) if w.get('end_s') else 'now'}{span}",
            "first scheduled send → last request's end" + (" (from the RESET)" if w.get("reset_s") else ""),
        )
    )
    if not live.get("monitor"):
        rows.append(("Energy", "no monitor", "start Locust with --jb-monitor URL (a `joulebench monitor`)"))
    else:
        if live.get("monitor_error"):
            rows.append(("Monitor", live["monitor_error"], "the monitor did not answer: retried every poll"))
        if live.get("phase") != "final":
            rows.append(("Current power", fmt_fixed(live.get("current_power_w"), "W"), "over the last 2 s"))
        figures = live.get("figures")
        if figures:
            rows += figure_rows(figures, live.get("idle_note", ""))
        else:
            rows.append(("Energy", "–", live.get("final_error") or "after the first poll of the window"))
            rows.append(("Loaded-idle power", fmt_fixed(live.get("idle_power_w"), "W"), live.get("idle_note", "")))
        rows += reference_rows(live)
        sources = ", ".join((figures or {}).get("sources") or [])
        kind = live.get("kind") or (figures or {}).get("kind") or "–"
        simulated = ", simulated" if live.get("simulated") else ""
        rows.append(("Source", f"{kind} ({sources or '–'}{simulated})", live.get("note") or "measured"))
    return [dict(zip(("figure", "value", "note"), r, strict=True)) for r in rows]


def _reference_line(ref: dict[str, Any]) -> str:
    w = ref.get("workload") or {}
    return (f"saturate run {ref.get('run_id') or '–'} at {_clock(ref.get('measured_at_s'))}, "
            f"{ref.get('concurrency')} in flight, {w.get('trace') or '–'} ({w.get('requests')} requests)")  # fmt: skip


def _prices_row(ref: dict[str, Any]) -> tuple[str, str, str]:
    """The reference's saturated prices (``estimands.reference.work_price``), or why it has none."""
    priced = work_price(ref)
    if priced is None:
        return ("Reference prices", "none", NO_PRICES)
    b, u_b, prices = priced
    u_r = prices.ratio_se if math.isfinite(prices.ratio_se) else None
    return ("Reference prices", f"r = {with_uncertainty(prices.ratio, u_r, 3)}; b = {with_uncertainty(b, u_b)} J",
            "r: a prefill token's cost in output tokens, fitted on its steady part's energy slices; b: the joules "
            "of one output token's worth of work (energy ÷ (r · input + output tokens))")  # fmt: skip


def reference_rows(live: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The stack's reference and this run's premium over it (``estimands.reference``)."""
    run_ref = live.get("run_reference")
    if live.get("measures_reference"):
        if run_ref is None:
            return [("Reference", "measured when the run ends", "this saturate run measures the stack's reference")]
        if not run_ref.get("valid"):
            return [("Reference", "not valid: " + "; ".join(run_ref.get("reasons") or []), "the stored one is kept")]
        return [
            ("Reference J / token", with_uncertainty(run_ref.get("j_per_token"),
                                                     run_ref.get("uncertainty_j_per_token")),
             "its steady part: the start cohort's last end → the last send; now the stack's reference"),
            ("Reference J / output token", with_uncertainty(run_ref.get("j_per_output_token"),
                                                            run_ref.get("uncertainty_j_per_output_token")),
             _reference_line(run_ref)),
            _prices_row(run_ref),
        ]  # fmt: skip
    ref, premium = live.get("reference"), live.get("premium")
    if not ref:
        return [("Premium", "no reference yet", "start a saturate run (process: saturate) to measure the stack's")]
    rows = [("Reference J / token", with_uncertainty(ref.get("j_per_token"), ref.get("uncertainty_j_per_token")),
             _reference_line(ref)), _prices_row(ref)]  # fmt: skip
    if premium:
        if premium.get("premium") is None:
            rows.append(("Premium", "–", premium.get("reason") or ""))
        else:
            # no ± beside an estimate (as its J/token): the model's own error is not known here
            u = None if live.get("estimated") else premium.get("uncertainty_premium")
            rows.append(("Premium", with_uncertainty(premium["premium"], u),
                         "this run's energy ÷ what its own input and output tokens cost at the reference's prices: "
                         "online against the same work saturated, whichever tokens a J/token counts"
                         + _same_workload(live, ref)))  # fmt: skip
        rows.append(("Input ÷ output tokens", f"{fmt(premium.get('input_per_output'), 3)} (reference "
                     f"{fmt(premium.get('reference_input_per_output'), 3)})",
                     "the mix the premium prices, this run's and the reference's steady part's"))  # fmt: skip
    return rows


def _same_workload(live: dict[str, Any], ref: dict[str, Any]) -> str:
    trace = ((live.get("options") or {}).get("jb_trace")) or ""
    theirs = (ref.get("workload") or {}).get("trace") or ""
    return "" if not trace or trace == theirs else f" (the reference replayed {theirs}, this run {trace}: other mixes)"


def report_section(live: dict[str, Any]) -> str:
    """The energy summary as a self-contained HTML section (for Locust's report)."""
    cells = "".join(
        f"<tr><th>{html.escape(r['figure'])}</th><td>{html.escape(r['value'])}</td><td>{html.escape(r['note'])}</td></tr>"
        for r in table_rows(live)
    )
    return (
        '<section id="joulebench-energy" style="max-width:1200px;margin:24px auto;padding:0 24px;'
        'font-family:Roboto,Helvetica,Arial,sans-serif"><h2>Energy (joulebench)</h2>'
        '<table style="border-collapse:collapse" cellpadding="6">' + cells + "</table></section>"
    )


def add_report_section(page: str, live: dict[str, Any]) -> str:
    return page.replace("<body>", "<body>" + report_section(live), 1) if "<body>" in page else page


def extend(environment: Any, cockpit: Cockpit) -> None:
    """Mount joulebench on Locust's web UI."""
    from flask import Blueprint, Response, jsonify, request
    from flask_login import current_user
    from werkzeug.datastructures import ImmutableMultiDict

    web_ui = environment.web_ui
    opts = environment.parsed_options
    base = (getattr(opts, "web_base_path", "") or "").rstrip("/")
    # Taken now: each start writes the form's values into the options and the host.
    confines = Confines.of(opts, environment.host)
    web_ui.app.wsgi_app = SameOrigin(web_ui.app.wsgi_app, is_loopback(getattr(opts, "web_host", "") or ""))
    if web_ui.web_login:
        add_login(web_ui, base)
    web_ui.template_args["extended_tabs"] = [{"title": "Energy", "key": ENERGY_TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": ENERGY_TAB, "structure": [{"key": k, "title": t} for k, t in TABLE]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": f"{base}/joulebench/energy.csv", "title": "Download the energy summary CSV"}
    ]
    blueprint = Blueprint("joulebench", __name__, static_folder=str(STATIC), static_url_path="/static")

    @blueprint.route("/live")
    @web_ui.auth_required_if_enabled
    def live() -> Any:
        return jsonify(cockpit.live())

    @blueprint.route("/energy.csv")
    @web_ui.auth_required_if_enabled
    def download() -> Any:
        data = cockpit.live(series=False)
        figures = data.get("figures")
        response = Response(energy_csv(figures, data.get("run_id", ""), data.get("run_dir", "")), mimetype="text/csv")
        name = f"joulebench_{data.get('run_id', 'none')}_energy.csv"
        response.headers["Content-Disposition"] = f"attachment;filename={name}"
        return response

    web_ui.app.register_blueprint(blueprint, url_prefix=f"{base}/joulebench")

    def dispatchers() -> int:
        from locust.runners import MasterRunner

        runner = environment.runner
        return runner.worker_count if isinstance(runner, MasterRunner) else 1

    @web_ui.app.before_request
    def check_start() -> Any:
        if request.method != "POST" or request.path != f"{base}/swarm":
            return None
        if web_ui.web_login and not current_user.is_authenticated:
            return None  # Locust's own view sends it to the login page: the configuration is not told
        try:
            confine_form(request.form, environment.parsed_options, confines)
            check_form(request.form, environment.parsed_options)
        except LoadgenError as err:
            return jsonify({"success": False, "message": str(err), "host": environment.host})
        n = dispatchers()
        if n == 0:
            message = "no worker has connected yet: start workers with `joulebench locust --worker --master-host …`"
            return jsonify({"success": False, "message": message, "host": environment.host})
        form = request.form.copy()
        form["user_count"], form["spawn_rate"] = str(n), str(n)  # one dispatcher per worker
        request.form = ImmutableMultiDict(form)
        return None

    @web_ui.app.after_request
    def add_joulebench(response: Any) -> Any:
        if response.status_code != 200 or request.method != "GET":
            return response
        if request.path == f"{base}/":
            page = response.get_data(as_text=True)
            response.set_data(rewrite_index(page, environment.parsed_options, dispatchers(), "."))
        elif request.path == f"{base}/stats/requests":
            body = json.loads(response.get_data())
            body["extended_stats"] = [{"key": ENERGY_TAB, "data": table_rows(cockpit.live(series=False))}]
            if body.get("state") in TRANSITIONS:
                body["state"] = "running"
            response.set_data(json.dumps(body))
        elif request.path == f"{base}/stats/report":
            response.set_data(add_report_section(response.get_data(as_text=True), cockpit.live(series=False)))
        return response


def add_to_html_file(path: str | None, cockpit: Cockpit) -> None:
    """The energy section in Locust's ``--html`` report, after Locust has written it."""
    if not path or not Path(path).is_file():
        return
    p = Path(path)
    p.write_text(add_report_section(p.read_text(encoding="utf-8"), cockpit.live(series=False)), encoding="utf-8")
