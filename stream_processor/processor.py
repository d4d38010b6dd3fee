"""`StreamProcessor`: submit events, keep a bounded window, write results in input order.

The flow for one event: `submit` admits its offset into the reorder buffer (blocking
while the window is full), remembers its raw line, and hands it to the executor. When
the executor pushes the completion, the longest ready prefix goes to the sink at once.
Bad input never reaches the executor: its error record completes in place right away.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream_processor.executor import Executor
from stream_processor.ordering import ReorderBuffer
from stream_processor.records import Record
from stream_processor.sink import JsonlSink

log = logging.getLogger(__name__)

# Called once per line written: (offset, seconds from read to written, is an error record).
OnWritten = Callable[[int, float, bool], None]


@dataclass(slots=True)
class _InFlight:
    raw: bytes
    event: dict[str, Any] | None
    read_at: float


class RunFailed(RuntimeError):
    """Writing results failed, or something the run needs could not be kept running."""


def error_record(offset: int, message: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"error": message, "offset": offset}
    if isinstance(event, dict) and "id" in event:
        record["id"] = event["id"]
    return record


class StreamProcessor:
    """Ordered parallel processing of an endless stream, with at most `max_in_flight` held."""

    def __init__(
        self,
        executor: Executor,
        sink: JsonlSink,
        max_in_flight: int = 1000,
        start_offset: int = 0,
        on_written: OnWritten | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.executor = executor
        self.sink = sink
        self.clock = clock
        self.on_written = on_written
        self._buffer = ReorderBuffer(max_in_flight, start=start_offset)
        self._in_flight: dict[int, _InFlight] = {}
        self._changed = threading.Condition()
        self._failure: BaseException | None = None
        self.written = 0
        self.errors = 0

    # -- intake --------------------------------------------------------------------------

    def start(self) -> StreamProcessor:
        self.executor.start(self._on_complete)
        return self

    @property
    def next_offset(self) -> int:
        """The offset the next `submit` must carry."""
        return self._buffer.next_offset

    @property
    def in_flight(self) -> int:
        return len(self._buffer)

    def submit(self, record: Record, timeout: float | None = None) -> None:
        """Admit one record, blocking while the window is full, and send it off."""
        with self._changed:
            if not self._changed.wait_for(self._has_room_or_failed, timeout):
                raise TimeoutError(f"window of {self._buffer.capacity} events stayed full for {timeout} s")
            self._raise_failure()
            self._buffer.admit(record.offset)
            self._in_flight[record.offset] = _InFlight(record.raw, record.event, self.clock())
        if record.error is not None:
            self._complete_or_record_failure(record.offset, False, record.error)
            self._raise_failure()
        else:
            self.executor.submit(record.offset, record.event)

    def _has_room_or_failed(self) -> bool:
        return self._failure is not None or not self._buffer.is_full()

    # -- completions ---------------------------------------------------------------------

    def _on_complete(self, offset: int, ok: bool, value: Any) -> None:
        """Executor callback, from any thread."""
        if not ok:
            log.warning("event at offset %d failed: %s", offset, value)
        self._complete_or_record_failure(offset, ok, value)

    def _complete_or_record_failure(self, offset: int, ok: bool, value: Any) -> None:
        try:
            self._complete(offset, ok, value)
        except Exception as exc:  # e.g. the disk is full: stop the run, loudly
            self.fail(exc)

    def _complete(self, offset: int, ok: bool, value: Any) -> None:
        with self._changed:
            if not self._buffer.is_pending(offset):
                return  # a repeated delivery: the first completion already counted
            line = self._render(offset, ok, value)
            released = self._buffer.complete(offset, line)
            if released:
                self._write(released)
                self._changed.notify_all()

    def _render(self, offset: int, ok: bool, value: Any) -> tuple[bytes, bool]:
        entry = self._in_flight[offset]
        if not ok:
            return json.dumps(error_record(offset, value, entry.event)).encode(), True
        if value == entry.event:
            return entry.raw, False  # unchanged: pass the line through byte for byte
        try:
            # allow_nan=False: NaN and Infinity are not JSON; such a result is an error.
            return json.dumps(value, ensure_ascii=False, allow_nan=False).encode(), False
        except (TypeError, ValueError) as exc:
            message = f"result is not JSON-serialisable: {exc}"
            return json.dumps(error_record(offset, message, entry.event)).encode(), True

    def _write(self, released: list[tuple[int, tuple[bytes, bool]]]) -> None:
        self.sink.write_lines(line for _, (line, _) in released)
        now = self.clock()
        for offset, (_, is_error) in released:
            entry = self._in_flight.pop(offset)
            self.written += 1
            self.errors += is_error
            if self.on_written:
                self.on_written(offset, now - entry.read_at, is_error)

    # -- shutdown ------------------------------------------------------------------------

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every admitted event is written; False if `timeout` ran out first."""
        with self._changed:
            done = self._changed.wait_for(lambda: self._failure or not self._buffer, timeout)
            self._raise_failure()
            return bool(done)

    def fail(self, reason: BaseException) -> None:
        """Stop the run from outside (a broker or worker that cannot be kept running)."""
        with self._changed:
            self._failure = self._failure or reason
            self._changed.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RunFailed(f"the run cannot go on: {self._failure}") from self._failure

    def close(self) -> None:
        self.executor.close()
