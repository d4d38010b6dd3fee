"""A cluster on one machine: a broker host, worker hosts and a client host, each a
network namespace on a bridge of its own (see netns.py).

- `broker`: a private RabbitMQ node at 10.213.N.2 (rabbitmq_node.py);
- `host1`..`hostK`: each runs `stream-processor worker --broker amqp://...@10.213.N.2//`
  in its own UTS namespace too, so each Celery node has its own name (`celery@host1`),
  as on separate machines; a host whose worker dies gets it started again, as systemd
  would (`Restart=always`);
- `client`: the run (`stream-processor run --workers 0`), started by `run_client`.

`Cluster` owns all of it. `teardown()` (also on `with` exit, at interpreter exit, and
from a signal handler the caller installs) stops the processes and removes the
namespaces and links: nothing is left, whatever way the run ended.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.netns import Host, Network
from harness.rabbitmq_node import RabbitMQNode
from stream_processor.engine import processes
from stream_processor.engine.tasks import BROKER_HEARTBEAT_ENV, OWNED_ENV, QUEUE, READY_FILE_ENV

log = logging.getLogger(__name__)

BROKER_NUMBER, FIRST_WORKER_NUMBER, CLIENT_NUMBER = 2, 11, 20
WORKER_START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class ClusterSettings:
    hosts: int = 3
    concurrency: int = 4  # pool processes per host
    heartbeat_s: int = 5  # AMQP heartbeat of the workers (and the broker's suggestion)


class HostWorker:
    """The `stream-processor worker` of one host, kept running (a crash or a kill: started again)."""

    def __init__(self, host: Host, broker_url: str, settings: ClusterSettings, directory: Path) -> None:
        self.host = host
        self.broker_url = broker_url
        self.settings = settings
        self.directory = directory
        self.hostname = f"host{host.name.removeprefix('h')}"
        self._supervisor: processes.Supervisor | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.hostname}.log"

    @property
    def pid(self) -> int | None:
        """The Celery worker's main process: its consumer, and the parent of its pool."""
        process = self._supervisor.process if self._supervisor else None
        return process.pid if process is not None else None

    @property
    def restarts(self) -> int:
        return self._supervisor.restarts if self._supervisor else 0

    def start(self) -> HostWorker:
        self._supervisor = processes.Supervisor(f"worker on {self.hostname}", self._spawn_ready, max_restarts=10)
        self._supervisor.start()
        return self

    def _command(self) -> list[str]:
        worker = [sys.executable, "-m", "stream_processor", "worker", "--broker", self.broker_url]
        worker += ["--concurrency", str(self.settings.concurrency), "--loglevel", "WARNING"]
        # Its own hostname, so its Celery node name and its results' worker names are its own.
        in_own_uts = ["unshare", "--uts", "sh", "-c", f'hostname {self.hostname} && exec "$@"', "sh"]
        return self.host.command(in_own_uts + worker)

    def _spawn_ready(self) -> subprocess.Popen:
        ready_file = self.directory / f"{self.hostname}.ready"
        ready_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            READY_FILE_ENV: str(ready_file),
            OWNED_ENV: "1",  # its pool dies with it, as on a real host
            BROKER_HEARTBEAT_ENV: str(self.settings.heartbeat_s),
        }
        with open(self.log_path, "ab") as log_stream:
            process = processes.spawn(self._command(), env=env, stdout=log_stream, stderr=subprocess.STDOUT)
        processes.wait_until_ready(
            process, ready_file.exists, WORKER_START_TIMEOUT_S, f"worker on {self.hostname}", poll_s=0.1
        )
        return process

    def signal(self, signum: int) -> None:
        if self.pid is not None:
            os.kill(self.pid, signum)

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop(signal.SIGTERM, grace_s=5.0)
            self._supervisor = None


class Cluster:
    """A broker host, `settings.hosts` worker hosts and a client host; see the module's doc."""

    def __init__(self, settings: ClusterSettings | None = None, directory: Path | None = None) -> None:
        self.settings = settings or ClusterSettings()
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="stream-processor-cluster-"))
        self.network = Network()
        self._broker: RabbitMQNode | None = None
        self.workers: list[HostWorker] = []
        self._client_host: Host | None = None
        self._clients: list[subprocess.Popen] = []
        self._torn_down = False

    @property
    def tag(self) -> str:
        return self.network.tag

    @property
    def broker(self) -> RabbitMQNode:
        assert self._broker is not None, "the cluster is not started"
        return self._broker

    @property
    def client_host(self) -> Host:
        assert self._client_host is not None, "the cluster is not started"
        return self._client_host

    def start(self) -> Cluster:
        atexit.register(self.teardown)  # the last guard: an interpreter that exits tears down too
        try:
            self._start()
        except BaseException:
            self.teardown()
            raise
        return self

    def _start(self) -> None:
        self.network.up()
        broker_host = self.network.add_host("broker", BROKER_NUMBER)
        self._client_host = self.network.add_host("client", CLIENT_NUMBER)
        hosts = [self.network.add_host(f"h{i + 1}", FIRST_WORKER_NUMBER + i) for i in range(self.settings.hosts)]
        broker = self._broker = RabbitMQNode(
            broker_host, self.directory / "rabbitmq", heartbeat_s=self.settings.heartbeat_s
        )
        broker.start()
        for host in hosts:
            self.workers.append(HostWorker(host, broker.url, self.settings, self.directory).start())
        log.info("cluster %s: broker at %s, %d worker hosts", self.tag, broker_host.address, len(hosts))

    def wait_until_healthy(self, timeout_s: float = 120.0) -> None:
        """Every host's worker consumes the task queue again (after a fault, before the next run)."""
        deadline = time.monotonic() + timeout_s
        while (self.broker.consumers(QUEUE) or 0) < len(self.workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster {self.tag}: not every host consumes {QUEUE} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def run_client(self, args: list[str], log_path: Path) -> subprocess.Popen:
        """`stream-processor ARGS --broker URL` in the client host; the cluster owns it."""
        command = [sys.executable, "-m", "stream_processor", *args, "--broker", self.broker.url]
        with open(log_path, "ab") as log_stream:
            process = processes.spawn(
                self.client_host.command(command), stdout=log_stream, stderr=subprocess.STDOUT, cwd=self.directory
            )
        self._clients.append(process)
        return process

    def stop_client(self, process: subprocess.Popen) -> None:
        processes.stop(process, signal.SIGTERM, grace_s=10.0)
        if process in self._clients:
            self._clients.remove(process)

    def teardown(self) -> None:
        """Stop everything, remove every namespace and link. Safe to call more than once."""
        if self._torn_down:
            return
        self._torn_down = True
        for process in list(self._clients):
            processes.stop(process, signal.SIGKILL, grace_s=0)
        self._clients.clear()
        for worker in self.workers:
            worker.stop()
        if self._broker is not None:
            self._broker.stop(grace_s=5.0)
        self.network.teardown()  # and whatever escaped: epmd, a pool process
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        atexit.unregister(self.teardown)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.teardown()
