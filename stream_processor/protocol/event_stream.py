"""The event stream's wire format, in the style of Wikimedia's EventStreams: what a request
may ask for (query, `Last-Event-ID`), and the text of each event. Pure functions.

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
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from stream_processor.core.records import Record
from stream_processor.serving.filters import FILTER_FIELDS, FilterError, parse_filter
from stream_processor.serving.subscription import Subscription

STREAM_PATH = "/v2/stream/recentchange"
TOPIC = "stream_processor.recentchange"
OPENING = b":ok\n\n"  # as EventStreams opens its streams: the client knows it is connected
HEARTBEAT = b":\n\n"  # a comment: keeps an idle connection (and proxies) open, no event
CONTENT_TYPE = "text/event-stream; charset=utf-8"
QUERY_FIELDS = (*FILTER_FIELDS, "since", "realtime", "speed", "token")
MAX_QUERY_FIELDS = 200
MAX_ID_CHARS = 2000
MAX_SINCE_CHARS = 64
# Numbers in a request are ASCII digits only, and short: `str.isdigit()` and `int()` take
# "²" and "٣", `float()` takes "1_0" and " 1 "; each of those is a 400, never a 500.
WHOLE = re.compile(r"-?[0-9]{1,9}")  # a namespace
EPOCH_MS = re.compile(r"[0-9]{1,16}")  # `since` in epoch milliseconds (16 digits: past the year 300000)
DECIMAL = re.compile(r"(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?")  # `speed`
MAX_TIMESTAMP_MS = 10**16  # a Last-Event-ID's `timestamp`, as `since`


class StreamRequestError(ValueError):
    """A stream request the server cannot honour (answered 400 with this message)."""


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


def parse_since(text: str) -> float:
    """`since`: ISO-8601 (a time without a zone is UTC) or epoch milliseconds; epoch seconds back."""
    if EPOCH_MS.fullmatch(text):
        return int(text) / 1000
    if text.isascii() and text.isdigit():  # digits, but too many of them
        raise StreamRequestError(f"since {text!r:.40} is too far in the future")
    try:
        if len(text) > MAX_SINCE_CHARS or not text.isascii():
            raise ValueError
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise StreamRequestError(
            f"since must be ISO-8601 (2016-11-24T12:00:00Z) or epoch ms, not {text!r:.60}"
        ) from None


# -- what a request asks for ------------------------------------------------------------


def parse_stream_request(query_string: str, last_event_id: str | None, realtime: bool, speed: float) -> Subscription:
    """The subscription a stream request asks for: filters, pacing, where to start."""
    try:
        query = parse_qs(query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise StreamRequestError(f"too many query parameters: at most {MAX_QUERY_FIELDS}") from None
    unknown = set(query) - set(QUERY_FIELDS)
    if unknown:
        raise StreamRequestError(f"unknown query parameters {sorted(unknown)!r:.200}; known: {', '.join(QUERY_FIELDS)}")
    try:
        event_filter = parse_filter({name: _filter_value(name, query[name]) for name in FILTER_FIELDS if name in query})
    except FilterError as exc:
        raise StreamRequestError(str(exc)) from None
    resume = parse_last_event_id(last_event_id) if last_event_id else Resume(since=_since(query))
    return Subscription(
        filter=event_filter,
        offset=resume.offset,
        since=resume.since,
        realtime=_flag(query, "realtime", realtime),
        speed=_speed(query, speed),
    )


def _filter_value(name: str, values: list[str]) -> Any:
    """Query values (repeated, comma-separated, or both) as the filter's JSON-like value."""
    items = [item for value in values for item in value.split(",")]
    if name == "namespace":
        if not all(WHOLE.fullmatch(item) for item in items):
            raise StreamRequestError(f"namespace must be whole numbers, not {','.join(values)!r:.60}")
        return [int(item) for item in items]
    if name == "bot":
        return [_boolean("bot", item) for item in items]
    return items


def _since(query: dict[str, list[str]]) -> float | None:
    return parse_since(_single(query, "since")) if "since" in query else None


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    return _boolean(name, _single(query, name)) if name in query else default


def _speed(query: dict[str, list[str]], default: float) -> float:
    if "speed" not in query:
        return default
    text = _single(query, "speed")
    speed = float(text) if DECIMAL.fullmatch(text) else math.nan
    if not 0 < speed < math.inf:
        raise StreamRequestError(f"speed must be a positive number, not {text!r:.40}")
    return speed


def _single(query: dict[str, list[str]], name: str) -> str:
    if len(query[name]) != 1:
        raise StreamRequestError(f"{name} may be given once")
    return query[name][0]


def _boolean(name: str, text: str) -> bool:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise StreamRequestError(f"{name} must be true or false, not {text!r:.40}")


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
