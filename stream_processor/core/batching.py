"""When to send events, and how many in one task: the adaptive micro-batch policy.

Each task costs a few milliseconds beyond its events' own work (publish, deliver, hand
to a process, publish the result, receive it). For events that take seconds that is
nothing; for events that take microseconds it is everything. So:

- the run time of an event is measured by the workers and averaged (an EWMA), and so is
  Celery's cost between two tasks on one process (the handoff: the idle gap before a
  batch that was already waiting), which grows when the machine is busy;
- a batch holds as many events as fit in its target run time: `target_s`, or more if
  the handoff would otherwise cost over `OVERHEAD_SHARE` of the batch's time; between 1
  and `batch_max`. Events that take seconds go one per task, as they always did. In
  total order a batch runs `TOTAL_ORDER_BATCH_MAX_S` at most: its events end one after
  another on one worker, and every line after them waits for its last;
- a full batch leaves at once; a smaller one leaves at once if a worker is idle (fewer
  batches out than workers), else it waits for a worker to free up, but never longer
  than `linger_s` after its oldest event became ready;
- when one event of a batch runs `HANDBACK_FACTOR` times as long as the whole batch was
  expected to take (and at least `HANDBACK_MIN_S`), the worker hands back the events it
  has not started, and they go to free workers (see batch_run.py);
- at most `outstanding_per_worker` batches per worker are out at a time (one until run
  times are known), so the events behind them stay here, where they can still join a
  bigger batch. In key mode, once events are long, one: a task queued at the broker
  cannot be overtaken by a same-key event that becomes startable after it, which a free
  worker should take first (it is older); for such events a round trip between tasks
  costs under 1 %. And a batch is at most `SLOW_START_GROWTH` times the biggest that has
  come back, as an estimate from the first few events can be far off.

Pure arithmetic on numbers the core gives it; no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_BATCH_MAX = 100
DEFAULT_LINGER_S = 0.005
DEFAULT_TARGET_S = 0.02
OVERHEAD_SHARE = 0.05  # the handoff between tasks may cost this share of a batch's run time
EVENT_WEIGHT = 0.02  # of each event's run time in the average: about the last hundred events count
HANDOFF_WEIGHT = 0.1  # of each batch's measured handoff
MAX_HANDOFF_S = 0.1  # a longer gap is not Celery's cost but something else (a stall, a clock)
SLOW_START_GROWTH = 4  # a batch may be this many times the biggest one that has come back
LONG_EVENT_HANDOFFS = 100  # an event this many handoffs long hardly notices a round trip between tasks
ASSUMED_HANDOFF_S = 0.003  # Celery's usual handoff on a quiet machine, until one is measured
TOTAL_ORDER_BATCH_MAX_S = 0.05  # total order: a batch's events finish in turn, the next batch's wait for them
HANDBACK_FACTOR = 2  # an event that runs twice as long as its whole batch should take has overrun
HANDBACK_MIN_S = 0.05  # never sooner: on a busy machine a short event can take a few ms more


@dataclass
class BatchPolicy:
    batch_max: int = DEFAULT_BATCH_MAX
    linger_s: float = DEFAULT_LINGER_S
    target_s: float = DEFAULT_TARGET_S
    outstanding_per_worker: int = 2
    keyed: bool = False  # key mode: events become startable out of offset order (see max_outstanding)
    in_total_order: bool = False  # total order: a batch's run time is a wait for the lines after it
    mean_run_s: float | None = None  # EWMA of the measured run time of one event
    events_measured: int = 0
    largest_done: int = 0  # the biggest batch that has come back: sizes grow from there, doubling
    handoff_s: float | None = None  # EWMA of the gap between two tasks on one worker process

    def __post_init__(self) -> None:
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if not self.linger_s >= 0 or not self.target_s > 0:
            raise ValueError("linger must be >= 0 and the target > 0")

    def observe(self, run_s: float) -> None:
        """One event's measured run time."""
        if not math.isfinite(run_s) or run_s < 0:
            return
        self.events_measured += 1
        # A plain mean of the first ones, then a moving average of about the last hundred.
        self.mean_run_s = _moved(self.mean_run_s, run_s, max(EVENT_WEIGHT, 1 / self.events_measured))

    def observe_handoff(self, gap_s: float) -> None:
        """One measured gap between two tasks on a worker process (see tasks.handoff_timing)."""
        if math.isfinite(gap_s) and 0 <= gap_s <= MAX_HANDOFF_S:
            self.handoff_s = _moved(self.handoff_s, gap_s, HANDOFF_WEIGHT)

    @property
    def batch_target_s(self) -> float:
        """The run time a batch is sized for: long enough that the handoff stays a small share.
        In total order no longer than `TOTAL_ORDER_BATCH_MAX_S` (unless `target_s` says so):
        the next batch's events, run meanwhile on another worker, wait for this one's last."""
        target = max(self.target_s, (self.handoff_s or 0.0) / OVERHEAD_SHARE)
        return min(target, max(self.target_s, TOTAL_ORDER_BATCH_MAX_S)) if self.in_total_order else target

    def size(self, running_s: float = 0.0) -> int:
        """Events per batch now: as many as fit in the target run time (1 until measured).

        `running_s`: a floor for the mean from the batches still out (see the core). Short
        events finish first, so early in a run the measured mean says too little about the
        long ones still running.
        """
        if self.batch_max == 1 or self.mean_run_s is None:
            return 1
        mean_run_s = max(self.mean_run_s, running_s)
        # (Compared first: dividing by a vanishing mean would overflow.)
        if mean_run_s * self.batch_max <= self.batch_target_s:
            fitting = self.batch_max
        else:
            fitting = round(self.batch_target_s / mean_run_s)
        # Slow start: an estimate from a few events can be far off; sizes grow per round trip.
        return max(1, min(self.batch_max, fitting, SLOW_START_GROWTH * self.largest_done))

    def handback_after_s(self, events: int, running_s: float = 0.0) -> float | None:
        """How long one event of a batch of `events` may run before the worker hands back
        the rest (None for a single event: nothing to hand back)."""
        if events <= 1:
            return None
        expected_s = events * max(self.mean_run_s or 0.0, running_s)
        return max(HANDBACK_MIN_S, HANDBACK_FACTOR * expected_s)

    def observe_batch(self, events: int) -> None:
        """A batch of `events` came back."""
        self.largest_done = max(self.largest_done, events)

    def max_outstanding(self, workers: int) -> int:
        """Batches out at once: one per worker until run times are known, then a few more,
        so that no worker waits for a round trip between tasks; in key mode, one per worker
        for long events, so that no task waits at the broker ahead of an older one."""
        per_worker = self.outstanding_per_worker
        if self.mean_run_s is None or (self.keyed and self.events_are_long()):
            per_worker = 1
        return max(1, workers) * per_worker

    def events_are_long(self) -> bool:
        """Long enough that a round trip between two tasks costs them under 1 %."""
        handoff_s = self.handoff_s if self.handoff_s is not None else ASSUMED_HANDOFF_S
        return self.mean_run_s is not None and self.mean_run_s >= LONG_EVENT_HANDOFFS * handoff_s

    def next_batch(
        self, ready: int, oldest_ready_for_s: float, outstanding: int, workers: int, running_s: float = 0.0
    ) -> int:
        """How many of the `ready` events to send as one batch now (0: none yet)."""
        if ready == 0 or outstanding >= self.max_outstanding(workers):
            return 0
        size = self.size(running_s)
        if ready >= size:
            return size
        if outstanding < workers or oldest_ready_for_s >= self.linger_s:
            return ready
        return 0

    def linger_left_s(self, oldest_ready_for_s: float) -> float:
        """How long until a waiting partial batch must leave."""
        return max(0.0, self.linger_s - oldest_ready_for_s)


def _moved(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else average + weight * (sample - average)
