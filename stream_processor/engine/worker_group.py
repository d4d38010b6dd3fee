"""`python -m stream_processor.engine.worker_group READY_FILE COMMANDS_JSON`: several `celery worker`
processes (a threads or gevent pool, one process per core) that live and die as one.

A run's own workers are supervised as one child (processes.Supervisor): this is that
child when there are several processes. It starts each command, with its own ready file,
and writes READY_FILE once all are ready. Its members stay in its process group (a stop
signals them all at once) and die with it (parent-death signal).

When a member dies, the group goes down with it (the others warmly: their running tasks
end first, for at most STOP_GRACE_S) and the supervisor starts it again: with
the embedded Redis, the dead member's unacked tasks can only be handed back by handing
back every unacked task (Redis does not know which consumer holds which), and that is
only right when no member still runs one. A member that ends of its own accord with code
0 (a warm shutdown: its tasks ended and were acked, e.g. to shed abandoned threads, see
execution.py) is started again alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream_processor.engine.processes import set_parent_death_signal
from stream_processor.engine.tasks import READY_FILE_ENV

STOP_GRACE_S = 10.0  # the other members' warm shutdown, when one died
MEMBER_DIED = 70  # the exit code of a group whose member died (the supervisor restarts it)


def _die_with_group() -> None:
    set_parent_death_signal(signal.SIGKILL)


def _start(command: list[str], ready_file: Path) -> subprocess.Popen:
    env = {**os.environ, READY_FILE_ENV: str(ready_file)}
    return subprocess.Popen(command, env=env, preexec_fn=_die_with_group)


def _stop_the_rest(members: dict[int, int]) -> None:
    """Warm shutdown first: a member killed while it takes a task from Redis can lose it
    (taken from the queue, not yet recorded as unacked), and its running tasks end and are
    acked instead of running again. Killed after STOP_GRACE_S all the same."""
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while members and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            members.pop(pid, None)
        else:
            time.sleep(0.01)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    ready_file, commands = Path(argv[0]), json.loads(argv[1])
    stopping: list[int] = []

    def stop(signum, frame):  # the members got the same signal: their process group is ours
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(signum, stop)
    ready_files = [ready_file.with_name(f"{ready_file.name}.{index}") for index in range(len(commands))]
    for path in ready_files:
        path.unlink(missing_ok=True)
    members: dict[int, int] = {}  # pid -> index
    for number, (command, path) in enumerate(zip(commands, ready_files, strict=True)):
        members[_start(command, path).pid] = number
    announced = False
    while members:
        if not announced and all(path.exists() for path in ready_files):
            ready_file.write_text(str(os.getpid()))
            announced = True
        pid, status = os.waitpid(-1, os.WNOHANG) if not announced else os.wait()
        if pid == 0:
            time.sleep(0.01)
            continue
        index = members.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue  # wait for the rest
        if code == 0 and announced:
            print(f"worker group: member {index} (pid {pid}) recycled itself; starting it again", file=sys.stderr)
            members[_start(commands[index], ready_files[index]).pid] = index
            continue
        print(f"worker group: member {index} (pid {pid}) exited with {code}; stopping the group", file=sys.stderr)
        _stop_the_rest(members)
        return MEMBER_DIED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
