"""The sink's own thread: it writes the lines the owner releases, in the order released.

A write can take a while (a database's commit waits for its log to reach the disk; a
disk can stall). Done on the owner thread, it held up everything else the owner does:
sending the next batches, taking replies. So the owner only hands lines over, and goes
on; the writer writes them, and posts back which lines are written. Whatever is handed
over while a write is under way goes into the next write, as one: under load, writes grow
by themselves (a group commit), and the sink keeps up.

A line counts as written (its latency measured, the watermark past it, the server's ack,
drain) only once the write that holds it has returned. After a failed write nothing more
is written: the run stops, and what was written is a prefix that `--resume` continues.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stream_processor.core.contracts import Sink

Line = tuple[int, bytes, Any]  # (offset, line, what the owner keeps with it)


class LineWriter:
    def __init__(
        self, sink: Sink, written: Callable[[list[Line]], None], failed: Callable[[BaseException], None]
    ) -> None:
        self.sink = sink
        self._written, self._failed = written, failed
        self._queued: list[Line] = []
        self._stopping = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="run-writer", daemon=True)
        self._thread.start()

    def hand(self, lines: list[Line]) -> None:
        """Write these after everything handed over before."""
        with self._wake:
            self._queued.extend(lines)
            self._wake.notify()

    def stop(self) -> None:
        """Write what is handed over (unless a write failed), then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queued and not self._stopping:
                    self._wake.wait()
                if not self._queued:
                    return
                lines, self._queued = self._queued, []
            try:
                self.sink.write([(offset, line) for offset, line, _ in lines])
            except Exception as exc:  # a full disk, a database gone too long: the run stops
                self._failed(exc)
                return
            self._written(lines)
