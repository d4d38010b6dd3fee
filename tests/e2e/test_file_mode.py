"""File mode end to end: `python run.py` as a real process, with a real Celery worker
on the embedded broker and on RabbitMQ."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager

import pytest

from stream_processor.core.records import read_records
from tests.conftest import cli_env, processes_with_marker, start_cli, terminate, wait_until

FAST = ["--workers", "4", "--time-scale", "0.01", "--no-progress"]


def read_lines(path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_output_is_byte_identical_to_the_recording(run_cli, small_recording, broker_flag, tmp_path):
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    run = run_cli(
        ["--input", str(small_recording), "--output", str(output), "--report", str(report_path)] + FAST + broker_flag
    )
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == small_recording.read_bytes()
    report = json.loads(report_path.read_text())
    events = len(read_lines(small_recording))
    assert report["events"] == events and report["errors"] == 0
    assert 0 < report["span_s"] <= report["wall_s"]
    assert report["latency_s"]["p50"] <= report["latency_s"]["p99"] <= report["latency_s"]["max"]
    assert report["workers"] == 4
    assert "guest:guest" not in report["broker"]  # no password in reports
    assert f"events      {events}" in run.stdout


def test_bad_lines_get_error_records_in_place_and_the_rest_goes_through(run_cli, small_recording, tmp_path):
    good = read_lines(small_recording)[:12]
    bad = {
        2: b"{not json",
        5: b"[1, 2, 3]",
        7: b'{"id": 7, "wait": -1}',
        9: b'{"id": 9, "title": "no wait"}',
        10: b'{"id": 10, "wait": "soon"}',
        11: b"\xff\xfe not utf-8",
    }
    lines = [bad.get(i, line) for i, line in enumerate(good)]
    recording = tmp_path / "mixed.json"
    recording.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    assert run.returncode == 3, run.stderr
    written = read_lines(output)
    assert len(written) == len(lines)
    for offset, line in enumerate(written):
        if offset in bad:
            record = json.loads(line)
            assert record["offset"] == offset and record["error"]
            assert f"{recording}:{offset + 1}:" in run.stderr  # file and line number
        else:
            assert line == lines[offset]
    assert json.loads(written[9])["id"] == 9  # the event's id travels with its error record
    assert "Traceback" not in run.stderr


def test_a_missing_input_file_is_one_line_and_exit_2(run_cli, tmp_path):
    run = run_cli(["--input", str(tmp_path / "nope.json"), "--output", str(tmp_path / "out.json")] + FAST)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "nope.json" in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_flags_are_usage_errors(run_cli, small_recording):
    assert run_cli(["--input", str(small_recording), "--workers", "-1"]).returncode == 2
    assert run_cli(["--input", str(small_recording), "--task", "no_such_module:fn"]).returncode == 2
    without_broker = run_cli(["--input", str(small_recording), "--workers", "0"])
    assert without_broker.returncode == 2 and "--broker" in without_broker.stderr


def test_a_user_task_transforms_events_in_order(run_cli, small_recording, tmp_path):
    output = tmp_path / "out.json"
    run = run_cli(
        ["--input", str(small_recording), "--output", str(output), "--task", "tasks_for_tests:title_length"] + FAST
    )
    assert run.returncode == 0, run.stderr
    expected = [
        {"id": record.event["id"], "title_length": len(record.event["title"])}
        for record in read_records(small_recording)
    ]
    assert [json.loads(line) for line in read_lines(output)] == expected


def test_a_failing_user_task_leaves_error_records_and_exit_3(run_cli, small_recording, tmp_path):
    output = tmp_path / "out.json"
    run = run_cli(
        ["--input", str(small_recording), "--output", str(output), "--task", "tasks_for_tests:fail_on_new_pages"] + FAST
    )
    records = list(read_records(small_recording))
    new_pages = [r.offset for r in records if r.event["type"] == "new"]
    assert new_pages, "the recording should hold some new pages"
    assert run.returncode == 3, run.stderr
    for record, line in zip(records, read_lines(output), strict=True):
        if record.offset in new_pages:
            error = json.loads(line)
            assert error["offset"] == record.offset and error["id"] == record.event["id"]
            assert "cannot score new page" in error["error"]
        else:
            assert line == record.raw


def test_a_tiny_window_still_gives_identical_output(run_cli, small_recording, tmp_path):
    output = tmp_path / "out.json"
    run = run_cli(["--input", str(small_recording), "--output", str(output), "--max-in-flight", "2"] + FAST)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == small_recording.read_bytes()


def test_resume_continues_after_the_last_complete_line(run_cli, small_recording, tmp_path):
    output = tmp_path / "out.json"
    lines = read_lines(small_recording)
    assert run_cli(["--input", str(small_recording), "--output", str(output)] + FAST).returncode == 0
    # As a crash would leave it: 20 lines and a torn 21st, the checkpoint still listing them all.
    output.write_bytes(b"\n".join(lines[:20]) + b"\n" + lines[20][:15])
    run = run_cli(["--input", str(small_recording), "--output", str(output), "--resume"] + FAST)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == small_recording.read_bytes()
    report_events = int(run.stdout.split("events")[1].split()[0])
    assert report_events == len(lines) - 20


@contextmanager
def slow_run_with_a_first_line(recording, tmp_path):
    """A run at full speed on 2 workers, yielded once it has written its first line."""
    output = tmp_path / "out.json"
    marker = uuid.uuid4().hex
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--time-scale", "1", "--no-progress"]
    process = start_cli(args, tmp_path, marker)
    try:
        wait_until(lambda: output.exists() and output.stat().st_size > 0, timeout=60, message="a first line")
        yield process, output, marker
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_stops_everything_and_keeps_an_ordered_prefix(small_recording, tmp_path, stop_signal):
    with slow_run_with_a_first_line(small_recording, tmp_path) as (process, output, marker):
        process.send_signal(stop_signal)
        process.communicate(timeout=30)
    assert process.returncode == 130
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    written = read_lines(output)
    assert 0 < len(written) < len(read_lines(small_recording))
    assert written == read_lines(small_recording)[: len(written)]


def test_a_killed_run_takes_its_workers_and_broker_with_it(small_recording, tmp_path):
    with slow_run_with_a_first_line(small_recording, tmp_path) as (process, output, marker):
        assert len(processes_with_marker(marker)) >= 4  # run.py, redis-server, worker, 2 pool processes
        process.kill()
        process.communicate(timeout=10)
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no orphan after kill -9")
    # The output is a clean, ordered prefix that --resume can continue from.
    written = read_lines(output)
    assert written == read_lines(small_recording)[: len(written)]


def test_workers_started_elsewhere_serve_a_run_with_workers_0(run_cli, small_recording, rabbitmq_url, tmp_path):
    queue = f"stream_processor.test.{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_processor",
            "worker",
            "--broker",
            rabbitmq_url,
            "--concurrency",
            "2",
            "--queue",
            queue,
            "--loglevel",
            "WARNING",
        ],
        env=cli_env(marker),
        start_new_session=True,
    )
    try:
        output = tmp_path / "out.json"
        run = run_cli(
            [
                "--input",
                str(small_recording),
                "--output",
                str(output),
                "--workers",
                "0",
                "--broker",
                rabbitmq_url,
                "--queue",
                queue,
                "--time-scale",
                "0.01",
                "--no-progress",
            ]
        )
        assert run.returncode == 0, run.stderr
        assert output.read_bytes() == small_recording.read_bytes()
    finally:
        terminate(worker, marker)


def test_a_recording_shaped_like_the_real_feed_comes_out_identical(run_cli, tmp_path):
    # Real RCStream recordings: timestamps out of order, null fields, \uXXXX escapes,
    # integer waits, other spacing than json.dumps would write.
    lines = [
        b'{"id": 3, "timestamp": 1480000010, "title": "Caf\\u00e9 \\u6771\\u4eac", "wait": 0, "user": null}',
        b'{"id":1,"timestamp":1480000002,"title":"Z\\u00fcrich","comment":null,"wait":1}',
        b'{"id": 2, "timestamp": 1480000005, "length": {"old": null, "new": 12}, "wait": 0.5, "bot": false}',
        b'{"id": 4,   "timestamp": 1480000001, "wait": 2, "revision": {"old": null, "new": 7}}',
    ]
    recording = tmp_path / "real_like.json"
    recording.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.json"
    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == recording.read_bytes()


def test_verify_names_the_first_differing_line_or_the_count(small_recording, tmp_path):
    def verify(output: bytes) -> subprocess.CompletedProcess:
        path = tmp_path / "out.json"
        path.write_bytes(output)
        command = [sys.executable, "-m", "stream_processor", "verify", str(small_recording), str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    original = small_recording.read_bytes()
    lines = original.splitlines(keepends=True)
    assert verify(original).returncode == 0
    swapped = b"".join([lines[0], lines[2], lines[1], *lines[3:]])
    result = verify(swapped)
    assert result.returncode == 1 and "line 2" in result.stderr
    result = verify(b"".join(lines[:-1]))
    assert result.returncode == 1 and f"output has {len(lines) - 1} lines, input {len(lines)}" in result.stderr
