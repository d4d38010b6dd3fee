"""The plot's series: each event's in-order latency beside its ideal, and the in-flight
count, over the run, in bounded memory.

Memory stays bounded on an endless stream by halving the resolution (decimation): each
series is cut into buckets of k samples and keeps the lowest and the highest of each;
when the buckets reach the cap, neighbours merge pairwise and k doubles. Unlike a
reservoir, whose random picks leave gaps and clumps in a line plot and lose the one
spike that mattered, the buckets stay evenly spread over the whole run and each keeps
its extremes, so the plot shows the same envelope a plot of every point would. The first
and the latest samples are kept too, so a plot always covers the run from end to end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

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
        by_index = {entry.number: entry.sample for entry in [*entries, self._latest] if entry is not None}
        return [by_index[index] for index in sorted(by_index)]

    def samples_after(self, position: int) -> tuple[list[Sample], int]:
        """The kept samples added after the `position`-th one (-1: all), in the order they
        came, and the position to ask from next time: a live reader's cursor. A sample may
        be added long after its neighbours in time (an ideal that comes in late), so the
        cursor counts additions, not seconds."""
        last = self.seen - 1  # first: a sample added while this reads waits for the next call
        buckets = self._buckets
        newer = buckets[max(0, (position + 1) // self.stride) :]  # bucket k holds [k * stride, (k + 1) * stride)
        entries = [self._first, *(entry for bucket in newer for entry in bucket), self._low, self._high]
        by_index = {
            entry.number: entry.sample
            for entry in [*entries, self._latest]
            if entry is not None and position < entry.number <= last
        }
        return [by_index[index] for index in sorted(by_index)], max(position, last)

    def __len__(self) -> int:
        return len(self.samples())


class _Entry(NamedTuple, Generic[Sample]):
    number: int  # position in the series (not `index`: that would hide tuple.index)
    value: float
    sample: Sample


def _merge(
    left: tuple[_Entry[Sample], _Entry[Sample]], right: tuple[_Entry[Sample], _Entry[Sample]]
) -> tuple[_Entry[Sample], _Entry[Sample]]:
    """Two neighbouring buckets as one: the lower low and the higher high (the earlier on a tie)."""
    low = right[0] if right[0].value < left[0].value else left[0]
    high = right[1] if right[1].value > left[1].value else left[1]
    return low, high


def _latency(point: LatencyPoint) -> float:
    return point.latency_s


def _count(point: InFlightPoint) -> float:
    return point.in_flight


class RunTrace:
    """The two series the plot and the dashboard draw; `RunObservations` feeds them."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.latencies: Decimated[LatencyPoint] = Decimated(max_points, key=_latency)
        self.in_flight: Decimated[InFlightPoint] = Decimated(max_points, key=_count)
