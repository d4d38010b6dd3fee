"""What a `subscribe` may ask for, and turning its payload into a `Subscription`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream_processor.serving.filters import EVERYTHING, FILTER_FIELDS, EventFilter, FilterError, parse_filter

FLAGS = ("with_offsets", "realtime", "raw")
FIELDS = (*FILTER_FIELDS, "offset", "speed", "batch", "window", *FLAGS)
MAX_BATCH = 1000
MAX_WINDOW = 10_000_000


class SubscribeError(ValueError):
    """A `subscribe` payload the server cannot honour; the message goes back to the client."""


@dataclass(frozen=True)
class Subscription:
    filter: EventFilter = EVERYTHING
    offset: int = 0
    with_offsets: bool = False
    realtime: bool = False
    speed: float = 1.0
    raw: bool = False
    batch: int | None = None  # changes come this many to a `changes` message, each as with `raw`
    since: float | None = None  # start at the first event at or after this time (epoch seconds)
    window: int | None = None  # the client's own window: the server holds it to the smaller of its own and this

    def window_within(self, server_window: int) -> int:
        """Unacknowledged events this subscriber may have: the server's window, or the client's if smaller."""
        return server_window if self.window is None else min(server_window, self.window)

    def matches(self, event: dict[str, Any] | None) -> bool:
        return self.filter.matches(event)

    @property
    def acknowledges(self) -> bool:
        """Whether the client sees offsets, so it can ack (and is held to the window)."""
        return self.with_offsets or self.raw or self.batch is not None

    def summary(self) -> dict[str, Any]:
        """What the status page shows of it."""
        return {**self.filter.summary(), "realtime": self.realtime, "speed": self.speed}


def parse_subscription(payload: Any, realtime: bool, speed: float) -> Subscription:
    """Turn a `subscribe` payload into a Subscription, or raise SubscribeError saying why."""
    if isinstance(payload, str | list):
        payload = {"wikis": payload}
    if not isinstance(payload, dict):
        raise SubscribeError(f"subscribe takes a wiki name, a list of them, '*' or an object, not {payload!r:.80}")
    unknown = set(payload) - set(FIELDS)
    if unknown:
        raise SubscribeError(f"unknown subscribe fields: {sorted(unknown)!r:.200}")
    offset = payload.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise SubscribeError(f"offset must be a whole number >= 0, not {offset!r:.40}")
    speed = payload.get("speed", speed)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < _as_float(speed) < float("inf"):
        raise SubscribeError(f"speed must be a positive number, not {speed!r:.40}")
    for flag in FLAGS:
        if not isinstance(payload.get(flag, False), bool):
            raise SubscribeError(f"{flag} must be true or false")
    batch = payload.get("batch")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH):
        raise SubscribeError(f"batch must be a whole number from 1 to {MAX_BATCH}, not {batch!r:.40}")
    window = payload.get("window")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW
    ):
        raise SubscribeError(f"window must be a whole number from 1 to {MAX_WINDOW}, not {window!r:.40}")
    try:
        event_filter = parse_filter({key: payload[key] for key in FILTER_FIELDS if key in payload})
    except FilterError as exc:
        raise SubscribeError(str(exc)) from None
    return Subscription(
        filter=event_filter,
        offset=offset,
        with_offsets=payload.get("with_offsets", False),
        realtime=payload.get("realtime", realtime),
        speed=float(speed),
        raw=payload.get("raw", False),
        batch=batch,
        window=window,
    )


def _as_float(number: int | float) -> float:
    """A JSON number as a float; an int too large for one (over 308 digits) is infinite, not an OverflowError."""
    try:
        return float(number)
    except OverflowError:
        return float("inf")
