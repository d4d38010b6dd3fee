"""The zero-overhead ideal a run is measured against.

W workers take events in input order; each event goes to the worker that frees first
(never before the event arrives), runs for exactly its duration, and its result counts
once it and every earlier event are done. Nothing else costs time.

`IdealSchedule` computes this online, in O(W) memory, beside a run of any length.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable


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


class IdealRun:
    """The zero-overhead run of any ordering mode, simulated online beside the real one.

    A free worker takes the lowest-offset event that has arrived, fits in the window
    (at most `window` offsets from the low watermark, as in the real run) and may start:
    in key mode, not while an earlier event of its key runs or waits. It runs exactly its
    duration. Its line counts when written as the mode allows: total, once it and every
    earlier event are done; key and none, when it is done.

    Events are added in input order with arrival times that never decrease; the
    simulation advances only as far as what it knows decides, so memory stays within
    the window however long the stream. `on_release(offset, arrival, released)` is told
    each event's line; `finish()` runs the rest.
    """

    def __init__(
        self,
        workers: int,
        total_order: bool = True,
        window: int | None = None,
        on_release: Callable[[int, float, float], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.total_order = total_order
        self.window = window or float("inf")
        self.on_release = on_release
        self.now = float("-inf")
        self.first_arrival: float | None = None
        self.finish_time = 0.0
        self.count = 0  # released
        self._free = workers
        self._added = 0
        self._last_arrival = float("-inf")
        self._pending: deque[tuple[int, float, float, Hashable | None]] = deque()  # not yet arrived
        self._events: dict[int, tuple[float, float, Hashable | None]] = {}  # arrived: arrival, duration, key
        self._ready: list[int] = []
        self._running: list[tuple[float, int]] = []
        self._busy_keys: set[Hashable] = set()
        self._blocked: dict[Hashable, deque[int]] = {}
        self._watermark = 0
        self._done: dict[int, float] = {}  # done, not yet below the watermark: when

    def add(self, duration: float, arrival: float = 0.0, key: Hashable | None = None) -> None:
        if arrival < self._last_arrival:
            arrival = self._last_arrival  # a stream's arrivals never go back in time
        if self.first_arrival is None:
            self.first_arrival = arrival
            self.now = arrival
        self._pending.append((self._added, arrival, duration, key))
        self._added += 1
        self._last_arrival = arrival
        self._advance(final=False)

    def finish(self) -> None:
        """Every event is added: run the simulation to its end."""
        self._advance(final=True)

    @property
    def span(self) -> float:
        return self.finish_time - self.first_arrival if self.first_arrival is not None else 0.0

    def _advance(self, final: bool) -> None:
        while True:
            self._complete_due()
            if not final and not self._knows_all_arrivals():
                return
            self._admit_arrivals()
            self._start_ready()
            upcoming = self._next_time()
            if upcoming == float("inf"):
                return
            self.now = upcoming

    def _knows_all_arrivals(self) -> bool:
        """Could an event not yet added arrive now and fit in the window? Not if it comes
        later than now, or lies beyond the window's edge."""
        return self.now < self._last_arrival or self._watermark + self.window <= self._added

    def _next_time(self) -> float:
        upcoming = self._running[0][0] if self._running else float("inf")
        if self._pending and self._pending[0][0] < self._watermark + self.window:
            upcoming = min(upcoming, max(self._pending[0][1], self.now))
        return upcoming if upcoming > self.now or self._has_work_now() else float("inf")

    def _has_work_now(self) -> bool:
        head = self._pending[0] if self._pending else None
        arriving = head is not None and head[1] <= self.now and head[0] < self._watermark + self.window
        return arriving or bool(self._running and self._running[0][0] <= self.now)

    def _complete_due(self) -> None:
        while self._running and self._running[0][0] <= self.now:
            end, offset = heapq.heappop(self._running)
            self._free += 1
            arrival, _, key = self._events[offset]
            if key is not None:
                self._release_key(key)
            self._done[offset] = end
            if not self.total_order:
                self._release(offset, end)
            self._move_watermark()

    def _release_key(self, key: Hashable) -> None:
        blocked = self._blocked.get(key)
        if blocked:
            heapq.heappush(self._ready, blocked.popleft())
            if not blocked:
                del self._blocked[key]
        else:
            self._busy_keys.discard(key)

    def _move_watermark(self) -> None:
        while self._watermark in self._done:
            end = self._done.pop(self._watermark)
            if self.total_order:
                self._release(self._watermark, end)
            del self._events[self._watermark]
            self._watermark += 1

    def _release(self, offset: int, end: float) -> None:
        arrival = self._events[offset][0]
        released = max(end, self.finish_time) if self.total_order else end
        self.finish_time = max(self.finish_time, released)
        self.count += 1
        if self.on_release is not None:
            self.on_release(offset, arrival, released)

    def _admit_arrivals(self) -> None:
        while self._pending and self._pending[0][1] <= self.now and self._pending[0][0] < self._watermark + self.window:
            offset, arrival, duration, key = self._pending.popleft()
            self._events[offset] = (arrival, duration, key)
            if key is None:
                heapq.heappush(self._ready, offset)
            elif key in self._busy_keys:
                self._blocked.setdefault(key, deque()).append(offset)
            else:
                self._busy_keys.add(key)
                heapq.heappush(self._ready, offset)

    def _start_ready(self) -> None:
        while self._free and self._ready:
            offset = heapq.heappop(self._ready)
            self._free -= 1
            heapq.heappush(self._running, (self.now + self._events[offset][1], offset))


def simulate_mode(
    durations: Iterable[float],
    workers: int,
    arrivals: Iterable[float] | None = None,
    keys: Iterable[Hashable | None] | None = None,
    total_order: bool = True,
    window: int | None = None,
) -> list[float]:
    """Release time of each event, in input order, in any ordering mode (see IdealRun)."""
    durations = list(durations)
    arrivals = [0.0] * len(durations) if arrivals is None else list(arrivals)
    keys = [None] * len(durations) if keys is None else list(keys)
    released = [0.0] * len(durations)

    def record(offset: int, arrival: float, at: float) -> None:
        released[offset] = at

    run = IdealRun(workers, total_order, window, on_release=record)
    for duration, arrival, key in zip(durations, arrivals, keys, strict=True):
        run.add(duration, arrival, key)
    run.finish()
    return released
