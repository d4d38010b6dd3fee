"""What breaks, end to end: tasks that raise or hang, workers that die, brokers that
restart, runs that are killed. Real processes throughout; the output must always be one
line per event, in order, nothing lost or repeated.

`make chaos` runs this file on its own; it is also part of `make test`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream_processor.sources.generate import generate_file
from tests.conftest import processes_with_marker, start_cli, wait_until

pytestmark = pytest.mark.chaos

# prefork: these tests kill and count pool processes (tests/test_pools.py covers every pool)
FAST = ["--workers", "4", "--no-progress", "--pool", "prefork"]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


@pytest.fixture(scope="module")
def chaos_recording(tmp_path_factory) -> Path:
    """About 60 events of the generator's shape: a few seconds of work at --time-scale 0.2."""
    path = tmp_path_factory.mktemp("chaos") / "recording.json"
    generate_file(path, minutes=0.5, rate=2.0, seed=23)
    return path


@contextmanager
def started(args: list[str], cwd: Path, script: str = "run.py", env: dict[str, str] | None = None):
    """`python SCRIPT ARGS` in the background; yields (process, marker); nothing survives it."""
    marker = uuid.uuid4().hex
    process = start_cli(args, cwd, marker, script=script, env=env)
    try:
        yield process, marker
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        wait_until(lambda: not processes_with_marker(marker), timeout=15, message="no process left behind")


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def celery_processes(marker: str) -> tuple[int, list[int]]:
    """(the run's celery worker, its pool processes), found by the test's environment marker."""
    pids = {int(entry.split(":")[0]) for entry in processes_with_marker(marker) if " celery " in entry}
    parents = {pid: _parent_of(pid) for pid in pids}
    main = [pid for pid, parent in parents.items() if parent not in pids]
    assert len(main) == 1, f"expected one celery worker, found {main}"
    return main[0], [pid for pid, parent in parents.items() if parent == main[0]]


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# -- 1. task failures -------------------------------------------------------------------


def test_a_task_that_raises_is_retried_and_then_succeeds(tmp_path):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(8)])
    flaky = tmp_path / "attempts"
    flaky.mkdir()
    args = ["--input", str(recording), "--output", str(tmp_path / "out.json"), "--retry-backoff", "0.05"]
    task = ["--task", "tasks_for_tests:fail_twice_then_pass"]
    with started(args + task + FAST, tmp_path, env={"FLAKY_DIR": str(flaky)}) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert (tmp_path / "out.json").read_bytes() == recording.read_bytes()
    assert sorted(p.read_text() for p in flaky.iterdir()) == ["xxx"] * 8  # three attempts each, no more


def test_a_task_that_keeps_raising_gets_an_error_record_after_its_retries(tmp_path, broker_flag):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(6)])
    flaky = tmp_path / "attempts"
    flaky.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--retries", "1", "--retry-backoff", "0.05"]
    with started(
        args + ["--task", "tasks_for_tests:fail_twice_then_pass"] + FAST + broker_flag,
        tmp_path,
        env={"FLAKY_DIR": str(flaky)},
    ) as (process, _):
        code, stderr = finish(process)
    assert code == 3, stderr
    records = [json.loads(line) for line in lines_of(output)]
    assert [r["offset"] for r in records] == list(range(6))
    assert [r["id"] for r in records] == list(range(6))
    assert all(r["error"].startswith("failed: ConnectionError: flaky scorer") for r in records), records
    assert all("attempt 2 of 2" in r["error"] for r in records)
    assert sorted(p.read_text() for p in flaky.iterdir()) == ["xx"] * 6


@pytest.mark.parametrize("task", ["sleep_for_field", "ignore_the_soft_time_limit"])
def test_a_task_past_its_timeout_gets_an_error_record_and_the_stream_goes_on(tmp_path, task):
    # Two events would take ten minutes; the run must finish long before that.
    events = [{"id": n, "wait": 0, "sleep": 600 if n in (2, 5) else 0.01} for n in range(8)]
    recording = write_events(tmp_path / "in.json", events)
    output = tmp_path / "out.json"
    args = [
        "--input",
        str(recording),
        "--output",
        str(output),
        "--task-timeout",
        "1",
        "--task",
        f"tasks_for_tests:{task}",
    ]
    with started(args + FAST, tmp_path) as (process, _):
        code, stderr = finish(process, timeout=60)
    assert code == 3, stderr
    written = lines_of(output)
    source = lines_of(recording)
    assert len(written) == len(source)
    for offset, line in enumerate(written):
        if offset in (2, 5):
            record = json.loads(line)
            assert record["offset"] == offset and record["id"] == offset
            assert record["error"].startswith("timed out"), record
        else:
            assert line == source[offset]
    if task == "ignore_the_soft_time_limit":
        assert "hard time limit" in json.loads(written[2])["error"]


# -- 2. worker crash --------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["one pool process", "the whole worker"])
def test_a_killed_worker_loses_no_event(chaos_recording, tmp_path, broker_flag, victim):
    output = tmp_path / "out.json"
    args = ["--input", str(chaos_recording), "--output", str(output), "--time-scale", "0.2"] + FAST + broker_flag
    with started(args, tmp_path) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
        worker, pool = celery_processes(marker)
        kill(pool[0] if victim == "one pool process" else worker)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == chaos_recording.read_bytes()
    if victim == "the whole worker":
        assert "starting it again" in stderr


# -- 3. client crash, then --resume ------------------------------------------------------


@pytest.mark.parametrize("script", ["run.py", "run_streaming.py"])
def test_a_killed_run_resumes_to_byte_identical_output(chaos_recording, tmp_path, script):
    output = tmp_path / "out.json"
    args = ["--input", str(chaos_recording), "--output", str(output), "--time-scale", "0.2"] + FAST
    with started(args, tmp_path, script=script) as (process, _):
        wait_until(lambda: len(lines_of(output)) >= 10, timeout=60, message="ten lines written")
        process.kill()
    total = len(lines_of(chaos_recording))
    assert 10 <= len(lines_of(output)) < total
    with started(args + ["--resume"], tmp_path, script=script) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == chaos_recording.read_bytes()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("script", ["run.py", "run_streaming.py"])
def test_a_stopped_run_flushes_its_prefix_and_resume_finishes_it(chaos_recording, tmp_path, script, stop_signal):
    output = tmp_path / "out.json"
    args = ["--input", str(chaos_recording), "--output", str(output), "--time-scale", "0.2"] + FAST
    with started(args, tmp_path, script=script) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
        process.send_signal(stop_signal)
        code, stderr = finish(process, timeout=30)
        wait_until(lambda: not processes_with_marker(marker), timeout=15, message="everything stopped")
    assert code == 130, stderr
    prefix = lines_of(output)
    assert prefix == lines_of(chaos_recording)[: len(prefix)]
    assert output.read_bytes().endswith(b"\n")  # no torn line on a graceful stop
    with started(args + ["--resume"], tmp_path, script=script) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == chaos_recording.read_bytes()


# -- 4. broker restart ------------------------------------------------------------------


# A small window keeps the run sending tasks all along, so some are sent while the broker is down.
SMALL_WINDOW = ["--max-in-flight", "8"]


def test_the_run_survives_its_embedded_broker_being_killed(chaos_recording, tmp_path):
    output = tmp_path / "out.json"
    args = ["--input", str(chaos_recording), "--output", str(output), "--time-scale", "0.2"] + FAST + SMALL_WINDOW
    with started(args, tmp_path) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
        redis = [int(e.split(":")[0]) for e in processes_with_marker(marker) if "redis-server" in e]
        assert len(redis) == 1, processes_with_marker(marker)
        kill(redis[0])
        code, stderr = finish(process)
    assert code == 0, stderr
    assert "embedded redis-server exited unexpectedly" in stderr
    assert output.read_bytes() == chaos_recording.read_bytes()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def test_the_run_survives_a_rabbitmq_restart(chaos_recording, tmp_path, rabbitmq_url):
    output = tmp_path / "out.json"
    args = ["--input", str(chaos_recording), "--output", str(output), "--time-scale", "0.2", "--broker", rabbitmq_url]
    with started(args + FAST + SMALL_WINDOW, tmp_path) as (process, _):
        wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
        rabbitmqctl("stop_app")
        try:
            written_while_down = len(lines_of(output))
        finally:
            rabbitmqctl("start_app")
        code, stderr = finish(process, timeout=180)
    assert code == 0, stderr
    assert written_while_down < len(lines_of(chaos_recording))
    assert output.read_bytes() == chaos_recording.read_bytes()
