"""A comparison's run directory → ``summary.json``, ``per_request.csv``, ``plots/``, ``report.md`` and
``report.html``: the analysis (``compare.analysis``), then the rendering of its summary (``compare.plots``,
``compare.render``). ``joulebench report RUN_DIR`` gives the same report again from the files alone.
"""

from __future__ import annotations

from pathlib import Path

from compare.analysis import analyze
from compare.plots import draw
from compare.render import write_documents
from compare.rundir import write_per_request, write_summary


def write_report(run_dir: Path) -> dict[str, Path]:
    """Analyse the run directory and write ``summary.json``, ``per_request.csv``, ``plots/``, ``report.md``
    and ``report.html``."""
    s = analyze(run_dir)
    summary = write_summary(run_dir, s)
    write_per_request(run_dir, s["per_request"])
    md, html = write_documents(run_dir, s, draw(s, run_dir / "plots"))
    return {"md": md, "html": html, "summary": summary}
