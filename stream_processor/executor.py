"""The small interface the ordering core runs work through, and an in-process engine.

Like `concurrent.futures.Executor`, but completions are pushed: the executor calls
`on_complete(offset, ok, value)` from any thread when an event is done, where `value`
is the function's return value (ok) or a one-line error message (not ok). Calls for
one offset may repeat (at-least-once engines); the caller keeps the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

OnComplete = Callable[[int, bool, Any], None]


class Executor(Protocol):
    def start(self, on_complete: OnComplete) -> None:
        """Begin delivering completions to `on_complete`."""

    def submit(self, offset: int, event: dict[str, Any]) -> None:
        """Send one event off; must not wait for it to finish."""

    def close(self) -> None:
        """Stop delivering completions and release resources."""


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LocalExecutor:
    """Runs the function on threads in this process: for tests and for trying a task out."""

    def __init__(self, function: Callable[[dict[str, Any]], Any], max_workers: int) -> None:
        self.function = function
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="local-task")
        self._on_complete: OnComplete | None = None

    def start(self, on_complete: OnComplete) -> None:
        self._on_complete = on_complete

    def submit(self, offset: int, event: dict[str, Any]) -> None:
        self._pool.submit(self._run, offset, event)

    def _run(self, offset: int, event: dict[str, Any]) -> None:
        try:
            # A copy, as a remote worker gets one: a task that edits the event in place
            # must not edit the caller's original, which decides "unchanged".
            value = self.function(json.loads(json.dumps(event)))
        except Exception as exc:  # the event gets an error record; the stream goes on
            self._on_complete(offset, False, describe_error(exc))
        else:
            self._on_complete(offset, True, value)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
