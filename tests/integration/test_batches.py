"""Micro-batches end to end, with a real Celery worker: per-event retries and time limits
inside a batch, batch functions that fail, and a worker killed mid-batch on both brokers."""

from __future__ import annotations

import json

import pytest

from tests.chaos.test_failures import celery_processes, finish, kill, lines_of, started, wait_until, write_events

# prefork: these tests kill and count pool processes (tests/test_pools.py covers every pool)
FAST = ["--workers", "2", "--no-progress", "--pool", "prefork"]


def report_of(path) -> dict:
    return json.loads(path.read_text())


def test_short_events_travel_in_batches_and_come_out_identical(tmp_path, broker_flag):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0.0005, "title": "x" * n} for n in range(600)])
    output, report = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--report", str(report)]
    with started(args + FAST + broker_flag, tmp_path) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
    batching = report_of(report)["batching"]
    assert batching["mean_event_run_ms"] < 5  # measured by the workers, so batches of many
    assert batching["batch_max"] == 100


def test_an_event_that_raises_inside_a_batch_is_retried_alone_and_the_rest_written_once(tmp_path):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(200)])
    flaky = tmp_path / "attempts"
    flaky.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--retry-backoff", "0.05"]
    task = ["--task", "tasks_for_tests:fail_on_odd_ids_twice"]
    with started(args + task + FAST, tmp_path, env={"FLAKY_DIR": str(flaky)}) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
    # Odd events: exactly three attempts each (two failures, then success); even ones ran
    # once: not again with their failing neighbours.
    runs = {int(path.name.split(".")[0]): len(path.read_text()) for path in flaky.iterdir()}
    assert runs == {n: 3 if n % 2 else 1 for n in range(200)}


def test_an_event_past_its_time_limit_inside_a_batch_gets_its_record_and_the_batch_goes_on(tmp_path):
    events = [{"id": n, "wait": 0} for n in range(300)]
    events[250]["sleep"] = 30  # one event would hold its worker for 30 s
    recording = write_events(tmp_path / "in.json", events)
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--task-timeout", "1"]
    task = ["--task", "tasks_for_tests:sleep_for_field"]
    with started(args + task + FAST, tmp_path) as (process, _):
        code, stderr = finish(process, timeout=90)
    assert code == 3, stderr
    lines = lines_of(output)
    assert len(lines) == 300
    record = json.loads(lines[250])
    assert record["offset"] == 250 and record["error"].startswith("timed out: ran past its time limit of 1 s")
    expected = recording.read_bytes().splitlines()
    assert [line for n, line in enumerate(lines) if n != 250] == [line for n, line in enumerate(expected) if n != 250]


def test_a_batch_function_that_raises_or_miscounts_falls_back_to_one_event_at_a_time(tmp_path):
    events = [{"id": n, "wait": 0, "title": "t" * (n % 7)} for n in range(150)]
    events[60]["boom"] = True  # its batch raises: each event of it runs alone
    events[120]["short"] = True  # its batch returns one result too few: the same
    recording = write_events(tmp_path / "in.json", events)
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--task", "tasks_for_tests:title_lengths"]
    with started(args + FAST, tmp_path) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    results = [json.loads(line) for line in lines_of(output)]
    assert results == [{"id": n, "title_length": n % 7} for n in range(150)]


@pytest.mark.chaos
def test_a_worker_killed_mid_batch_runs_the_batch_again_and_writes_each_line_once(tmp_path, broker_flag):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0.002} for n in range(3000)])
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output)]
    with started(args + FAST + broker_flag, tmp_path) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 300, timeout=60, message="batches under way")
        _, pool = celery_processes(marker)
        for pid in pool:  # every pool process, mid-batch: both batches in flight are lost
            kill(pid)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
