"""The event stream's wire format, in the style of Wikimedia's EventStreams: its path and
topic, event ids (made, and read back from `Last-Event-ID`), and the text of each event.
Shared by the server and the client; what a request's query may ask for is the server's
(serving/sse_request.py). Pure functions.

Each event of the recording goes out as

    event: message
    id: [{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":N+1}]
    data: <the recorded line, byte for byte>

EventStreams' ids are KafkaSSE's: a JSON array of Kafka positions (topic, partition, and
an offset or a timestamp in ms), each the position to read *next*, so a client sends the
id back as `Last-Event-ID` and the stream goes on right after the event it came with.
Ours are the same, in the topic production names (`eqiad.mediawiki.recentchange`); the
other datacenter's topic (`codfw.…`) is part of the stream too, and empty here. A
timestamp position (production's ids: `useTimestampForId`) resumes at the first event at
or after it. An id naming any other topic is refused (404), as KafkaSSE refuses a topic
that is not the stream's. Ids from before (topic `stream_processor.recentchange`) held
the event's own offset; they are still read so, and resume right after it.

A line that cannot travel as SSE data, or is not an event, goes as
`event: error` with the same id and JSON data {message, offset, line_number} plus the
line itself (`line`, or `base64` when it is not UTF-8), so a client that keeps every
line loses nothing. The end of a replay (not when looping) is `event: end` with
{count, offset}, as on Socket.IO, and the id of the position past the recording's last
line (this server's extension, as is the 204 for a stream with nothing left). A failure
of the server while it streams goes as `event: error` with {"message"} and no line,
and the connection closes, as EventStreams does.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from stream_processor.core.records import Record
from stream_processor.protocol.event_meta import stamp_meta

STREAM_PATH = "/v2/stream/recentchange"
STREAM_PREFIX = "/v2/stream/"
STREAM = "mediawiki.recentchange"  # the default stream's name (the recording's); `recentchange` is its alias
STREAM_ALIASES = ("recentchange",)
DATACENTERS = ("eqiad", "codfw")  # a stream's topics, one per datacenter, as production names them...
PRIMARY_DATACENTER = "eqiad"  # ...and the one that holds this server's events (the other is empty)
TOPIC = f"{PRIMARY_DATACENTER}.{STREAM}"
LEGACY_TOPIC = "stream_processor.recentchange"  # ids before 0.2: the event's own offset, not the next
OPENING = b":ok\n\n"  # as EventStreams opens its streams: the client knows it is connected
HEARTBEAT = b":\n\n"  # a comment: keeps an idle connection (and proxies) open, no event
CONTENT_TYPE = "text/event-stream; charset=utf-8"
# A Last-Event-ID's length at most: the ids of a merge name every stream (and other servers'
# ids name two datacenters' topics each), so a request for many streams takes longer ones.
MAX_ID_CHARS = 2000
ID_CHARS_PER_STREAM = 350
MAX_TIMESTAMP_MS = 10**16  # a Last-Event-ID's `timestamp`, as `since`


@dataclass(frozen=True, slots=True)
class StreamRecord(Record):
    """A record of a stream served beside others (a comma list), with the position of every
    stream after it: its id."""

    positions: tuple[tuple[str, int], ...] = ()  # (topic, next offset), in the request's order
    topic: str = TOPIC  # the stream this record is of...
    topic_offset: int = 0  # ...and its offset there


class StreamRequestError(ValueError):
    """A stream request (its Last-Event-ID, or its query) the server cannot honour: answered
    with `status` (400; 404 for a topic that is not the stream's, as KafkaSSE) and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- ids -------------------------------------------------------------------------------


def topic_of(stream: str) -> str:
    """Where a stream's events are here: its topic in production's first datacenter."""
    return f"{PRIMARY_DATACENTER}.{stream}"


def position_id(next_offset: int) -> str:
    """The id that resumes the default stream at `next_offset` (KafkaSSE's: the position to read next)."""
    return positions_id([(TOPIC, next_offset)])


def positions_id(positions: Sequence[tuple[str, int]]) -> str:
    """The id naming each topic's next position: a comma list of streams names every one."""
    entries = [{"topic": topic, "partition": 0, "offset": offset} for topic, offset in positions]
    return json.dumps(entries, separators=(",", ":"))


def event_id(offset: int) -> str:
    """The id the default stream's event at `offset` goes out with: sent back, the stream goes on after it."""
    return position_id(offset + 1)


def offset_of_id(text: str | None) -> int | None:
    """The offset of the event this server sent `text` with, on the default stream alone
    (None: another server's id, a time, or an id of several streams)."""
    if not text or (TOPIC not in text and LEGACY_TOPIC not in text):
        return None
    try:
        positions = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(positions, list) or len(positions) != 1 or not isinstance(positions[0], dict):
        return None
    topic, offset = positions[0].get("topic"), positions[0].get("offset")
    if topic not in (TOPIC, LEGACY_TOPIC) or not _whole(offset):
        return None
    return offset - 1 if topic == TOPIC else offset


@dataclass(frozen=True)
class Resume:
    offset: int = 0  # the first offset to send
    since: float | None = None  # or: the first event at or after this time (epoch seconds)


def parse_last_event_id(text: str) -> Resume:
    """Where a reconnecting client of the default stream resumes, from its Last-Event-ID."""
    return parse_positions(text, [STREAM])[STREAM]


def parse_positions(text: str, streams: list[str]) -> dict[str, Resume]:
    """Where each of `streams` that a Last-Event-ID names resumes (see the module's doc): an
    offset in the stream's own topic is exact and comes first, else a time in either
    datacenter's topic. Raises StreamRequestError: 400 for what is not an id or names no
    position, 404 for a topic that is not one of these streams'."""
    owners = _topic_owners(streams)
    positions = _positions(text, max(MAX_ID_CHARS, ID_CHARS_PER_STREAM * len(streams)))
    foreign = sorted({p["topic"][:80] for p in positions if p["topic"] not in owners})
    if foreign:
        known = ", ".join(topic for topic in owners if topic != LEGACY_TOPIC)
        raise StreamRequestError(
            f"Last-Event-ID names topics that are not this stream's: {', '.join(foreign)}; its topics are {known}",
            status=404,
        )
    exact: dict[str, Resume] = {}
    timed: dict[str, Resume] = {}
    for position in positions:
        stream, resume = owners[position["topic"]], _resume_at(position)
        if resume is not None:
            (timed if resume.since is not None else exact).setdefault(stream, resume)
    resumes = {**timed, **exact}
    if not resumes:
        raise StreamRequestError(
            f"Last-Event-ID names no position in {', '.join(map(topic_of, streams))} "
            "(an offset, or a timestamp in any of the streams' topics)"
        )
    return resumes


def _topic_owners(streams: list[str]) -> dict[str, str]:
    """Each topic of these streams, and the stream it belongs to."""
    owners = {}
    for stream in streams:
        owners.update({f"{datacenter}.{stream}": stream for datacenter in DATACENTERS})
    if STREAM in streams:
        owners[LEGACY_TOPIC] = STREAM
    return owners


def _positions(text: str, max_chars: int) -> list[dict[str, Any]]:
    if len(text) > max_chars:
        raise StreamRequestError(f"Last-Event-ID is {len(text)} characters; at most {max_chars} here")
    try:
        positions = json.loads(text)
    except (ValueError, RecursionError):
        raise StreamRequestError(f"Last-Event-ID is not JSON: {text!r:.80}") from None
    # Every field is checked for its type before it is used: an id is valid JSON shaped at will
    # (a topic that is an object is unhashable, and was once a 500).
    if not isinstance(positions, list) or not positions or not all(_has_a_topic(p) for p in positions):
        raise StreamRequestError("Last-Event-ID must be a JSON array of {topic, partition, offset or timestamp}")
    return positions


def _has_a_topic(position: object) -> bool:
    return isinstance(position, dict) and isinstance(position.get("topic"), str)


def _resume_at(position: dict[str, Any]) -> Resume | None:
    """Where one position of an id resumes (None: an offset in the other datacenter's topic,
    empty here: it says nothing)."""
    topic, partition = position["topic"], position.get("partition", 0)
    if partition != 0 or isinstance(partition, bool):
        raise StreamRequestError(f"Last-Event-ID: {topic} has one partition, 0; not {partition!r:.20}", status=404)
    offset, timestamp = position.get("offset"), position.get("timestamp")
    if _whole(offset) and offset >= 0:
        if topic == LEGACY_TOPIC:
            return Resume(offset=offset + 1)  # the event's own offset: resume after it
        return Resume(offset=offset) if topic.startswith(f"{PRIMARY_DATACENTER}.") else None
    if _number(timestamp) and 0 <= timestamp < MAX_TIMESTAMP_MS:
        return Resume(since=timestamp / 1000)
    raise StreamRequestError(
        f"Last-Event-ID's position for {topic} needs an offset >= 0 or a timestamp in ms (0 to 10**16)"
    )


# -- the text of events ----------------------------------------------------------------


def encode(records: list[Record], stamp: bool = False) -> bytes:
    return b"".join(encode_record(record, stamp) for record in records)


def encode_record(record: Record, stamp: bool = False) -> bytes:
    """An event's text; a record of a comma list of streams names every stream's position.
    `stamp`: an event with EventStreams' `meta` gets its topic, partition and offset there
    (a recording's events; not a followed output's lines, which go out as written)."""
    sse_id = positions_id(record.positions) if isinstance(record, StreamRecord) else event_id(record.offset)
    header = f"id: {sse_id}\n".encode()
    if record.event is not None and b"\r" not in record.raw and _is_utf8(record.raw):
        data = _stamped(record) if stamp else record.raw
        return b"event: message\n" + header + b"data: " + data + b"\n\n"
    return b"event: error\n" + header + b"data: " + json.dumps(_not_an_event(record)).encode() + b"\n\n"


def _stamped(record: Record) -> bytes:
    """The line with `meta.topic/partition/offset` saying where this server serves it from."""
    if isinstance(record, StreamRecord):
        return stamp_meta(record.raw, record.event, record.topic, 0, record.topic_offset)
    return stamp_meta(record.raw, record.event, TOPIC, 0, record.offset)


def end_event(count: int, offset: int, end_id: str | None = None) -> bytes:
    """The end of a replay that covered the recording up to `offset` (one past its last
    line). Its id names the position past that line, so a client that reconnects anyway (an
    EventSource does, unless told to close) resumes past the end and is answered 204, even
    when no event passed its filter."""
    end_id = end_id or (position_id(offset) if offset > 0 else None)
    header = f"id: {end_id}\n".encode() if end_id else b""
    return b"event: end\n" + header + b"data: " + json.dumps({"count": count, "offset": offset}).encode() + b"\n\n"


def failure_event(message: str) -> bytes:
    """The server cannot go on with this stream (it closes it next), as EventStreams says so."""
    return b"event: error\ndata: " + json.dumps({"message": message}).encode() + b"\n\n"


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


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> TypeGuard[int | float]:
    # math.isfinite() raises on an int too large for a float: ints are finite anyway.
    return _whole(value) or (isinstance(value, float) and math.isfinite(value))
