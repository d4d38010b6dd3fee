"""The small interface the run's core sends work through, and an in-process engine.

Like `concurrent.futures.Executor`, with two differences: what is submitted is a batch
(one or more events, run one after another by one worker), and completions are pushed:
the executor calls `on_complete(completions)` from any thread once a batch is done, one
`Completion` per event of it. A batch's completions may arrive more than once (at-least-
once engines); the core keeps the first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from stream_processor.execution import DONE, FAILED, INVALID, SKIPPED, TIMED_OUT, run_events

LOST = "lost"  # the worker process died while running the batch: nobody knows which event did it
KINDS = (DONE, FAILED, TIMED_OUT, INVALID, SKIPPED, LOST)


@dataclass(frozen=True, slots=True)
class EventTask:
    """One event to run: its offset and its line, as text; `follows`: the index, in its
    batch, of the same-key event it must run after (it is skipped if that one fails)."""

    offset: int
    line: str
    follows: int = -1


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


OnComplete = Callable[[list[Completion]], None]


class Executor(Protocol):
    def start(self, on_complete: OnComplete) -> None:
        """Begin delivering completions to `on_complete`."""

    def submit(self, batch: list[EventTask]) -> None:
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

    def start(self, on_complete: OnComplete) -> None:
        self._on_complete = on_complete

    def submit(self, batch: list[EventTask]) -> None:
        self._pool.submit(self._run, batch)

    def _run(self, batch: list[EventTask]) -> None:
        lines = [task.line for task in batch]
        outcomes = run_events(self.function, lines, None, self.call_kwargs, follows_of(batch))
        self._on_complete(completions_of(batch, outcomes, self._identity))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def completions_of(
    batch: list[EventTask], outcomes: Any, worker: str | None, handoff_s: float | None = None
) -> list[Completion]:
    """Pair a batch with the outcomes a worker sent back; a reply that does not fit (not
    one well-formed outcome per event) makes every event of the batch INVALID."""
    if not isinstance(outcomes, list) or len(outcomes) != len(batch) or not all(map(_well_formed, outcomes)):
        why = f"the worker sent a malformed reply ({str(outcomes)[:80]})"
        return [Completion(task.offset, INVALID, why, None, worker) for task in batch]
    return [
        Completion(task.offset, kind, value, run_s, worker, handoff_s)
        for task, (kind, value, run_s) in zip(batch, outcomes, strict=True)
    ]


def _well_formed(outcome: Any) -> bool:
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
