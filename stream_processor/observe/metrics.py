"""Live Prometheus metrics of a run: events received, written, errored, in flight, lag, latency.

`RunMetrics` reads the run's observations (`observations.RunObservations`) at each
scrape and serves `/metrics` over HTTP while the run goes: it keeps no counters of its
own. Each instance owns its own registry, so two runs in one process (or a test suite)
never clash over metric names.

Lag is how long the oldest event not yet written (the one at the low watermark) has
been waiting since it was read: unlike the latency of the last line written, it keeps
growing while one slow event holds back everything behind it, which is what an alert
wants to see.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

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
    """A run's Prometheus metrics, read at each scrape from its observations, in a
    registry of its own."""

    def __init__(self, observations, latency_buckets_s: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.observations = observations
        self.registry = CollectorRegistry()
        self.registry.register(_ObservationsCollector(observations, tuple(latency_buckets_s)))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

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


class _ObservationsCollector:
    """Turns the run's observations into metric families, at each scrape."""

    def __init__(self, observations, latency_buckets_s: tuple[float, ...]) -> None:
        self.observations = observations
        self.latency_buckets_s = latency_buckets_s

    def collect(self):
        seen = self.observations
        state = seen.state
        yield CounterMetricFamily(f"{NAMESPACE}_events_received", "Events taken in.", value=seen.received)
        yield CounterMetricFamily(f"{NAMESPACE}_events_written", "Lines written.", value=seen.written)
        yield CounterMetricFamily(
            f"{NAMESPACE}_events_errored",
            "Lines written as error records (bad input or a failed task).",
            value=seen.errors,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_events_in_flight",
            "Events in the window: from the low watermark to the newest read, done or not.",
            value=state.in_flight if state else seen.received - seen.written,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_events_done_waiting",
            "Events done but not yet past the low watermark (total order: waiting to be written).",
            value=state.done_waiting if state else 0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_lag_seconds",
            "How long the oldest event not yet written (the low watermark) has waited since it was read.",
            value=seen.lag_s(),
        )
        latency = seen.latency
        buckets = [(_le(bound), latency.count_at_most(bound)) for bound in self.latency_buckets_s]
        yield HistogramMetricFamily(
            f"{NAMESPACE}_event_latency_seconds",
            "Per event: seconds from read to its line written (buckets within 1 %).",
            buckets=[*buckets, ("+Inf", latency.count)],
            sum_value=latency.total,
        )


def _le(bound: float) -> str:
    return repr(float(bound))
