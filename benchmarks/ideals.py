"""The zero-overhead ideal of each scenario, computed by the harness on the recording itself.

The runs report an ideal of their own; the harness does not take it on trust. Here the
arrivals come from the recording's timestamps, paced as the replay server paces them
(`stream_processor.core.replay.ReplaySchedule`), and the schedule is
`stream_processor.observe.ideal.simulate`: W workers take events in input order, each on the
earliest-free worker, and a result counts once it and all earlier ones are done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stream_processor.core.replay import ReplaySchedule
from stream_processor.observe.ideal import simulate, simulate_mode


def makespan(durations: Sequence[float], workers: int) -> float:
    """When the last result counts if every event is there at 0 (file mode)."""
    return simulate(durations, workers)[-1] if durations else 0.0


def paced_arrivals(timestamps: Sequence[float | None], speed: float) -> list[float]:
    """When each event arrives in a replay at `speed`: (ts - first ts) / speed, in input order.

    Never before the event ahead of it (the stream keeps the recording's order, whatever
    the timestamps say); an event without a timestamp arrives with the one ahead of it.
    """
    schedule = ReplaySchedule(speed)
    return [schedule.due({"timestamp": timestamp}) for timestamp in timestamps]


def latencies(durations: Sequence[float], workers: int, arrivals: Sequence[float]) -> list[float]:
    """Per event: from its arrival to the moment its result counts."""
    released = simulate(durations, workers, arrivals)
    return [done - arrived for done, arrived in zip(released, arrivals, strict=True)]


def span(durations: Sequence[float], workers: int, arrivals: Sequence[float]) -> float:
    """First arrival to last result: the figure a run's `span_s` is compared with."""
    if not durations:
        return 0.0
    return simulate(durations, workers, arrivals)[-1] - arrivals[0]


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile, the definition the runs' latency histograms use."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def mode_latencies(
    durations: Sequence[float], workers: int, arrivals: Sequence[float], keys: Sequence, order: str
) -> list[float]:
    """Per event, in an ordering mode: from its arrival to its line written (see IdealRun)."""
    released = simulate_mode(durations, workers, arrivals, keys, total_order=order == "total")
    return [done - arrived for done, arrived in zip(released, arrivals, strict=True)]
