"""The replay protocol's vocabulary: the namespace, and what a `subscribe` may ask for.

Shared by the server and the client, so neither imports the other's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "/rc"
DEFAULT_WINDOW = 1000
DEFAULT_MAX_PAYLOAD = 1_000_000  # bytes a client may send in one message (engine.io's limit)
TOKEN_ENV = "STREAM_PROCESSOR_TOKEN"  # the shared secret, for servers and clients alike


class SubscribeError(ValueError):
    """A `subscribe` payload the server cannot honour; the message goes back to the client."""


@dataclass
class Subscription:
    wikis: frozenset[str] | None  # None: every wiki
    offset: int = 0
    with_offsets: bool = False
    realtime: bool = False
    speed: float = 1.0
    raw: bool = False

    def matches(self, event: dict[str, Any] | None) -> bool:
        if self.wikis is None:
            return True
        if not isinstance(event, dict):
            return False
        return event.get("server_name") in self.wikis or event.get("wiki") in self.wikis


def parse_subscription(payload: Any, realtime: bool, speed: float) -> Subscription:
    """Turn a `subscribe` payload into a Subscription, or raise SubscribeError saying why."""
    if isinstance(payload, str | list):
        payload = {"wikis": payload}
    if not isinstance(payload, dict):
        raise SubscribeError(f"subscribe takes a wiki name, a list of them, '*' or an object, not {payload!r:.80}")
    unknown = set(payload) - {"wikis", "offset", "with_offsets", "realtime", "speed", "raw"}
    if unknown:
        raise SubscribeError(f"unknown subscribe fields: {sorted(unknown)!r:.200}")
    offset = payload.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise SubscribeError(f"offset must be a whole number >= 0, not {offset!r:.40}")
    speed = payload.get("speed", speed)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed < float("inf"):
        raise SubscribeError(f"speed must be a positive number, not {speed!r:.40}")
    for flag in ("with_offsets", "realtime", "raw"):
        if not isinstance(payload.get(flag, False), bool):
            raise SubscribeError(f"{flag} must be true or false")
    return Subscription(
        wikis=_parse_wikis(payload.get("wikis", "*")),
        offset=offset,
        with_offsets=payload.get("with_offsets", False),
        realtime=payload.get("realtime", realtime),
        speed=float(speed),
        raw=payload.get("raw", False),
    )


def _parse_wikis(wikis: Any) -> frozenset[str] | None:
    if isinstance(wikis, str):
        wikis = [wikis]
    if not isinstance(wikis, list) or not wikis or not all(isinstance(w, str) and w for w in wikis):
        raise SubscribeError("wikis must be a wiki name such as en.wikipedia.org, a list of them, or '*'")
    return None if "*" in wikis else frozenset(wikis)
