"""EventStreams' `meta` in events: canaries, and the Kafka position a server fills in.

Events of Wikimedia's Event Platform carry `$schema` and `meta` (`domain`, `dt`, `stream`,
`topic`, `partition`, `offset`, ...). Canary events (`meta.domain == "canary"`) are its
monitoring's: every client should drop them. A server fills `meta.topic`, `partition` and
`offset` with where it serves the event from; a line whose meta holds those already goes
out as it is, byte for byte. Pure functions, safe on any JSON.
"""

from __future__ import annotations

import json
from typing import Any

CANARY_DOMAIN = "canary"
POSITION_FIELDS = ("topic", "partition", "offset")


def is_canary(event: Any) -> bool:
    """Whether an event is one of EventStreams' canaries (anything else, any shape: no)."""
    meta = event.get("meta") if isinstance(event, dict) else None
    return isinstance(meta, dict) and meta.get("domain") == CANARY_DOMAIN


def stamp_meta(raw: bytes, event: dict[str, Any] | None, topic: str, partition: int, offset: int) -> bytes:
    """The line with its `meta.topic`, `partition` and `offset` set to these: `raw` itself
    (the same bytes) when the event has no `meta` object or its meta says so already.

    A changed line is written again with json.dumps (keys in their order, non-ASCII as it
    is): its other bytes may change spelling (spaces, escapes, number forms), not meaning.
    One json.dumps cannot write (too deep, a lone surrogate) goes out as it was."""
    meta = event.get("meta") if isinstance(event, dict) else None
    if event is None or not isinstance(meta, dict):
        return raw
    wanted = {"topic": topic, "partition": partition, "offset": offset}
    if all(_same(meta.get(name), value) for name, value in wanted.items()):
        return raw
    stamped = {**event, "meta": {**meta, **wanted}}
    try:
        return json.dumps(stamped, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError, TypeError):
        return raw


def _same(found: Any, wanted: Any) -> bool:
    return type(found) is type(wanted) and found == wanted
