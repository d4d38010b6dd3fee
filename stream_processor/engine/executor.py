"""The in-process engine (`LocalExecutor`), and pairing a worker's outcomes with its batch.

The interface every engine implements, `Executor`, and the data it carries (`Batch`,
`Reply`, `Completion`) are written down in core/contracts.py; they are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stream_processor.core.contracts import Batch, Completion, EventTask, Executor, OnComplete, Reply
from stream_processor.core.outcomes import DONE, INVALID, KINDS
from stream_processor.engine.batch_run import BatchRun, Report, ReportMonitor
from stream_processor.engine.execution import run_events

__all__ = ["Batch", "Completion", "EventTask", "Executor", "LocalExecutor", "OnComplete", "Reply", "completions_of"]


def follows_of(batch: list[EventTask]) -> list[int] | None:
    """What a batch's events must follow, or None when none follows another."""
    follows = [task.follows for task in batch]
    return follows if any(index >= 0 for index in follows) else None


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
        self.late_replies_dropped = 0  # every reply it makes is delivered once

    def start(self, on_complete: OnComplete) -> None:
        self._on_complete = on_complete

    def submit(self, batch: Batch) -> None:
        if self._on_complete is None:
            raise RuntimeError("LocalExecutor: submit() before start()")
        self._pool.submit(self._run, batch, self._on_complete)

    def _run(self, batch: Batch, on_complete: OnComplete) -> None:
        tasks = batch.tasks
        run = BatchRun(len(tasks), batch.handback_after_s, report_after_s=0.0)
        monitor = self._monitor()
        monitor.watch(run, lambda report: on_complete(self._partial(batch, report)))
        try:
            outcomes = run_events(
                self.function, [task.line for task in tasks], None, self.call_kwargs, follows_of(tasks), run
            )
        finally:
            handed_back = run.finish()
            monitor.unwatch(run)
        completions = completions_of(tasks, outcomes, self._identity, handed_back=handed_back)
        on_complete(Reply(batch.id, completions, tuple(tasks[i].offset for i in handed_back)))

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
