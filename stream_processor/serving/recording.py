"""The recording a server replays: its events from any offset, once or looping; and
`Replayable`, what a server may replay: a recording, or a followed output (followed.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from stream_processor.core.records import Record, count_events, read_records
from stream_processor.core.replay import event_time


class Replayable(Protocol):
    """What the core and the replay loop use of what they serve."""

    @property
    def path(self) -> str | Path: ...

    @property
    def events(self) -> int | None: ...  # None: not known (a followed output of unknown length)

    @property
    def loop(self) -> bool: ...

    @property
    def stamps_meta(self) -> bool: ...  # its events go out with EventStreams' meta.topic/partition/offset filled

    def records_from(self, offset: int) -> Iterator[Record | None]:
        """Records from `offset` on, in offset order. None (a followed output only): nothing
        is committed beyond here yet; the replay looks again shortly (replay_loop.py)."""
        ...

    def ends_before(self, offset: int) -> bool: ...

    def ends_before_time(self, since: float) -> bool: ...

    def status(self) -> dict[str, Any] | None:
        """What the status page shows beside the path and events (None: nothing)."""
        ...


class Recording:
    stamps_meta = True  # a recording's events are served as a stream's: meta says from where

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path = Path(path)
        self.loop = loop
        self.events = count_events(self.path)  # also fails now, clearly, if it is unreadable

    def records_from(self, offset: int) -> Iterator[Record]:
        """The recording from `offset` on; with `loop`, again and again, offsets growing."""
        lap_start = offset - offset % self.events if self.loop and self.events else 0
        while True:
            for record in read_records(self.path, start=offset - lap_start):
                yield Record(record.offset + lap_start, record.raw, record.event, record.error, record.line)
            if not self.loop or not self.events:
                return
            lap_start += self.events
            offset = lap_start

    def ends_before(self, offset: int) -> bool:
        """Whether a replay from `offset` has nothing left to send (never, when looping)."""
        return not (self.loop and self.events) and offset >= self.events

    @cached_property
    def latest_time(self) -> float | None:
        """The latest time of any event (epoch seconds; None: no event has one). Timestamps
        need not grow, so it is the greatest, not the last one's. Read on first use (a pass
        over the recording, once), by the first request that resumes by time."""
        times = (event_time(record.event) for record in read_records(self.path))
        return max((moment for moment in times if moment is not None), default=None)

    def ends_before_time(self, since: float) -> bool:
        """Whether a replay from the first event at or after `since` has nothing to send:
        no event is that late (so, looping or not, none ever will be)."""
        latest = self.latest_time
        return latest is None or since > latest

    def status(self) -> dict[str, Any] | None:
        return None  # the path, the events and the loop say it all
