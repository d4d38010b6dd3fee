"""A run's plot and live metrics, end to end: `python run.py --plot --metrics-port`."""

from __future__ import annotations

import socket
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TESTS, processes_with_marker, start_cli, wait_until
from tests.unit.test_plot import png_size


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """Every sample on the run's /metrics page, by name; empty if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_run_serves_live_metrics_and_draws_its_plot(small_recording, tmp_path):
    port, plot, output = free_port(), tmp_path / "run.png", tmp_path / "out.json"
    args = ["--input", str(small_recording), "--output", str(output), "--workers", "4", "--time-scale", "0.2"]
    args += ["--no-progress", "--plot", str(plot), "--metrics-port", str(port)]
    marker = uuid.uuid4().hex
    process = start_cli(args, tmp_path, marker)
    try:
        # Mid-run: some events written, the rest in flight, and the counters agree.
        seen: dict[str, float] = {}

        def some_written() -> bool:
            seen.update(scrape(port))
            return seen.get("stream_processor_events_written_total", 0) > 0

        wait_until(some_written, timeout=60, message="metrics with some events written")
        received = seen["stream_processor_events_received_total"]
        assert received >= seen["stream_processor_events_written_total"]
        assert seen["stream_processor_events_in_flight"] >= 0
        assert seen["stream_processor_event_latency_seconds_count"] == seen["stream_processor_events_written_total"]
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/metrics" in stderr
    assert output.read_bytes() == small_recording.read_bytes()
    width, height = png_size(plot)
    assert width > 600 and height > 400
    assert scrape(port) == {}  # the metrics server stopped with the run
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")


def test_a_plot_without_matplotlib_is_refused_before_the_run_starts(small_recording, tmp_path):
    blocker = tmp_path / "without_matplotlib"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('not installed here')\n")
    marker = uuid.uuid4().hex
    env = {"PYTHONPATH": f"{blocker}:{TESTS}"}
    args = ["--input", str(small_recording), "--output", str(tmp_path / "out.json"), "--plot", str(tmp_path / "x.png")]
    process = start_cli(args, tmp_path, marker, env=env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "--plot" in stderr and "pip install 'stream_processor[plot]'" in stderr
    assert not (tmp_path / "out.json").exists()  # nothing started
