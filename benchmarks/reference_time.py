"""How long each committed saturated reference would have taken under the live rule (``--steady-s``).

The comparison's references used to be sized by a pilot: a closed loop of ``--reference-batches`` batches
and, where its steady part was shorter than ``--reference-s``, a second, larger one (results/h100-*: the
pilot's time is in the reference's wall time). Today one closed loop sends until ``--reference-s`` after
its start cohort has ended (``loadgen --steady-s``, ``estimands.reference``). For each committed reference
with its records this prints what it took (its wall time in the run's timeline, ``estimands.plan``: from the
end of the phase before, so a pilot counts) and what the live rule would take on the same requests:

    the replay's start-up + (the start cohort's last end − the first send) + ``--reference-s`` + the drain,

the cohort's end and the drain (the last send → the last token) read from the reference's own records, the
start-up (wall time less first send → last token) from the run's references that had no pilot. A cohort
request still running at the last send ended in the drain, faster than in a full loop, so its end is early
there, and a drain of a loop that stopped sooner holds the same requests' tails: an estimate, on the low side
where a cohort request ended in the drain, not a measurement — the next GPU run measures it.

    python benchmarks/reference_time.py --out benchmarks/results/reference_time.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime
from pathlib import Path

from compare.rundir import reference_dir
from estimands.reference import cohort_end, steady_span
from estimands.tokens import end_of
from joulebench.files import stored
from loadgen.records import read_records

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("h100-conversation", "h100-conversation-profile", "h100-code")


def live_wall(records: list[dict], concurrency: int, steady_s: float) -> dict:
    """The live rule's wall time on these records (see the module's docstring), and what it is made of."""
    sent = sorted((r for r in records if r.get("sent_s") is not None), key=lambda r: r["sent_s"])
    first, last_send = sent[0]["sent_s"], sent[-1]["sent_s"]
    cohort = cohort_end(sent, concurrency)
    last_token = max(end_of(r) for r in sent)
    span = steady_span(records, concurrency)
    return {"cohort_s": cohort - first, "steady_measured_s": None if span is None else span[1] - span[0],
            "drain_s": last_token - last_send, "loop_s": last_token - first,
            "live_loop_s": cohort - first + steady_s + last_token - last_send, "requests": len(sent)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    for name in RUNS:
        run = ROOT / "results" / name
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        options = config["options"]
        batch, steady_s = int(options["max_num_seqs"]), float(options["reference_s"])
        walls = {p["segment"]: p["wall_s"] for p in summary["timeline"]["phases"] if p["kind"] == "reference"}
        for k in range(len(config.get("workload") or [])):
            path = stored(reference_dir(run, k) / "requests.jsonl")
            if path is None:
                continue
            pilot = stored(reference_dir(run, k).with_name(reference_dir(run, k).name + "-pilot") / "requests.jsonl")
            row = {"run": name, "segment": k + 1, "reference_s": steady_s, "pilot": pilot is not None,
                   "measured_wall_s": walls.get(k), **live_wall(read_records(path), batch, steady_s)}  # fmt: skip
            rows.append(row)
    for name in RUNS:  # the replay's start-up: what a reference without a pilot took beyond its own loop
        mine = [r for r in rows if r["run"] == name]
        gaps = [r["measured_wall_s"] - r["loop_s"] for r in mine if not r["pilot"] and r["measured_wall_s"]]
        gaps = gaps or [r["measured_wall_s"] - r["loop_s"] for r in rows if not r["pilot"] and r["measured_wall_s"]]
        for r in mine:
            r["startup_s"] = sum(gaps) / len(gaps)
            r["live_s"] = r["startup_s"] + r["live_loop_s"]
    head = f"{'run':28s} {'seg':>3s} {'pilot':>5s} {'requests':>8s} {'cohort s':>8s} {'steady s':>8s} {'drain s':>7s}"
    print(head + f" {'took s':>7s} {'live s':>7s}")
    for r in rows:
        steady = "–" if r["steady_measured_s"] is None else f"{r['steady_measured_s']:.1f}"
        took = "–" if r["measured_wall_s"] is None else f"{r['measured_wall_s']:.0f}"
        print(f"{r['run']:28s} {r['segment']:3d} {'yes' if r['pilot'] else 'no':>5s} {r['requests']:8d} "
              f"{r['cohort_s']:8.1f} {steady:>8s} {r['drain_s']:7.1f} {took:>7s} {r['live_s']:7.0f}")  # fmt: skip
    for name in RUNS:
        mine = [r for r in rows if r["run"] == name and r["measured_wall_s"] is not None]
        if mine:
            took, live = sum(r["measured_wall_s"] for r in mine), sum(r["live_s"] for r in mine)
            print(f"{name}: the references took {took / 60:.1f} min; the live rule, about {live / 60:.1f} min")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "host": platform.node(), "date": datetime.now().isoformat(),
                                        "command": "python benchmarks/reference_time.py"}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
