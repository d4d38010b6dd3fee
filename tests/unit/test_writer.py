"""The sink's writer thread (core/writer.py): a slow write holds up the writing only.

While a write is under way the owner goes on sending batches and taking replies; the lines
it releases meanwhile go into the next write, as one; a line counts as written (observers,
the watermark, drain) only once its write has returned; a failed write stops the run.
"""

from __future__ import annotations

import threading

import pytest

from stream_processor.core.processor import RunFailed
from tests.unit.test_processor import TIMEOUT, Harness, MemorySink, records_for


class GatedSink(MemorySink):
    """A MemorySink whose writes wait until the test opens the gate (a commit that takes long)."""

    def __init__(self, changed: threading.Condition) -> None:
        super().__init__(changed)
        self.gate = threading.Event()
        self.started = 0  # writes begun

    def write(self, lines) -> None:
        with self.changed:
            self.started += 1
            self.changed.notify_all()
        assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        super().write(lines)


class FailingSink(MemorySink):
    def write(self, lines) -> None:
        raise OSError(28, "No space left on device")


def test_a_slow_write_holds_up_neither_sending_nor_replies_and_lines_count_once_written():
    sink = GatedSink(threading.Condition())
    harness = Harness(sink=sink)
    sink.changed = harness.changed  # one condition for everything the test waits on
    watcher = harness.watcher
    try:
        harness.submit_all(records_for(1))
        harness.executor.complete(harness.next_batch())
        harness.wait_until(lambda: sink.started == 1, "the first write to begin")
        # The first write is stuck: the owner still sends the next events and takes their replies.
        harness.submit_all(records_for(3, start=1))
        sent: set[int] = set()
        while sent != {1, 2, 3}:
            batch = harness.next_batch()
            sent |= {task.offset for task in batch}
            harness.executor.complete(batch)
        harness.wait_until(
            lambda: watcher.deliveries >= 2 and sink.started == 1, "the replies to be taken while the write waits"
        )
        assert watcher.written == [], "no line counts as written before its write returns"
        assert not harness.processor.drain(timeout=0.05), "drain waits for the write"
        sink.gate.set()
        harness.wait_written(4)
        assert sink.offsets == [0, 1, 2, 3]
        assert len(sink.writes) == 2, "what was released during the stuck write went in one write"
        assert harness.processor.drain(timeout=TIMEOUT)
    finally:
        sink.gate.set()
        harness.processor.close()


def test_a_failed_write_stops_the_run():
    harness = Harness(sink=FailingSink(threading.Condition()))
    try:
        harness.submit_all(records_for(1))
        harness.executor.complete(harness.next_batch())
        with pytest.raises(RunFailed, match="No space left"):
            harness.processor.drain(timeout=TIMEOUT)
        assert harness.watcher.written == []
    finally:
        harness.processor.close()
