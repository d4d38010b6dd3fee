"""The event stream's wire format, in the style of Wikimedia's EventStreams: its path and
topic, event ids (made, and read back from `Last-Event-ID`), and the text of each event.
Shared by the server and the client; what a request's query may ask for is the server's
(serving/sse_request.py). Pure functions.

Each event of the recording goes out as

    event: message
    id: [{"topic":"stream_processor.recentchange","partition":0,"offset":N}]
    data: <the recorded line, byte for byte>

EventStreams' ids are JSON arrays of Kafka positions (topic, partition, and an offset or
a timestamp in ms); ours carries the event's offset, so `Last-Event-ID` resumes right
after it. A line that cannot travel as SSE data, or is not an event, goes as
`event: error` with the same id and JSON data {message, offset, line_number} plus the
line itself (`line`, or `base64` when it is not UTF-8), so a client that keeps every
line loses nothing. The end of a replay (not when looping) is `event: end` with
{count, offset}, as on Socket.IO, and the id of the recording's last line.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from stream_processor.core.records import Record

STREAM_PATH = "/v2/stream/recentchange"
TOPIC = "stream_processor.recentchange"
OPENING = b":ok\n\n"  # as EventStreams opens its streams: the client knows it is connected
HEARTBEAT = b":\n\n"  # a comment: keeps an idle connection (and proxies) open, no event
CONTENT_TYPE = "text/event-stream; charset=utf-8"
MAX_ID_CHARS = 2000
MAX_TIMESTAMP_MS = 10**16  # a Last-Event-ID's `timestamp`, as `since`


class StreamRequestError(ValueError):
    """A stream request (its Last-Event-ID, or its query) the server cannot honour: answered 400 with this message."""


# -- ids -------------------------------------------------------------------------------


def event_id(offset: int) -> str:
    return json.dumps([{"topic": TOPIC, "partition": 0, "offset": offset}], separators=(",", ":"))


@dataclass(frozen=True)
class Resume:
    offset: int = 0  # the first offset to send
    since: float | None = None  # or: the first event at or after this time (epoch seconds)


def parse_last_event_id(text: str) -> Resume:
    """Where a reconnecting client resumes: right after the offset its Last-Event-ID names
    (or at its timestamp); entries for other topics are ignored, as EventStreams does."""
    if len(text) > MAX_ID_CHARS:
        raise StreamRequestError(f"Last-Event-ID is {len(text)} characters; at most {MAX_ID_CHARS}")
    try:
        positions = json.loads(text)
    except (ValueError, RecursionError):
        raise StreamRequestError(f"Last-Event-ID is not JSON: {text!r:.80}") from None
    if not isinstance(positions, list) or not all(isinstance(p, dict) for p in positions):
        raise StreamRequestError("Last-Event-ID must be a JSON array of {topic, partition, offset or timestamp}")
    for position in positions:
        if position.get("topic") != TOPIC:
            continue
        offset, timestamp = position.get("offset"), position.get("timestamp")
        if _whole(offset) and offset >= 0:
            return Resume(offset=offset + 1)
        if _number(timestamp) and abs(timestamp) < MAX_TIMESTAMP_MS:
            return Resume(since=timestamp / 1000)
        raise StreamRequestError(
            f"Last-Event-ID's position for {TOPIC} needs an offset >= 0 or a timestamp in ms (below 10**16)"
        )
    raise StreamRequestError(f"Last-Event-ID names no position in {TOPIC}")


# -- the text of events ----------------------------------------------------------------


def encode(records: list[Record]) -> bytes:
    return b"".join(encode_record(record) for record in records)


def encode_record(record: Record) -> bytes:
    header = f"id: {event_id(record.offset)}\n".encode()
    if record.event is not None and b"\r" not in record.raw and _is_utf8(record.raw):
        return b"event: message\n" + header + b"data: " + record.raw + b"\n\n"
    return b"event: error\n" + header + b"data: " + json.dumps(_not_an_event(record)).encode() + b"\n\n"


def end_event(count: int, offset: int) -> bytes:
    """The end of a replay that covered the recording up to `offset` (one past its last
    line). Its id names that last line, so a client that reconnects anyway (an EventSource
    does, unless told to close) resumes past the end and is answered 204, even when no event
    passed its filter."""
    header = f"id: {event_id(offset - 1)}\n".encode() if offset > 0 else b""
    return b"event: end\n" + header + b"data: " + json.dumps({"count": count, "offset": offset}).encode() + b"\n\n"


def _not_an_event(record: Record) -> dict[str, Any]:
    if record.error is not None:
        message = f"line {record.line_number} of the recording is not an event: {record.error}"
    else:
        message = f"line {record.line_number} of the recording cannot be SSE data: it holds a carriage return"
    described: dict[str, Any] = {
        "message": message,
        "offset": record.offset,
        "line_number": record.line_number,
    }
    if _is_utf8(record.raw):
        described["line"] = record.raw.decode("utf-8")
    else:
        described["base64"] = base64.b64encode(record.raw).decode("ascii")
    return described


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    # math.isfinite() raises on an int too large for a float: ints are finite anyway.
    return _whole(value) or (isinstance(value, float) and math.isfinite(value))
