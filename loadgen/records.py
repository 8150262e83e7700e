"""One record per request, with every lifecycle time; appended to ``requests.jsonl`` as each ends.

A failed request is a record with a status, never an exception that ends the run. TTFT and E2E are
given from the time the request was sent and from the time it was scheduled (so a late sender cannot
hide its lateness: no coordinated omission), and the schedule lag itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from loadgen.errors import LoadgenError

Status = Literal[
    "ok", "http_error", "timeout", "disconnect", "short_output", "bad_stream", "not_streaming", "client_error",
    "interrupted",
]  # fmt: skip


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    trace_index: int
    scheduled_s: float  # Unix seconds
    input_tokens: int  # asked for
    output_tokens: int  # asked for (forced)
    klass: str = ""
    sent_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens in the chunk)
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    status: Status | None = None
    http_status: int | None = None
    error: str = ""
    run_id: str = ""  # one per run: runs appended to one file stay apart
    original_input_tokens: int | None = None  # the trace's lengths when --overlong clip shortened the request
    original_output_tokens: int | None = None

    @property
    def schedule_lag_s(self) -> float | None:
        return None if self.sent_s is None else self.sent_s - self.scheduled_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None or self.sent_s is None else self.first_token_s - self.sent_s

    @property
    def ttft_from_schedule_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.scheduled_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.last_token_s is None or self.sent_s is None else self.last_token_s - self.sent_s

    @property
    def e2e_from_schedule_s(self) -> float | None:
        return None if self.last_token_s is None else self.last_token_s - self.scheduled_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first."""
        n = self.usage_output_tokens
        if n is None or n < 2 or self.first_token_s is None or self.last_token_s is None:
            return None
        return (self.last_token_s - self.first_token_s) / (n - 1)

    def to_json(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies every chunk and was a tenth of the client's CPU.
        out = {f: getattr(self, f) for f in _FIELDS}
        out["chunks"] = [list(c) for c in self.chunks]
        out.update(
            schedule_lag_s=self.schedule_lag_s,
            ttft_s=self.ttft_s,
            ttft_from_schedule_s=self.ttft_from_schedule_s,
            e2e_s=self.e2e_s,
            e2e_from_schedule_s=self.e2e_from_schedule_s,
            tpot_s=self.tpot_s,
        )
        return out


_FIELDS = tuple(f.name for f in fields(RequestRecord))


class RecordWriter:
    """Appends records to a JSONL file, each written to the OS as its request ends.

    ``open`` checks the path is writable before any traffic is sent; ``close(in_flight)`` marks the
    requests still running as ``interrupted``, so a crash or Ctrl-C loses none that finished. A write that
    fails (a full disk) takes back the part of its record that reached the file, so the file ends with a
    whole record; the writer then refuses every later record (``LoadgenError``), and ``written`` says how
    many reached the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f: Any = None
        self._lock = threading.Lock()
        self._end = 0  # where the last whole record ends
        self.failed: str | None = None
        self.written = 0

    def _cannot(self, err: OSError) -> LoadgenError:
        return LoadgenError(f"cannot write the request records to {self.path}: {err.strerror or err}")

    def open(self, append: bool = True) -> RecordWriter:
        """Open for appending, after proving a write reaches the disk (a full disk or an unwritable path
        is an error now, before any traffic, not a lost record later). ``append=False``: a file that
        already holds records is an error, not a file two runs share unasked."""
        if not append and holds_records(self.path):
            raise LoadgenError(
                f"{self.path} already holds records: pass --append to add this run's (each record carries its "
                "run_id), or choose another --records"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("ab", buffering=0)  # unbuffered: a record is in the OS's hands once written
            self._end = self._f.seek(0, os.SEEK_END)
            self._f.write(b"\n")  # a probe: blank lines are no records
            os.fsync(self._f.fileno())
            if self.path.is_file():
                self._f.truncate(self._end)
        except OSError as err:
            if self._f is not None:
                with contextlib.suppress(OSError):
                    self._f.close()
                self._f = None
            raise self._cannot(err) from None
        return self

    def write(self, record: RequestRecord) -> None:
        data = (json.dumps(record.to_json(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._f is None:
                raise LoadgenError(self.failed or "the record writer is not open")
            try:
                view = memoryview(data)
                while view:  # a write may take part of the record (the disk filled): the rest, or the error
                    view = view[self._f.write(view) :]
            except OSError as err:
                with contextlib.suppress(OSError):  # no torn last line: the part written is taken back
                    if self.path.is_file():
                        self._f.truncate(self._end)
                self._f.close()
                self._f = None
                self.failed = str(self._cannot(err))
                raise LoadgenError(self.failed) from None
            self._end += len(data)
            self.written += 1

    def close(self, in_flight: list[RequestRecord] | tuple[RequestRecord, ...] = ()) -> None:
        """Mark and write the requests still in flight; after a failed write they have no record (``written``
        counts those that have)."""
        for record in in_flight:
            if record.status is None:
                record.status = "interrupted"
                record.error = record.error or "the run ended while the request was in flight"
                if self.failed is None:
                    with contextlib.suppress(LoadgenError):
                        self.write(record)
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


def holds_records(path: Path) -> bool:
    """Whether ``path`` is a regular file with a line that is not blank (read up to the first such line)."""
    if not Path(path).is_file():  # a device (/dev/full, /dev/null) holds no records
        return False
    try:
        with Path(path).open("rb") as f:
            return any(line.strip() for line in f)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise LoadgenError(f"cannot read the request records in {path}: {err.strerror or err}") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a run (or of its committed ``.gz``); a torn last line (the process died mid-write)
    is skipped."""
    from joulebench.files import open_text

    out = []
    with open_text(Path(path)) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
