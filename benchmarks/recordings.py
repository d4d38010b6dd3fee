"""The recordings the scenarios replay: what the harness needs to know of one, and
zero-wait recordings made with the project's own generator."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from stream_processor.core.ordering import parse_order
from stream_processor.core.records import check_wait, read_records
from stream_processor.core.replay import _timestamp  # the timestamp a replay paces an event by
from stream_processor.sources.generate import generate_events

_ZERO_WAIT_RATE = 1000.0  # edits per second; only their number matters with no pacing


@dataclass(frozen=True)
class Recording:
    path: Path
    waits: list[float]  # 0 for a line the run cannot send (it gets an error record at once)
    timestamps: list[float | None]
    events: list[dict | None]

    @classmethod
    def load(cls, path: Path) -> Recording:
        """Read it the way a run does, with the reference task's validation."""
        waits, timestamps, events = [], [], []
        for record in read_records(path, validate=check_wait):
            waits.append(0.0 if record.error else float(record.event["wait"]))
            timestamps.append(_timestamp(record.event))
            events.append(None if record.error else record.event)
        return cls(path, waits, timestamps, events)

    def keys(self, order: str) -> list:
        """Each event's key in an ordering mode (None: waits for nothing)."""
        mode = parse_order(order)
        return [mode.key_of(event) for event in self.events]

    def __len__(self) -> int:
        return len(self.waits)

    def durations(self, time_scale: float) -> list[float]:
        """What the reference task spends on each event at this time scale."""
        return [wait * time_scale for wait in self.waits]


def write_zero_wait_recording(path: Path, events: int, seed: int = 1) -> Path:
    """`events` generated edits with `wait` set to 0: the pipeline's own cost, nothing else."""
    # Ask the generator for a fifth more than needed: its count is random (Poisson).
    minutes = events * 1.2 / _ZERO_WAIT_RATE / 60 + 1 / 60
    written = 0
    with open(path, "w", encoding="ascii") as stream:
        for event in itertools.islice(generate_events(minutes, _ZERO_WAIT_RATE, seed), events):
            event["wait"] = 0
            stream.write(json.dumps(event) + "\n")
            written += 1
    if written != events:
        raise RuntimeError(f"the generator gave {written} events, not {events}")
    return path
