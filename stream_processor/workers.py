"""Celery workers for a run: started with it, ready before the first event, gone after it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from stream_processor import processes
from stream_processor.tasks import BROKER_ENV, OWNED_ENV, QUEUE, QUEUE_ENV, READY_FILE_ENV, TASK_ENV


class WorkerError(Exception):
    """The local Celery worker did not start."""


def worker_command(
    concurrency: int, queue: str = QUEUE, hostname: str | None = None, loglevel: str = "WARNING"
) -> list[str]:
    """The `celery worker` command line this project uses everywhere."""
    command = [
        sys.executable, "-m", "celery", "--quiet", "-A", "stream_processor.tasks", "worker",
        "--pool", "prefork",
        "--concurrency", str(concurrency),
        # Hand a task only to a free process, one at a time: a short event never
        # waits behind a long one that a busy process reserved.
        "-O", "fair",
        "--prefetch-multiplier", "1",
        "--queues", queue,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", loglevel,
    ]  # fmt: skip
    if hostname:
        command += ["--hostname", hostname]
    return command


class LocalWorkers:
    """One `celery worker` process with `concurrency` pool processes, owned by this run.

    It consumes a queue of the run's own, so runs sharing a broker never take each
    other's events (they may run different tasks).
    """

    def __init__(
        self,
        broker_url: str,
        concurrency: int,
        task_path: str,
        queue: str = QUEUE,
        start_timeout_s: float = 60.0,
        loglevel: str = "WARNING",
    ) -> None:
        self.broker_url = broker_url
        self.concurrency = concurrency
        self.task_path = task_path
        self.queue = queue
        self.start_timeout_s = start_timeout_s
        self.loglevel = loglevel
        self.process: subprocess.Popen | None = None
        self._dir: Path | None = None

    def start(self) -> LocalWorkers:
        self._dir = Path(tempfile.mkdtemp(prefix="stream-processor-worker-"))
        ready_file = self._dir / "ready"
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
        hostname = f"stream-processor-{uuid.uuid4().hex[:8]}@%h"
        # The worker's chatter goes to stderr, keeping stdout for the run's summary.
        self.process = processes.spawn(
            worker_command(self.concurrency, self.queue, hostname, self.loglevel), env=env, stdout=sys.stderr.fileno()
        )
        self._wait_until_ready(ready_file)
        return self

    def _wait_until_ready(self, ready_file: Path) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not ready_file.exists():
            if self.process.poll() is not None:
                raise WorkerError(f"celery worker exited at start with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop(graceful=False)
                raise WorkerError(f"celery worker not ready after {self.start_timeout_s:.0f} s")
            time.sleep(0.01)

    def stop(self, graceful: bool = True) -> None:
        """Warm shutdown when all work is done; cold (SIGQUIT) on errors and interrupts."""
        if self.process is not None:
            first = signal.SIGTERM if graceful else signal.SIGQUIT
            processes.stop(self.process, first, grace_s=15.0 if graceful else 3.0)
            self.process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, exc_type, *_rest) -> None:
        self.stop(graceful=exc_type is None)
