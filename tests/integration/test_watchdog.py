"""The stall watchdog: what it says when nothing comes back, and what it does for the run's
own workers (unit tests on a fake clock, and a worker stopped with SIGSTOP, end to end)."""

from __future__ import annotations

import os
import signal

from stream_processor.observe.observations import RunObservations, WorkerSeen
from stream_processor.run.watchdog import StallWatchdog
from tests.chaos.test_failures import celery_processes, finish, lines_of, started, wait_until, write_events
from tests.conftest import FakeClock


class Core:
    def __init__(self) -> None:
        self.batches_out = 0
        self.since: float | None = None

    def idle_since(self) -> float | None:
        return self.since


def watchdog(queue_state=(5, 0), **kwargs) -> tuple[StallWatchdog, Core, FakeClock]:
    core, clock = Core(), FakeClock()
    dog = StallWatchdog(
        core,
        "amqp://guest:secret@host:5672//",
        "q1",
        stall_s=10,
        clock=clock,
        queue_state=lambda: queue_state,
        **kwargs,
    )
    return dog, core, clock


def test_nothing_is_said_while_results_flow_or_nothing_is_out():
    dog, core, clock = watchdog()
    core.since = 0.0
    clock.now = 100.0
    assert dog.check() is None  # nothing out: an idle run is not a stalled one
    core.batches_out = 3
    core.since = 95.0
    assert dog.check() is None


def test_a_queue_nobody_consumes_is_named_with_the_command_that_fixes_it_and_no_password():
    dog, core, clock = watchdog(queue_state=(8, 0))
    core.batches_out, core.since, clock.now = 8, 0.0, 11.0
    message = dog.check()
    assert "nothing is consuming queue q1" in message and "8 tasks wait" in message
    assert "stream-processor worker --broker amqp://guest:***@host:5672// --queue q1" in message
    assert "secret" not in message
    clock.now = 15.0
    assert dog.check() is None  # not again at once: after twice the wait
    clock.now = 23.0
    assert dog.check() is not None


def test_redis_which_cannot_count_consumers_gets_the_waiting_tasks_instead():
    dog, core, clock = watchdog(queue_state=(4, None))
    core.batches_out, core.since, clock.now = 4, 0.0, 12.0
    assert "4 wait in queue q1" in dog.check()


def test_workers_that_went_quiet_are_named():
    seen = RunObservations(clock=FakeClock())
    seen.workers = {"hostA:11": WorkerSeen(3, 1.0, 0.0), "hostB:12": WorkerSeen(3, 1.0, 9.5)}
    seen.workers |= {"hostC:13": WorkerSeen(1, 1.0, 0.0), "hostC:14": WorkerSeen(1, 1.0, 0.0)}
    dog, core, clock = watchdog(queue_state=(0, 3), observations=seen)
    core.batches_out, core.since, clock.now = 2, 0.0, 12.0
    message = dog.check()
    assert "quiet since their last result: hostA (pid 11), hostC (pids 13, 14)" in message
    assert "hostB" not in message  # B answered 2.5 s ago


def test_the_runs_own_workers_are_restarted_after_the_stall_timeout_and_only_then():
    restarts = []
    dog, core, clock = watchdog(queue_state=(0, 1), restart=lambda: restarts.append(clock.now), restart_after_s=30)
    core.batches_out, core.since = 2, 0.0
    for now in (5, 11, 25):
        clock.now = now
        dog.check()
    assert restarts == []
    clock.now = 31.0
    assert "restarting the run's workers" in dog.check()
    assert restarts == [31.0]
    core.since = 32.0  # results again
    clock.now = 33.0
    assert dog.check() is None


def test_a_worker_that_stops_taking_tasks_is_restarted_and_the_run_completes(tmp_path, broker_flag):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0.2} for n in range(40)])
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--no-progress", "--pool", "prefork"]
    args += ["--stall-timeout", "4", "--stall-warning", "2"]  # no result for 4 s: the workers are stuck
    with started(args + broker_flag, tmp_path) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 3, timeout=60, message="a few lines written")
        main, _ = celery_processes(marker)
        os.kill(main, signal.SIGSTOP)  # alive, connected, taking nothing: what celery #8030 looks like
        code, stderr = finish(process, timeout=120)
    assert code == 0, stderr
    assert "restarting the run's workers" in stderr
    assert output.read_bytes() == recording.read_bytes()
