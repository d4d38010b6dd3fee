"""The seams of the run's core, written down: what it sends work through (`Executor`), what
it orders results with (`Window`), where a streaming run's events come from (`Source`) and
where its lines go (`Sink`), with the data each hands over and what each may report.

The core depends on these, never on an engine, a transport or a file: Celery, the
in-process engine, the Socket.IO and event-stream clients and the JSONL sink implement them.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream_processor.core.outcomes import OutcomeKind

# -- the executor: work out, replies back --------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventTask:
    """One event to run: its offset and its line, as text; `follows`: the index, in its
    batch, of the same-key event it must run after (it is skipped if that one fails)."""

    offset: int
    line: str
    follows: int = -1


@dataclass(frozen=True, slots=True)
class Batch:
    """Events that one worker runs one after another. `handback_after_s`: when one of them
    runs this long, the worker hands back those not started (None: never). `isolate`: a
    lone event that was running when a worker process died; it runs in a process of its
    own, so that if it is what kills processes, it kills only that one (and is LOST)."""

    id: int
    tasks: list[EventTask]
    handback_after_s: float | None = None
    isolate: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    """How one event of a batch ended (`OutcomeKind`)."""

    offset: int
    kind: OutcomeKind | str  # a worker's reply carries the kind's string; it equals the member
    value: str | None = None  # DONE: the line to write, None if unchanged; otherwise why
    run_s: float | None = None  # how long the function ran on it, if it ran
    worker: str | None = None  # host:pid of the process that ran it, if known
    handoff_s: float | None = None  # the worker's idle gap before this batch, when it was already queued


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back for batch `batch_id`: completions, offsets handed back unstarted, and
    whether the batch is over. `redelivered`: the batch came again after its worker was
    lost, so nothing of it ran there; what it hands back runs alone (it may be the culprit)."""

    batch_id: int
    completions: list[Completion]
    handed_back: tuple[int, ...] = ()
    final: bool = True
    redelivered: bool = False
    running: tuple[int, float] | None = None  # (offset, seconds it has run) of the event a long one runs
    worker: str | None = None  # host:pid of the process running it, if known


OnComplete = Callable[[Reply], None]


class Executor(Protocol):
    """Like `concurrent.futures.Executor`, but what is submitted is a batch, and completions
    are pushed: the executor calls `on_complete(reply)` from any thread.

    What it may report: while a batch runs, replies with `final=False` carry the events
    that have ended so far and those handed back unstarted; the last reply (`final=True`)
    carries a completion for every event that ran, and what was handed back, again. A reply
    may arrive more than once (at-least-once engines): the core keeps each event's first
    completion. `late_replies_dropped` counts replies it dropped itself (0 if it never does).
    """

    late_replies_dropped: int

    def start(self, on_complete: OnComplete) -> None:
        """Begin delivering replies to `on_complete`."""

    def submit(self, batch: Batch) -> None:
        """Send one batch off, to run in this order; must not wait for it to finish."""

    def close(self) -> None:
        """Stop delivering completions and release resources."""


# -- the ordering window ----------------------------------------------------------------


class Window(Protocol):
    """The slots from the low watermark to the newest offset admitted, in one ordering mode
    (core/ordering.py): which event may start, and which lines may leave. Pure: no I/O.

    What it may report: `admit` says whether the event may start now; `finish` hands back
    the lines that may leave now, in the order they must be written, and the offsets that
    may start now (the next of a key); `successor` names an event that may travel in its
    predecessor's batch, and `join` puts it there; `put_back` returns the offsets to run
    again. It raises `ordering.WindowFull` when asked to hold more than its capacity."""

    @property
    def next_offset(self) -> int:
        """The offset the next event admitted must have."""

    @property
    def next_to_release(self) -> int:
        """The low watermark: every offset below it has left."""

    def __len__(self) -> int:
        """The slots it holds: from the low watermark to the newest offset admitted."""

    def is_full(self) -> bool: ...

    def admit(self, offset: int, key: Hashable | None = None, done: bool = False) -> bool: ...

    def is_pending(self, offset: int) -> bool: ...

    def finish(self, offset: int, value: Any) -> tuple[list[tuple[int, Any]], list[int]]: ...

    def successor(self, offset: int) -> int | None: ...

    def join(self, offset: int) -> None:
        """`offset`, named by `successor`, travels in its predecessor's batch, right after it."""

    def put_back(self, offsets: list[int]) -> list[int]: ...


# -- the source of a streaming run ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the stream, with its offset."""

    offset: int
    line: bytes  # the recorded line, byte for byte
    received_at: float
    line_number: int | None = None  # in the server's recording, if it says


@dataclass(frozen=True, slots=True)
class End:
    """The stream is over: `count` events were sent."""

    count: int
    offset: int | None = None  # one past the replay's last offset, if the server says


class Source(Protocol):
    """A replay or a live stream, read from `next_offset` on (sources/).

    What it may report: `Change`s in offset order on `inbox`, then at most one `End`;
    `refusal` when the server refused it (a usage error), `failure` when it cannot read on;
    `reconnects` counts the times it had to, `canaries_dropped` the EventStreams canaries it
    left out. It holds at most a window of events past the last offset acknowledged, so
    memory stays flat however slow the run."""

    inbox: queue.Queue[Change | End]
    next_offset: int
    reconnects: int
    canaries_dropped: int
    refusal: str | None
    failure: Exception | None
    shown_url: str  # what logs and messages name: no token, no password

    def connect(self) -> None: ...

    def disconnected_for(self) -> float:
        """Seconds since the connection dropped without coming back; 0 while connected."""

    def acknowledge(self, written_up_to: int, caught_up: bool) -> None:
        """Every offset below `written_up_to` is written: the server may send further."""

    def resume_token(self, offset: int) -> str | None:
        """What resumes this stream at `offset` (an event stream's id), if anything."""

    def close(self) -> None: ...


# -- the sink -----------------------------------------------------------------------------


class Sink(Protocol):
    """The only writer of a run's lines (output/sink.py): each `(offset, line)` batch is
    written in the order given, with the checkpoint that says which offsets are done."""

    def write(self, lines: Sequence[tuple[int, bytes]]) -> None: ...
