"""Issue 19.3 end to end: every pool keeps the run's promises, on both brokers.

With threads and gevent, W workers are threads or greenlets in one `celery worker`
process per core, and a process that dies takes every event it runs with it: a time
limit cannot be a signal, and a poison event kills its batch-mates' process too. Each
test runs real `run.py` processes with a real worker per pool, as tests/test_failures.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.test_failures import finish, kill, lines_of, started, wait_until, write_events
from tests.conftest import processes_with_marker
from tests.e2e.test_misuse import PREFORK_RUNS_PER_ATTEMPT
from tests.integration.test_batches_as_events_end import COUNT, HELD, heavy_tail, runs_of

POOLS = ["prefork", "threads", "gevent", "eventlet"]
FAST = ["--workers", "4", "--no-progress"]


@pytest.fixture(params=POOLS)
def pool(request) -> list[str]:
    return ["--pool", request.param]


def celery_workers(marker: str) -> list[int]:
    """The run's `celery worker` processes (not prefork's pool processes, not the group)."""
    entries = [entry for entry in processes_with_marker(marker) if " celery " in entry and "worker_group" not in entry]
    pids = {int(entry.split(":")[0]) for entry in entries}
    return sorted(pid for pid in pids if _parent_of(pid) not in pids)


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return -1


@pytest.mark.parametrize("task", ["sleep_for_field", "ignore_the_soft_time_limit"])
def test_an_event_past_its_timeout_gets_its_record_in_every_pool(tmp_path, broker_flag, pool, task):
    """Two events would take ten minutes. threads: abandoned at the limit; gevent: a green
    Timeout (one that swallows it holds its greenlet: the watchdog restarts the workers and
    it runs again alone, in a process of its own, killed at its hard limit); prefork: SIGALRM,
    then Celery's hard limit."""
    events = [{"id": n, "wait": 0, "sleep": 600 if n in (2, 5) else 0.01} for n in range(12)]
    recording = write_events(tmp_path / "in.json", events)
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--task-timeout", "1", "--stall-timeout", "10"]
    args += ["--task", f"tasks_for_tests:{task}"]
    with started(args + FAST + pool + broker_flag, tmp_path) as (process, _):
        code, stderr = finish(process, timeout=90)
    assert code == 3, stderr
    written, source = lines_of(output), lines_of(recording)
    assert len(written) == len(source)
    for offset, line in enumerate(written):
        if offset in (2, 5):
            record = json.loads(line)
            assert record["offset"] == offset and record["error"].startswith("timed out"), record
        else:
            assert line == source[offset]


def test_an_event_that_raises_is_retried_alone_in_every_pool(tmp_path, broker_flag, pool):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(10)])
    flaky = tmp_path / "attempts"
    flaky.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--retry-backoff", "0.05"]
    args += ["--task", "tasks_for_tests:fail_on_odd_ids_twice"]
    with started(args + FAST + pool + broker_flag, tmp_path, env={"FLAKY_DIR": str(flaky)}) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
    runs = {int(path.name.split(".")[0]): path.read_text() for path in flaky.iterdir()}
    assert runs == {n: "xxx" if n % 2 else "x" for n in range(10)}  # three attempts for odd ids, no more


@pytest.mark.chaos
def test_a_poison_event_ends_with_an_error_record_and_fails_no_batch_mate_in_every_pool(tmp_path, broker_flag, pool):
    """It kills its process (with threads or gevent: the worker, and every event in it).
    Its batch-mates and the events of the other threads run again, isolated, and pass; it
    dies alone, isolated, `--retries` + 1 times, and gets its error record. On Redis a
    consumer dying in its BRPOP can take a task with it: the run asks again for every
    batch out once its workers restart, so nothing waits for a task nobody has."""
    events = [{"id": n, "wait": 0.02} for n in range(40)]
    events[17]["poison"] = "exit"
    recording = write_events(tmp_path / "in.json", events)
    poison_dir = tmp_path / "poison"
    poison_dir.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--retries", "1", "--retry-backoff", "0.05"]
    args += ["--task", "tasks_for_tests:die_on_poison"]
    with started(args + FAST + pool + broker_flag, tmp_path, env={"POISON_DIR": str(poison_dir)}) as (process, _):
        code, stderr = finish(process)
    assert code == 3, stderr
    written, source = lines_of(output), lines_of(recording)
    assert len(written) == len(source)
    for offset, line in enumerate(written):
        if offset == 17:
            record = json.loads(line)
            assert record["id"] == 17 and "died while running it, 2 times" in record["error"], record
        else:
            assert line == source[offset], offset
    runs = len((poison_dir / "17.runs").read_text())
    # Its batch's loss is not its attempt; then alone, twice (prefork: each maybe twice, see
    # tests/test_misuse.py's PREFORK_RUNS_PER_ATTEMPT).
    most = 1 + 2 * (PREFORK_RUNS_PER_ATTEMPT if pool[1] == "prefork" else 1)
    assert 2 <= runs <= most, stderr


@pytest.mark.chaos
def test_a_worker_killed_mid_batch_loses_nothing_and_reruns_nothing_reported_in_every_pool(tmp_path, broker_flag, pool):
    """One `celery worker` process is SIGKILLed while the held event runs, after the lines
    before it were written: nothing is lost, nothing reported runs again."""
    recording, output, hold_dir = heavy_tail(tmp_path)
    args = ["--input", str(recording), "--output", str(output), "--order", "total", "--batch-target-ms", "200"]
    args += ["--workers", "2", "--no-progress", "--task", "tasks_for_tests:held_or_short"]
    with started(args + pool + broker_flag, tmp_path, env={"HOLD_DIR": str(hold_dir)}) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= HELD, timeout=60, message="the lines before the held event")
        kill(celery_workers(marker)[0])
        (hold_dir / "release").touch()  # its next run ends at once
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
    runs = runs_of(hold_dir)
    assert all(runs[n] == 1 for n in range(HELD)), runs  # written before the kill: never again
    assert set(runs) == set(range(COUNT))


def test_events_are_reported_as_they_end_and_a_slow_one_hands_back_its_tail_in_every_pool(tmp_path, broker_flag, pool):
    """The report monitor works in every pool: a thread of its own in a prefork or threads
    process (watching every batch the process runs), a greenlet under gevent and eventlet.
    Every event but the held one is written while it runs (order none): those before it in
    its batch were reported, those after it handed back."""
    recording, output, hold_dir = heavy_tail(tmp_path)
    args = ["--input", str(recording), "--output", str(output), "--order", "none", "--batch-target-ms", "200"]
    args += ["--workers", "2", "--no-progress", "--task", "tasks_for_tests:held_or_short"]
    with started(args + pool + broker_flag, tmp_path, env={"HOLD_DIR": str(hold_dir)}) as (process, _):
        wait_until(lambda: len(lines_of(output)) >= COUNT - 1, timeout=60, message="every line but the held one")
        (hold_dir / "release").touch()
        code, stderr = finish(process)
    assert code == 0, stderr
    assert sorted(lines_of(output)) == sorted(lines_of(recording))
    assert runs_of(hold_dir) == dict.fromkeys(range(COUNT), 1)
