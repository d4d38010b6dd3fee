"""A plain python-socketio client on /rc for tests: it queues what the server sends, in the
order it came over the wire, and can make a round trip through the server."""

from __future__ import annotations

import functools
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import engineio
import socketio

from stream_processor.protocol.vocabulary import NAMESPACE


class InOrderEngineIO(engineio.Client):
    """engine.io's client hands each message to a thread of its own, so a handler that does
    more (the ack this one sends) can be overtaken by the next message's: a test would see
    `end` before the last change. Here each message is handled on the reading thread, in the
    order it arrived, as the tests assert it was sent. (The product's client keeps the
    threads and puts changes back in offset order: sources/socketio_client.py.)"""

    def _trigger_event(self, event, *args, **kwargs):
        kwargs.pop("run_async", None)
        return super()._trigger_event(event, *args, **kwargs)


class InOrderClient(socketio.Client):
    def _engineio_client_class(self):
        return InOrderEngineIO


class Listener:
    """A plain `socketio.Client` on /rc that queues what the server sends, in wire order."""

    def __init__(self, url: str, ack_changes: bool = False) -> None:
        self.ack_changes = ack_changes  # acknowledge each change (with its offset) as it arrives
        self.received_up_to = 0  # one past the highest offset received
        self.inbox: queue.Queue[tuple[str, tuple]] = queue.Queue()
        self.disconnected = threading.Event()
        self.sio = InOrderClient(reconnection=False)
        for kind in ("change", "changes", "end", "error"):
            self.sio.on(kind, functools.partial(self._receive, kind), namespace=NAMESPACE)
        self.sio.on("disconnect", lambda *reason: self.disconnected.set(), namespace=NAMESPACE)
        self.sio.connect(url, namespaces=[NAMESPACE], transports=["websocket"], wait_timeout=10)

    def _receive(self, kind: str, *args: Any) -> None:
        if kind == "change" and len(args) >= 2:  # (event, offset) or (line, offset, line number)
            self.received_up_to = max(self.received_up_to, args[1] + 1)
            if self.ack_changes:
                self.emit("ack", args[1] + 1)
        self.inbox.put((kind, args))

    def emit(self, event: str, data: Any = None) -> None:
        self.sio.emit(event, data, namespace=NAMESPACE)

    def acknowledge_from_now_on(self) -> None:
        """For a replay held by its window: acknowledge what has arrived, then each change as it comes."""
        self.ack_changes = True
        self.emit("ack", self.received_up_to)

    def next(self, timeout: float = 10) -> tuple[str, tuple]:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"silence: nothing from the server within {timeout} s") from None

    def until(self, done: Callable[[str, tuple], bool], timeout: float = 30) -> list[tuple[str, tuple]]:
        """Everything received up to and including the first item `done` accepts."""
        received = [self.next(timeout)]
        while not done(*received[-1]):
            received.append(self.next(timeout))
        return received

    def until_end(self, timeout: float = 30) -> list[tuple[str, tuple]]:
        return self.until(lambda kind, args: kind == "end", timeout)

    def round_trip(self, timeout: float = 10) -> list[tuple[str, tuple]]:
        """Emit an unknown event and wait for its error: whatever the server answered to
        earlier messages arrived before it. Returns what arrived before it."""
        mark = f"round-trip-{uuid.uuid4().hex[:8]}"
        self.emit(mark)
        received = self.until(lambda kind, args: kind == "error" and mark in args[0]["message"], timeout)
        return received[:-1]

    def errors_until_round_trip(self, timeout: float = 10) -> list[str]:
        """The error messages that arrived before a round trip (see `round_trip`)."""
        return [args[0]["message"] for kind, args in self.round_trip(timeout) if kind == "error"]

    def drain(self) -> None:
        while not self.inbox.empty():
            self.inbox.get()

    def close(self) -> None:
        self.sio.disconnect()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
