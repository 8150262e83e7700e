"""Server-sent events, parsed incrementally: bytes in any chunking → the ``data`` of each event.

Follows the WHATWG event-stream rules that matter for OpenAI streams: events end at a blank line;
lines end in LF, CRLF or CR (a CR at a chunk's end may be the first half of a CRLF); ``data:`` lines
of one event join with LF; one space after the colon is dropped; comments (``:``) and other fields
are ignored; a last event without its blank line is not an event.
"""

from __future__ import annotations


class SSEParser:
    def __init__(self) -> None:
        self._buf = bytearray()  # an unfinished line: grown in place, so a long one costs its length once
        self._data: list[str] = []
        self._cr_pending = False

    def feed(self, chunk: bytes | bytearray) -> list[str]:
        """The data of every event completed by ``chunk``."""
        if not chunk:
            return []
        if (
            not self._buf
            and not self._data
            and chunk.startswith(b"data: ")
            and chunk.endswith(b"\n\n")
            and chunk.count(b"\n") == 2
            and b"\r" not in chunk
        ):  # one whole event of one data line, as servers send them: read without splitting it into lines
            self._cr_pending = False
            return [chunk[6:-2].decode("utf-8", errors="replace")]
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._cr_pending = chunk.endswith(b"\r")
        if b"\n" not in chunk and b"\r" not in chunk:  # the line goes on: joined with the rest, split once
            self._buf += chunk
            return []
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = bytearray(lines.pop())  # an incomplete last line waits for more bytes
        events: list[str] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif raw.startswith(b"data:"):  # the field name and colon are ASCII: decoding the value alone is the same
                self._data.append(raw[6 if raw.startswith(b"data: ") else 5 :].decode("utf-8", errors="replace"))
            elif raw == b"data":  # a field without a colon has an empty value; comments and other fields are ignored
                self._data.append("")
        return events

    @property
    def pending(self) -> bool:
        """Bytes or data lines of an unfinished event are buffered (a stream cut mid-event)."""
        return bool(self._buf or self._data)
