"""A batch as it runs on a worker (batch_run.py): outcomes reported as events end, the
tail handed back when one overruns, and never an event both started and handed back."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stream_processor.core.batching import BatchPolicy
from stream_processor.core.ordering import parse_order
from stream_processor.core.outcomes import DONE
from stream_processor.core.processor import StreamProcessor
from stream_processor.core.records import Record
from stream_processor.engine.batch_run import BatchRun, Report, ReportMonitor
from stream_processor.engine.execution import run_events
from stream_processor.engine.executor import LocalExecutor
from tests.conftest import FakeClock, wait_until

OUTCOME = [DONE, None, 0.01]


def test_an_ended_event_is_reported_once_its_short_wait_is_over():
    clock = FakeClock()
    run = BatchRun(3, handback_after_s=None, report_after_s=0.005, clock=clock)
    assert run.start_next() == 0
    clock.now = 0.02
    run.ended(0, OUTCOME)
    assert run.due() is None  # others may still share its message
    assert run.next_deadline() == 0.025
    clock.now = 0.025
    assert run.due() == Report({0: OUTCOME})
    assert run.due() is None  # reported once


def test_an_overrunning_event_hands_back_every_event_not_started():
    clock = FakeClock()
    run = BatchRun(4, handback_after_s=0.1, report_after_s=0.005, clock=clock)
    assert run.start_next() == 0
    run.ended(0, OUTCOME)
    assert run.start_next() == 1
    clock.now = 0.05
    assert run.due() == Report({0: OUTCOME}, running=(1, 0.05))  # whatever goes out names what runs
    assert run.next_deadline() == 0.1  # event 1 started at 0
    clock.now = 0.1
    assert run.due() == Report({}, handed_back=(2, 3), running=(1, 0.1))
    run.ended(1, OUTCOME)
    assert run.start_next() is None  # never starts what it handed back
    assert run.finish() == (2, 3)


def test_the_last_event_running_has_nothing_to_hand_back():
    clock = FakeClock()
    run = BatchRun(2, handback_after_s=0.1, clock=clock)
    run.start_next(), run.ended(0, OUTCOME), run.start_next()
    clock.now = 10.0
    assert run.due() == Report({0: OUTCOME}, running=(1, 10.0))  # no hand-back: nothing is left to start
    assert run.next_deadline() is None


def test_an_event_that_runs_long_is_named_as_running_once():
    clock = FakeClock()
    run = BatchRun(1, clock=clock, announce_after_s=0.25)
    assert run.start_next() == 0
    assert run.next_deadline() == 0.25
    clock.now = 0.2
    assert run.due() is None  # short events are not named: their outcome is news enough
    clock.now = 0.25
    assert run.due() == Report({}, running=(0, 0.25))
    assert run.due() is None and run.next_deadline() is None


def test_a_finished_batch_reports_nothing_more():
    clock = FakeClock()
    run = BatchRun(2, handback_after_s=0.1, clock=clock)
    run.start_next(), run.ended(0, OUTCOME)
    assert run.finish() == ()
    clock.now = 10.0
    assert run.due() is None and run.next_deadline() is None


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=8),
    steps=st.lists(st.tuples(st.sampled_from(["run", "look"]), st.floats(0, 0.3)), max_size=40),
)
def test_no_event_is_both_started_and_handed_back_whatever_the_interleaving(size, steps):
    """The runner and the monitor take turns in any order, with any time between turns."""
    clock = FakeClock()
    run = BatchRun(size, handback_after_s=0.1, report_after_s=0.005, clock=clock)
    started, ended, reported, handed_back = [], [], [], []
    running = None
    for action, advance in steps:
        clock.now += advance
        if action == "run":
            if running is not None:
                run.ended(running, [DONE, None, advance])
                ended.append(running)
            running = run.start_next()
            if running is not None:
                started.append(running)
        elif (report := run.due()) is not None:
            reported += report.outcomes
            handed_back += report.handed_back
    if running is not None:
        run.ended(running, OUTCOME)
        ended.append(running)
    while (index := run.start_next()) is not None:  # the runner goes on to the end
        started.append(index)
        run.ended(index, OUTCOME)
    final_back = run.finish()
    assert sorted(started) == started == list(range(len(started)))  # in order, each once
    assert not set(started) & set(handed_back)
    assert list(final_back) == sorted(handed_back) == list(range(len(started), size))  # a suffix, all of it
    assert len(reported) == len(set(reported)) and set(reported) <= set(ended)


def test_the_monitor_reports_a_finished_event_while_a_slow_one_runs_and_hands_back_the_rest():
    """Real threads: the runner is inside the slow event when the reports go out."""
    published: list[tuple[float, Report]] = []
    calls: list[int] = []
    slow_done = threading.Event()

    def score(event):
        calls.append(event["n"])
        if event["n"] == 1:
            time.sleep(1.0)  # the work being measured, not synchronisation
            slow_done.set()
        return event

    monitor = ReportMonitor()
    run = BatchRun(4, handback_after_s=0.2)
    monitor.watch(run, lambda report: published.append((time.monotonic(), report)))
    lines = [f'{{"n": {n}}}' for n in range(4)]
    outcomes: list = []
    runner = threading.Thread(target=lambda: outcomes.extend(run_events(score, lines, run=run)))
    runner.start()
    try:
        wait_until(lambda: any(r.handed_back for _, r in published), timeout=5, message="a hand-back")
        assert not slow_done.is_set(), "the hand-back came only after the slow event ended"
        assert {0} <= {i for _, r in published for i in r.outcomes}, "event 0's outcome waited for the slow one"
        assert [r.handed_back for _, r in published if r.handed_back] == [(2, 3)]
    finally:
        runner.join(timeout=10)
        handed_back = run.finish()
        monitor.unwatch(run)
    assert calls == [0, 1] and handed_back == (2, 3)
    assert outcomes[2:] == [None, None] and outcomes[0][0] == outcomes[1][0] == DONE


# -- the run's core with batches that overrun: the in-process engine, real threads ---------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run_ms=st.lists(st.sampled_from([0, 1, 2, 3, 150, 300]), min_size=1, max_size=30),
    batch_max=st.integers(min_value=1, max_value=10),
    workers=st.integers(min_value=1, max_value=3),
    order=st.sampled_from(["total", "none", "key:k"]),
)
def test_every_event_runs_once_and_is_written_once_in_its_modes_order_whatever_overruns(
    run_ms, batch_max, workers, order
):
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def score(event):
        with lock:
            calls[event["n"]] += 1
        time.sleep(event["ms"] / 1000)  # the work itself: short, or long enough to overrun a batch
        return event

    events = [{"n": n, "ms": ms, "k": n % 3} for n, ms in enumerate(run_ms)]
    sink = _Lines()
    policy = BatchPolicy(batch_max=batch_max, target_s=0.05, linger_s=0.002)
    processor = StreamProcessor(
        LocalExecutor(score, max_workers=workers), sink, 50, workers=workers, batching=policy, order=parse_order(order)
    ).start()
    try:
        for n, fields in enumerate(events):
            processor.submit(Record(n, json.dumps(fields).encode(), fields), timeout=10)
        assert processor.drain(timeout=30)
    finally:
        processor.close()
    written = [offset for offset, _ in sink.lines]
    assert sorted(written) == list(range(len(events)))  # each once
    assert calls == Counter(range(len(events))), "an event ran twice, or never"
    if order == "total":
        assert written == sorted(written)
    if order.startswith("key"):
        for key in range(3):
            same_key = [offset for offset in written if events[offset]["k"] == key]
            assert same_key == sorted(same_key)
    event("handed back" if processor.handed_back else "nothing handed back")


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[int, bytes]] = []

    def write(self, lines) -> None:
        self.lines.extend(lines)
