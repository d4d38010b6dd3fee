"""What an event stream request asks for: its streams (the path), its query (filters,
`since`, pacing) and its `Last-Event-ID`, as the `Subscription` the server replays. The
server's side of the event stream; the wire format both sides share is protocol/event_stream.py.

As EventStreams: `/v2/stream/{streams}` takes a comma list of stream names or aliases, and
a trailing slash; an unknown stream is a 400. Query parameters this server does not know
are ignored (a cache-buster such as `?_=1700000000`), as EventStreams ignores them; the
ones it knows are checked strictly.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from stream_processor.protocol.event_stream import (
    STREAM_PATH,
    STREAM_PREFIX,
    Resume,
    StreamRequestError,
    parse_last_event_id,
)
from stream_processor.serving.filters import FILTER_FIELDS, FilterError, parse_filter
from stream_processor.serving.subscription import Subscription

QUERY_FIELDS = (*FILTER_FIELDS, "since", "realtime", "speed", "token")
MAX_QUERY_FIELDS = 200
MAX_SINCE_CHARS = 64
# Numbers in a request are ASCII digits only, and short: `str.isdigit()` and `int()` take
# "²" and "٣", `float()` takes "1_0" and " 1 "; each of those is a 400, never a 500.
WHOLE = re.compile(r"-?[0-9]{1,9}")  # a namespace
EPOCH_MS = re.compile(r"[0-9]{1,16}")  # `since` in epoch milliseconds (16 digits: past the year 300000)
DECIMAL = re.compile(r"(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?")  # `speed`


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


def is_stream_path(path: str) -> bool:
    return path.startswith(STREAM_PREFIX)


def parse_stream_path(path: str) -> list[str]:
    """The stream names a `/v2/stream/{streams}` path lists (a trailing slash allowed); the
    catalog says whether it serves them (serving/streams.py). An empty name is a 400."""
    listed = path[len(STREAM_PREFIX) :]
    listed = listed[:-1] if listed.endswith("/") else listed
    names = listed.split(",")
    if not all(names):
        raise StreamRequestError(f"{path!r:.100} names no stream (a comma list of names, e.g. {STREAM_PATH})")
    return names


def parse_stream_request(query_string: str, last_event_id: str | None, realtime: bool, speed: float) -> Subscription:
    """The subscription a stream request asks for: filters, pacing, where to start."""
    try:
        query = parse_qs(query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise StreamRequestError(f"too many query parameters: at most {MAX_QUERY_FIELDS}") from None
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
