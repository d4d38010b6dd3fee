"""Live Prometheus metrics: the run's observations, scraped over HTTP from localhost."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_processor.core.observer import CoreState, HeadOfLine
from stream_processor.observe.metrics import LATENCY_BUCKETS_S, RunMetrics
from stream_processor.observe.observations import RunObservations
from tests.conftest import FakeClock


def run_metrics(clock=None) -> RunMetrics:
    return RunMetrics(RunObservations(clock=clock or FakeClock()))


def head_read_at(read_at: float | None, window: int = 0) -> CoreState:
    """What the owner reports: the oldest event not yet written, read at `read_at`."""
    head = HeadOfLine(0, None, None, read_at, "running", 0, 0) if read_at is not None else None
    return CoreState(window, 0, 0, 0, head, 1, None, None)


def scrape(port: int) -> dict[str, float]:
    """Every sample on /metrics by name (with its labels when it has any)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_scraped_metrics_show_what_the_run_observed():
    clock = FakeClock()
    with run_metrics(clock) as metrics:
        port = metrics.serve(0)
        seen = metrics.observations
        for _ in range(5):
            seen.on_read(duration_s=1.0, arrival_s=0.0)
        seen.on_written(0, 0.003, False)
        seen.on_written(1, 0.2, True)
        seen.on_written(2, 75.0, False)
        seen.on_state(head_read_at(0.0, window=2))

        samples = scrape(port)

    assert samples["stream_processor_events_received_total"] == 5
    assert samples["stream_processor_events_written_total"] == 3
    assert samples["stream_processor_events_errored_total"] == 1
    assert samples["stream_processor_events_in_flight"] == 2
    assert samples["stream_processor_event_latency_seconds_count"] == 3
    assert samples["stream_processor_event_latency_seconds_sum"] == pytest.approx(75.203)
    assert samples["stream_processor_event_latency_seconds_bucket{le=0.005}"] == 1
    assert samples["stream_processor_event_latency_seconds_bucket{le=0.25}"] == 2
    assert samples["stream_processor_event_latency_seconds_bucket{le=60.0}"] == 2
    assert samples["stream_processor_event_latency_seconds_bucket{le=90.0}"] == 3
    assert samples["stream_processor_event_latency_seconds_bucket{le=+Inf}"] == 3


def test_lag_is_how_long_the_event_at_the_head_of_the_line_has_waited():
    clock = FakeClock()
    seen = RunObservations(clock=clock)
    assert seen.lag_s() == 0.0
    seen.on_state(head_read_at(10.0))
    clock.now = 15.0
    assert seen.lag_s() == 5.0
    clock.now = 20.0
    assert seen.lag_s() == 10.0  # still waiting: the lag grows with nothing written
    seen.on_state(head_read_at(11.0))  # that one written: the next one heads the line
    assert seen.lag_s() == 9.0
    seen.on_state(head_read_at(None))
    assert seen.lag_s() == 0.0  # nothing in flight


def test_lag_is_scraped_live(tmp_path):
    clock = FakeClock(100.0)
    with run_metrics(clock) as metrics:
        port = metrics.serve(0)
        metrics.observations.on_state(head_read_at(100.0))
        clock.now = 103.5
        assert scrape(port)["stream_processor_lag_seconds"] == 3.5
        clock.now = 104.0
        assert scrape(port)["stream_processor_lag_seconds"] == 4.0


def test_two_runs_in_one_process_keep_separate_registries():
    first, second = run_metrics(), run_metrics()
    first.observations.on_read()
    assert first.registry.get_sample_value("stream_processor_events_received_total") == 1
    assert second.registry.get_sample_value("stream_processor_events_received_total") == 0


def test_serves_on_localhost_by_default():
    with run_metrics() as metrics:
        port = metrics.serve(0)
        assert port > 0
        assert metrics.address == ("127.0.0.1", port)


def test_serving_twice_is_refused():
    with run_metrics() as metrics:
        metrics.serve(0)
        with pytest.raises(RuntimeError, match="already serving"):
            metrics.serve(0)


def test_close_frees_the_port():
    metrics = run_metrics()
    port = metrics.serve(0)
    scrape(port)  # a connection was served, so the port has seen real traffic
    metrics.close()

    assert connection_refused(port)
    with socket.socket() as again:
        # As any server would (the metrics server does too): a closed connection's TIME_WAIT
        # must not block the port, only a listener still holding it would.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    metrics.close()  # a second close does nothing


def test_default_buckets_span_five_milliseconds_to_beyond_a_minute():
    assert LATENCY_BUCKETS_S[0] == 0.005
    assert LATENCY_BUCKETS_S[-1] >= 60
    assert list(LATENCY_BUCKETS_S) == sorted(LATENCY_BUCKETS_S)
