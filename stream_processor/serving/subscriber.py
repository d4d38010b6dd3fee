"""One connected client: what it asked for, its flow control, its replay's generation,
and the figures the status page shows. No I/O: a shell gives it a waker to wake the
replay that waits for it."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stream_processor.observe.histogram import LatencyHistogram
from stream_processor.serving.rate_limit import TokenBucket
from stream_processor.serving.subscription import Subscription

if TYPE_CHECKING:  # the transport's counts: the core imports nothing of Socket.IO
    from stream_processor.serving.delivery import Delivery

SOCKETIO, SSE = "socket.io", "sse"


class Waker(Protocol):
    """How the core wakes a replay that waits (the shell's event: eventlet's or asyncio's)."""

    def set(self) -> None: ...


@dataclass
class Subscriber:
    id: str
    transport: str  # SOCKETIO or SSE
    address: str
    waker: Waker
    subscribes: TokenBucket | None = None  # Socket.IO: its subscribe rate limit
    delivery: Delivery | None = None  # Socket.IO: what the transport has written for it
    subscription: Subscription | None = None
    acked: int = 0  # every offset below this is written, says the client
    next_unsent: int = 0  # one past the last offset sent: nothing beyond it may be acked
    unacked: deque[int] = field(default_factory=deque)  # offsets sent and not yet acked, in order
    generation: int = 0  # a new subscribe supersedes the replay already running
    sent: int = 0  # events sent to it, every replay
    pacing_error: LatencyHistogram = field(default_factory=LatencyHistogram)
    server_pacing_error: LatencyHistogram | None = None  # the whole server's, fed too
    connected_at: float = field(default_factory=time.monotonic)

    def restart(self, subscription: Subscription) -> int:
        """A new subscription: flow control starts afresh at its offset; returns its generation."""
        self.subscription = subscription
        self.acked = self.next_unsent = subscription.offset
        self.unacked.clear()
        self.generation += 1
        self.waker.set()
        return self.generation

    def supersede(self) -> None:
        """Stop the replay running for it (disconnected, or the server stops)."""
        self.generation += 1
        self.waker.set()

    def record_sent(self, offset: int) -> None:
        if self.subscription is not None and self.subscription.acknowledges:
            self.unacked.append(offset)
        self.next_unsent = offset + 1
        self.sent += 1

    def record_lateness(self, seconds: float) -> None:
        """How late a paced event went out."""
        self.pacing_error.add(seconds)
        if self.server_pacing_error is not None:
            self.server_pacing_error.add(seconds)

    def acknowledge(self, offset: int) -> None:
        if offset > self.acked:
            self.acked = offset
            while self.unacked and self.unacked[0] < offset:
                self.unacked.popleft()
            self.waker.set()

    def room(self, window: int) -> int | None:
        """How many more events may go out now; None: no bound here (the socket holds back an SSE client).

        A client that sees offsets acks, and is held to `window` unacknowledged events; a plain
        RCStream client cannot ack, so it is held to `window` packets its transport has not written yet.
        """
        if self.subscription is not None and self.subscription.acknowledges:
            return max(0, window - len(self.unacked))
        if self.delivery is not None:
            return max(0, window - self.delivery.backlog)
        return None

    def status(self, window: int, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "address": self.address,
            "connected_s": round(now - self.connected_at, 3),
            "filter": self.subscription.summary() if self.subscription else None,
            "offset": self.next_unsent,
            "acked": self.acked if self.subscription and self.subscription.acknowledges else None,
            "window": {
                "size": window,
                "unacknowledged": len(self.unacked),
                "unwritten": self.delivery.backlog if self.delivery else None,
            },
            "sent": self.sent,
            "pacing_error_ms": pacing_figures(self.pacing_error),
        }


def pacing_figures(errors: LatencyHistogram) -> dict[str, Any]:
    """count, p50, p99 and max of how late paced events went out, in ms."""
    return {
        "count": errors.count,
        "p50": round(errors.quantile(0.5) * 1000, 3) if errors.count else None,
        "p99": round(errors.quantile(0.99) * 1000, 3) if errors.count else None,
        "max": round(errors.max * 1000, 3) if errors.count else None,
    }
