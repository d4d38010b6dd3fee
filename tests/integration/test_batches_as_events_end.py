"""Issue 19 end to end, with a real Celery worker on both brokers: a batch's events are
written as each ends (not when the batch ends), a batch whose event overruns hands back
the events it has not started, and a worker that dies mid-batch runs again only what it
had not reported.

Measured on lines written, not on the clock: the slow event here ends only when the test
releases it, after seeing the lines that must not wait for it. Without per-event replies
and hand-backs those lines never come, and the wait times out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.test_failures import celery_processes, finish, kill, lines_of, started, wait_until, write_events

COUNT, HELD = 60, 20
# Batches of several 20 ms events: the held one always has batch-mates before and after it.
# prefork: its pool processes are killed and counted (tests/test_pools.py covers every pool).
ARGS = ["--workers", "2", "--pool", "prefork", "--no-progress", "--batch-target-ms", "200"]
ARGS += ["--task", "tasks_for_tests:held_or_short"]


def heavy_tail(tmp_path: Path, **marks) -> tuple[Path, Path, Path]:
    events = [{"id": n, "wait": 0, "sleep": 0.02, "title": f"Page {n}"} for n in range(COUNT)]
    events[HELD].update(marks or {"hold": True})
    recording = write_events(tmp_path / "in.json", events)
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    return recording, tmp_path / "out.json", hold_dir


def runs_of(hold_dir: Path) -> dict[int, int]:
    return {int(path.name): len(path.read_text()) for path in (hold_dir / "runs").iterdir()}


@pytest.mark.parametrize(("order", "written_while_held"), [("total", HELD), ("none", COUNT - 1)])
def test_no_line_waits_for_a_slow_batch_mate(tmp_path, broker_flag, order, written_while_held):
    """total: every event before the held one is written while it runs; none: every
    other event is (those after it in its batch were handed back to free workers)."""
    recording, output, hold_dir = heavy_tail(tmp_path)
    report = tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--order", order, "--report", str(report)]
    with started(args + ARGS + broker_flag, tmp_path, env={"HOLD_DIR": str(hold_dir)}) as (process, _):
        wait_until(
            lambda: len(lines_of(output)) >= written_while_held,
            timeout=60,
            message=f"{written_while_held} lines written while event {HELD} runs",
        )
        assert runs_of(hold_dir)[HELD] == 1 and not (hold_dir / "release").exists()
        (hold_dir / "release").touch()
        code, stderr = finish(process)
    assert code == 0, stderr
    assert sorted(lines_of(output)) == sorted(lines_of(recording))
    if order == "total":
        assert output.read_bytes() == recording.read_bytes()
    assert runs_of(hold_dir) == dict.fromkeys(range(COUNT), 1)  # nothing ran twice: nothing crashed
    replies = json.loads(report.read_text())["replies"]
    assert replies["results"] == COUNT
    if order == "none":  # its batch-mates after it were written while it ran: handed back
        assert replies["handed_back"] >= 1
    assert replies["messages"] > COUNT / 10  # reports while batches ran, not one reply per batch


@pytest.mark.chaos
def test_a_process_that_dies_mid_batch_runs_again_only_the_events_it_had_not_reported(tmp_path, broker_flag):
    """The dying event sleeps first, so its batch-mates before it are reported (and written,
    in order none) before it kills its process; only it and those never reported run again."""
    recording, output, hold_dir = heavy_tail(tmp_path, die=True, sleep=0.3)
    args = ["--input", str(recording), "--output", str(output), "--order", "none"]
    with started(args + ARGS + broker_flag, tmp_path, env={"HOLD_DIR": str(hold_dir)}) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert sorted(lines_of(output)) == sorted(lines_of(recording))
    runs = runs_of(hold_dir)
    assert runs.pop(HELD) == 2  # killed its process once, then passed
    assert runs == dict.fromkeys(set(range(COUNT)) - {HELD}, 1)


@pytest.mark.chaos
def test_a_worker_killed_mid_batch_runs_again_only_the_events_it_had_not_reported(tmp_path, broker_flag):
    """The whole worker is SIGKILLed while its held event runs, after its batch-mates before it
    were written: the broker hands the batch out again, the new worker hands it straight
    back, and the run sends again only what was never reported."""
    recording, output, hold_dir = heavy_tail(tmp_path)
    args = ["--input", str(recording), "--output", str(output), "--order", "total"]
    with started(args + ARGS + broker_flag, tmp_path, env={"HOLD_DIR": str(hold_dir)}) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= HELD, timeout=60, message="the lines before the held event")
        main, _ = celery_processes(marker)
        kill(main)
        (hold_dir / "release").touch()  # its second run, on the new worker, ends at once
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output.read_bytes() == recording.read_bytes()
    runs = runs_of(hold_dir)
    assert all(runs[n] == 1 for n in range(HELD)), runs  # written before the kill: never again
    assert runs.pop(HELD) in (1, 2)  # running when killed: at least once, as promised
