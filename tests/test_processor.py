"""`StreamProcessor` on the in-process `LocalExecutor` and a real `JsonlSink`.

Completion order is forced with per-event gates (threading.Event) that the test opens,
and every wait on another thread is a wait on a condition with a timeout.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processor.executor import LocalExecutor
from stream_processor.processor import StreamProcessor
from stream_processor.records import Record, check_wait, parse_event, read_records
from stream_processor.sink import JsonlSink

TIMEOUT = 10.0  # generous upper bound for anything that should happen "at once"


def make_record(offset: int, event: dict[str, Any]) -> Record:
    raw = json.dumps(event).encode()
    return Record(offset, raw, json.loads(raw))


def bad_record(offset: int, raw: bytes = b"{oops", error: str = "not valid JSON (test)") -> Record:
    return Record(offset, raw, None, error)


def strict_json(line: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line.decode("utf-8"), parse_constant=reject)


class Gates:
    """One threading.Event per event id: a gated task runs until the test opens its gate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[Any, threading.Event] = {}
        self._started: dict[Any, threading.Event] = {}

    def _get(self, table: dict[Any, threading.Event], key: Any) -> threading.Event:
        with self._lock:
            return table.setdefault(key, threading.Event())

    def open(self, key: Any) -> None:
        self._get(self._gates, key).set()

    def open_all(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.set()

    def wait_started(self, key: Any) -> None:
        assert self._get(self._started, key).wait(TIMEOUT), f"task {key} never started"

    def task(self, result: Callable[[dict[str, Any]], Any] = lambda event: event) -> Callable[[dict[str, Any]], Any]:
        def gated(event: dict[str, Any]) -> Any:
            key = event["id"]
            self._get(self._started, key).set()
            if not self._get(self._gates, key).wait(TIMEOUT):
                raise TimeoutError(f"gate {key} was never opened")
            return result(event)

        return gated


class ObservedExecutor(LocalExecutor):
    """The LocalExecutor, noting each completion after the processor has handled it."""

    def __init__(self, function, max_workers: int) -> None:
        super().__init__(function, max_workers)
        self._seen = threading.Condition()
        self.completions: list[int] = []

    def start(self, on_complete) -> None:
        def observed(offset: int, ok: bool, value: Any) -> None:
            on_complete(offset, ok, value)
            with self._seen:
                self.completions.append(offset)
                self._seen.notify_all()

        super().start(observed)

    def wait_completed(self, *offsets: int) -> None:
        with self._seen:
            done = self._seen.wait_for(lambda: set(offsets) <= set(self.completions), TIMEOUT)
        assert done, f"offsets {offsets} did not all complete; saw {self.completions}"


class TwiceExecutor(LocalExecutor):
    """An at-least-once engine: every completion is delivered twice."""

    def start(self, on_complete) -> None:
        def twice(offset: int, ok: bool, value: Any) -> None:
            on_complete(offset, ok, value)
            on_complete(offset, ok, value)

        super().start(twice)


class ManualExecutor:
    """Takes submissions and completes nothing by itself: the test delivers completions."""

    def __init__(self) -> None:
        self.submitted: list[int] = []

    def start(self, on_complete) -> None:
        self.on_complete = on_complete

    def submit(self, offset: int, event: dict[str, Any]) -> None:
        self.submitted.append(offset)

    def close(self) -> None:
        pass


class Run:
    def __init__(self, path: Path, executor, max_in_flight: int = 100, sink=None, **kwargs) -> None:
        self.path = path
        self.sink = sink if sink is not None else JsonlSink(path)
        self.executor = executor
        self.processor = StreamProcessor(executor, self.sink, max_in_flight, **kwargs).start()

    def lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines() if self.path.exists() else []

    def close(self) -> None:
        self.processor.close()
        if isinstance(self.sink, JsonlSink):
            self.sink.close()


@pytest.fixture
def gates():
    gates = Gates()
    yield gates
    gates.open_all()  # never leave a worker thread blocked


@pytest.fixture
def runs(tmp_path, gates):
    """Factory for processor runs on tmp_path files; all are closed after the test."""
    started: list[Run] = []
    names = itertools.count()

    def make(executor, **kwargs) -> Run:
        run = Run(tmp_path / f"out{next(names)}.jsonl", executor, **kwargs)
        started.append(run)
        return run

    yield make
    gates.open_all()
    for run in started:
        run.close()


def contiguous_prefix(completed: set[int]) -> int:
    count = 0
    while count in completed:
        count += 1
    return count


# -- order -----------------------------------------------------------------------------


def check_order_for_completion_sequence(path: Path, order: list[int]) -> None:
    gates = Gates()
    count = len(order)
    executor = ObservedExecutor(gates.task(), max_workers=count)
    run = Run(path, executor)
    try:
        records = [make_record(n, {"id": n, "title": f"page {n}"}) for n in range(count)]
        for record in records:
            run.processor.submit(record)
        for n in range(count):
            gates.wait_started(n)  # all running at once: only the gates decide the order
        completed: set[int] = set()
        for offset in order:
            gates.open(offset)
            executor.wait_completed(offset)
            completed.add(offset)
            # Exactly the in-order prefix of what is done has been written, nothing more.
            assert run.lines() == [r.raw for r in records[: contiguous_prefix(completed)]]
        assert run.processor.drain(TIMEOUT)
        assert executor.completions == order
        assert run.lines() == [r.raw for r in records]
    finally:
        gates.open_all()
        run.close()


def test_output_is_in_input_order_when_completions_come_in_reverse(tmp_path):
    check_order_for_completion_sequence(tmp_path / "out.jsonl", [5, 4, 3, 2, 1, 0])


@settings(max_examples=25, deadline=None)
@given(order=st.integers(min_value=1, max_value=6).flatmap(lambda n: st.permutations(range(n))))
def test_output_is_in_input_order_for_any_completion_order(tmp_path_factory, order):
    check_order_for_completion_sequence(tmp_path_factory.mktemp("order") / "out.jsonl", list(order))


def test_events_whose_run_time_depends_on_the_event_are_written_in_input_order(runs):
    count = 6
    barrier = threading.Barrier(count, timeout=TIMEOUT)

    def run_for_wait(event):
        barrier.wait()  # every task is running before any starts its work
        time.sleep(event["wait"])  # the simulated work itself (not synchronisation)
        return event

    executor = ObservedExecutor(run_for_wait, max_workers=count)
    run = runs(executor)
    # Later events are shorter, so they finish first.
    records = [make_record(n, {"id": n, "wait": 0.03 * (count - n)}) for n in range(count)]
    for record in records:
        run.processor.submit(record)
    assert run.processor.drain(TIMEOUT)
    assert executor.completions != sorted(executor.completions), "completions did not come out of order"
    assert run.lines() == [r.raw for r in records]
    assert run.processor.written == count


def test_a_nonzero_start_offset_continues_from_there(runs):
    run = runs(LocalExecutor(lambda event: event, max_workers=2), start_offset=3)
    assert run.processor.next_offset == 3
    with pytest.raises(ValueError):
        run.processor.submit(make_record(0, {"id": 0}))
    records = [make_record(n, {"id": n}) for n in range(3, 7)]
    for record in records:
        run.processor.submit(record)
    assert run.processor.drain(TIMEOUT)
    assert run.lines() == [r.raw for r in records]


# -- what gets written -----------------------------------------------------------------


def test_unchanged_events_pass_through_byte_for_byte(runs, tmp_path):
    raw_lines = [
        b'{"id": 1, "title": "Caf\\u00e9",   "wait":0.5}',
        b'{  "wait" : 1.0 , "id":2, "title":"\\u6771\\u4eac"}',
        b'{"id": 3, "nested": {"b": [1, 2.50, 1E2], "a": null}, "title": "Z\\u00fcrich"}',
        b'{"id":4,"title":"plain"}',
    ]
    recording = tmp_path / "input.json"
    recording.write_bytes(b"\n".join(raw_lines) + b"\n")

    def same_or_copy(event):
        return event if event["id"] % 2 else json.loads(json.dumps(event))  # an equal copy counts too

    run = runs(LocalExecutor(same_or_copy, max_workers=4))
    for record in read_records(recording):
        run.processor.submit(record)
    assert run.processor.drain(TIMEOUT)
    assert run.path.read_bytes() == recording.read_bytes()


def test_a_changed_return_value_is_written_as_json(runs):
    def transform(event):
        if event["id"] == 2:
            return [event["id"], "list result"]
        return {"id": event["id"], "title_length": len(event["title"]), "city": "Zürich"}

    run = runs(LocalExecutor(transform, max_workers=3))
    events = [{"id": n, "title": "t" * n, "wait": 1} for n in range(4)]
    for n, event in enumerate(events):
        run.processor.submit(make_record(n, event))
    assert run.processor.drain(TIMEOUT)
    written = [strict_json(line) for line in run.lines()]
    assert written == [transform(event) for event in events]
    assert run.processor.errors == 0


def test_a_result_that_is_not_json_serialisable_becomes_an_error_record(runs):
    run = runs(LocalExecutor(lambda event: {"tags": {"a", "b"}}, max_workers=1))
    run.processor.submit(make_record(0, {"id": 41}))
    assert run.processor.drain(TIMEOUT)
    (line,) = run.lines()
    record = strict_json(line)
    assert record["offset"] == 0 and record["id"] == 41
    assert "JSON" in record["error"]
    assert run.processor.errors == 1


def test_a_task_that_raises_gets_an_error_record_in_its_place(runs):
    def fail_on_two(event):
        if event["id"] == 12:
            raise ValueError(f"boom {event['id']}")
        return event

    run = runs(LocalExecutor(fail_on_two, max_workers=3))
    records = [make_record(n, {"id": 10 + n, "wait": 0.1}) for n in range(5)]
    for record in records:
        run.processor.submit(record)
    assert run.processor.drain(TIMEOUT)
    lines = run.lines()
    assert len(lines) == 5
    assert [lines[n] for n in (0, 1, 3, 4)] == [records[n].raw for n in (0, 1, 3, 4)]
    error = strict_json(lines[2])
    assert set(error) == {"error", "offset", "id"}
    assert error["offset"] == 2
    assert error["id"] == 12
    assert "ValueError" in error["error"] and "boom 12" in error["error"]
    assert run.processor.errors == 1
    assert run.processor.written == 5


def test_an_error_record_of_an_event_without_id_has_no_id(runs):
    run = runs(LocalExecutor(lambda event: 1 / 0, max_workers=1))
    run.processor.submit(make_record(0, {"title": "no id"}))
    assert run.processor.drain(TIMEOUT)
    error = strict_json(run.lines()[0])
    assert error["offset"] == 0 and "ZeroDivisionError" in error["error"]
    assert "id" not in error


def test_bad_input_is_written_in_place_as_an_error_record_without_reaching_the_executor(runs, gates):
    seen: list[Any] = []

    def spy(event):
        seen.append(event["id"])
        return gates.task()(event)

    executor = ObservedExecutor(spy, max_workers=4)
    run = runs(executor)
    invalid_wait_raw = b'{"id": 77, "wait": "soon"}'
    invalid_wait_event, invalid_wait_error = parse_event(invalid_wait_raw, validate=check_wait)
    assert invalid_wait_error
    records = [
        make_record(0, {"id": 70, "wait": 1}),
        bad_record(1, b'{"id": 71, "wait": ', "not valid JSON (Expecting value)"),
        make_record(2, {"id": 72, "wait": 1}),
        Record(3, invalid_wait_raw, invalid_wait_event, invalid_wait_error),
    ]
    for record in records:
        run.processor.submit(record)
    gates.wait_started(70)
    gates.wait_started(72)
    # The bad line is done at once, but waits behind offset 0 for its turn.
    assert run.lines() == []
    gates.open(70)
    executor.wait_completed(0)
    lines = run.lines()
    assert len(lines) == 2
    assert lines[0] == records[0].raw
    assert strict_json(lines[1]) == {"error": records[1].error, "offset": 1}
    gates.open(72)
    assert run.processor.drain(TIMEOUT)
    lines = run.lines()
    assert len(lines) == 4
    assert strict_json(lines[1]) == {"error": "not valid JSON (Expecting value)", "offset": 1}
    assert lines[2] == records[2].raw
    assert strict_json(lines[3]) == {"error": invalid_wait_error, "offset": 3, "id": 77}
    assert sorted(seen) == [70, 72]
    assert sorted(executor.completions) == [0, 2]
    assert run.processor.errors == 2


# -- the window ------------------------------------------------------------------------


def submit_in_thread(processor: StreamProcessor, record: Record) -> tuple[threading.Event, list[BaseException]]:
    returned = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            processor.submit(record)
        except BaseException as exc:
            failures.append(exc)
        returned.set()

    threading.Thread(target=target, daemon=True).start()
    return returned, failures


def test_a_full_window_blocks_submit_until_the_head_is_written(runs, gates):
    executor = ObservedExecutor(gates.task(), max_workers=3)
    run = runs(executor, max_in_flight=2)
    records = [make_record(n, {"id": n}) for n in range(3)]
    run.processor.submit(records[0])
    run.processor.submit(records[1])
    assert run.processor.in_flight == 2
    returned, failures = submit_in_thread(run.processor, records[2])
    gates.wait_started(0)
    gates.wait_started(1)
    assert not returned.wait(0.2), "third submit returned while the window was full"
    # Offset 1 finishing does not free a slot: its result is held until offset 0 is written.
    gates.open(1)
    executor.wait_completed(1)
    assert not returned.wait(0.2), "third submit returned while offset 0 still held the window"
    assert run.processor.in_flight == 2
    gates.open(0)
    assert returned.wait(TIMEOUT), "third submit never returned after a slot freed"
    assert failures == []
    gates.open(2)
    assert run.processor.drain(TIMEOUT)
    assert run.lines() == [r.raw for r in records]


def test_submit_with_timeout_raises_when_the_window_stays_full(runs, gates):
    run = runs(LocalExecutor(gates.task(), max_workers=2), max_in_flight=1)
    first, second = make_record(0, {"id": 0}), make_record(1, {"id": 1})
    run.processor.submit(first)
    with pytest.raises(TimeoutError):
        run.processor.submit(second, timeout=0.05)
    assert run.processor.next_offset == 1  # the timed-out record was not admitted
    assert run.processor.in_flight == 1
    gates.open(0)
    run.processor.submit(second, timeout=TIMEOUT)
    gates.open(1)
    assert run.processor.drain(TIMEOUT)
    assert run.lines() == [first.raw, second.raw]


def test_drain_with_timeout_returns_false_while_events_are_in_flight(runs, gates):
    run = runs(LocalExecutor(gates.task(), max_workers=1))
    run.processor.submit(make_record(0, {"id": 0}))
    assert run.processor.drain(timeout=0.05) is False
    gates.open(0)
    assert run.processor.drain(TIMEOUT) is True


# -- at-least-once completions ---------------------------------------------------------


def test_a_duplicate_completion_writes_one_line(runs):
    executor = ManualExecutor()
    run = runs(executor)
    records = [make_record(n, {"id": n}) for n in range(3)]
    for record in records:
        run.processor.submit(record)
    assert executor.submitted == [0, 1, 2]
    run.processor._on_complete(1, True, {"id": 1, "first": True})
    run.processor._on_complete(1, True, {"id": 1, "second": True})  # repeat before release
    assert run.lines() == []
    run.processor._on_complete(0, True, records[0].event)
    run.processor._on_complete(0, True, records[0].event)  # repeat after release
    run.processor._on_complete(0, False, "late failure")  # a late failed redelivery
    run.processor._on_complete(9, True, {"id": 9})  # never admitted
    lines = run.lines()
    assert len(lines) == 2
    assert lines[0] == records[0].raw
    assert strict_json(lines[1]) == {"id": 1, "first": True}
    run.processor._on_complete(2, True, records[2].event)
    assert run.processor.drain(TIMEOUT)
    assert len(run.lines()) == 3
    assert run.processor.written == 3
    assert run.processor.errors == 0


def test_an_executor_that_completes_everything_twice_writes_each_line_once(runs):
    written: list[int] = []
    run = runs(TwiceExecutor(lambda event: event, max_workers=4), on_written=lambda o, _l, _e: written.append(o))
    records = [make_record(n, {"id": n}) for n in range(20)]
    for record in records:
        run.processor.submit(record)
    assert run.processor.drain(TIMEOUT)
    run.processor.close()  # every duplicate delivery has happened once the pool is shut down
    assert run.lines() == [r.raw for r in records]
    assert written == list(range(20))


# -- on_written ------------------------------------------------------------------------


def test_on_written_reports_offset_latency_and_error_once_per_line(runs, gates):
    clock = FakeClock(100.0)
    calls: list[tuple[int, float, bool]] = []

    def fail_on_3(event):
        if event["id"] == 3:
            raise RuntimeError("no")
        return gates.task()(event)

    executor = ObservedExecutor(fail_on_3, max_workers=4)
    run = runs(executor, clock=clock, on_written=lambda *args: calls.append(args))
    run.processor.submit(make_record(0, {"id": 0}))  # read at 100
    clock.now = 101.0
    run.processor.submit(make_record(1, {"id": 1}))  # read at 101
    clock.now = 102.0
    run.processor.submit(bad_record(2))  # read at 102, done at once, held behind 0
    clock.now = 102.5
    run.processor.submit(make_record(3, {"id": 3}))  # read at 102.5, fails at once
    executor.wait_completed(3)
    clock.now = 105.0
    gates.open(1)
    executor.wait_completed(1)
    assert calls == []  # everything is held behind offset 0
    clock.now = 107.0
    gates.open(0)
    assert run.processor.drain(TIMEOUT)
    assert calls == [(0, 7.0, False), (1, 6.0, False), (2, 5.0, True), (3, 4.5, True)]


# -- a failing sink --------------------------------------------------------------------


class FailingSink:
    def __init__(self) -> None:
        self.attempts = 0

    def write_lines(self, lines) -> None:
        self.attempts += 1
        raise OSError(28, "No space left on device")


def test_a_failing_sink_makes_drain_raise_instead_of_hanging(tmp_path, runs):
    sink = FailingSink()
    run = runs(LocalExecutor(lambda event: event, max_workers=2), sink=sink)
    run.processor.submit(make_record(0, {"id": 0}))
    with pytest.raises(RuntimeError, match="No space left") as raised:
        run.processor.drain(TIMEOUT)
    assert isinstance(raised.value.__cause__, OSError)
    assert sink.attempts >= 1
    with pytest.raises(RuntimeError):
        run.processor.submit(make_record(1, {"id": 1}))


def test_a_failing_sink_on_a_bad_input_record_fails_submit_and_every_later_drain(runs):
    run = runs(ManualExecutor(), sink=FailingSink())
    with pytest.raises(RuntimeError, match="No space left"):
        run.processor.submit(bad_record(0))
    with pytest.raises(RuntimeError, match="No space left"):
        run.processor.drain(TIMEOUT)  # not a silent success with nothing written


def test_a_failing_sink_wakes_a_drain_that_waits_without_timeout(runs, gates):
    sink = FailingSink()
    executor = ObservedExecutor(gates.task(), max_workers=2)
    run = runs(executor, sink=sink)
    run.processor.submit(make_record(0, {"id": 0}))
    run.processor.submit(make_record(1, {"id": 1}))  # stays running: drain must not wait for it
    outcome: list[BaseException | None] = []
    finished = threading.Event()

    def drain() -> None:
        try:
            run.processor.drain()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finished.set()

    threading.Thread(target=drain, daemon=True).start()
    gates.open(0)
    assert finished.wait(TIMEOUT), "drain() hung after the sink failed"
    assert isinstance(outcome[0], RuntimeError)
    assert isinstance(outcome[0].__cause__, OSError)


def test_a_failing_sink_wakes_a_submit_blocked_on_a_full_window(runs, gates):
    run = runs(LocalExecutor(gates.task(), max_workers=2), sink=FailingSink(), max_in_flight=1)
    run.processor.submit(make_record(0, {"id": 0}))
    returned, failures = submit_in_thread(run.processor, make_record(1, {"id": 1}))
    gates.open(0)
    assert returned.wait(TIMEOUT), "blocked submit() hung after the sink failed"
    assert len(failures) == 1 and isinstance(failures[0], RuntimeError)


# -- regressions: bugs found while writing these tests -----------------------------------


def test_a_result_with_nan_is_never_written_as_invalid_json(runs):
    # Was: json.dumps without allow_nan=False wrote the non-JSON literal NaN.
    run = runs(LocalExecutor(lambda event: {"id": event["id"], "score": float("nan")}, max_workers=1))
    run.processor.submit(make_record(0, {"id": 5}))
    assert run.processor.drain(TIMEOUT)
    (line,) = run.lines()
    record = strict_json(line)  # raises ValueError on a NaN literal
    assert record["offset"] == 0 and record["id"] == 5 and "error" in record
    assert run.processor.errors == 1


def test_a_task_that_changes_the_event_in_place_has_its_change_written(runs):
    # Was: the task got the processor's own event dict, so an in-place change compared
    # equal to "the original" and the old raw line was written.
    def add_score(event):
        event["score"] = 1
        return event

    run = runs(LocalExecutor(add_score, max_workers=1))
    run.processor.submit(make_record(0, {"id": 5}))
    assert run.processor.drain(TIMEOUT)
    assert strict_json(run.lines()[0]) == {"id": 5, "score": 1}
