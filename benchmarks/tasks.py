"""Task functions the benchmarks name with --task (importable with the repo on PYTHONPATH)."""

from __future__ import annotations

import os
import time

ENDS_ENV = "STREAM_PROCESSOR_BENCH_ENDS"


def wait_and_note_the_end(event: dict, time_scale: float = 1.0) -> dict:
    """The reference task (wait `wait * time_scale` s, asleep), then append "n end" to the
    file $STREAM_PROCESSOR_BENCH_ENDS: when event `n` ended, by the wall clock."""
    deadline = time.monotonic() + event["wait"] * time_scale
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)
    with open(os.environ[ENDS_ENV], "a") as ends:
        ends.write(f"{event['n']} {time.time():.6f}\n")  # one short append: whole, whatever the other processes write
    return event


def compute(event: dict) -> dict:
    """A CPU-bound task: a pure-Python loop of `loops` steps (it never waits, never yields)."""
    total = 0
    for step in range(event["loops"]):
        total += step * step % 7
    return {"id": event["id"], "total": total}
