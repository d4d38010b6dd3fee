"""A batch as it runs on a worker: each event's outcome reported as it ends, and the tail
handed back when one event overruns.

A batch is sent to save Celery's cost per task, not to make its events wait for each
other. So while a batch runs:
- an event's outcome is reported soon after the event ends (`report_after_s`, a few
  ms, so that a burst of short events goes back in one message, not one each), not
  when the whole batch ends;
- when one event runs past `handback_after_s` (the run's estimate of what is "well
  past" what the batch should take) the events not yet started are handed back: the
  run sends them to free workers at once, instead of behind the slow one;
- an event that runs past `ANNOUNCE_AFTER_S` is named as running, so the run can say
  which event each worker is on and what really holds the line (short ones are not:
  their outcome is news enough).

`BatchRun` is the state both sides of that share, under one lock: the runner asks it
which event to start next, and a monitor asks it what is due. The lock orders a start
against a hand-back: once an event is handed back, `start_next` never returns it, and
once it is started, no hand-back names it. So an event is never run here and again
elsewhere because of a hand-back. The final reply carries every outcome (and what was
handed back) again, so a report that is lost or overtaken changes nothing.

`ReportMonitor` is the one thread per process that wakes at the earliest deadline of
the batches running in it and publishes what is due. Pure logic with an injectable
clock; the monitor's only I/O is the `publish` callback each batch brings.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

REPORT_AFTER_S = 0.005  # an ended event's outcome waits at most this long for others to share its message
ANNOUNCE_AFTER_S = 0.25  # an event running this long is named as running (the live page's worker rows)


@dataclass(frozen=True, slots=True)
class Report:
    """What a running batch sends back now: outcomes by index, indexes handed back, and the
    event running (its index and for how long), if one is."""

    outcomes: dict[int, Any]
    handed_back: tuple[int, ...] = ()
    running: tuple[int, float] | None = None


class BatchRun:
    """Which event of a batch starts next, what has ended and not been reported, and the
    tail handed back. Thread-safe; see the module's docstring for the guarantee."""

    def __init__(
        self,
        size: int,
        handback_after_s: float | None = None,
        report_after_s: float = REPORT_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        announce_after_s: float = ANNOUNCE_AFTER_S,
    ) -> None:
        self.size = size
        self.handback_after_s = handback_after_s
        self.report_after_s = report_after_s
        self.announce_after_s = announce_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0  # the next index to start
        self._end = size  # indexes from here on are not to be started (handed back)
        self._current_started_at: float | None = None  # the running event's start, if one runs
        self._unreported: dict[int, Any] = {}  # ended, not yet reported
        self._unreported_since = 0.0  # when the oldest of them ended (meaningful only while there are some)
        self._announced = -1  # the last index named as running
        self._finished = False
        # The monitor's: a new deadline, so that it wakes earlier than it meant to if need be.
        self.on_change: Callable[[float | None], None] = lambda deadline: None

    # -- the runner ------------------------------------------------------------------

    def start_next(self) -> int | None:
        """The index to run now, or None: the batch is over (all run, or the rest handed back)."""
        with self._lock:
            if self._next >= self._end:
                self._current_started_at = None
                return None
            index = self._next
            self._next += 1
            self._current_started_at = self.clock()
            deadline = self._deadline()
        self.on_change(deadline)
        return index

    def ended(self, index: int, outcome: Any) -> None:
        with self._lock:
            self._current_started_at = None
            if not self._unreported:
                self._unreported_since = self.clock()
            self._unreported[index] = outcome
            deadline = self._deadline()
        self.on_change(deadline)

    def finish(self) -> tuple[int, ...]:
        """The batch's function is done: nothing more is reported; the indexes handed back."""
        with self._lock:
            self._finished = True
            self._unreported.clear()
            return tuple(range(self._end, self.size))

    # -- the monitor -----------------------------------------------------------------

    def due(self) -> Report | None:
        """What to send now, if anything: outcomes that waited long enough, and the tail
        when the running event has overrun (decided here, under the lock)."""
        with self._lock:
            if self._finished:
                return None
            now = self.clock()
            handed_back: tuple[int, ...] = ()
            if self._overran(now):
                handed_back = tuple(range(self._next, self._end))
                self._end = self._next
            announce = self._announce_due(now)
            outcomes = {}
            if self._unreported and (handed_back or announce or self._unreported_since + self.report_after_s <= now):
                outcomes, self._unreported = self._unreported, {}
            if not outcomes and not handed_back and not announce:
                return None
            running = None
            if self._current_started_at is not None:
                running = (self._next - 1, now - self._current_started_at)
                self._announced = self._next - 1
            return Report(outcomes, handed_back, running)

    def next_deadline(self) -> float | None:
        """When `due` may next have something to send (None: nothing pending)."""
        with self._lock:
            return self._deadline()

    def _deadline(self) -> float | None:
        if self._finished:
            return None
        deadlines = []
        if self._unreported:
            deadlines.append(self._unreported_since + self.report_after_s)
        handback_at = self._handback_at()
        if handback_at is not None:
            deadlines.append(handback_at)
        if self._current_started_at is not None and self._announced != self._next - 1:
            deadlines.append(self._current_started_at + self.announce_after_s)
        return min(deadlines, default=None)

    def _announce_due(self, now: float) -> bool:
        started = self._current_started_at
        return started is not None and self._announced != self._next - 1 and started + self.announce_after_s <= now

    def _handback_at(self) -> float | None:
        """When the running event will have overrun, if the rest of the batch can be handed back."""
        started, after = self._current_started_at, self.handback_after_s
        if after is None or started is None or self._next >= self._end:
            return None
        return started + after

    def _overran(self, now: float) -> bool:
        handback_at = self._handback_at()
        return handback_at is not None and handback_at <= now


class ReportMonitor:
    """One thread per process: publishes each running batch's reports when they are due."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pid = os.getpid()
        self._changed = threading.Condition()
        self._runs: dict[int, tuple[BatchRun, Callable[[Report], None]]] = {}
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf  # when the thread means to look next

    def watch(self, run: BatchRun, publish: Callable[[Report], None]) -> None:
        with self._changed:
            self._runs[id(run)] = (run, publish)
            run.on_change = self.poke
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="batch-reports", daemon=True)
                self._thread.start()
            self._changed.notify()

    def unwatch(self, run: BatchRun) -> None:
        with self._changed:
            self._runs.pop(id(run), None)

    def poke(self, deadline: float | None) -> None:
        """A watched run has a new deadline: wake the thread if it would sleep past it."""
        if deadline is None or deadline >= self._wake_at:
            return  # the thread wakes in time anyway (and then looks at every deadline)
        with self._changed:
            self._wake_at = deadline
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            with self._changed:
                runs = list(self._runs.values())
                deadlines = [d for run, _ in runs if (d := run.next_deadline()) is not None]
                self._wake_at = min(deadlines, default=math.inf)
                wait = None if not deadlines else max(0.0, self._wake_at - self.clock())
                if wait is None or wait > 0:
                    self._changed.wait(wait)
                    continue
            for run, publish in runs:  # outside the lock: publishing is I/O
                report = run.due()
                if report is not None:
                    try:
                        publish(report)
                    except Exception:  # the final reply carries it all again
                        log.exception("could not report a running batch's progress")


_monitor: ReportMonitor | None = None
_monitor_lock = threading.Lock()


def process_monitor() -> ReportMonitor:
    """This process's monitor (a forked pool process makes its own: threads do not survive a fork)."""
    global _monitor
    with _monitor_lock:
        if _monitor is None or _monitor.pid != os.getpid():
            _monitor = ReportMonitor()
        return _monitor
