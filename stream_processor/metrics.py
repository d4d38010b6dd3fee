"""Live Prometheus metrics of a run: events received, written, errored, in flight, lag, latency.

`RunMetrics` is fed by the run's hooks (`on_read`, `on_written`) and can serve
`/metrics` over HTTP while the run goes. Each instance owns its own registry, so two
runs in one process (or a test suite) never clash over metric names.

Lag is how long the oldest event not yet written has been waiting since it was read,
computed when scraped: unlike the latency of the last line written, it keeps growing
while one slow event holds back everything behind it, which is what an alert wants to
see. Lines are written in read order, so the oldest waiting event is simply the first
read time not yet matched by a write; those read times are held in a deque no longer
than the run's in-flight window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

NAMESPACE = "stream_processor"

# From one short task's round trip (~5 ms) to a full-speed run of the shipped recording,
# whose in-order latencies reach about 90 s: above 60 s the top buckets still tell them apart.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    90.0,
    120.0,
)


class RunMetrics:
    """A run's counters, gauges and latency histogram in a registry of its own."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        latency_buckets_s: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        self.received = Counter("events_received", "Events taken in.", namespace=NAMESPACE, registry=self.registry)
        self.written = Counter(
            "events_written", "Lines written, in input order.", namespace=NAMESPACE, registry=self.registry
        )
        self.errored = Counter(
            "events_errored",
            "Lines written as error records (bad input or a failed task).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "events_in_flight", "Events taken in but not yet written.", namespace=NAMESPACE, registry=self.registry
        )
        self.lag = Gauge(
            "lag_seconds",
            "How long the oldest event not yet written has waited since it was read (0 when none waits).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.lag.set_function(self.lag_s)
        self.latency = Histogram(
            "event_latency_seconds",
            "Per event: seconds from read to its line written in order.",
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=tuple(latency_buckets_s),
        )
        # Read times of the events not yet written, oldest first (appended by the reader,
        # popped by the writer: deque's append and popleft are thread-safe).
        self._waiting_since: deque[float] = deque()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- the run's hooks -------------------------------------------------------------

    def on_received(self) -> None:
        """One event taken in."""
        self._waiting_since.append(self.clock())
        self.received.inc()
        self.in_flight.inc()

    def on_read(self, duration_s: float | None = None, arrival_s: float = 0.0) -> None:
        """`RunStats.on_read`'s signature; the metrics need only the count."""
        self.on_received()

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        """One line written, in order, `latency_s` after its event was read."""
        if self._waiting_since:
            self._waiting_since.popleft()
        self.written.inc()
        if is_error:
            self.errored.inc()
        self.in_flight.dec()
        self.latency.observe(latency_s)

    def lag_s(self) -> float:
        """Seconds the oldest event not yet written has waited; 0 when nothing is in flight."""
        try:
            oldest = self._waiting_since[0]
        except IndexError:  # also when the writer empties it between a check and the read
            return 0.0
        return max(0.0, self.clock() - oldest)

    # -- serving /metrics ------------------------------------------------------------

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve /metrics on a background thread; port 0 takes any free one. Returns the bound port."""
        if self._server is not None:
            raise RuntimeError(f"already serving on {self.address}")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("serving metrics on http://%s:%d/metrics", *self.address[:2])
        return self.port

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is bound to, as the socket reports it."""
        if self._server is None:
            raise RuntimeError("not serving")
        return self._server.socket.getsockname()[:2]

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self) -> None:
        """Stop the HTTP server and free its port; safe to call twice, or without serving."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # ends serve_forever
        server.server_close()  # closes the listening socket: the port is free again
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> RunMetrics:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
