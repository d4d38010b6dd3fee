"""A streaming run's memory stays flat whatever the source: the event-stream client stops
reading at the run's window (TCP holds the server back), as the Socket.IO server stops
sending at its own. Real processes throughout: `serve --loop` read for a minute by a run
with a small window and one slow worker, and 200k zero-wait events on each transport;
the client's RSS (psutil) is sampled after a warm-up and compared with its peak."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import psutil
import pytest

from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.sources.generate import generate_file
from stream_processor.sources.source import SOCKETIO, SSE, TRANSPORTS
from tests.conftest import in_each_async_mode, replay_server, start_cli, terminate, wait_until

pytestmark = pytest.mark.soak

SOAK_S = 60
WARM_UP_S = 10
SAMPLE_S = 0.5
GROWTH = 1.2  # at most 20 % above the RSS after the warm-up


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@in_each_async_mode
def test_a_slow_run_on_an_endless_event_stream_keeps_its_memory_flat(small_recording, tmp_path, broker_flag):
    output, marker = tmp_path / "out.json", uuid.uuid4().hex
    with replay_server(small_recording, "--loop") as (url, _):
        args = ["--url", url + STREAM_PATH, "--output", str(output), "--max-in-flight", "10", "--workers", "1"]
        args += ["--time-scale", "0.1", "--no-progress", *broker_flag]  # waits of 1 ms to 1 s: the window fills
        run = start_cli(args, tmp_path, marker, script="socket_client.py")
        try:
            client = psutil.Process(run.pid)
            wait_until(lambda: lines_in(output) >= 20, timeout=60, message="twenty lines written")
            samples = sample_rss(client, run, output, WARM_UP_S + SOAK_S)
        finally:
            terminate(run, marker)
            run.communicate()
    warm = next(rss for at, rss, _ in samples if at >= WARM_UP_S)
    last_third = max(rss for at, rss, _ in samples if at >= WARM_UP_S + SOAK_S * 2 / 3)
    written = [lines for at, _, lines in samples if at >= WARM_UP_S]
    print(f"RSS {warm:.0f} MB after the warm-up, at most {last_third:.0f} MB in the last 20 s; {written[-1]} lines")
    assert last_third <= GROWTH * warm, f"RSS grew from {warm:.0f} to {last_third:.0f} MB over {SOAK_S} s"
    assert written[-1] > written[0] + 20, "the run stopped writing"


def sample_rss(client: psutil.Process, run, output: Path, seconds: float) -> list[tuple[float, float, int]]:
    """(seconds since the start, RSS in MB, lines written) every SAMPLE_S for `seconds`;
    fails at once if RSS has grown by half (an unbounded client would exhaust memory first)."""
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        assert run.poll() is None, f"the run ended (exit {run.returncode})"
        samples.append((elapsed, rss_mb(client), lines_in(output)))
        assert samples[-1][1] < 1.5 * samples[0][1], f"RSS went from {samples[0][1]:.0f} to {samples[-1][1]:.0f} MB"
        time.sleep(SAMPLE_S)  # a sampling interval, not a wait for anything
    return samples


@pytest.fixture(scope="module")
def big_recording(tmp_path_factory) -> Path:
    """About 200,000 generated events (87 MB)."""
    path = tmp_path_factory.mktemp("big") / "big.json"
    generate_file(path, minutes=33.4, rate=100, seed=2)
    return path


def peak_after_warm_up(recording: Path, transport: str, broker_flag: list[str], cwd: Path) -> tuple[float, float]:
    """`run --time-scale 0` over `transport`: (RSS once a tenth of the output is written, peak RSS)."""
    output, marker = cwd / f"{transport}.json", uuid.uuid4().hex
    args = ["--input", str(recording), "--output", str(output), "--transport", transport]
    args += ["--time-scale", "0", "--workers", "4", "--no-progress", *broker_flag]
    run = start_cli(args, cwd, marker, script="run_streaming.py")
    client, samples = psutil.Process(run.pid), []  # (bytes written, RSS)
    try:
        while run.poll() is None:
            written = output.stat().st_size if output.exists() else 0
            with contextlib.suppress(psutil.NoSuchProcess):  # it may end between the two looks
                samples.append((written, rss_mb(client)))
            time.sleep(0.2)  # a sampling interval
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            terminate(run, marker)
    assert run.returncode == 0, stderr
    assert output.stat().st_size == recording.stat().st_size
    warm = next(rss for written, rss in samples if written >= recording.stat().st_size / 10)
    return warm, max(rss for _, rss in samples)


def test_two_hundred_thousand_zero_wait_events_keep_the_clients_memory_flat_on_each_transport(
    big_recording, tmp_path, broker_flag
):
    figures = {
        transport: peak_after_warm_up(big_recording, transport, broker_flag, tmp_path) for transport in TRANSPORTS
    }
    print("; ".join(f"{t}: {warm:.0f} MB after warm-up, peak {peak:.0f} MB" for t, (warm, peak) in figures.items()))
    for transport, (warm, peak) in figures.items():
        assert peak <= GROWTH * warm, f"{transport}: RSS peaked at {peak:.0f} MB, {warm:.0f} MB after the warm-up"
    assert figures[SSE][1] <= GROWTH * figures[SOCKETIO][1], f"SSE peaked at {figures[SSE][1]:.0f} MB"
