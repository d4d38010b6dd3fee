"""What a run has seen, kept once: the one set of observations every view reads.

The run's owner thread feeds it (it is an observer of the core); the summary and the
JSON report, the progress bar, the Prometheus metrics, the plot and the live dashboard
all read it. Nothing else counts events: there are no five sets of counters that could
disagree.

It holds the run's counts and latency histograms; the zero-overhead ideal of the same
events in the same ordering mode, and each event's ideal latency beside its measured
one (the plot's series, in bounded memory); and the live picture the owner reports on
each tick: the window, the head of the line and what holds it, the workers, the rates.
Readers on other threads take `snapshot()`: plain values, copied.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_processor.core.contracts import Completion
from stream_processor.core.observer import CoreState, HeadOfLine, Observer
from stream_processor.observe.ideal import IdealRun
from stream_processor.observe.report import LatencyHistogram
from stream_processor.observe.trace import InFlightPoint, LatencyPoint, RunTrace

RATE_SAMPLE_S = 1.0  # received/written counts, one sample a second
RATE_SAMPLES = 3600  # an hour of them (the plot keeps the whole run, decimated)
RECENT_EVENTS = 20  # which worker ran which event, for the last ones
WORKER_SEEN_S = 60.0


@dataclass
class WorkerSeen:
    events: int = 0
    busy_s: float = 0.0
    last_seen_at: float = 0.0


@dataclass
class RunObservations(Observer):
    clock: Callable[[], float] = time.monotonic
    capacity: int = 0  # the window (--max-in-flight)
    ideal: IdealRun | None = None  # the zero-overhead run on the same events, if their durations are known
    trace: RunTrace | None = None  # the plot's series, if wanted
    started_at: float = field(default=0.0)
    first_read_at: float | None = None
    last_written_at: float | None = None
    received: int = 0
    written: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ideal_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # For each line, how long the write that took it to the output lasted (its commit, for a
    # database): the part of its latency the output adds.
    output_write: LatencyHistogram = field(default_factory=LatencyHistogram)
    state: CoreState | None = None
    workers: dict[str, WorkerSeen] = field(default_factory=dict)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))  # (offset, worker)
    # Once a second: (at_s, received, written, in_flight, done_waiting, and the lowest and the
    # highest latency of the lines written since the sample before, or None): a live view's series.
    rates: deque = field(default_factory=lambda: deque(maxlen=RATE_SAMPLES))
    settings: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None  # the report, once the run is over
    _latency_low: float = math.inf  # of the lines written since the last rate sample
    _latency_high: float = -math.inf
    # Ideal and measured latency of the same event meet here, whichever comes first.
    _ideal_of: dict[int, float] = field(default_factory=dict)
    _measured_of: dict[int, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        if self.ideal is not None:
            self.ideal.on_release = self._ideal_released

    # -- fed by the owner thread -------------------------------------------------------

    def on_read(self, duration_s: float | None = None, arrival_s: float = 0.0, key: Hashable | None = None) -> None:
        """One event taken in; `arrival_s` counts from the first event (0 in file mode)."""
        self.received += 1
        now = self.clock()
        if self.first_read_at is None:
            self.first_read_at = now
        if self.ideal is not None and duration_s is not None:
            self.ideal.add(duration_s, arrival_s, key)
        self._sample_in_flight(now)

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        self.written += 1
        self.errors += is_error
        self.latency.add(latency_s)
        self.last_written_at = now = self.clock()
        if latency_s > self._latency_high:  # the range of this second's lines, for the rate sample
            self._latency_high = latency_s
        if latency_s < self._latency_low:
            self._latency_low = latency_s
        self._pair_measured(offset, (self._since_start(now), latency_s))
        self._sample_in_flight(now)

    def on_completions(self, completions: Sequence[Completion]) -> None:
        """A batch came back: who ran it, and for how long."""
        now = self.clock()
        for completion in completions:
            if completion.worker is None:
                continue
            seen = self.workers.setdefault(completion.worker, WorkerSeen())
            seen.events += 1
            seen.busy_s += completion.run_s or 0.0
            seen.last_seen_at = now
            self.recent.append((completion.offset, completion.worker))

    def on_state(self, state: CoreState) -> None:
        """The owner's tick: the live picture, and a rate sample each second."""
        self.state = state
        now = self.clock()
        at = self._since_start(now)
        emptied = state.in_flight == 0 and self.rates and self.rates[-1][2] != self.written  # the last lines too
        if not self.rates or at - self.rates[-1][0] >= RATE_SAMPLE_S or emptied:
            low, high = self._latency_low, self._latency_high
            written = (round(low, 4), round(high, 4)) if high >= low else (None, None)
            self.rates.append(
                (round(at, 3), self.received, self.written, state.in_flight, state.done_waiting, *written)
            )
            self._latency_low, self._latency_high = math.inf, -math.inf

    def _ideal_released(self, offset: int, arrival_s: float, released_s: float) -> None:
        ideal_latency = released_s - arrival_s
        self.ideal_latency.add(ideal_latency)
        self._pair_ideal(offset, ideal_latency)

    # The plot shows each event's latency beside its ideal one; either may come first (the
    # ideal runs behind in file mode, by up to a window). Without an ideal, alone.

    def _pair_measured(self, offset: int, measured: tuple[float, float]) -> None:
        """An event's (at_s, latency_s) as measured: plotted with its ideal latency, once known."""
        if self.trace is None:
            return
        if self.ideal is None:
            self.trace.latencies.add(LatencyPoint(measured[0], offset, measured[1], None))
            return
        ideal = self._ideal_of.pop(offset, None)
        if ideal is None:
            self._measured_of[offset] = measured
            return
        self.trace.latencies.add(LatencyPoint(measured[0], offset, measured[1], ideal))

    def _pair_ideal(self, offset: int, ideal: float) -> None:
        """An event's ideal latency: plotted with its measured one, once known."""
        if self.trace is None:
            return
        measured = self._measured_of.pop(offset, None)
        if measured is None:
            self._ideal_of[offset] = ideal
            return
        self.trace.latencies.add(LatencyPoint(measured[0], offset, measured[1], ideal))

    def _sample_in_flight(self, now: float) -> None:
        if self.trace is not None:
            self.trace.in_flight.add(InFlightPoint(self._since_start(now), self.received - self.written))

    def _since_start(self, now: float) -> float:
        return now - (self.first_read_at if self.first_read_at is not None else now)

    # -- read by the views ---------------------------------------------------------------

    @property
    def span_s(self) -> float:
        if self.first_read_at is None or self.last_written_at is None:
            return 0.0
        return self.last_written_at - self.first_read_at

    def wall_s(self) -> float:
        return self.clock() - self.started_at

    def lag_s(self) -> float:
        """How long the oldest event not yet written has waited (0 with none in flight)."""
        head = self.state.head if self.state is not None else None
        return max(0.0, self.clock() - head.read_at) if head is not None else 0.0

    def snapshot(self) -> dict[str, Any]:
        """The live picture as plain values, for a reader on another thread."""
        now = self.clock()
        state = self.state
        workers: dict[str, dict[str, Any]] = {
            worker: {
                "events": seen.events,
                "busy_s": round(seen.busy_s, 3),
                "idle_for_s": round(now - seen.last_seen_at, 1),
                "on": None,
            }
            for worker, seen in list(self.workers.items())
            if now - seen.last_seen_at < WORKER_SEEN_S
        }
        for on in state.running if state else ():
            row = workers.setdefault(on.worker, {"events": 0, "busy_s": 0.0, "idle_for_s": 0.0, "on": None})
            row["on"] = {"offset": on.offset, "for_s": round(now - on.since, 1)}
            row["idle_for_s"] = 0.0
        return {
            "at_s": round(self._since_start(now), 3),
            "received": self.received,
            "written": self.written,
            "errors": self.errors,
            "window": self.capacity,
            "in_flight": state.in_flight if state else 0,
            "done_waiting": state.done_waiting if state else 0,
            "low_watermark": state.low_watermark if state else 0,
            "batches_out": state.batches_out if state else 0,
            "batch_size": state.batch_size if state else 1,
            "mean_event_run_ms": _ms(state.mean_event_run_s) if state else None,
            "handoff_ms": _ms(state.handoff_s) if state else None,
            "head": _head_view(state.head if state else None, now),
            "latency_s": {
                "p50": self.latency.quantile(0.5),
                "p99": self.latency.quantile(0.99),
                "max": self.latency.max,
            },
            "workers": workers,
            "recent": [[offset, worker] for offset, worker in list(self.recent)],
            "rates": [list(sample) for sample in list(self.rates)[-600:]],
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _head_view(head: HeadOfLine | None, now: float) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "offset": head.offset,
        "id": head.event_id,
        "title": head.title,
        "age_s": round(now - head.read_at, 3),
        "at_head_s": round(now - (head.head_since if head.head_since is not None else head.read_at), 3),
        "state": head.state,
        "attempts": head.attempts,
        "done_behind": head.done_behind,
        "worker": head.worker,
        "running_s": None if head.running_since is None else round(now - head.running_since, 3),
    }
