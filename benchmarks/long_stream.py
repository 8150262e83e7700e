"""A long, slow, healthy stream: is it recorded ok with every token?

``--timeout`` limits silence, not a stream: a reply of ``--tokens`` tokens ``--itl-ms`` apart (default 600 at one
a second: 10 minutes) from ``joulebench mock-server`` must come back ``ok`` with every token under a ``--timeout``
far shorter than the stream (default 5 s), over each HTTP client. The suite checks the same scaled down
(``test_the_timeout_limits_silence_not_the_stream``: 60 tokens 20 ms apart under 0.3 s).

Prints a table and writes JSON (``--out``).

    python benchmarks/long_stream.py                     # 10 minutes a client
    python benchmarks/long_stream.py --tokens 50 --itl-ms 100 --timeout 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from joulebench.processes import Child
from loadgen.client import CLIENTS, ClientConfig, request_body, send
from loadgen.records import RequestRecord


def one_stream(url: str, client: str, tokens: int, timeout_s: float) -> dict:
    config = ClientConfig(base_url=url, model="mock", timeout_s=timeout_s, client=client)
    record = RequestRecord("long", 0, scheduled_s=time.time(), input_tokens=8, output_tokens=tokens)
    send(config, record, request_body(config, list(range(2, 10)), tokens))
    return {"client": client, "status": record.status, "error": record.error,
            "tokens": sum(n for _, n in record.chunks), "usage_output_tokens": record.usage_output_tokens,
            "e2e_s": record.e2e_s}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=600, help="output tokens (default: %(default)s)")
    ap.add_argument("--itl-ms", type=float, default=1000.0, help="between tokens (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=5.0, help="the client's --timeout (default: %(default)s)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="(default: %(default)s)")
    ap.add_argument("--out", type=Path, help="JSON (default: benchmarks/results/long-stream.json)")
    args = ap.parse_args()
    mock_cmd = [sys.executable, "-m", "joulebench", "mock-server", "--port", "0", "--ttft-ms", "50", "--itl-ms",
                str(args.itl_ms)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, Child("mock", mock_cmd, Path(tmp) / "mock.log") as mock:
        url = mock.wait_for_line(r"listening on (http://\S+)", 60).group(1)
        rows = [one_stream(url, client, args.tokens, args.timeout) for client in args.clients.split(",")]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({psutil.cpu_count()} cores)",
              "tokens": args.tokens, "itl_ms": args.itl_ms, "timeout_s": args.timeout, "streams": rows}  # fmt: skip
    t = Table(title=f"{args.tokens} tokens {args.itl_ms:g} ms apart, --timeout {args.timeout:g}, {result['machine']}")
    for column in ("client", "status", "tokens", "e2e s"):
        t.add_column(column, justify="left" if column in ("client", "status") else "right")
    for r in rows:
        t.add_row(r["client"], r["status"], f"{r['tokens']}/{args.tokens}", f"{r['e2e_s'] or 0:.1f}")
    Console().print(t)
    out = args.out or Path(__file__).parent / "results" / "long-stream.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["status"] == "ok" and r["tokens"] == args.tokens for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
