"""The run plot: a recorder that stays bounded on an endless stream, and a readable PNG."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from stream_processor.observe.ideal import IdealRun, simulate
from stream_processor.observe.observations import RunObservations
from stream_processor.observe.plot import draw_run, headline
from stream_processor.observe.trace import Decimated, RunTrace
from tests.conftest import FakeClock

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first after the magic bytes."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, "not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def observed(workers: int | None = None, max_points: int = 10_000, clock=None) -> RunObservations:
    ideal = IdealRun(workers) if workers else None
    return RunObservations(clock=clock or FakeClock(), ideal=ideal, trace=RunTrace(max_points))


def file_mode_run(durations: list[float], workers: int, overhead_s: float = 0.003) -> RunObservations:
    """A run in file mode: everything read at 0, lines written at the ideal release times of
    slightly slower tasks (the ideal's own schedule plus a per-task overhead)."""
    clock = FakeClock()
    run = observed(workers, clock=clock)
    for duration in durations:
        run.on_read(duration)
    for offset, released in enumerate(simulate([d + overhead_s for d in durations], workers)):
        clock.now = released
        run.on_written(offset, released, is_error=offset % 50 == 7)
    run.ideal.finish()  # every event is in: the ideal (which runs behind in file mode) catches up
    return run


def test_the_trace_pairs_each_line_with_the_ideal_latency_of_the_same_event():
    run = file_mode_run([1.0, 5.0, 1.0, 1.0], workers=2, overhead_s=0.5)
    points = sorted(run.trace.latencies.samples(), key=lambda point: point.offset)
    assert [point.offset for point in points] == [0, 1, 2, 3]
    assert [point.ideal_latency_s for point in points] == simulate([1.0, 5.0, 1.0, 1.0], workers=2)
    assert [point.latency_s for point in points] == simulate([1.5, 5.5, 1.5, 1.5], workers=2)
    assert run.span_s == 5.5
    assert run.ideal.span == 5.0
    assert max(point.in_flight for point in run.trace.in_flight.samples()) == 4
    assert run.trace.in_flight.samples()[-1].in_flight == 0


def test_without_workers_there_is_no_ideal():
    run = observed()
    run.on_read(1.0)
    run.on_written(0, 1.0, False)
    assert run.trace.latencies.samples()[0].ideal_latency_s is None
    assert "ideal" not in headline(run)


def test_the_recorder_stays_bounded_on_a_long_stream_and_keeps_both_ends():
    cap = 1000
    clock = FakeClock()
    trace = observed(max_points=cap, clock=clock)
    events = 1_000_000
    for offset in range(events):
        clock.now = offset * 0.001
        trace.on_read(0.001)
        trace.on_written(offset, 0.001 + (offset % 97) / 1000, False)

    assert trace.written == events
    trace = trace.trace
    for series in (trace.latencies, trace.in_flight):
        samples = series.samples()
        assert len(samples) <= cap
        assert len(samples) > cap // 4  # halving never leaves it far below the cap
    points = trace.latencies.samples()
    assert points[0].offset == 0
    assert points[-1].offset == events - 1
    assert [point.offset for point in points] == sorted({point.offset for point in points})
    assert trace.in_flight.samples()[-1].at_s == pytest.approx((events - 1) * 0.001)


def test_decimation_keeps_the_extremes_an_every_kth_sample_would_alias_away():
    # In flight alternates 1, 0, 1, 0 (read one, write one) with one burst of 50 in the middle.
    run = observed(max_points=64)
    trace = run.trace
    for offset in range(100_000):
        run.on_read()
        if offset == 54_321:
            for _ in range(49):
                run.on_read()
            for burst_offset in range(49):
                run.on_written(burst_offset, 0.0, False)
        run.on_written(offset, 9.5 if offset == 77_777 else 0.5, False)

    assert {point.in_flight for point in trace.in_flight.samples()} == {0, 1, 50}
    assert max(point.latency_s for point in trace.latencies.samples()) == 9.5
    assert trace.latencies.stride > 1_000


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 9, 100, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("cap", [8, 9, 10, 13, 100])
def test_decimation_stays_within_the_cap_with_the_first_latest_lowest_and_highest(cap, count):
    values = [(index * 7919) % 1009 for index in range(count)]
    series = Decimated(cap, key=lambda index: values[index])
    for index in range(count):
        series.add(index)
    kept = series.samples()
    assert len(kept) == len(series) <= cap
    assert kept[0] == 0 and kept[-1] == count - 1
    assert kept == sorted(set(kept))
    assert min(values) in [values[index] for index in kept]
    assert max(values) in [values[index] for index in kept]


def test_decimation_needs_room_for_its_buckets():
    with pytest.raises(ValueError):
        Decimated(7, key=float)


def test_draws_a_png_of_the_run(tmp_path):
    pytest.importorskip("matplotlib")
    durations = [0.05 + (i * 7919 % 1000) / 100 for i in range(300)]  # 0.05 .. 10 s, as the recordings
    run = file_mode_run(durations, workers=12)

    path = draw_run(run, tmp_path / "run.png", title="synthetic run")

    assert path == tmp_path / "run.png"
    width, height = png_size(path)
    assert 600 <= width <= 3000 and 400 <= height <= 2000
    assert path.stat().st_size > 10_000  # drawn, not an empty canvas


def test_draws_an_empty_run_without_failing(tmp_path):
    pytest.importorskip("matplotlib")
    width, height = png_size(draw_run(observed(workers=2), tmp_path / "empty.png"))
    assert width > 0 and height > 0


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"pip install 'stream_processor\[plot\]'"):
        draw_run(observed(), tmp_path / "run.png")
