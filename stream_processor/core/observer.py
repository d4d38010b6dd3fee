"""What the run's core tells those who watch it: an `Observer` base whose hooks do nothing,
and the state the owner reports on each tick.

Every hook is called on the owner thread only, so an observer needs no lock for what it
keeps; readers on other threads take copies (see observe/observations.py). An observer
overrides the hooks it wants; the core calls only those (`overrides`), so a hook nobody
wants costs nothing, not even building its argument.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_processor.core.contracts import Completion


class EntryState(StrEnum):
    """What an event in the window waits for: the head of the line's state, on the live page."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    WAITING_FOR_KEY = "waiting for its key"
    DONE_WAITING = "done, waiting for its turn"
    HANDED_BACK = "handed back, queued again"


@dataclass(frozen=True)
class HeadOfLine:
    """The oldest event not yet written: what every later line in total order waits for,
    and where the low watermark stands in the other modes."""

    offset: int
    event_id: Any
    title: str | None
    read_at: float
    # queued, running, waiting in its batch behind another, handed back, retrying, waiting for its key, done
    state: EntryState | str
    attempts: int
    done_behind: int  # events finished after it, waiting for it (total) or ahead of the watermark
    head_since: float | None = None  # when it became the head: the line has not moved since
    worker: str | None = None  # the worker process it runs or waits on, once that is known
    running_since: float | None = None  # when it started, once its worker has said it runs


@dataclass(frozen=True)
class WorkerOn:
    """A worker process and the event it has said it runs, since when."""

    worker: str
    offset: int
    since: float


@dataclass(frozen=True)
class CoreState:
    """What the owner reports on each tick."""

    in_flight: int  # events in the window: from the low watermark to the newest read
    done_waiting: int  # of those, done but not yet past the watermark
    low_watermark: int
    batches_out: int
    head: HeadOfLine | None
    batch_size: int
    mean_event_run_s: float | None
    handoff_s: float | None
    duplicates_dropped: int = 0  # completions for offsets already done (the core drops them)
    late_replies_dropped: int = 0  # replies for a task already answered (the executor drops them)
    running: tuple[WorkerOn, ...] = ()  # events workers have said they run (long ones), by worker
    replies: int = 0  # messages back for batches: reports while they run, and final replies
    results_back: int = 0  # events those told of for the first time
    handed_back: int = 0  # events workers gave back unstarted, when one of their batch overran
    asked_again: int = 0  # events sent again because the workers or the broker restarted with them out


class Observer:
    """What watches a run: its figures, live metrics, progress, plot, acknowledgements.
    Subclass it and override what you need; every hook here does nothing."""

    def on_read(self, duration_s: float | None, arrival_s: float, key: Hashable | None) -> None:
        """An event was admitted to the window (`duration_s`: its known run time, if any)."""

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        """Its line was written, `latency_s` after it was read."""

    def on_watermark(self, low_watermark: int) -> None:
        """Every offset below `low_watermark` is written (and checkpointed)."""

    def on_completions(self, completions: Sequence[Completion]) -> None:
        """Events ended on a worker (first completions only), before their lines may leave."""

    def on_state(self, state: CoreState) -> None:
        """How things stand, on each of the owner's ticks."""


def overrides(observer: Observer, hook: str) -> bool:
    """Whether `observer` does something on `hook` (it overrides the base's no-op)."""
    if not isinstance(observer, Observer):
        raise TypeError(f"an observer of the run must subclass core.observer.Observer, not {type(observer).__name__}")
    return getattr(type(observer), hook) is not getattr(Observer, hook)
