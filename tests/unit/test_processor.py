"""`StreamProcessor`, the run's core: one owner thread, batches, per-event retries.

Most tests drive it through `ManualExecutor`, which only records the batches the owner
sends: the test completes them in the order and with the outcomes it chooses. The owner
runs on its own thread, so every wait here is a wait on a condition with a timeout (the
executor, sink and observer notify one `threading.Condition`). The last section runs
real functions on the in-process `LocalExecutor` and a real `JsonlSink`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stream_processor.core.batching import BatchPolicy
from stream_processor.core.observer import Observer
from stream_processor.core.outcomes import DONE, FAILED, INVALID, LOST, TIMED_OUT
from stream_processor.core.processor import RunFailed, StreamProcessor
from stream_processor.core.records import Record, check_wait, parse_event, read_records
from stream_processor.core.retries import RetryPolicy
from stream_processor.engine.execution import batch_function
from stream_processor.engine.executor import Batch, Completion, EventTask, LocalExecutor, Reply
from stream_processor.output.sink import JsonlSink
from tests.conftest import FakeClock

TIMEOUT = 10.0  # generous bound for anything that should happen "at once"
PROMPT_S = 0.05  # a call that must not wait for the owner returns within this
RUN_S = 0.0001  # the run time completions report: short events, so batches grow


def make_record(offset: int, event: dict[str, Any]) -> Record:
    raw = json.dumps(event).encode()
    return Record(offset, raw, json.loads(raw))


def bad_record(offset: int, raw: bytes = b"{oops", error: str = "not valid JSON (test)") -> Record:
    return Record(offset, raw, None, error)


def records_for(count: int, start: int = 0) -> list[Record]:
    return [make_record(n, {"id": n, "title": f"page {n}"}) for n in range(start, start + count)]


def strict_json(line: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line.decode("utf-8"), parse_constant=reject)


def offsets_of(batch: list[EventTask]) -> list[int]:
    return [task.offset for task in batch]


class ManualExecutor:
    """Records each batch the owner submits; completes nothing by itself."""

    def __init__(self, changed: threading.Condition) -> None:
        self.changed = changed
        self.batches: list[list[EventTask]] = []
        self.sent_at: list[float] = []  # time.monotonic() of each submission
        self.taken = 0  # batches handed to the test so far
        self.on_complete: Callable[[Reply], None] | None = None
        self.batch_ids: dict[int, int] = {}  # id() of a batch's task list -> the batch's id

    def start(self, on_complete) -> None:
        self.on_complete = on_complete

    def submit(self, batch: Batch) -> None:
        with self.changed:
            self.batch_ids[id(batch.tasks)] = batch.id
            self.batches.append(batch.tasks)
            self.sent_at.append(time.monotonic())
            self.changed.notify_all()

    def close(self) -> None:
        pass

    def untaken(self) -> int:
        return len(self.batches) - self.taken

    def take_all(self) -> list[list[EventTask]]:
        with self.changed:
            taken, self.taken = self.batches[self.taken :], len(self.batches)
        return taken

    def complete(
        self, batch: list[EventTask], outcomes: dict[int, tuple[str, str | None]] | None = None, kind: str = DONE
    ) -> Reply:
        """Deliver a batch's completions: `outcomes[offset]` = (kind, value); others `kind`, value None
        (or a reason, for kinds that need one)."""
        default = (kind, None if kind == DONE else f"{kind} (test)")
        completions = [
            Completion(task.offset, *(outcomes or {}).get(task.offset, default), RUN_S, "manual:1") for task in batch
        ]
        reply = Reply(self.batch_ids[id(batch)], completions)
        self.on_complete(reply)
        return reply


class MemorySink:
    """Keeps each write: a list of (offset, line)."""

    def __init__(self, changed: threading.Condition) -> None:
        self.changed = changed
        self.writes: list[list[tuple[int, bytes]]] = []

    def write(self, lines) -> None:
        with self.changed:
            self.writes.append(list(lines))
            self.changed.notify_all()

    @property
    def lines(self) -> list[bytes]:
        return [line for write in self.writes for _, line in write]

    @property
    def offsets(self) -> list[int]:
        return [offset for write in self.writes for offset, _ in write]


class Watcher(Observer):
    """An observer noting what it is told, on which threads, and the window at each read:
    events submitted (read) and not yet written."""

    def __init__(self, changed: threading.Condition) -> None:
        self.changed = changed
        self.reads = 0
        self.written: list[tuple[int, float, bool]] = []
        self.threads: set[int] = set()
        self.largest_window = 0
        self.deliveries = 0  # completion deliveries the owner has taken up

    def on_read(self, duration_s: float | None, arrival_s: float, key: Any = None) -> None:
        self.threads.add(threading.get_ident())
        self.reads += 1
        self.largest_window = max(self.largest_window, self.reads - len(self.written))

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        self.threads.add(threading.get_ident())
        with self.changed:
            self.written.append((offset, latency_s, is_error))
            self.changed.notify_all()

    def on_completions(self, completions: list[Completion]) -> None:
        self.threads.add(threading.get_ident())
        with self.changed:
            self.deliveries += 1
            self.changed.notify_all()


class Harness:
    """A started processor on a ManualExecutor (unless given another), a MemorySink (unless
    given another) and a Watcher, all notifying `changed`."""

    def __init__(self, max_in_flight: int = 100, executor=None, sink=None, observers=(), **kwargs) -> None:
        self.changed = threading.Condition()
        self.executor = executor if executor is not None else ManualExecutor(self.changed)
        self.sink = sink if sink is not None else MemorySink(self.changed)
        self.watcher = Watcher(self.changed)
        self.processor = StreamProcessor(
            self.executor, self.sink, max_in_flight, observers=[self.watcher, *observers], **kwargs
        ).start()

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        """Wait for `predicate`: woken by every notification, and every few ms for state that
        notifies nobody (the processor's failure)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self.changed.wait(min(left, 0.02))

    def next_batch(self) -> list[EventTask]:
        self.wait_until(lambda: self.executor.untaken() > 0, "a batch to be submitted")
        with self.changed:
            self.executor.taken += 1
            return self.executor.batches[self.executor.taken - 1]

    def wait_written(self, count: int) -> None:
        self.wait_until(lambda: len(self.watcher.written) >= count, f"{count} lines written")

    def submit_all(self, records: list[Record]) -> None:
        for record in records:
            self.processor.submit(record, timeout=TIMEOUT)

    def serve(self, total: int, decide: Callable[[list[EventTask]], dict[int, tuple[str, str | None]]]) -> None:
        """Complete each batch as it comes, with `decide(batch)`'s outcomes (DONE for the rest),
        until `total` lines are written."""
        while True:
            self.wait_until(
                lambda: self.executor.untaken() > 0 or len(self.watcher.written) >= total, "a batch or the end"
            )
            if len(self.watcher.written) >= total:
                return
            batch = self.next_batch()
            self.executor.complete(batch, decide(batch))

    def close(self) -> None:
        self.processor.close()


@contextmanager
def harness(**kwargs) -> Iterator[Harness]:
    run = Harness(**kwargs)
    try:
        yield run
    finally:
        run.close()


@pytest.fixture
def runs():
    """Factory for harnesses; all are closed after the test."""
    started: list[Harness] = []

    def make(**kwargs) -> Harness:
        run = Harness(**kwargs)
        started.append(run)
        return run

    yield make
    for run in started:
        run.close()


def primed_batching(size: int, linger_s: float = 60.0) -> BatchPolicy:
    """A policy that has measured short events and seen a batch of `size` come back: its
    batches hold `size` events, and a partial one waits up to `linger_s` for a free worker.

    Its target run time is long (a minute), so the batches still out, which the core counts
    as a floor for the mean while they run, cannot shrink the size on a slow machine (with
    the default 20 ms, one event out for 6 ms made a batch of 4 into 3)."""
    policy = BatchPolicy(batch_max=size, linger_s=linger_s, target_s=60.0)
    policy.observe(RUN_S)
    policy.observe_batch(size)
    assert policy.size() == size
    return policy


def held_and_full_batch(run: Harness, records: list[Record]) -> tuple[list[EventTask], list[EventTask]]:
    """With one worker (`workers=1`) and `primed_batching(len(records) - 1)`: records[0] goes
    out alone and keeps the worker busy, so the rest wait until they fill one batch."""
    run.processor.submit(records[0], timeout=TIMEOUT)
    held = run.next_batch()
    assert offsets_of(held) == [records[0].offset]
    run.submit_all(records[1:])
    full = run.next_batch()
    assert offsets_of(full) == [record.offset for record in records[1:]]
    return held, full


def singles_after(run: Harness, batch_index: int) -> list[int]:
    """The offsets of the batches sent after the first `batch_index`, each of which must be alone."""
    later = run.executor.batches[batch_index:]
    assert all(len(batch) == 1 for batch in later), [offsets_of(batch) for batch in later]
    return [batch[0].offset for batch in later]


# -- order: any batching, any completion order, repeats ------------------------------------

# One step of the test's plan: which open batch to complete (an index, modulo how many are
# open), how, and whether to also deliver again an earlier batch's completions.
plan_steps = st.tuples(
    st.integers(min_value=0, max_value=10_000), st.sampled_from(["done", "changed", "lost"]), st.booleans()
)


class OrderDriver:
    """A reader thread submits every record as fast as the window lets it; this thread plays
    an executor that completes the open batches in the order a plan says, one per step."""

    def __init__(self, run: Harness, records: list[Record], window: int, plan: list[tuple[int, str, bool]]) -> None:
        self.run, self.records, self.window, self.plan = run, records, window, plan
        self.expected = [record.raw for record in records]
        self.steps = 0
        self.open_batches: list[list[EventTask]] = []
        self.done_deliveries: list[list[Completion]] = []
        self.reader_failures: list[BaseException] = []

    def written(self) -> int:
        return len(self.run.watcher.written)

    def read_everything(self) -> None:
        try:
            for submitted, record in enumerate(self.records, start=1):
                self.run.processor.submit(record, timeout=TIMEOUT)
                # on_written is called before the owner gives a credit back: a safe bound to check here too.
                assert submitted - self.written() <= self.window
        except BaseException as exc:
            self.reader_failures.append(exc)

    def play(self) -> None:
        reader = threading.Thread(target=self.read_everything, daemon=True)
        reader.start()
        while True:
            self.run.wait_until(
                lambda: (
                    self.run.executor.untaken()
                    or self.open_batches
                    or self.reader_failures
                    or self.written() == len(self.records)
                ),
                "a batch to complete, or every line",
            )
            assert not self.reader_failures, self.reader_failures
            if self.written() == len(self.records):
                break
            self.open_batches.extend(self.run.executor.take_all())
            if self.open_batches:
                self.complete_one()
        reader.join(TIMEOUT)
        assert not reader.is_alive() and not self.reader_failures

    def complete_one(self) -> None:
        choice, how, repeat = self.plan[self.steps] if self.steps < len(self.plan) else (0, "done", False)
        self.steps += 1
        batch = self.open_batches.pop(choice % len(self.open_batches))
        if how == "lost":
            self.run.executor.complete(batch, kind=LOST)
            return
        outcomes = {}
        if how == "changed":
            for task in batch:
                line = json.dumps({"changed": task.offset})
                self.expected[task.offset] = line.encode()
                outcomes[task.offset] = (DONE, line)
        self.done_deliveries.append(self.run.executor.complete(batch, outcomes))
        if repeat:  # an at-least-once engine delivers an earlier batch again, here with other values
            earlier = self.done_deliveries[choice % len(self.done_deliveries)]
            repeated = [Completion(c.offset, DONE, '{"repeat": true}', RUN_S) for c in earlier.completions]
            self.run.executor.on_complete(Reply(earlier.batch_id, repeated))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=0, max_value=80),
    window=st.integers(min_value=1, max_value=20),
    batch_max=st.integers(min_value=1, max_value=10),
    linger_s=st.sampled_from([0.0, 0.001, 0.01, 60.0]),
    workers=st.integers(min_value=1, max_value=4),
    bad=st.frozensets(st.integers(min_value=0, max_value=79), max_size=10),
    plan=st.lists(plan_steps, min_size=1, max_size=60),
)
def test_each_offset_is_written_once_in_input_order_for_any_batching_and_completion_order(
    count, window, batch_max, linger_s, workers, bad, plan
):
    # Repeats here are of DONE batches (the first delivery must count); repeats of FAILED
    # deliveries have a test of their own further down.
    records = [bad_record(n) if n in bad else make_record(n, {"id": n}) for n in range(count)]
    policy = BatchPolicy(batch_max=batch_max, linger_s=linger_s)
    retries = RetryPolicy(retries=len(plan) + 1, backoff_s=0.0)  # a LOST event never runs out of attempts
    with harness(max_in_flight=window, batching=policy, retries=retries, workers=workers) as run:
        driver = OrderDriver(run, records, window, plan)
        driver.play()
        event("some batches of several events" if any(len(b) > 1 for b in run.executor.batches) else "single events")
        assert run.processor.drain(TIMEOUT)
        assert run.watcher.largest_window <= window
    assert run.sink.offsets == list(range(count))
    for offset, line in enumerate(run.sink.lines):
        if offset in bad:
            assert strict_json(line) == {"error": records[offset].error, "offset": offset}
        else:
            assert line == driver.expected[offset]
    assert [offset for offset, _, _ in run.watcher.written] == list(range(count))


@pytest.mark.parametrize("order", ["reverse", "inside_out", "forward"])
def test_only_the_in_order_prefix_of_done_events_is_written(runs, order):
    run = runs(batching=BatchPolicy(batch_max=1), workers=8)
    records = records_for(6)
    run.submit_all(records)
    batches = [run.next_batch() for _ in records]
    sequence = {"reverse": [5, 4, 3, 2, 1, 0], "inside_out": [3, 2, 4, 1, 5, 0], "forward": [0, 1, 2, 3, 4, 5]}[order]
    done: set[int] = set()
    for offset in sequence:
        run.executor.complete(batches[offset])
        done.add(offset)
        prefix = next(n for n in range(7) if n not in done)
        run.wait_until(lambda prefix=prefix: len(run.sink.lines) >= prefix, f"the first {prefix} lines")
        assert run.sink.lines == [record.raw for record in records[:prefix]]
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]


# -- what gets written ---------------------------------------------------------------------


def test_an_unchanged_event_is_its_raw_line_and_a_changed_one_the_line_the_worker_sent(runs):
    run = runs(batching=primed_batching(4), workers=1)
    odd_raw = '{  "id":1 , "title" : "Zürich",\t"x": 1.50 }'.encode()
    records = [make_record(0, {"id": 0}), Record(1, odd_raw, json.loads(odd_raw))] + records_for(3, start=2)
    held, batch = held_and_full_batch(run, records)
    run.executor.complete(batch, {3: (DONE, '{"id": 3, "title_length": 6}')})
    run.executor.complete(held)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [records[0].raw, odd_raw, records[2].raw, b'{"id": 3, "title_length": 6}', records[4].raw]
    assert run.processor.written == 5 and run.processor.errors == 0


def test_bad_input_is_written_in_place_without_reaching_the_executor(runs):
    run = runs(batching=BatchPolicy(batch_max=1), workers=8)
    invalid_wait_raw = b'{"id": 77, "wait": "soon"}'
    invalid_wait_event, invalid_wait_error = parse_event(invalid_wait_raw, validate=check_wait)
    assert invalid_wait_error
    records = [
        make_record(0, {"id": 70, "wait": 1}),
        bad_record(1, b'{"id": 71, "wait": ', "not valid JSON (Expecting value)"),
        make_record(2, {"id": 72, "wait": 1}),
        Record(3, invalid_wait_raw, invalid_wait_event, invalid_wait_error),
    ]
    run.submit_all(records)
    first, second = run.next_batch(), run.next_batch()
    run.executor.complete(second)
    run.executor.complete(first)
    assert run.processor.drain(TIMEOUT)
    assert [offsets_of(batch) for batch in run.executor.batches] == [[0], [2]]
    lines = run.sink.lines
    assert lines[0] == records[0].raw and lines[2] == records[2].raw
    assert strict_json(lines[1]) == {"error": "not valid JSON (Expecting value)", "offset": 1}
    assert strict_json(lines[3]) == {"error": invalid_wait_error, "offset": 3, "id": 77}
    assert run.processor.errors == 2


def test_a_bad_line_waits_behind_the_events_before_it(runs):
    run = runs(batching=BatchPolicy(batch_max=1), workers=8)
    run.submit_all([make_record(0, {"id": 0}), bad_record(1)])
    batch = run.next_batch()
    run.wait_until(lambda: run.watcher.reads == 2, "both records read")
    assert run.sink.lines == []  # offset 1 is done at once, but offset 0 is not
    run.executor.complete(batch)
    run.wait_written(2)
    assert run.sink.offsets == [0, 1]


@pytest.mark.parametrize(
    ("source", "id_in_record"), [({"title": "no id"}, {}), ({"id": None, "title": "null id"}, {"id": None})]
)
def test_an_error_record_carries_the_event_id_only_if_the_event_has_one(runs, source, id_in_record):
    run = runs(batching=BatchPolicy(batch_max=1), workers=1)
    run.processor.submit(make_record(0, source))
    why = "result is not JSON-serialisable: TypeError: Object of type set is not JSON serializable"
    run.executor.complete(run.next_batch(), {0: (INVALID, why)})
    assert run.processor.drain(TIMEOUT)
    assert strict_json(run.sink.lines[0]) == {"error": why, "offset": 0, **id_in_record}


def test_a_nonzero_start_offset_continues_from_there(runs):
    run = runs(start_offset=3, batching=BatchPolicy(batch_max=1), workers=8)
    records = records_for(3, start=3)
    run.submit_all(records)
    for batch in [run.next_batch() for _ in records][::-1]:
        run.executor.complete(batch)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.offsets == [3, 4, 5]
    assert run.sink.lines == [record.raw for record in records]


# -- retries, losses and time limits inside a batch ----------------------------------------


def test_a_failed_event_in_a_batch_is_retried_alone_after_the_backoff_and_the_rest_written_once(runs):
    backoff_s = 0.05
    run = runs(batching=primed_batching(3), workers=1, retries=RetryPolicy(retries=2, backoff_s=backoff_s))
    records = records_for(4)
    held, batch = held_and_full_batch(run, records)
    failed_at = time.monotonic()
    run.executor.complete(batch, {2: (FAILED, "ValueError: flaky")})
    retry = run.next_batch()
    assert offsets_of(retry) == [2]
    assert run.executor.sent_at[2] - failed_at >= backoff_s
    run.executor.complete(retry)
    run.executor.complete(held)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]
    assert singles_after(run, 2) == [2]  # only the failed event ran again
    assert run.processor.errors == 0


def test_an_event_that_fails_on_every_attempt_gets_an_error_record_naming_the_attempts(runs):
    retries = RetryPolicy(retries=2, backoff_s=0.0)
    run = runs(batching=primed_batching(3), workers=1, retries=retries)
    records = records_for(4)
    held, batch = held_and_full_batch(run, records)
    run.executor.complete(batch, {2: (FAILED, "ValueError: nope")})
    for _ in range(retries.retries):
        run.executor.complete(run.next_batch(), {2: (FAILED, "ValueError: nope")})
    run.executor.complete(held)
    assert run.processor.drain(TIMEOUT)
    assert singles_after(run, 2) == [2, 2]
    lines = run.sink.lines
    assert [lines[n] for n in (0, 1, 3)] == [records[n].raw for n in (0, 1, 3)]
    assert strict_json(lines[2]) == {"error": "failed: ValueError: nope (attempt 3 of 3)", "offset": 2, "id": 2}
    assert run.processor.errors == 1


def test_a_lost_batch_runs_each_event_again_alone_without_counting_an_attempt(runs):
    run = runs(batching=primed_batching(4), workers=1, retries=RetryPolicy(retries=2, backoff_s=0.0))
    records = records_for(5)
    held, batch = held_and_full_batch(run, records)
    run.executor.complete(batch, kind=LOST)
    run.executor.complete(held)
    run.serve(5, lambda batch: {})
    assert Counter(singles_after(run, 2)) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert run.sink.lines == [record.raw for record in records]
    assert run.processor.errors == 0


def test_an_event_lost_alone_on_every_attempt_gets_an_error_record_and_the_others_are_unaffected(runs):
    why = "the worker process exited (signal 9)"
    run = runs(batching=primed_batching(4), workers=1, retries=RetryPolicy(retries=2, backoff_s=0.0))
    records = records_for(5)
    held, batch = held_and_full_batch(run, records)
    run.executor.complete(batch, kind=LOST)  # not counted: which event killed the process?
    run.executor.complete(held)
    run.serve(5, lambda batch: {2: (LOST, why)})
    # Three runs alone (1 + 2 retries), none counted for the lost batch.
    assert Counter(singles_after(run, 2)) == {1: 1, 2: 3, 3: 1, 4: 1}
    lines = run.sink.lines
    assert [lines[n] for n in (0, 1, 3, 4)] == [records[n].raw for n in (0, 1, 3, 4)]
    message = f"the worker process died while running it, 3 times ({why})"
    assert strict_json(lines[2]) == {"error": message, "offset": 2, "id": 2}


def test_a_timed_out_event_in_a_batch_gets_its_record_and_nothing_runs_again(runs):
    run = runs(batching=primed_batching(3), workers=1, retries=RetryPolicy(retries=2, backoff_s=0.0))
    records = records_for(4)
    held, batch = held_and_full_batch(run, records)
    run.executor.complete(batch, {2: (TIMED_OUT, "ran past its time limit of 1 s")})
    run.executor.complete(held)
    assert run.processor.drain(TIMEOUT)
    assert len(run.executor.batches) == 2  # neither the timed-out event nor its batch ran again
    lines = run.sink.lines
    assert [lines[n] for n in (0, 1, 3)] == [records[n].raw for n in (0, 1, 3)]
    assert strict_json(lines[2]) == {"error": "timed out: ran past its time limit of 1 s", "offset": 2, "id": 2}


# -- repeated completions (at-least-once engines) --------------------------------------------


def test_a_repeated_completion_writes_one_line_and_the_first_one_counts(runs):
    run = runs(batching=BatchPolicy(batch_max=1), workers=8)
    records = records_for(3)
    run.submit_all(records)
    batches = [run.next_batch() for _ in records]
    run.executor.complete(batches[1], {1: (DONE, '{"first": true}')})
    run.executor.complete(batches[1], {1: (DONE, '{"second": true}')})  # a repeat before release
    run.executor.complete(batches[0])
    run.wait_written(2)
    run.executor.complete(batches[0], {0: (DONE, '{"late": true}')})  # a repeat after release
    run.executor.complete(batches[0], kind=FAILED)  # a late failed redelivery
    run.executor.on_complete(Reply(10**9, [Completion(9, DONE, '{"stray": true}', RUN_S)]))  # never admitted
    run.executor.complete(batches[2])
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [records[0].raw, b'{"first": true}', records[2].raw]
    assert [offset for offset, _, _ in run.watcher.written] == [0, 1, 2]
    assert (run.processor.written, run.processor.errors) == (3, 0)
    assert run.processor.duplicates_dropped == 3  # counted for the report; the stray offset is not a repeat


def test_a_repeated_completion_does_not_let_more_batches_out_than_the_limit(runs):
    run = runs(batching=BatchPolicy(batch_max=1, outstanding_per_worker=1), workers=1)  # one batch out at a time
    run.submit_all(records_for(5))
    first = run.next_batch()
    run.executor.complete(first)
    second = run.next_batch()
    run.executor.complete(first)  # a repeat: `second` is still out
    run.executor.complete(second)
    run.wait_written(2)  # the owner has handled both, and sent what it would
    assert run.executor.untaken() == 1, [offsets_of(batch) for batch in run.executor.batches]


def test_a_repeated_failure_while_the_event_waits_for_its_retry_does_not_break_the_run(runs):
    clock = FakeClock(1000.0)
    run = runs(batching=BatchPolicy(batch_max=1), workers=1, clock=clock, retries=RetryPolicy(2, backoff_s=1.0))
    run.processor.submit(make_record(0, {"id": 0}))
    first = run.next_batch()
    run.executor.complete(first, kind=FAILED)
    run.executor.complete(first, kind=FAILED)  # the same delivery again
    run.processor.submit(bad_record(1))  # read after both deliveries are handled: a barrier
    run.wait_until(lambda: run.watcher.reads == 2, "both deliveries handled")
    clock.now = 1001.0  # the first retry is due
    run.executor.complete(run.next_batch())
    run.wait_written(2)
    clock.now = 1010.0  # long past any second retry
    run.processor.submit(make_record(2, {"id": 2}))
    run.wait_until(
        lambda: run.processor.failure is not None or any(2 in offsets_of(b) for b in run.executor.batches),
        "offset 2 to be sent, or the run to fail",
    )
    assert run.processor.failure is None
    run.serve(3, lambda batch: {})
    assert run.processor.drain(TIMEOUT)
    assert run.sink.offsets == [0, 1, 2]


def test_a_repeated_failure_does_not_use_up_an_attempt(runs):
    run = runs(batching=BatchPolicy(batch_max=1), workers=1, retries=RetryPolicy(retries=1, backoff_s=0.0))
    record = make_record(0, {"id": 0})
    run.processor.submit(record)
    first = run.next_batch()
    run.executor.complete(first, kind=FAILED)
    run.executor.complete(first, kind=FAILED)  # the same delivery again
    run.wait_until(lambda: run.executor.untaken() or run.sink.lines, "a retry, or a line")
    assert run.sink.lines == [], "the event gave up without its retry"
    run.serve(1, lambda batch: {})
    assert run.sink.lines == [record.raw]


# -- the window ------------------------------------------------------------------------------


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


def test_a_full_window_blocks_submit_until_the_head_is_written(runs):
    run = runs(max_in_flight=2, batching=BatchPolicy(batch_max=1), workers=8)
    records = records_for(3)
    run.submit_all(records[:2])
    first, second = run.next_batch(), run.next_batch()
    returned, failures = submit_in_thread(run.processor, records[2])
    assert not returned.wait(0.2), "a third submit returned while the window of 2 was full"
    run.executor.complete(second)  # done, but held behind offset 0: no slot frees
    run.wait_until(lambda: run.watcher.deliveries == 1, "offset 1's completion taken up")
    assert not returned.wait(0.2), "a third submit returned while offset 0 still held the window"
    run.executor.complete(first)
    assert returned.wait(TIMEOUT), "the third submit never returned after a slot freed"
    assert failures == []
    run.executor.complete(run.next_batch())
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]


def test_submit_with_timeout_raises_when_the_window_stays_full(runs):
    run = runs(max_in_flight=1, batching=BatchPolicy(batch_max=1), workers=8)
    first, second = records_for(2)
    run.processor.submit(first)
    with pytest.raises(TimeoutError):
        run.processor.submit(second, timeout=0.05)
    run.executor.complete(run.next_batch())
    run.processor.submit(second, timeout=TIMEOUT)  # the timed-out record was not admitted: same offset again
    run.executor.complete(run.next_batch())
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [first.raw, second.raw]


def test_drain_with_timeout_returns_false_while_events_are_in_flight(runs):
    run = runs(batching=BatchPolicy(batch_max=1), workers=8)
    run.processor.submit(make_record(0, {"id": 0}))
    batch = run.next_batch()
    assert run.processor.drain(timeout=0.05) is False
    run.executor.complete(batch)
    assert run.processor.drain(TIMEOUT) is True


def test_drain_with_nothing_submitted_returns_at_once(runs):
    assert runs().processor.drain(TIMEOUT) is True


# -- on_written ------------------------------------------------------------------------------


def test_on_written_reports_offset_latency_and_error_once_per_line(runs):
    clock = FakeClock(100.0)
    run = runs(clock=clock, batching=BatchPolicy(batch_max=1), workers=8)
    run.processor.submit(make_record(0, {"id": 0}))  # read at 100
    clock.now = 101.0
    run.processor.submit(make_record(1, {"id": 1}))  # read at 101
    clock.now = 102.0
    run.processor.submit(bad_record(2))  # read at 102, done at once, held behind 0
    clock.now = 102.5
    run.processor.submit(make_record(3, {"id": 3}))  # read at 102.5
    first, second, fourth = run.next_batch(), run.next_batch(), run.next_batch()
    run.executor.complete(fourth, kind=INVALID)
    clock.now = 105.0
    run.executor.complete(second)
    run.executor.complete(second)  # a repeat: still one call
    run.wait_until(lambda: run.watcher.reads == 4, "every record read")
    assert run.watcher.written == []  # everything is held behind offset 0
    clock.now = 107.0
    run.executor.complete(first)
    assert run.processor.drain(TIMEOUT)
    assert run.watcher.written == [(0, 7.0, False), (1, 6.0, False), (2, 5.0, True), (3, 4.5, True)]


# -- no I/O under a lock shared with intake ---------------------------------------------------


class StalledSink:
    """A sink whose write() blocks until the test lets it go: a disk or socket that stalled."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.lines: list[tuple[int, bytes]] = []

    def write(self, lines) -> None:
        self.entered.set()
        self.go.wait(TIMEOUT)
        self.lines.extend(lines)


class StalledObserver(Observer):
    """on_written blocks until the test lets it go (a slow terminal, metrics endpoint, ack);
    every hook notes the thread it was called on."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.threads: set[int] = set()

    def on_read(self, duration_s, arrival_s, key=None) -> None:
        self.threads.add(threading.get_ident())

    def on_written(self, offset, latency_s, is_error) -> None:
        self.threads.add(threading.get_ident())
        self.entered.set()
        self.go.wait(TIMEOUT)

    def on_watermark(self, watermark) -> None:
        self.threads.add(threading.get_ident())

    def on_completions(self, completions) -> None:
        self.threads.add(threading.get_ident())


def seconds_taken(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@pytest.mark.parametrize("stalled", ["sink", "observer"])
def test_a_stalled_sink_or_observer_never_holds_up_completions_or_intake(stalled):
    window = 200
    sink, observer = StalledSink(), StalledObserver()
    if stalled == "observer":
        sink.go.set()
    else:
        observer.go.set()
    stall = sink if stalled == "sink" else observer
    records = records_for(window)
    run = Harness(max_in_flight=window, sink=sink, observers=[observer], batching=BatchPolicy(batch_max=1), workers=64)
    try:
        run.submit_all(records[:20])
        batches = [run.next_batch() for _ in range(20)]
        run.executor.complete(batches[0])
        assert stall.entered.wait(TIMEOUT), "the owner never started writing"
        # The owner is now stuck writing offset 0. Completions and intake must not wait for it.
        for batch in batches[1:]:
            taken = seconds_taken(lambda batch=batch: run.executor.complete(batch))
            assert taken < PROMPT_S, f"on_complete waited {taken:.3f} s for the stalled owner"
        for record in records[20:]:  # the rest of the window
            taken = seconds_taken(lambda record=record: run.processor.submit(record))
            assert taken < PROMPT_S, f"submit waited {taken:.3f} s for the stalled owner"
        stall.go.set()
        run.serve(window, lambda batch: {})
        assert run.processor.drain(TIMEOUT)
    finally:
        sink.go.set()
        observer.go.set()
        run.close()
    assert [offset for offset, _ in sink.lines] == list(range(window))
    # Every observer hook ran on one thread: the owner (not this one, which delivered completions).
    threads = observer.threads | run.watcher.threads
    assert len(threads) == 1 and threading.get_ident() not in threads


# -- a run that cannot go on ------------------------------------------------------------------


class FailingSink:
    def __init__(self) -> None:
        self.attempts = 0

    def write(self, lines) -> None:
        self.attempts += 1
        raise OSError(28, "No space left on device")


def test_a_failing_sink_makes_drain_and_submit_raise_run_failed(runs):
    sink = FailingSink()
    run = runs(sink=sink, batching=BatchPolicy(batch_max=1), workers=8)
    run.processor.submit(make_record(0, {"id": 0}))
    run.executor.complete(run.next_batch())
    with pytest.raises(RunFailed, match="No space left") as raised:
        run.processor.drain(TIMEOUT)
    assert isinstance(raised.value.__cause__, OSError)
    assert sink.attempts == 1
    with pytest.raises(RunFailed):
        run.processor.submit(make_record(1, {"id": 1}), timeout=TIMEOUT)
    with pytest.raises(RunFailed):
        run.processor.drain(TIMEOUT)  # every later drain too, not a silent success


def test_a_failing_sink_on_a_bad_input_record_fails_every_later_drain(runs):
    run = runs(sink=FailingSink())
    run.processor.submit(bad_record(0))
    for _ in range(2):
        with pytest.raises(RunFailed, match="No space left"):
            run.processor.drain(TIMEOUT)


def test_a_failing_sink_wakes_a_drain_that_waits_without_timeout(runs):
    run = runs(sink=FailingSink(), batching=BatchPolicy(batch_max=1), workers=8)
    run.submit_all(records_for(2))
    first, _ = run.next_batch(), run.next_batch()  # offset 1 stays running: drain must not wait for it
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
    run.executor.complete(first)
    assert finished.wait(TIMEOUT), "drain() hung after the sink failed"
    assert isinstance(outcome[0], RunFailed) and isinstance(outcome[0].__cause__, OSError)


def test_a_failing_sink_wakes_a_submit_blocked_on_a_full_window(runs):
    run = runs(sink=FailingSink(), max_in_flight=1, batching=BatchPolicy(batch_max=1), workers=8)
    run.processor.submit(make_record(0, {"id": 0}))
    batch = run.next_batch()
    returned, failures = submit_in_thread(run.processor, make_record(1, {"id": 1}))
    run.executor.complete(batch)
    assert returned.wait(TIMEOUT), "a blocked submit() hung after the sink failed"
    assert len(failures) == 1 and isinstance(failures[0], RunFailed)


def test_every_submit_after_the_run_failed_raises_instead_of_blocking(runs):
    run = runs(sink=FailingSink(), max_in_flight=1)
    run.processor.submit(bad_record(0))  # its error line fails to write: the run fails
    with pytest.raises(RunFailed):
        run.processor.drain(TIMEOUT)
    for offset in range(1, 4):
        with pytest.raises(RunFailed):
            run.processor.submit(bad_record(offset), timeout=1.0)


def test_fail_from_another_thread_unblocks_a_submit_waiting_on_a_full_window(runs):
    run = runs(max_in_flight=1, batching=BatchPolicy(batch_max=1), workers=8)
    run.processor.submit(make_record(0, {"id": 0}))  # never completed: the window stays full
    run.next_batch()
    returned, failures = submit_in_thread(run.processor, make_record(1, {"id": 1}))
    assert not returned.wait(0.1), "submit returned while the window was full"
    reason = ConnectionError("the broker is gone")
    threading.Thread(target=run.processor.fail, args=(reason,)).start()
    assert returned.wait(TIMEOUT), "a blocked submit() hung after fail()"
    assert len(failures) == 1 and isinstance(failures[0], RunFailed)
    assert failures[0].__cause__ is reason
    assert run.processor.failure is reason
    with pytest.raises(RunFailed, match="broker is gone"):
        run.processor.drain(TIMEOUT)


def test_an_idle_owner_waits_instead_of_spinning():
    calls = itertools.count()

    def counting_clock() -> float:
        next(calls)
        return time.monotonic()

    with harness(clock=counting_clock) as run:
        assert run.processor.drain(TIMEOUT)
        before = next(calls)
        threading.Event().wait(0.3)  # not synchronisation: the idle spell being measured
        turns = next(calls) - before
    assert turns < 100, f"the idle owner read the clock {turns} times in 0.3 s"


# -- real functions on the in-process engine, and a real JsonlSink ----------------------------


class TwiceExecutor(LocalExecutor):
    """An at-least-once engine: every batch's completions are delivered twice."""

    def start(self, on_complete) -> None:
        def twice(reply) -> None:
            on_complete(reply)
            on_complete(reply)

        super().start(twice)


@pytest.fixture
def local_runs(tmp_path):
    """Factory: a processor on LocalExecutor(function) writing a JsonlSink; closed after the test."""
    started: list[tuple[Harness, JsonlSink]] = []
    names = itertools.count()

    def make(function, max_workers: int = 4, executor_class=LocalExecutor, **kwargs) -> Harness:
        sink = JsonlSink(tmp_path / f"out{next(names)}.jsonl")
        run = Harness(executor=executor_class(function, max_workers), sink=sink, workers=max_workers, **kwargs)
        started.append((run, sink))
        return run

    yield make
    for run, sink in started:
        run.close()
        sink.close()


def run_through(run: Harness, records: list[Record]) -> list[bytes]:
    run.submit_all(records)
    assert run.processor.drain(TIMEOUT)
    return run.sink.path.read_bytes().splitlines()


def test_local_unchanged_events_pass_through_byte_for_byte(local_runs, tmp_path):
    raw_lines = [
        b'{"id": 1, "title": "Caf\\u00e9",   "wait":0.5}',
        '{  "wait" : 1.0 , "id":2, "title":"東京 Zürich" }'.encode(),
        b'{"id": 3, "nested": {"b": [1, 2.50, 1E2], "a": null}, "title": "Z\\u00fcrich"}',
        b'{"id":4,"title":"plain","__type__":"datetime","__value__":"2024-01-01"}',
        b'\t{"id": 5, "line": "a\\u2028b\\nc"}  ',
    ]
    recording = tmp_path / "input.jsonl"
    recording.write_bytes(b"\n".join(raw_lines) + b"\n")

    def same_or_copy(event):
        return event if event["id"] % 2 else json.loads(json.dumps(event))  # an equal copy counts too

    run = local_runs(same_or_copy)
    assert run_through(run, list(read_records(recording))) == raw_lines


def test_local_changed_results_are_written_as_json(local_runs):
    def transform(event):
        if event["id"] == 2:
            return [event["id"], "list result"]
        return {"id": event["id"], "title_length": len(event["title"]), "city": "Zürich"}

    events = [{"id": n, "title": "t" * n} for n in range(6)]
    run = local_runs(transform)
    lines = run_through(run, [make_record(n, event) for n, event in enumerate(events)])
    assert [strict_json(line) for line in lines] == [transform(event) for event in events]
    assert run.processor.errors == 0


@pytest.mark.parametrize("result", [{"tags": {"a", "b"}}, {"score": float("nan")}])
def test_local_a_result_that_cannot_be_json_becomes_an_error_record(local_runs, result):
    run = local_runs(lambda event: result)
    (line,) = run_through(run, [make_record(0, {"id": 41})])
    record = strict_json(line)  # never a NaN literal
    assert record["offset"] == 0 and record["id"] == 41
    assert record["error"].startswith("result is not JSON-serialisable")
    assert run.processor.errors == 1


def test_local_a_function_that_raises_is_retried_then_gets_an_error_record(local_runs):
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def fail_on_two(event):
        with lock:
            calls[event["id"]] += 1
        if event["id"] == 2:
            raise ValueError(f"boom {event['id']}")
        return event

    run = local_runs(fail_on_two, retries=RetryPolicy(retries=2, backoff_s=0.0))
    records = records_for(5)
    lines = run_through(run, records)
    assert [lines[n] for n in (0, 1, 3, 4)] == [records[n].raw for n in (0, 1, 3, 4)]
    assert strict_json(lines[2]) == {"error": "failed: ValueError: boom 2 (attempt 3 of 3)", "offset": 2, "id": 2}
    assert calls == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}
    assert (run.processor.written, run.processor.errors) == (5, 1)


def test_local_an_event_edited_in_place_and_returned_is_written_as_edited(local_runs):
    def add_score(event):
        event["score"] = event["id"] * 10
        return event

    run = local_runs(add_score)
    lines = run_through(run, records_for(3))
    assert [strict_json(line) for line in lines] == [{"id": n, "title": f"page {n}", "score": n * 10} for n in range(3)]


def test_local_a_batch_function_scores_whole_batches_in_one_call(local_runs):
    calls: list[list[int]] = []
    lock = threading.Lock()
    all_submitted = threading.Event()

    @batch_function
    def lengths(events):
        all_submitted.wait(TIMEOUT)  # the first batches hold the workers until every event is in
        with lock:
            calls.append([event["id"] for event in events])
        return [{"id": event["id"], "length": len(event["title"])} for event in events]

    run = local_runs(lengths, max_workers=2)
    records = records_for(60)
    run.submit_all(records)
    all_submitted.set()
    assert run.processor.drain(TIMEOUT)
    lines = run.sink.path.read_bytes().splitlines()
    assert [strict_json(line) for line in lines] == [{"id": n, "length": len(f"page {n}")} for n in range(60)]
    assert sorted(itertools.chain.from_iterable(calls)) == list(range(60))  # each event scored once
    assert max(map(len, calls)) > 1, calls


def test_local_events_that_finish_in_reverse_order_are_written_in_input_order(local_runs):
    count = 6
    barrier = threading.Barrier(count, timeout=TIMEOUT)
    finished: list[int] = []

    def run_for_wait(event):
        barrier.wait()  # every event is running before any does its work
        time.sleep(event["wait"])  # the work itself (later events are shorter), not synchronisation
        finished.append(event["id"])
        return event

    run = local_runs(run_for_wait, max_workers=count)
    records = [make_record(n, {"id": n, "wait": 0.03 * (count - n)}) for n in range(count)]
    assert run_through(run, records) == [record.raw for record in records]
    assert finished != sorted(finished), "the events did not finish out of order"


def test_local_an_engine_that_delivers_everything_twice_writes_each_line_once(local_runs):
    run = local_runs(lambda event: event, executor_class=TwiceExecutor)
    records = records_for(30)
    assert run_through(run, records) == [record.raw for record in records]
    assert [offset for offset, _, _ in run.watcher.written] == list(range(30))


def test_local_observers_are_called_on_the_owner_thread_only(local_runs):
    run = local_runs(lambda event: event)
    run_through(run, records_for(20))
    assert len(run.watcher.threads) == 1
    (owner,) = run.watcher.threads
    assert owner != threading.get_ident()
    assert owner not in {thread.ident for thread in threading.enumerate() if thread.name.startswith("local-task")}


def test_a_short_event_back_first_does_not_get_long_ones_still_out_batched_together(runs):
    # Four events out alone (nothing measured yet). One comes back after a second, having run
    # for 0.1 ms: the mean says "tiny", but three have been out for a second each. The next
    # events must go one per task, or a batch could put a 1 s event behind a 10 s one.
    clock = FakeClock(1000.0)
    run = runs(batching=BatchPolicy(batch_max=10), workers=4, clock=clock)
    run.submit_all(records_for(20))
    first_four = [run.next_batch() for _ in range(4)]
    assert all(len(batch) == 1 for batch in first_four)
    clock.now = 1001.0
    run.executor.complete(first_four[0])
    run.wait_written(1)
    later = [run.next_batch() for _ in range(4)]  # two per worker may be out once run times are known
    assert all(len(batch) == 1 for batch in later), [offsets_of(batch) for batch in later]


def test_once_many_short_events_have_come_back_batches_grow_again(runs):
    # The floor fades as events are measured: short events, all back, batch as before.
    clock = FakeClock(1000.0)
    run = runs(batching=BatchPolicy(batch_max=10), workers=1, clock=clock)
    run.submit_all(records_for(40))
    sizes = []
    while sum(sizes) < 40:
        batch = run.next_batch()
        sizes.append(len(batch))
        run.executor.complete(batch)
    assert max(sizes) == 10, sizes


# -- asking again after a restart ------------------------------------------------------------


def test_after_a_restart_the_batches_out_are_sent_again_and_their_late_replies_dropped(runs):
    """A broker restart may lose a task (see StreamProcessor._ask_again): everything out
    with no result yet goes out again, and the forgotten batches count for nothing."""
    run = runs(batching=primed_batching(3), workers=1)
    records = records_for(4)
    held, batch = held_and_full_batch(run, records)
    run.processor.ask_again("a test restart", suspects=False)
    first_again = run.next_batch()  # a full batch; the rest waits for the one worker
    run.executor.complete(held, {0: (DONE, '{"forgotten": true}')})  # the lost task came back after all
    run.executor.complete(first_again)
    second_again = run.next_batch()
    assert sorted(offsets_of(first_again) + offsets_of(second_again)) == [0, 1, 2, 3]
    run.executor.complete(second_again)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]
    assert run.processor.asked_again == 4
    assert len(run.executor.batches) == 4  # nothing more went out


def test_after_a_restart_of_the_workers_each_event_out_runs_alone_and_results_back_are_kept(runs):
    run = runs(batching=primed_batching(3), workers=4)
    records = records_for(4)
    held, batch = held_and_full_batch(run, records)
    run.executor.on_complete(
        Reply(run.executor.batch_ids[id(batch)], [Completion(1, DONE, None, RUN_S, "w:1")], final=False)
    )
    run.processor.ask_again("a test restart", suspects=True)
    alone = [offsets_of(run.next_batch()) for _ in range(3)]
    assert sorted(alone) == [[0], [2], [3]]  # offset 1 had come back: it is not sent again
    for resent in run.executor.batches[2:]:
        run.executor.complete(resent)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]
    assert run.processor.asked_again == 3


def test_a_restart_does_not_send_again_what_went_out_after_it_began(runs):
    """What went out once the restart began (say, in answer to a redelivery) is not lost."""
    run = runs(batching=primed_batching(3), workers=4)
    records = records_for(4)
    began = time.monotonic()
    held, batch = held_and_full_batch(run, records)
    run.processor.ask_again("a test restart", suspects=True, sent_before=began)
    run.executor.complete(held)
    run.executor.complete(batch)
    assert run.processor.drain(TIMEOUT)
    assert run.sink.lines == [record.raw for record in records]
    assert (run.processor.asked_again, len(run.executor.batches)) == (0, 2)
