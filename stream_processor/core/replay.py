"""When each event of a replay goes out: real time, speed, and non-monotonic timestamps.

Event i is due at (ts_i - ts_first) / speed seconds after the replay starts, but never
before the event ahead of it: real recordings' timestamps are not always increasing,
and the order of the recording is the order of the stream. An event without a usable
timestamp goes out with the one ahead of it. Pure arithmetic; the server does the waiting.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


class ReplaySchedule:
    """Due times, in seconds after the start of a replay, for events fed in order."""

    def __init__(self, speed: float = 1.0, realtime: bool = True) -> None:
        if not speed > 0 or math.isinf(speed):
            raise ValueError(f"speed must be a positive finite number, got {speed}")
        self.speed = speed
        self.realtime = realtime
        self._first_timestamp: float | None = None
        self._last_due = 0.0

    def due(self, event: dict[str, Any] | None) -> float:
        """Seconds after the start at which `event` (the next in order) goes out."""
        if not self.realtime:
            return 0.0
        timestamp = _timestamp(event)
        if timestamp is not None:
            if self._first_timestamp is None:
                self._first_timestamp = timestamp
            self._last_due = max(self._last_due, (timestamp - self._first_timestamp) / self.speed)
        return self._last_due


def _timestamp(event: dict[str, Any] | None) -> float | None:
    value = event.get("timestamp") if isinstance(event, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int of over 308 digits: no time
        return None
    return seconds if math.isfinite(seconds) else None


def event_time(event: dict[str, Any] | None) -> float | None:
    """When an event happened, in epoch seconds: its `timestamp`, else EventStreams' `meta.dt`."""
    timestamp = _timestamp(event)
    if timestamp is not None or not isinstance(event, dict):
        return timestamp
    meta = event.get("meta")
    dt = meta.get("dt") if isinstance(meta, dict) else None
    if not isinstance(dt, str):
        return None
    try:
        moment = datetime.fromisoformat(dt)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # no zone: UTC, as `since`
