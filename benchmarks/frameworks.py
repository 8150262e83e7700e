"""Frameworks compared offline: vLLM compiled and eager against HF Transformers eager and compiled.

Fernandez et al. (ACL 2025, Table 4) found vLLM with CUDA graphs using up to 73 % less energy than
unoptimized PyTorch + HF Transformers (BurstGPT 73 %, Azure conversation 72.18 %, Azure code 37.58 %),
and ``torch.compile`` helping HF only partly. This runs the same requests (token-id prompts of
``--input-tokens``, outputs forced to ``--output-tokens``) at each batch size through four
configurations, each ``joulebench offline`` in its own process (so each frees the GPU when it exits),
all measured by one monitor started here, and writes per batch size J/output-token for each and the
reductions, as ``frameworks.json`` and ``frameworks.md`` in ``--out`` (with every run's own JSON and log).

    python benchmarks/frameworks.py --model llama-3.1-8b --source nvml --out results/h200-frameworks
    python benchmarks/frameworks.py --model tiny --source estimate --batch-sizes 2,4 --input-tokens 32 \\
        --output-tokens 8 --out /tmp/frameworks                                     # on a CPU

It prints the plan with an estimate first (``--plan``: only that). ``--configs`` runs a subset and keeps
what ``--out`` already holds (so a long run can be split over several commands); ``--report`` only
rebuilds the report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from joulebench.processes import Child

#: name → (engine, flags of ``joulebench offline``)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "vllm-compiled": ("vllm", []),
    "vllm-eager": ("vllm", ["--enforce-eager"]),
    "hf-eager": ("transformers", []),
    "hf-compiled": ("transformers", ["--compile"]),
}
#: (label, first config, second config): reduction = 1 − first ÷ second, in J/output-token
REDUCTIONS = [
    ("vLLM compiled vs HF eager (the paper's headline)", "vllm-compiled", "hf-eager"),
    ("vLLM compiled vs HF compiled", "vllm-compiled", "hf-compiled"),
    ("HF compiled vs HF eager (torch.compile's help)", "hf-compiled", "hf-eager"),
    ("vLLM compiled vs vLLM eager (CUDA graphs' help)", "vllm-compiled", "vllm-eager"),
]
PAPER = "up to 73 % (BurstGPT); Azure conversation 72.18 %, Azure code 37.58 % (Table 4, online traces)"

# Guesses for the Llama-3.1-8B shape on one H200, from the H100 runs (results/h100-llama3.1-8b-offline: vLLM
# 7 ms a decode step at batch 8 with CUDA graphs, 21 ms eager) and the GPU README (vLLM starts in about 90 s
# eager, 50 s more compiled). HF's are guesses: replace them with what this run measures.
START_S = {"vllm-compiled": 120.0, "vllm-eager": 70.0, "hf-eager": 25.0, "hf-compiled": 25.0}
COMPILE_PER_SHAPE_S = {"hf-compiled": 90.0}  # torch.compile of the decode step, each new batch size
STEP_S = {  # seconds per decode step at batch 8, 64, 256
    "vllm-compiled": (0.007, 0.010, 0.023),
    "vllm-eager": (0.015, 0.018, 0.030),
    "hf-eager": (0.030, 0.040, 0.110),
    "hf-compiled": (0.012, 0.018, 0.060),
}
IDLE_S = 12.0  # loaded-idle power until stable, and the warm-up batch


def step_s(config: str, batch: int) -> float:
    points = list(zip((8, 64, 256), STEP_S[config], strict=True))
    for (b0, s0), (b1, s1) in itertools.pairwise(points):
        if batch <= b1:
            return s0 + (s1 - s0) * max(batch - b0, 0) / (b1 - b0)
    return points[-1][1] * batch / points[-1][0]


def estimate_s(config: str, sizes: list[int], batches: int, output_tokens: int) -> float:
    """Seconds one configuration takes for the 8B shape on an H200 (a guess; the run records the real one)."""
    measured = sum(batches * output_tokens * step_s(config, b) for b in sizes)
    if config not in COMPILE_PER_SHAPE_S:
        return START_S[config] + IDLE_S + measured
    # each batch size: compiled, then two unmeasured full batches (server/hf.py)
    compiled = sum(COMPILE_PER_SHAPE_S[config] + 2 * output_tokens * step_s(config, b) for b in sizes)
    return START_S[config] + IDLE_S + measured + compiled


def request_sets(sizes: list[int], batches: int, n_in: int, n_out: int) -> dict[str, Any]:
    sets = [{"label": f"batch {b}", "batch_size": b, "requests": [[n_in, n_out]] * (b * batches)} for b in sizes]
    return {"max_num_seqs": max(sizes), "sets": sets}


def run_config(args: argparse.Namespace, name: str, monitor_url: str, out: Path) -> dict[str, Any]:
    engine, flags = CONFIGS[name]
    cmd = [
        sys.executable, "-m", "server", "offline", "--engine", engine, *flags, "--model", args.model,
        "--model-cache", str(args.model_cache), "--requests", str(out / "requests.json"), "--monitor", monitor_url,
        "--max-model-len", str(args.max_model_len or args.input_tokens + args.output_tokens),
        "--dtype", args.dtype, "--device", args.device, "--idle-max-s", repr(args.idle_max_s),
        "--out", str(out / f"{name}.json"),
    ]  # fmt: skip
    t0 = time.monotonic()
    (out / f"{name}.log").unlink(missing_ok=True)  # this run's log only
    child = Child(name, cmd, out / f"{name}.log").start()
    try:
        code = child.wait(args.timeout_s)
    except Exception as err:  # a config that hangs or dies is reported; the others still run
        return {"config": name, "ok": False, "error": str(err).splitlines()[0], "wall_s": time.monotonic() - t0}
    ok = code == 0 and (out / f"{name}.json").exists()
    return {"config": name, "ok": ok, "error": None if ok else f"exited with code {code}; see {child.log_path}",
            "wall_s": time.monotonic() - t0}  # fmt: skip


KEPT = ("j_per_output_token", "dynamic_j_per_output_token", "uncertainty_j_per_output_token", "output_tokens_per_s",
        "duration_s", "requests", "input_tokens", "output_tokens")  # fmt: skip


def compare_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per request set (batch size): each configuration's figures and the reductions among them."""
    rows = []
    for first in next(iter(records.values()))["results"]:
        configs = {}
        for name, rec in records.items():
            r = next((x for x in rec["results"] if x["label"] == first["label"]), None)
            if r is not None:  # a record of another plan is not compared
                configs[name] = {k: r[k] for k in KEPT}
        reductions = {}
        for text, a, b in REDUCTIONS:
            if a in configs and b in configs:
                reductions[f"{a} vs {b}"] = {
                    "label": text,
                    "reduction": 1 - configs[a]["j_per_output_token"] / configs[b]["j_per_output_token"],
                    "dynamic": 1 - configs[a]["dynamic_j_per_output_token"] / configs[b]["dynamic_j_per_output_token"],
                }
        rows.append({"set": first["label"], "batch_size": first["batch_size"], "configs": configs,
                     "reductions": reductions})  # fmt: skip
    return rows


def build_report(out: Path, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """frameworks.json and frameworks.md from the configurations' records in ``out`` (those that exist)."""
    records = {n: json.loads((out / f"{n}.json").read_text()) for n in CONFIGS if (out / f"{n}.json").exists()}
    if not records:
        raise SystemExit(f"no configuration's record in {out}: nothing to report")
    vllm = next((r["vllm"] for r in records.values() if "vllm" in r), {})
    hf = next((r["transformers"] for r in records.values() if "transformers" in r), {})
    some = next(iter(records.values()))
    kind = some["energy"]["kind"]
    body = {
        "benchmark": "frameworks",
        "paper": PAPER,
        "model": some["preset"] or some["model"],
        "weights": some["weights"],
        "energy": some["energy"],
        "devices": sorted({d.get("name") or d["device"] for d in some["devices"] if d["kind"] == kind}),
        "versions": {"vllm": vllm.get("version"), "transformers": hf.get("transformers"), "torch": hf.get("torch")},
        "options": {
            n: {
                "engine": CONFIGS[n][0],
                "flags": CONFIGS[n][1],
                "record": rec["engine"],
                "idle_power_w": rec["idle_power_w"],
                "offline_batches": rec["offline_batches"],
            }
            for n, rec in records.items()
        },
        "runs": runs,
        "rows": compare_rows(records),
    }
    (out / "frameworks.json").write_text(json.dumps(body, indent=2) + "\n")
    (out / "frameworks.md").write_text(markdown(body))
    return body


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(body: dict[str, Any]) -> str:
    names = list(body["options"])
    v = body["versions"]
    estimated = " — ESTIMATED from CPU utilization, not measured" if body["energy"]["estimated"] else ""
    lines = [
        f"# Frameworks compared offline: {body['model']} ({body['weights']} weights)",
        "",
        f"Energy: {body['energy']['kind']} from {', '.join(body['energy']['sources'])} on "
        f"{', '.join(body['devices'])}{estimated}. vLLM {v['vllm']}, transformers {v['transformers']}, "
        f"torch {v['torch']}.",
        "",
        "J per output token (± its uncertainty), attributional (all energy in the window); then dynamic (less "
        "loaded-idle power × time):",
        "",
    ]

    def cell(c: dict[str, Any], n: str, text: str) -> str:
        return text.format(**c[n]) if n in c else "– (not run)"

    energy_rows = []
    for row in body["rows"]:
        c = row["configs"]
        energy_rows.append(
            [str(row["batch_size"])]
            + [cell(c, n, "{j_per_output_token:.4f} ± {uncertainty_j_per_output_token:.4f}") for n in names]
            + [cell(c, n, "{dynamic_j_per_output_token:.4f}") for n in names]
        )
    lines += _table(["batch", *names, *(f"dynamic {n}" for n in names)], energy_rows)
    labels = list(dict.fromkeys((k, x["label"]) for row in body["rows"] for k, x in row["reductions"].items()))
    if labels:
        lines += ["", f"Reduction in J/output-token, 1 − first ÷ second (dynamic in brackets). Paper: {PAPER}.", ""]
        lines += _table(
            ["batch", *(text for _, text in labels)],
            [
                [str(row["batch_size"])]
                + [f"{100 * row['reductions'][k]['reduction']:.1f} % ({100 * row['reductions'][k]['dynamic']:.1f} %)"
                   if k in row["reductions"] else "–" for k, _ in labels]
                for row in body["rows"]
            ],
        )  # fmt: skip
    lines += ["", "Output tokens per second:", ""]
    lines += _table(
        ["batch", *names],
        [
            [str(r["batch_size"]), *(cell(r["configs"], n, "{output_tokens_per_s:.0f}") for n in names)]
            for r in body["rows"]
        ],
    )
    lines += ["", "Options:", ""]
    for n, o in body["options"].items():
        rec = {k: x for k, x in o["record"].items() if x is not None}
        lines.append(
            f"- **{n}**: `{' '.join(['joulebench offline --engine', o['engine'], *o['flags']])}`; loaded-idle "
            f"{o['idle_power_w']:.1f} W; {json.dumps(rec)}"
        )
    walls = [
        f"{n} {r['wall_s']:.0f} s" + ("" if r["ok"] else f" (FAILED: {r['error']})") for n, r in body["runs"].items()
    ]
    batching = {body["options"][n]["engine"]: body["options"][n]["offline_batches"] for n in names}
    lines += ["", *(f"Batches, {engine}: {text}." for engine, text in batching.items()), ""]
    lines += [
        "Wall time per configuration (start-up, compilation and idle measurement included): " + ", ".join(walls) + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--model-cache", type=Path, default=Path.home() / ".cache" / "joulebench" / "models")
    ap.add_argument("--batch-sizes", default="8,64", help="comma list (default: %(default)s)")
    ap.add_argument("--batches", type=int, default=2, help="measured batches per size (default: %(default)s)")
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=400)
    ap.add_argument("--max-model-len", type=int, help="(default: input + output tokens)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto", help="HF's device (default: %(default)s)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="a subset of %(default)s")
    ap.add_argument("--source", default="auto", help="the monitor's power source: nvml, estimate, … (default: auto)")
    ap.add_argument("--idle-max-s", type=float, default=20.0)
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per configuration (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("results/frameworks"))
    ap.add_argument("--report", action="store_true", help="only rebuild the report from --out")
    ap.add_argument("--plan", action="store_true", help="only print the plan and its estimate")
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := [c for c in configs if c not in CONFIGS]:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    runs_path = args.out / "runs.json"
    runs: dict[str, dict[str, Any]] = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    if not args.report:
        print(f"plan: {args.model}, {args.input_tokens} in / {args.output_tokens} out, batches {sizes} × "
              f"{args.batches}, configs {configs}, each its own process; energy: {args.source}")  # fmt: skip
        if args.model == "llama-3.1-8b":
            total = 0.0
            for c in configs:
                total += (e := estimate_s(c, sizes, args.batches, args.output_tokens))
                print(f"  {c}: about {e / 60:.1f} min on an H200 (a guess)")
            print(f"  total: about {total / 60:.1f} min (the run records the real times in runs.json)")
        else:
            print("  no estimate: the guesses are for llama-3.1-8b on an H200")
        if args.plan:
            return
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "requests.json").write_text(
            json.dumps(request_sets(sizes, args.batches, args.input_tokens, args.output_tokens)) + "\n"
        )
        monitor_cmd = [sys.executable, "-m", "monitor", "--port", "0", "--quiet", "--source", args.source]
        (args.out / "monitor.log").unlink(missing_ok=True)  # its URL is read off the log: this run's only
        with Child("the monitor", monitor_cmd, args.out / "monitor.log") as monitor:
            url = monitor.wait_for_line(r"listening on (http://\S+)", 60).group(1)
            for c in configs:
                print(f"{c}: running (log {args.out / (c + '.log')})", flush=True)
                runs[c] = run_config(args, c, url, args.out)
                print(f"{c}: {'done' if runs[c]['ok'] else 'FAILED: ' + str(runs[c]['error'])} in "
                      f"{runs[c]['wall_s']:.0f} s", flush=True)  # fmt: skip
                runs_path.write_text(json.dumps(runs, indent=2) + "\n")
    body = build_report(args.out, runs)
    print(markdown(body))
    print(f"wrote {args.out / 'frameworks.json'} and {args.out / 'frameworks.md'}")
    if not all(r["ok"] for r in runs.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
