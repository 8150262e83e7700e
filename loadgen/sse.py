"""Server-sent events, parsed incrementally: bytes in any chunking → the ``data`` of each event.

Follows the WHATWG event-stream rules that matter for OpenAI streams: events end at a blank line;
lines end in LF, CRLF or CR (a CR at a chunk's end may be the first half of a CRLF); ``data:`` lines
of one event join with LF; one space after the colon is dropped; comments (``:``) and other fields
are ignored; a last event without its blank line is not an event.
"""

from __future__ import annotations


class SSEParser:
    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._cr_pending = False

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by ``chunk``."""
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across chunks
        self._cr_pending = chunk.endswith(b"\r")
        self._buf += chunk
        events: list[str] = []
        lines = self._buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buf = lines.pop()  # an incomplete last line waits for more bytes
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events

    @property
    def pending(self) -> bool:
        """Bytes or data lines of an unfinished event are buffered (a stream cut mid-event)."""
        return bool(self._buf or self._data)
