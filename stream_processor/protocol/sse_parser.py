"""An incremental Server-Sent Events parser over bytes, as the HTML standard describes it.

Lines end with CRLF, LF or CR; `field: value` (one space after the colon dropped);
`data` lines join with LF; a blank line dispatches the event; a line starting with a
colon is a comment (a heartbeat). `id` persists until changed, so every event carries
the last id seen. Data stays bytes: the recorded line goes on byte for byte. A UTF-8
byte order mark at the very start of the stream is dropped, as the standard's decoding does.

An event (its data and the line still open) may hold at most `max_event_bytes`: a stream
that never ends a line would otherwise grow the buffer without bound. Past it, `feed`
raises `EventTooLarge`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

LINE_BREAK = re.compile(rb"\r\n|\r|\n")
BOM = b"\xef\xbb\xbf"
MAX_EVENT_BYTES = 64 * 2**20  # far above a 10 MB recorded line, even escaped inside an `error` event


class EventTooLarge(ValueError):
    """An event (or a line) longer than the parser's cap: the stream cannot be read on."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" unless the stream names it
    data: bytes
    id: str | None  # the last id the stream set


class SseParser:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._pending: list[bytes] = []  # a partial line from the last chunks (a 10 MB line comes in many)
        self._pending_bytes = 0
        self._event = ""
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._last_id: str | None = None
        self.retry_ms: int | None = None  # the stream's reconnection time, if it set one
        self._head: bytes | None = b""  # the stream's first bytes, until a BOM is ruled out (then None)

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        """The events that `chunk` completes, in order."""
        if self._head is not None:
            chunk = self._without_bom(chunk)
            if not chunk:
                return
        pending_cr = bool(self._pending) and self._pending[-1].endswith(b"\r")
        if not pending_cr and LINE_BREAK.search(chunk) is None:
            self._pending.append(chunk)  # no line ends here: join once one does, not chunk by chunk
            self._pending_bytes += len(chunk)
            self._check_size()
            return
        text = b"".join([*self._pending, chunk])
        lines = LINE_BREAK.split(text)
        self._pending = [lines.pop()]  # after the last line break: incomplete
        if text.endswith(b"\r") and lines:
            # A CR at the end may be the first half of a CRLF: keep it so the LF is not a blank line.
            self._pending = [lines.pop() + b"\r"]
        self._pending_bytes = len(self._pending[0])
        for line in lines:
            event = self._line(line)
            if event is not None:
                yield event

    def _without_bom(self, chunk: bytes) -> bytes:
        """The stream's start without its BOM, once enough of it has come to tell (b"": not yet)."""
        head = self._head + chunk if self._head is not None else chunk
        if len(head) < len(BOM) and BOM.startswith(head):
            self._head = head  # a BOM split over chunks, or an empty one
            return b""
        self._head = None
        return head[len(BOM) :] if head.startswith(BOM) else head

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == 0x3A:  # ":" a comment
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_bytes += len(value) + 1
            self._check_size()
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._event or "message", b"\n".join(self._data), self._last_id)
        self._event, self._data, self._data_bytes = "", [], 0
        return event

    def _check_size(self) -> None:
        size = self._pending_bytes + self._data_bytes
        if size > self.max_event_bytes:
            raise EventTooLarge(
                f"an event of over {size:,} bytes has not ended; at most {self.max_event_bytes:,} are held"
            )
