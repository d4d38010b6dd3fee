"""The run's plot: per-event in-order latency beside its ideal, and the in-flight count, over the run.

`RunTrace` records what the plot needs from the run's hooks (`on_read`, `on_written`);
`draw_run` writes it as a PNG (matplotlib, the optional `[plot]` extra).

Memory stays bounded on an endless stream by halving the resolution (decimation): each
series is cut into buckets of k samples and keeps the lowest and the highest of each;
when the buckets reach the cap, neighbours merge pairwise and k doubles. Unlike a
reservoir, whose random picks leave gaps and clumps in a line plot and lose the one
spike that mattered, the buckets stay evenly spread over the whole run and each keeps
its extremes, so the plot shows the same envelope a plot of every point would. The first
and the latest samples are kept too, so a plot always covers the run from end to end.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from stream_processor.ideal import IdealSchedule

log = logging.getLogger(__name__)

MAX_POINTS = 10_000  # per series: several times a plot's width in pixels; a few MB for a whole trace

Sample = TypeVar("Sample")


class LatencyPoint(NamedTuple):
    at_s: float  # when the line was written, seconds since the run's first read
    offset: int
    latency_s: float  # read to written, in order
    ideal_latency_s: float | None  # the same event in the zero-overhead run, if its duration is known


class InFlightPoint(NamedTuple):
    at_s: float
    in_flight: int


class Decimated(Generic[Sample]):
    """At most `cap` samples of an endless series, for a line plot.

    The series is cut into buckets of `stride` samples; each bucket keeps its lowest and
    highest sample (by `key`), so peaks and troughs survive (keeping every stride-th
    sample instead aliases: a count alternating 3, 4, 3, 4 would plot as a flat 3). When
    the buckets fill the cap, neighbours merge pairwise and the stride doubles. The very
    first and the latest samples are kept as well.
    """

    def __init__(self, cap: int, key: Callable[[Sample], float]) -> None:
        if cap < 8:
            raise ValueError("cap must be at least 8")
        self.cap = cap
        self.key = key
        self.stride = 1
        self.seen = 0
        # Two samples per full bucket, two for the bucket being filled, the first and the latest.
        self._max_buckets = (cap - 4) // 4 * 2  # even, so that buckets merge in pairs
        self._buckets: list[tuple[_Entry[Sample], _Entry[Sample]]] = []
        self._low: _Entry[Sample] | None = None  # of the bucket being filled
        self._high: _Entry[Sample] | None = None
        self._first: _Entry[Sample] | None = None
        self._latest: _Entry[Sample] | None = None

    def add(self, sample: Sample) -> None:
        entry = _Entry(self.seen, self.key(sample), sample)
        if self._first is None:
            self._first = entry
        self._latest = entry
        if self._low is None or entry.value < self._low.value:
            self._low = entry
        if self._high is None or entry.value > self._high.value:
            self._high = entry
        self.seen += 1
        if self.seen % self.stride == 0:
            self._buckets.append((self._low, self._high))
            self._low = self._high = None
            if len(self._buckets) == self._max_buckets:
                self._buckets = [_merge(a, b) for a, b in zip(self._buckets[::2], self._buckets[1::2], strict=True)]
                self.stride *= 2

    def samples(self) -> list[Sample]:
        """The kept samples in the order they came, from the first to the latest."""
        entries = [self._first, *(entry for bucket in self._buckets for entry in bucket), self._low, self._high]
        by_index = {entry.index: entry.sample for entry in [*entries, self._latest] if entry is not None}
        return [by_index[index] for index in sorted(by_index)]

    def __len__(self) -> int:
        return len(self.samples())


class _Entry(NamedTuple, Generic[Sample]):
    index: int  # position in the series
    value: float
    sample: Sample


def _merge(
    left: tuple[_Entry[Sample], _Entry[Sample]], right: tuple[_Entry[Sample], _Entry[Sample]]
) -> tuple[_Entry[Sample], _Entry[Sample]]:
    """Two neighbouring buckets as one: the lower low and the higher high (the earlier on a tie)."""
    low = right[0] if right[0].value < left[0].value else left[0]
    high = right[1] if right[1].value > left[1].value else left[1]
    return low, high


class RunTrace:
    """What the plot needs, fed by the run's hooks, in bounded memory.

    `workers` turns on the ideal: the trace runs its own `IdealSchedule` (it cannot
    share the one `RunStats` feeds, which would then count each event twice).
    """

    def __init__(
        self,
        workers: int | None = None,
        max_points: int = MAX_POINTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.ideal = IdealSchedule(workers) if workers else None
        self.latencies: Decimated[LatencyPoint] = Decimated(max_points, key=_latency)
        self.in_flight: Decimated[InFlightPoint] = Decimated(max_points, key=_count)
        self.first_read_at: float | None = None
        self.received = 0
        self.written = 0
        self.errors = 0
        self.max_latency_s = 0.0
        self.max_ideal_latency_s = 0.0
        self.peak_in_flight = 0
        self.last_written_s = 0.0
        # Ideal latencies of the events read but not yet written, in read order (= write
        # order): no longer than the run's in-flight window.
        self._pending_ideal: deque[float | None] = deque()

    def on_read(self, duration_s: float | None = None, arrival_s: float = 0.0) -> None:
        """One event taken in; `RunStats.on_read`'s signature."""
        now = self._since_first_read()
        self.received += 1
        if self.ideal is not None:
            ideal_latency = None if duration_s is None else self.ideal.add(duration_s, arrival_s) - arrival_s
            self._pending_ideal.append(ideal_latency)
        self._sample_in_flight(now)

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        """One line written in order, `latency_s` after its event was read."""
        now = self._since_first_read()
        self.written += 1
        self.errors += is_error
        ideal_latency = self._pending_ideal.popleft() if self._pending_ideal else None
        self.latencies.add(LatencyPoint(now, offset, latency_s, ideal_latency))
        self.max_latency_s = max(self.max_latency_s, latency_s)
        if ideal_latency is not None:
            self.max_ideal_latency_s = max(self.max_ideal_latency_s, ideal_latency)
        self.last_written_s = now
        self._sample_in_flight(now)

    def _since_first_read(self) -> float:
        now = self.clock()
        if self.first_read_at is None:
            self.first_read_at = now
        return now - self.first_read_at

    def _sample_in_flight(self, at_s: float) -> None:
        in_flight = self.received - self.written
        self.peak_in_flight = max(self.peak_in_flight, in_flight)
        self.in_flight.add(InFlightPoint(at_s, in_flight))

    @property
    def span_s(self) -> float:
        """First read to last line written."""
        return self.last_written_s

    @property
    def ideal_span_s(self) -> float | None:
        return self.ideal.span if self.ideal is not None and self.ideal.count else None

    def headline(self) -> str:
        """The key figures, for the plot's title."""
        parts = [f"{self.written} events ({self.errors} errors)", f"span {self.span_s:.2f} s"]
        ideal = self.ideal_span_s
        if ideal is not None:
            efficiency = f", efficiency {ideal / self.span_s:.1%}" if self.span_s > 0 else ""
            parts.append(f"ideal {ideal:.2f} s{efficiency}")
        max_latency = f"max latency {self.max_latency_s:.3f} s"
        if ideal is not None:
            max_latency += f" (ideal {self.max_ideal_latency_s:.3f} s)"
        parts += [max_latency, f"peak in flight {self.peak_in_flight}"]
        return "   ".join(parts)


def _latency(point: LatencyPoint) -> float:
    return point.latency_s


def _count(point: InFlightPoint) -> float:
    return point.in_flight


def draw_run(trace: RunTrace, path: str | Path, title: str = "stream_processor run") -> Path:
    """Write the run's plot as a PNG: latency beside its ideal, and the in-flight count."""
    figure_class = _matplotlib_figure()
    figure = figure_class(figsize=(11, 7.5), dpi=110, layout="constrained")
    latency_axes, in_flight_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _draw_latency(latency_axes, trace)
    _draw_in_flight(in_flight_axes, trace)
    figure.suptitle(f"{title}\n{trace.headline()}", fontsize=10)
    path = Path(path)
    figure.savefig(path, format="png")
    log.info("run plot written to %s", path)
    return path


def check_plotting() -> None:
    """Fail before a run starts, not after it ends, if the plot cannot be drawn."""
    _matplotlib_figure()


def _matplotlib_figure():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("drawing the run plot needs matplotlib: pip install 'stream_processor[plot]'") from exc
    # No display needed. The figure below is drawn without pyplot, so Agg matters only to
    # pyplot users later; if pyplot is loaded already, switching would close its figures.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure


def _draw_latency(axes, trace: RunTrace) -> None:
    points = trace.latencies.samples()
    at = [point.at_s for point in points]
    axes.plot(at, [point.latency_s for point in points], lw=1.2, color="tab:blue", label="measured")
    if any(point.ideal_latency_s is not None for point in points):
        ideal = [math.nan if point.ideal_latency_s is None else point.ideal_latency_s for point in points]
        axes.plot(at, ideal, lw=1.0, ls="--", color="tab:orange", label="zero-overhead ideal (same event)")
    axes.set_ylabel("in-order latency (s)\nread to written")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    _note_decimation(axes, trace.latencies, "events")


def _draw_in_flight(axes, trace: RunTrace) -> None:
    points = trace.in_flight.samples()
    axes.plot(
        [point.at_s for point in points],
        [point.in_flight for point in points],
        drawstyle="steps-post",
        lw=1.0,
        color="tab:green",
    )
    axes.set_ylabel("in flight\n(read, not yet written)")
    axes.set_xlabel("time since the first event was read (s)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    _note_decimation(axes, trace.in_flight, "changes")


def _note_decimation(axes, series: Decimated, what: str) -> None:
    if series.stride > 1:
        axes.text(
            0.99,
            0.02,
            f"{series.seen} {what}: lowest and highest of every {series.stride} shown",
            transform=axes.transAxes,
            ha="right",
            fontsize=8,
            color="gray",
        )
