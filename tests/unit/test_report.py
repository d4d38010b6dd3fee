"""Run figures: histogram quantiles, RunObservations on a fake clock, the JSON report and the summary."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processor.observe.ideal import IdealRun
from stream_processor.observe.observations import RunObservations
from stream_processor.observe.report import LatencyHistogram, build_report, summary_text
from tests.conftest import FakeClock

RELATIVE = 0.005
ABSOLUTE = 1e-6  # durations at or below a microsecond all land in one bucket near 0


def nearest_rank(values: list[float], q: float) -> float:
    """The exact nearest-rank quantile: the smallest value with at least q of them at or below."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered)))
    return ordered[rank - 1]


latencies = st.lists(
    st.floats(min_value=0.0, max_value=1e4, exclude_min=True, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(values=latencies, q=st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]))
def test_quantile_is_within_half_a_percent_of_the_exact_nearest_rank(values, q):
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    exact = nearest_rank(values, q)
    estimate = histogram.quantile(q)
    # 1e-12 of slack for the float rounding of the bucket edges themselves.
    assert abs(estimate - exact) <= (RELATIVE + 1e-12) * exact + ABSOLUTE, (estimate, exact)


@settings(max_examples=200, deadline=None)
@given(values=latencies)
def test_max_and_the_one_quantile_are_exact(values):
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    assert histogram.max == max(values)
    assert histogram.quantile(1.0) == max(values)
    assert histogram.count == len(values)
    assert histogram.total == pytest.approx(sum(values))


@settings(max_examples=100, deadline=None)
@given(values=latencies)
def test_quantiles_never_exceed_the_maximum_and_grow_with_q(values):
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    quantiles = [histogram.quantile(q) for q in (0.1, 0.5, 0.9, 0.99, 1.0)]
    assert quantiles == sorted(quantiles)
    assert quantiles[-1] == max(values)


def test_an_empty_histogram_reports_zero():
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) == 0.0
    assert histogram.quantile(1.0) == 0.0


def test_median_of_a_known_list():
    histogram = LatencyHistogram()
    for value in [5.0, 1.0, 3.0, 2.0, 4.0]:
        histogram.add(value)
    assert histogram.quantile(0.5) == pytest.approx(3.0, rel=RELATIVE)
    assert histogram.quantile(0.2) == pytest.approx(1.0, rel=RELATIVE)
    assert histogram.quantile(0.21) == pytest.approx(2.0, rel=RELATIVE)


def run_with_fake_clock(latencies_s: list[float], errors: set[int], clock: FakeClock, step: float = 0.5):
    """Read every event at t=10, then write one every `step` s; return the stats."""
    stats = RunObservations(clock=clock)  # started at clock.now
    clock.now = 10.0
    for _ in latencies_s:
        stats.on_read()
    for offset, latency in enumerate(latencies_s):
        clock.now += step
        stats.on_written(offset, latency, offset in errors)
    return stats


def test_run_stats_measure_span_from_first_read_to_last_write():
    clock = FakeClock(2.0)
    stats = run_with_fake_clock([0.5, 1.0, 1.5, 2.0], errors={2}, clock=clock)
    assert stats.received == 4
    assert stats.written == 4
    assert stats.errors == 1
    assert stats.first_read_at == 10.0
    assert stats.last_written_at == 12.0
    assert stats.span_s == 2.0
    clock.now = 13.0
    assert stats.wall_s() == 11.0


def test_span_is_zero_before_anything_is_written():
    stats = RunObservations(clock=FakeClock(1.0))
    assert stats.span_s == 0.0
    stats.on_read()
    assert stats.span_s == 0.0


def test_build_report_has_every_figure():
    clock = FakeClock(0.0)
    latencies_s = [0.2 * (n + 1) for n in range(10)]
    stats = run_with_fake_clock(latencies_s, errors={1, 7}, clock=clock, step=0.25)
    clock.now = 15.0
    report = build_report(stats, workers=4, broker="embedded redis", input="x.json")
    expected_keys = {"events", "errors", "wall_s", "span_s", "latency_s", "events_per_s", "workers", "broker"}
    assert expected_keys <= set(report)
    assert report["events"] == 10
    assert report["errors"] == 2
    assert report["wall_s"] == pytest.approx(15.0)
    assert report["span_s"] == pytest.approx(2.5)  # 10 writes 0.25 s apart after the read at 10
    assert report["events_per_s"] == pytest.approx(10 / 2.5, abs=1e-3)
    assert report["workers"] == 4
    assert report["broker"] == "embedded redis"
    assert report["input"] == "x.json"
    assert set(report["latency_s"]) == {"p50", "p95", "p99", "max"}
    assert report["latency_s"]["p50"] == pytest.approx(nearest_rank(latencies_s, 0.5), rel=RELATIVE, abs=1e-4)
    assert report["latency_s"]["p95"] == pytest.approx(nearest_rank(latencies_s, 0.95), rel=RELATIVE, abs=1e-4)
    assert report["latency_s"]["p99"] == pytest.approx(nearest_rank(latencies_s, 0.99), rel=RELATIVE, abs=1e-4)
    assert report["latency_s"]["max"] == pytest.approx(max(latencies_s), abs=1e-4)
    assert "ideal_span_s" not in report
    assert "efficiency" not in report


def test_build_report_compares_with_the_ideal_schedule():
    clock = FakeClock(0.0)
    stats = RunObservations(clock=clock, ideal=IdealRun(2))
    clock.now = 1.0
    durations = [2.0, 1.0, 1.0, 3.0]  # two workers: releases at 2, 2, 2, 5 -> ideal span 5
    for duration in durations:
        stats.on_read(duration, arrival_s=0.0)
    for offset in range(len(durations)):
        clock.now += 2.5  # last write at 11: span 10
        stats.on_written(offset, 1.0, False)
    report = build_report(stats, workers=2, broker="memory")
    assert report["ideal_span_s"] == pytest.approx(5.0)
    assert report["span_s"] == pytest.approx(10.0)
    assert report["efficiency"] == pytest.approx(0.5)
    assert set(report["ideal_latency_s"]) == {"p50", "p95", "p99", "max"}
    assert report["ideal_latency_s"]["max"] == pytest.approx(5.0)


def test_events_per_s_is_none_when_nothing_was_written():
    stats = RunObservations(clock=FakeClock(0.0))
    report = build_report(stats, workers=1, broker="memory")
    assert report["events"] == 0
    assert report["events_per_s"] is None
    assert "throughput  -" in summary_text(report)


def test_summary_text_mentions_the_numbers():
    clock = FakeClock(0.0)
    stats = RunObservations(clock=clock, ideal=IdealRun(3))
    clock.now = 1.0
    for duration in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]:
        stats.on_read(duration)
    for offset in range(6):
        clock.now += 1.25
        stats.on_written(offset, 0.75 + offset, offset == 4)
    clock.now = 9.0
    report = build_report(stats, workers=3, broker="rabbitmq at localhost")
    text = summary_text(report)
    assert text.splitlines()[0].split()[:2] == ["events", "6"]
    assert "1 with errors" in text
    assert "9.00 s" in text  # wall time
    assert "7.50 s" in text  # span: first read at 1, last write at 8.5
    assert f"{6 / 7.5:.2f} events/s" in text
    assert f"max {5.75:.3f} s" in text
    assert "3 on rabbitmq at localhost" in text
    ideal_span = 9.0 - 0.0  # 3 workers: 1,2,3 at 0 -> 4 at 1..5, 5 at 2..7, 6 at 3..9
    assert f"{ideal_span:.2f} s" in text
    assert f"{ideal_span / 7.5:.1%}" in text


def test_summary_text_of_a_run_with_an_ideal_but_no_span_does_not_crash():
    # Was: efficiency None (span 0) was formatted with :.1% and raised TypeError.
    clock = FakeClock(5.0)
    stats = RunObservations(clock=clock, ideal=IdealRun(2))
    stats.on_read(1.0)  # read, but the run stopped before anything was written
    report = build_report(stats, workers=2, broker="memory")
    assert report["efficiency"] is None
    text = summary_text(report)
    assert text.splitlines()[0].split()[:2] == ["events", "0"]
    assert "None" not in text


def test_zero_work_events_have_no_efficiency_rather_than_zero_percent():
    clock = FakeClock(5.0)
    stats = RunObservations(clock=clock, ideal=IdealRun(2))
    stats.on_read(0.0)
    clock.now += 0.01
    stats.on_written(0, 0.01, False)
    report = build_report(stats, workers=2, broker="memory")
    assert report["ideal_span_s"] == 0.0 and report["span_s"] > 0
    assert report["efficiency"] is None
    assert "0.0%" not in summary_text(report)


def test_repeats_dropped_by_the_executor_and_the_core_are_in_the_report_and_the_summary():
    from stream_processor.core.observer import CoreState

    stats = RunObservations(clock=FakeClock())
    assert build_report(stats, workers=0, broker="x")["late_replies_dropped"] == 0
    stats.on_state(CoreState(0, 0, 3, 0, None, 1, None, None, duplicates_dropped=2, late_replies_dropped=5))
    report = build_report(stats, workers=0, broker="x")
    assert (report["late_replies_dropped"], report["duplicates_dropped"]) == (5, 2)
    assert "5 late replies and 2 duplicate completions dropped" in summary_text(report)


def test_a_second_reply_for_a_task_is_dropped_and_counted_and_a_stranger_s_is_not():
    from celery import states

    from stream_processor.engine.celery_executor import CeleryExecutor
    from stream_processor.engine.executor import Batch, EventTask
    from stream_processor.engine.tasks import EVENTS_ENDED

    executor = CeleryExecutor("amqp://guest:guest@127.0.0.1:1//")  # never connects: no start()
    task_id = f"{executor.run_id}.0"
    executor._in_flight[task_id] = Batch(0, [EventTask(0, "{}", -1), EventTask(1, "{}", -1)])
    report = {"worker": "w:1", "ended": [[0, "done", None, 0.1]], "handed_back": [1]}
    partial = executor._to_reply(task_id, EVENTS_ENDED, report)
    assert (partial.final, [c.offset for c in partial.completions], partial.handed_back) == (False, [0], (1,))
    assert executor._to_reply(task_id, states.SUCCESS, {"outcomes": None})
    assert executor._to_reply(task_id, states.SUCCESS, {"outcomes": None}) is None  # a host back late
    assert executor._to_reply(task_id, EVENTS_ENDED, report) is None  # a report overtaken by its final reply
    assert executor._to_reply("another-run.0", states.SUCCESS, {}) is None
    assert executor.late_replies_dropped == 1
    executor.app.close()
