"""The small interface the run's core sends work through, and an in-process engine.

Like `concurrent.futures.Executor`, with two differences: what is submitted is a batch
(one or more events, run one after another by one worker), and completions are pushed:
the executor calls `on_complete(reply)` from any thread with a `Reply` for a batch:
- while the batch runs, replies with `final=False` carry the events that have ended so
  far (each soon after it ends), and the events the worker handed back unstarted (see
  batch_run.py);
- the last reply (`final=True`) carries a completion for every event that ran, and what
  was handed back, again: a partial reply that was lost or overtaken changes nothing.
A reply may arrive more than once (at-least-once engines); the core keeps the first
completion of each event.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from stream_processor.engine.batch_run import BatchRun, Report, ReportMonitor
from stream_processor.engine.execution import DONE, FAILED, INVALID, SKIPPED, TIMED_OUT, run_events

LOST = "lost"  # the worker process died while running the batch: nobody knows which event did it
KINDS = (DONE, FAILED, TIMED_OUT, INVALID, SKIPPED, LOST)


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


def follows_of(batch: list[EventTask]) -> list[int] | None:
    """What a batch's events must follow, or None when none follows another."""
    follows = [task.follows for task in batch]
    return follows if any(index >= 0 for index in follows) else None


@dataclass(frozen=True, slots=True)
class Completion:
    """How one event of a batch ended (see execution.py for the kinds, and LOST)."""

    offset: int
    kind: str
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
    def start(self, on_complete: OnComplete) -> None:
        """Begin delivering replies to `on_complete`."""

    def submit(self, batch: Batch) -> None:
        """Send one batch off, to run in this order; must not wait for it to finish."""

    def close(self) -> None:
        """Stop delivering completions and release resources."""


class LocalExecutor:
    """Runs the function on threads in this process: for tests and for trying a task out.
    Time limits need signals, which only the main thread gets: none here."""

    def __init__(self, function: Callable[..., Any], max_workers: int, call_kwargs: dict | None = None) -> None:
        self.function = function
        self.call_kwargs = call_kwargs or {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="local-task")
        self._on_complete: OnComplete | None = None
        self._identity = f"local:{os.getpid()}"
        self._report_monitor: ReportMonitor | None = None

    def start(self, on_complete: OnComplete) -> None:
        self._on_complete = on_complete

    def submit(self, batch: Batch) -> None:
        self._pool.submit(self._run, batch)

    def _run(self, batch: Batch) -> None:
        tasks = batch.tasks
        run = BatchRun(len(tasks), batch.handback_after_s, report_after_s=0.0)
        monitor = self._monitor()
        monitor.watch(run, lambda report: self._on_complete(self._partial(batch, report)))
        try:
            outcomes = run_events(
                self.function, [task.line for task in tasks], None, self.call_kwargs, follows_of(tasks), run
            )
        finally:
            handed_back = run.finish()
            monitor.unwatch(run)
        completions = completions_of(tasks, outcomes, self._identity, handed_back=handed_back)
        self._on_complete(Reply(batch.id, completions, tuple(tasks[i].offset for i in handed_back)))

    def _partial(self, batch: Batch, report: Report) -> Reply:
        tasks = batch.tasks
        completions = [
            Completion(tasks[index].offset, kind, value, run_s, self._identity)
            for index, (kind, value, run_s) in report.outcomes.items()
        ]
        back = tuple(tasks[i].offset for i in report.handed_back)
        running = None if report.running is None else (tasks[report.running[0]].offset, report.running[1])
        return Reply(batch.id, completions, back, final=False, running=running, worker=self._identity)

    def _monitor(self) -> ReportMonitor:
        if self._report_monitor is None:
            self._report_monitor = ReportMonitor()
        return self._report_monitor

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def completions_of(
    batch: list[EventTask],
    outcomes: Any,
    worker: str | None,
    handoff_s: float | None = None,
    handed_back: tuple[int, ...] = (),
) -> list[Completion]:
    """Pair a batch with the outcomes a worker sent back (None at each index it handed
    back); a reply that does not fit (not one well-formed outcome per event that ran)
    makes every event of the batch INVALID."""
    if not _fits(outcomes, len(batch), handed_back):
        why = f"the worker sent a malformed reply ({str(outcomes)[:80]})"
        return [Completion(task.offset, INVALID, why, None, worker) for task in batch]
    return [
        Completion(task.offset, outcome[0], outcome[1], outcome[2], worker, handoff_s)
        for task, outcome in zip(batch, outcomes, strict=True)
        if outcome is not None
    ]


def _fits(outcomes: Any, size: int, handed_back: tuple[int, ...]) -> bool:
    if not isinstance(outcomes, list) or len(outcomes) != size:
        return False
    back = set(handed_back)
    return all(outcome is None if index in back else well_formed(outcome) for index, outcome in enumerate(outcomes))


def well_formed(outcome: Any) -> bool:
    if not isinstance(outcome, list) or len(outcome) != 3:
        return False
    kind, value, run_s = outcome
    return (
        kind in KINDS
        and (value is None or isinstance(value, str))
        and (kind == DONE or value is not None)
        and isinstance(run_s, int | float)
        and not isinstance(run_s, bool)
    )
