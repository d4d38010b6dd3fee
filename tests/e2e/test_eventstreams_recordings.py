"""A recording in EventStreams' shape (`generate --format eventstreams`: `$schema`, `meta`,
canary events) through whole runs: a file run keeps every line byte for byte; a streaming
run over the event stream drops the canaries, counts them in the report, and writes every
other line byte for byte (the server sends them as recorded: their meta says where from)."""

from __future__ import annotations

import json

import pytest

from stream_processor.protocol.event_meta import is_canary
from stream_processor.sources.generate import generate_file
from tests.conftest import in_each_async_mode, run_script

FAST = ["--workers", "4", "--time-scale", "0.01", "--no-progress"]


@pytest.fixture(scope="module")
def eventstreams_recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("recordings") / "eventstreams.json"
    generate_file(path, minutes=0.5, rate=2.0, seed=7, format="eventstreams", canary_every=10)
    lines = path.read_bytes().splitlines()
    canaries = [line for line in lines if is_canary(json.loads(line))]
    assert len(canaries) >= 3 and all(json.loads(line)["meta"]["domain"] == "canary" for line in canaries)
    return path, lines, canaries


def test_a_file_run_writes_every_line_canaries_too_byte_for_byte(eventstreams_recording, tmp_path):
    path, _, _ = eventstreams_recording
    output = tmp_path / "out.json"
    run = run_script("run.py", ["--input", str(path), "--output", str(output), *FAST], tmp_path)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == path.read_bytes()


@in_each_async_mode
def test_a_streaming_run_over_the_event_stream_drops_canaries_and_counts_them(eventstreams_recording, tmp_path):
    path, lines, canaries = eventstreams_recording
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(path), "--output", str(output), "--transport", "sse", "--report", str(report_path)]
    run = run_script("run_streaming.py", args + FAST, tmp_path)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes().splitlines() == [line for line in lines if line not in canaries]  # byte for byte
    report = json.loads(report_path.read_text())
    assert report["canaries_dropped"] == len(canaries) and report["events"] == len(lines) - len(canaries)
    assert "dropping EventStreams' canary events" in run.stderr  # it says so, once
    assert run.stderr.count("canary events (meta.domain") == 1
    assert f"canaries    {len(canaries)} EventStreams canary events dropped" in run.stdout


def test_a_streaming_run_over_socketio_keeps_the_lines_as_recorded(eventstreams_recording, tmp_path):
    path, _, _ = eventstreams_recording
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(path), "--output", str(output), "--report", str(report_path)]
    run = run_script("run_streaming.py", args + FAST, tmp_path)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == path.read_bytes()  # RCStream's protocol has no canaries: nothing is dropped
    assert json.loads(report_path.read_text())["canaries_dropped"] == 0
