"""Celery workers for a run: started with it, ready before the first event, gone after it.

Three pools (Celery's): `prefork` runs each of W events in a process of its own; `threads`
and `gevent` run W threads or greenlets spread over one `celery worker` process per core
(see `process_sizes`), so hundreds of workers that wait on a remote service cost a few
processes, not hundreds. `eventlet` works like gevent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from stream_processor.engine import processes
from stream_processor.engine.names import (
    BROKER_ENV,
    OWNED_ENV,
    QUEUE,
    QUEUE_ENV,
    READY_FILE_ENV,
    TASK_ENV,
    TASK_EVENTS_ENV,
    VISIBILITY_TIMEOUT_ENV,
)


class WorkerError(processes.StartError):
    """The local Celery worker did not start."""


class Pool(StrEnum):
    """How a Celery worker runs its tasks (`celery worker --pool`)."""

    PREFORK = "prefork"  # a process per worker: any function, CPU-bound or not thread-safe
    THREADS = "threads"  # threads in a few processes: functions that wait (network, disk), thread-safe
    GEVENT = "gevent"  # greenlets (monkey-patched I/O): very many waits, pure-Python I/O
    EVENTLET = "eventlet"  # as gevent, with eventlet's patching

    @property
    def in_threads(self) -> bool:
        """Many workers share a process: one that dies takes all its events with it."""
        return self is not Pool.PREFORK


# The default is prefork: at a first run's 12 workers the reference task (it sleeps) is at
# the ideal in prefork and threads alike, and prefork forgives more of a user's first
# function: not thread-safe, hanging past its hard limit (killed, not abandoned), or
# crashing its process (one event lost, not a process of threads). Past a few dozen
# workers processes stop fitting on a few cores: the run suggests `--pool threads`.
DEFAULT_POOL = Pool.PREFORK
PREFORK_WORKERS_THAT_FIT = 64  # more prefork processes than this: suggest threads


def worker_processes(pool: Pool, workers: int, cpus: int | None = None) -> list[int]:
    """How many workers each `celery worker` process runs: prefork, one process with all of
    them (its pool forks one per worker); threads and gevent, one process per core (each
    holds a GIL and a hub of its own, so CPU-bound work still uses every core), never more
    processes than workers, the workers shared out as evenly as can be."""
    if workers < 1:
        return []
    if pool is Pool.PREFORK:
        return [workers]
    cpus = cpus or available_cpus()
    count = min(cpus, workers)
    share, extra = divmod(workers, count)
    return [share + (index < extra) for index in range(count)]


THREADS_PER_CORE = 16  # `stream-processor worker --pool threads` with no --concurrency


def default_concurrency(pool: Pool) -> int:
    """`stream-processor worker` with no --concurrency: a process per core for prefork; a
    few dozen threads or greenlets per core otherwise (tasks that mostly wait)."""
    cpus = available_cpus()
    return cpus if pool is Pool.PREFORK else THREADS_PER_CORE * cpus


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_command(
    concurrency: int,
    queue: str = QUEUE,
    hostname: str | None = None,
    loglevel: str = "WARNING",
    pool: Pool = DEFAULT_POOL,
    task_events: bool = False,
) -> list[str]:
    """The `celery worker` command line this project uses everywhere. With `task_events`,
    it sends Celery's task events and its heartbeats (Flower shows it online)."""
    command = [
        sys.executable, "-m", "celery", "--quiet", "-A", "stream_processor.engine.tasks", "worker",
        # `-P` as Celery's own entry point looks for it, to monkey-patch gevent before anything imports.
        "-P", str(pool),
        "--concurrency", str(concurrency),
        # Hand a task only to a free process, one at a time: a short event never
        # waits behind a long one that a busy process reserved.
        "-O", "fair",
        "--prefetch-multiplier", "1",
        "--queues", queue,
        "--without-gossip", "--without-mingle",
        *(["--task-events"] if task_events else ["--without-heartbeat"]),
        "--loglevel", loglevel,
    ]  # fmt: skip
    if hostname:
        command += ["--hostname", hostname]
    return command


class LocalWorkers:
    """The run's own Celery workers: `concurrency` of them, in the `pool` asked for (one
    `celery worker` process for prefork; one per core for threads and gevent, started and
    stopped as one group: see worker_group.py).

    They consume a queue of the run's own, so runs sharing a broker never take each
    other's events (they may run different tasks). If one dies (a crash, an OOM kill, a
    task that ends its process), they are started again; their unfinished tasks come
    back from the broker (acks_late), or through `after_crash` where the broker needs telling;
    `after_restart` lets the run send again what the dead ones held.
    """

    def __init__(
        self,
        broker_url: str,
        concurrency: int,
        task_path: str,
        queue: str = QUEUE,
        start_timeout_s: float = 60.0,
        loglevel: str = "WARNING",
        visibility_timeout_s: float | None = None,
        after_crash: Callable[[], None] | None = None,
        on_give_up: Callable[[Exception], None] | None = None,
        verbose: bool = False,
        after_restart: Callable[[float], None] | None = None,
        pool: Pool = DEFAULT_POOL,
        task_events: bool = False,
    ) -> None:
        self.broker_url = broker_url
        self.task_events = task_events  # Celery's task events, for Flower and exporters
        self.concurrency = concurrency
        self.pool = Pool(pool)
        self.sizes = worker_processes(self.pool, concurrency)
        self.task_path = task_path
        self.queue = queue
        self.start_timeout_s = start_timeout_s
        self.loglevel = loglevel
        self.visibility_timeout_s = visibility_timeout_s
        self.after_crash = after_crash
        self.after_restart = after_restart  # told once workers that died consume again
        self.on_give_up = on_give_up
        self.verbose = verbose  # the worker's own log on our stderr; else in a file of the run's
        self._supervisor: processes.Supervisor | None = None
        self._dir: Path | None = None

    @property
    def process(self) -> subprocess.Popen | None:
        return self._supervisor.process if self._supervisor else None

    @property
    def restarts(self) -> int:
        return self._supervisor.restarts if self._supervisor else 0

    def start(self) -> LocalWorkers:
        directory = self._dir = Path(tempfile.mkdtemp(prefix="stream-processor-worker-"))
        self._supervisor = processes.Supervisor(
            "celery worker",
            lambda: self._spawn_ready(directory),
            before_restart=self.after_crash,
            on_give_up=self.on_give_up,
            after_restart=self.after_restart,
        )
        try:
            self._supervisor.start()
        except BaseException:
            self.stop(graceful=False)
            raise
        return self

    def _environment(self, ready_file: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                BROKER_ENV: self.broker_url,
                TASK_ENV: self.task_path,
                QUEUE_ENV: self.queue,
                READY_FILE_ENV: str(ready_file),
                OWNED_ENV: "1",
            }
        )
        if self.visibility_timeout_s:
            env[VISIBILITY_TIMEOUT_ENV] = str(self.visibility_timeout_s)
        env[TASK_EVENTS_ENV] = "1" if self.task_events else "0"
        return env

    def _spawn_ready(self, directory: Path) -> subprocess.Popen:
        """Start the worker and wait until it consumes (its ready file appears in `directory`)."""
        ready_file = directory / "ready"
        ready_file.unlink(missing_ok=True)
        name = f"stream-processor-{uuid.uuid4().hex[:8]}"
        commands = [
            worker_command(size, self.queue, f"{name}-{index}@%h", self.loglevel, self.pool, self.task_events)
            for index, size in enumerate(self.sizes)
        ]
        command = commands[0]
        if len(commands) > 1:
            command = [
                sys.executable,
                "-m",
                "stream_processor.engine.worker_group",
                str(ready_file),
                json.dumps(commands),
            ]
        # Celery's chatter (its warning about root, "Warm shutdown", ...) would split the
        # progress bar: it goes to a log file, or with -v to stderr. Never to stdout.
        with self._log_stream() as log_stream:
            process = processes.spawn(
                command,
                env=self._environment(ready_file),
                stdout=log_stream,
                stderr=log_stream,
            )
        processes.wait_until_ready(
            process,
            ready_file.exists,
            self.start_timeout_s,
            "celery worker",
            WorkerError,
            why_it_exited=self._log_tail,
        )
        return process

    @property
    def log_path(self) -> Path | None:
        return None if self.verbose or self._dir is None else self._dir / "worker.log"

    @contextlib.contextmanager
    def _log_stream(self):
        if self.log_path is None:
            yield sys.stderr.fileno()
            return
        with open(self.log_path, "ab") as stream:
            yield stream

    def _log_tail(self) -> str:
        return processes.log_tail(self.log_path, when_none="see its log above")

    def restart(self) -> None:
        """Kill the worker and its pool, for one that stopped taking tasks: its supervisor
        starts a new one, and the broker hands the dead one's tasks out again."""
        process = self.process
        if process is not None:
            processes.stop(process, signal.SIGKILL, grace_s=0)

    def stop(self, graceful: bool = True) -> None:
        """Warm shutdown when all work is done; cold (SIGQUIT) on errors and interrupts."""
        if self._supervisor is not None:
            first = signal.SIGTERM if graceful else signal.SIGQUIT
            self._supervisor.stop(first, grace_s=15.0 if graceful else 3.0)
            self._supervisor = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, exc_type, *_rest) -> None:
        self.stop(graceful=exc_type is None)
