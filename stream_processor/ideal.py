"""The zero-overhead ideal a run is measured against.

W workers take events in input order; each event goes to the worker that frees first
(never before the event arrives), runs for exactly its duration, and its result counts
once it and every earlier event are done. Nothing else costs time.

`IdealSchedule` computes this online, in O(W) memory, beside a run of any length.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class IdealSchedule:
    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._free_at = [float("-inf")] * workers  # min-heap: when each worker frees up
        self.first_arrival: float | None = None
        self.finish = 0.0  # release time of the last event added
        self.count = 0

    def add(self, duration: float, arrival: float = 0.0) -> float:
        """Schedule the next event in input order; return when its result is released."""
        if self.first_arrival is None:
            self.first_arrival = arrival
            self.finish = arrival
        start = max(heapq.heappop(self._free_at), arrival)
        done = start + duration
        heapq.heappush(self._free_at, done)
        self.finish = max(self.finish, done)
        self.count += 1
        return self.finish

    @property
    def span(self) -> float:
        """First arrival to last release: the figure a run's `span_s` is compared with."""
        return self.finish - self.first_arrival if self.first_arrival is not None else 0.0


def simulate(durations: Iterable[float], workers: int, arrivals: Iterable[float] | None = None) -> list[float]:
    """Release time of each event, in input order (all arrive at 0 unless `arrivals`)."""
    durations = list(durations)
    arrivals = [0.0] * len(durations) if arrivals is None else list(arrivals)
    schedule = IdealSchedule(workers)
    return [schedule.add(d, a) for d, a in zip(durations, arrivals, strict=True)]
