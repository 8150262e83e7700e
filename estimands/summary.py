"""A replay's summary from its records: counts, tokens, achieved rate, latency percentiles, lag.

Pure over the records (``requests.jsonl`` rows), so a finished run can be summarised again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    arr = np.asarray(values)
    return {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    sent = sorted(r["sent_s"] for r in records if r.get("sent_s") is not None)
    span = sent[-1] - sent[0] if len(sent) > 1 else 0.0
    itl = [b[0] - a[0] for r in ok for a, b in zip(r["chunks"], r["chunks"][1:], strict=False)]
    return {
        "requests": len(records),
        "ok": len(ok),
        "statuses": dict(Counter(r["status"] for r in records)),
        "input_tokens": sum(r.get("usage_input_tokens") or 0 for r in ok),
        "output_tokens": sum(r.get("usage_output_tokens") or 0 for r in ok),
        "achieved_rate_per_s": (len(sent) - 1) / span if span > 0 else 0.0,
        "duration_s": span,
        "ttft_s": percentiles([r["ttft_s"] for r in ok if r["ttft_s"] is not None]),
        "ttft_from_schedule_s": percentiles(
            [r["ttft_from_schedule_s"] for r in ok if r["ttft_from_schedule_s"] is not None]
        ),
        "tpot_s": percentiles([r["tpot_s"] for r in ok if r["tpot_s"] is not None]),
        "itl_s": percentiles(itl),
        "e2e_s": percentiles([r["e2e_s"] for r in ok if r["e2e_s"] is not None]),
        "schedule_lag_s": percentiles([r["schedule_lag_s"] for r in records if r.get("schedule_lag_s") is not None]),
    }
