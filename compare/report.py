"""A comparison's run directory → ``summary.json``, ``per_request.csv``, ``plots/``, ``report.md`` and
``report.html``: the analysis (``compare.analysis``), then the rendering of its summary (``compare.plots``,
``compare.render``). ``joulebench report RUN_DIR`` gives the same report again from the files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compare.analysis import analyze
from compare.plots import draw
from compare.render import write_documents
from compare.rundir import SUMMARY, read_json, write_json, write_per_request, write_summary
from loadgen.errors import LoadgenError
from predict.profile import PROFILE_FILE


def write_report(run_dir: Path, keep_what_it_had: bool = False) -> dict[str, Path]:
    """Analyse the run directory and write ``summary.json``, ``per_request.csv``, ``plots/``, ``report.md``
    and ``report.html``. ``keep_what_it_had`` (``joulebench report``): where the run's existing summary has a
    measurement the files no longer give (a window, a reference, the offline phase, idle power, the
    counterfactual), nothing is rewritten and the error names what went missing: a report is never replaced
    by one with less in it. A definition that changed may change a figure or a verdict; a lost file may not."""
    try:
        s = analyze(run_dir)
    except (KeyError, TypeError, ValueError, IndexError) as err:  # a damaged file's content, not a missing one
        raise LoadgenError(
            f"{run_dir}: a damaged input ({type(err).__name__}: {err}); nothing was rewritten (if its files are "
            "intact, this is a bug of joulebench's: please report it with the run directory)"
        ) from None
    if keep_what_it_had and (old := read_json(run_dir / SUMMARY)) and (lost := lost_measurements(old, s)):
        raise LoadgenError(
            f"{run_dir}: not rewritten, the files no longer give {'; '.join(lost)} (gone or damaged since its "
            "summary.json was written); the report it has is kept"
        )
    summary = write_summary(run_dir, s)
    if (s.get("prediction") or {}).get("profile"):
        write_json(run_dir / PROFILE_FILE, s["prediction"]["profile"])  # `joulebench predict --profile RUN_DIR`
    write_per_request(run_dir, s["per_request"])
    md, html = write_documents(run_dir, s, draw(s, run_dir / "plots"))
    return {"md": md, "html": html, "summary": summary}


def _measured(s: dict[str, Any]) -> dict[str, set[Any]]:
    """What a summary holds measurements of, whatever their verdicts."""
    ref = s.get("reference") or {}
    idle = s.get("idle") or {}
    return {
        "windows": {(r["rate"], w["segment"]) for r in s.get("rates") or [] for w in r.get("segments") or []},
        # the replays on disk (a summary before they were listed: those with a steady part)
        "online references": set(ref.get("online_replays") or [x["segment"] for x in ref.get("online_segments") or []]),
        "offline references": {x["segment"] for x in ref.get("offline_segments") or []},
        "offline sets": {x.get("label") for x in s.get("offline_results") or []},
        "idle power": {k for k in ("device", "loaded") if k in idle},
        "counterfactual": {1} if s.get("counterfactual") else set(),
        "profile closed loops": set((s.get("prediction") or {}).get("runs") or []),
    }


def lost_measurements(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each kind of measurement ``old`` had and ``new`` lacks, with which."""
    before, after = _measured(old), _measured(new)
    lost = []
    for kind, had in before.items():
        if missing := had - after[kind]:
            shown = sorted(missing, key=str)
            lost.append(f"{kind} {', '.join(map(str, shown[:6]))}" + (" …" if len(shown) > 6 else ""))
    return lost
