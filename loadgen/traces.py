"""Request traces: the Azure LLM inference traces as published, and generic CSV/JSONL with a mapping.

A trace is a list of ``TraceRequest`` (arrival time in seconds from the trace's first request, input
and output token counts, a class label). Prompt text is never needed: replay sends exactly
``input_tokens`` token ids and forces exactly ``output_tokens``.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from loadgen.errors import TraceError

log = logging.getLogger(__name__)

#: Named traces: file name in the public repository Azure/AzurePublicDataset (CC-BY 4.0; cite Patel et
#: al., "Splitwise", ISCA 2024).
NAMED = {
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "azure-code": "AzureLLMInferenceTrace_code.csv",
}
DOWNLOAD_BASE = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data"
DEFAULT_CACHE = Path.home() / ".cache" / "joulebench" / "traces"
#: The most tokens a request of a trace may have in or out: past any model's context. A request's prompt is
#: built in memory before it is sent; a mistaken column of billions would exhaust it without a word.
MAX_TOKENS = 10_000_000
AZURE_COLUMNS = {"timestamp": "TIMESTAMP", "input": "ContextTokens", "output": "GeneratedTokens"}
COLUMN_KEYS = ("timestamp", "input", "output")


def parse_columns(text: str) -> dict[str, str]:
    """``timestamp=t,input=in,output=out`` → a column mapping; a key not given keeps its Azure name."""
    columns = dict(AZURE_COLUMNS)
    given: set[str] = set()
    for item in text.split(","):
        key, eq, name = (part.strip() for part in item.partition("="))
        if not eq or key not in COLUMN_KEYS or not name or key in given:
            raise TraceError(
                f"--columns {text!r}: give KEY=COLUMN for each of {', '.join(COLUMN_KEYS)} at most once, "
                "e.g. timestamp=t,input=prompt_len,output=output_len"
            )
        given.add(key)
        columns[key] = name
    return columns


@dataclass(frozen=True, slots=True)
class TraceRequest:
    arrival_s: float  # from the trace's first request
    input_tokens: int
    output_tokens: int
    klass: str = ""
    clipped_from: tuple[int, int] | None = None  # (input, output) as the trace gives them, when --overlong clip cut it


#: What happens to a request longer than the server's context: left out, shortened, or refused.
OVERLONG_POLICIES = ("drop", "clip", "error")


@dataclass(frozen=True, slots=True)
class Overlong:
    """The requests that did not fit the context, and what was done with them."""

    policy: str
    max_model_len: int
    requests: int  # that did not fit
    tokens: int  # their input + output tokens, as the trace gives them
    of_requests: int  # requests examined
    of_tokens: int

    @property
    def request_share(self) -> float:
        return self.requests / self.of_requests if self.of_requests else 0.0

    @property
    def token_share(self) -> float:
        return self.tokens / self.of_tokens if self.of_tokens else 0.0

    def describe(self) -> str:
        did = {"drop": "dropped", "clip": "clipped", "error": "refused"}[self.policy]
        return (
            f"{self.requests} of {self.of_requests} requests ({100 * self.request_share:.1f} %; "
            f"{100 * self.token_share:.1f} % of tokens) exceed the {self.max_model_len}-token context: {did}"
        )

    def record(self) -> dict[str, float | int | str]:
        return {"policy": self.policy, "max_model_len": self.max_model_len, "requests": self.requests,
                "tokens": self.tokens, "of_requests": self.of_requests, "of_tokens": self.of_tokens,
                "request_share": self.request_share, "token_share": self.token_share}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    requests: list[TraceRequest]
    overlong: Overlong | None = None  # set by ``fit``

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s - self.requests[0].arrival_s if len(self.requests) > 1 else 0.0

    @property
    def rate_per_s(self) -> float:
        return (len(self.requests) - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def first(self, n: int) -> Trace:
        return replace(self, requests=self.requests[:n])

    def window(self, start_s: float, duration_s: float) -> Trace:
        """The requests arriving in [start, start + duration), times made relative to the window's start."""
        kept = [
            replace(r, arrival_s=r.arrival_s - start_s)
            for r in self.requests
            if start_s <= r.arrival_s < start_s + duration_s
        ]
        return replace(self, requests=kept)

    def fit(self, max_model_len: int, policy: str = "drop", first: int | None = None) -> Trace:
        """Requests that exceed the context (input + output > ``max_model_len``) under ``policy``:

        ``drop`` leaves them out; ``clip`` caps the output first, then the input (the request keeps at
        least one token of each); ``error`` refuses the trace. ``first``: stop after the first N requests
        that fit (a replay of N requests), counting only the requests examined up to them.
        """
        if policy not in OVERLONG_POLICIES:
            raise TraceError(f"unknown overlong policy {policy!r}: use one of {', '.join(OVERLONG_POLICIES)}")
        if max_model_len < 2:
            raise TraceError(f"a context of {max_model_len} tokens holds no request (one in, one out)")
        kept: list[TraceRequest] = []
        over = over_tokens = seen = seen_tokens = 0
        for r in self.requests:
            if first is not None and len(kept) >= first:
                break
            seen += 1
            seen_tokens += r.input_tokens + r.output_tokens
            if r.input_tokens + r.output_tokens <= max_model_len:
                kept.append(r)
                continue
            over += 1
            over_tokens += r.input_tokens + r.output_tokens
            if policy == "clip":
                o = min(r.output_tokens, max_model_len - 1)
                i = min(r.input_tokens, max_model_len - o)
                kept.append(replace(r, input_tokens=i, output_tokens=o, clipped_from=(r.input_tokens, r.output_tokens)))
        overlong = Overlong(policy, max_model_len, over, over_tokens, seen, seen_tokens)
        if policy == "error" and over:
            raise TraceError(f"{self.name}: {overlong.describe()} (--overlong drop or clip to replay it)")
        return replace(self, requests=kept, overlong=overlong)


def parse_timestamp(text: str) -> float:
    """Unix seconds from an Azure TIMESTAMP (``2023-11-16 18:15:46.6805900``: 7 fractional digits) or
    a plain number of seconds. A time without a zone is UTC (Azure's are): read in the machine's zone, gaps
    across a daylight-saving switch would change by an hour."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    whole, _, frac = text.partition(".")
    base = datetime.fromisoformat(whole)
    if base.tzinfo is None:
        base = base.replace(tzinfo=UTC)
    return base.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def _rows(path: Path, columns: Mapping[str, str]) -> Iterator[tuple[int, Mapping[str, object]]]:
    """(line number, row) of a CSV or JSONL file; a file that is not text in that format is a TraceError."""
    line = 0
    try:
        for line, row in _raw_rows(path, columns):
            yield line, row
    except UnicodeDecodeError as err:
        raise TraceError(f"{path} after line {line}: not UTF-8 text (byte {err.start} of a read)") from None
    except csv.Error as err:
        raise TraceError(f"{path} after line {line}: not CSV ({err})") from None


def _raw_rows(path: Path, columns: Mapping[str, str]) -> Iterator[tuple[int, Mapping[str, object]]]:
    # utf-8-sig: Excel's "CSV UTF-8" and PowerShell start the file with a byte-order mark.
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise TraceError(f"{path} line {n}: not JSON ({err.msg})") from None
                except RecursionError:  # a row is one flat object: nesting past the parser's reach is no row
                    raise TraceError(f"{path} line {n}: nested too deeply to be a row (expected a JSON object "
                                     "of a timestamp and two token counts)") from None  # fmt: skip
                if not isinstance(row, dict):
                    raise TraceError(f"{path} line {n}: expected a JSON object")
                yield n, row
    else:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if header is None:
                return  # an empty file: no requests
            missing = [columns[k] for k in COLUMN_KEYS if columns[k] not in header]
            if missing:
                raise TraceError(
                    f"{path} line 1: the header has no {', '.join(map(repr, missing))} (it has: "
                    f"{', '.join(header)}): name the columns with --columns timestamp=…,input=…,output=…"
                )
            for row in reader:
                yield reader.line_num, row


def read_trace(
    path: Path, columns: Mapping[str, str] = AZURE_COLUMNS, klass: str = "", name: str | None = None
) -> Trace:
    """Read a CSV or JSONL trace. ``columns`` maps ``timestamp``, ``input``, ``output`` to the file's names."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    requests: list[tuple[float, int, int]] = []
    for n, row in _rows(path, columns):
        values = []
        for key in COLUMN_KEYS:
            col = columns[key]
            raw = row.get(col)
            if raw is None or raw == "":
                raise TraceError(f"{path} line {n}: no {col!r} (columns: {', '.join(map(str, row))})")
            try:
                values.append(parse_timestamp(str(raw)) if key == "timestamp" else int(str(raw)))
            except ValueError:
                kind = "a timestamp" if key == "timestamp" else "an integer"
                raise TraceError(f"{path} line {n}: {col} {raw!r} is not {kind}") from None
        t, i, o = values
        if not math.isfinite(t):
            raise TraceError(f"{path} line {n}: the timestamp {t} is not a finite time")
        if i < 1 or o < 1:
            raise TraceError(f"{path} line {n}: token counts must be positive, got {i} in, {o} out")
        if max(i, o) > MAX_TOKENS:
            raise TraceError(f"{path} line {n}: {max(i, o)} tokens, more than any model's context ({MAX_TOKENS}): "
                             "are the columns right?")  # fmt: skip
        requests.append((float(t), int(i), int(o)))
    if not requests:
        raise TraceError(f"{path}: the trace has no requests")
    requests.sort(key=lambda r: r[0])
    t0 = requests[0][0]
    return Trace(
        name=name or path.stem,
        requests=[TraceRequest(t - t0, i, o, klass) for t, i, o in requests],
    )


def resolve_trace(
    name_or_path: str,
    trace_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    download_base: str = DOWNLOAD_BASE,
    columns: Mapping[str, str] | None = None,
) -> Trace:
    """``azure-conv`` / ``azure-code`` (from ``trace_dir``, else the cache, else downloaded once), or a path
    (its columns named by ``columns``, else the Azure names)."""
    if name_or_path not in NAMED:
        path = Path(name_or_path)
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, NAMED, n=1)
            hint = f" — did you mean {close[0]}?" if close else ""
            raise TraceError(
                f"{path}: no such trace file, nor a named trace (the named ones: {', '.join(NAMED)}){hint}"
            )
        return read_trace(path, columns or AZURE_COLUMNS)
    if columns is not None:
        raise TraceError(f"--columns is for a CSV/JSONL path; {name_or_path} has its own columns")
    filename = NAMED[name_or_path]
    klass = name_or_path.removeprefix("azure-")
    for folder in (trace_dir, cache_dir):
        if folder is not None and (Path(folder) / filename).is_file():
            return read_trace(Path(folder) / filename, klass=klass, name=name_or_path)
    target = Path(cache_dir) / filename
    url = f"{download_base}/{filename}"
    log.warning("downloading %s to %s (once)", url, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except (urllib.error.URLError, OSError) as err:
        raise TraceError(
            f"{name_or_path} is not in {trace_dir or 'a --trace-dir'} nor in {cache_dir}, and downloading "
            f"{url} failed ({err}): pass --trace-dir with the file, or a trace path"
        ) from None
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.rename(target)
    return read_trace(target, klass=klass, name=name_or_path)


def merge(traces: Iterable[Trace], name: str) -> Trace:
    """One trace of several, by arrival time (e.g. the conversation and code streams together)."""
    requests = sorted((r for t in traces for r in t.requests), key=lambda r: r.arrival_s)
    return Trace(name=name, requests=requests)
