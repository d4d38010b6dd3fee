"""A private RabbitMQ node for a test cluster, started inside a host's network namespace.

Everything it keeps lies in a directory of its own (database, logs, config, Erlang
cookie, HOME), so it shares nothing with the machine's RabbitMQ, which listens on
127.0.0.1 only. It listens on every address of its namespace, which is the bridge
address alone. RabbitMQ lets `guest` in over loopback only, so the node makes a user
with a password at its first boot. The database outlives `stop()`: `start()` again is a
broker restart, with its durable queues and persistent messages.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import time
from pathlib import Path

from harness.netns import Host
from stream_processor.engine import processes

log = logging.getLogger(__name__)

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
PORT = 5672
# RabbitMQ's default: a late-acked task unacked for 30 min has its channel closed (celery #6760).
CONSUMER_TIMEOUT_MS = 30 * 60 * 1000
START_TIMEOUT_S = 90.0


class RabbitMQNode:
    """One `rabbitmq-server`, owned: `start()`, `stop()`, `start()` again, `stop()`."""

    def __init__(self, host: Host, directory: Path, user: str = "stream", heartbeat_s: int = 5) -> None:
        self.host = host
        self.directory = directory
        self.user = user
        self.password = secrets.token_hex(8)
        self.heartbeat_s = heartbeat_s
        self.process: subprocess.Popen | None = None
        self._write_files()

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host.address}:{PORT}//"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.out"

    def _write_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {PORT}",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    f"heartbeat = {self.heartbeat_s}",
                    f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
                    "log.console = true",
                    "log.file = false",
                    "",
                ]
            )
        )
        (self.directory / "enabled_plugins").write_text("[].\n")
        cookie = self.directory / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)

    def _environment(self) -> dict[str, str]:
        base = self.directory
        return {
            "PATH": f"{RABBITMQ_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(base),  # where Erlang finds the node's own cookie
            "RABBITMQ_NODENAME": "rabbit@localhost",  # its own namespace: its own epmd and localhost
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        }

    def start(self) -> RabbitMQNode:
        with open(self.log_path, "ab") as log_stream:
            self.process = processes.spawn(
                self.host.command([str(RABBITMQ_BIN / "rabbitmq-server")]),
                env=self._environment(),
                stdout=log_stream,
                stderr=subprocess.STDOUT,
            )
        processes.wait_until_ready(
            self.process, self.accepts_connections, START_TIMEOUT_S, "rabbitmq-server", poll_s=0.25,
            why_it_exited=self._log_tail,
        )  # fmt: skip
        log.info("RabbitMQ up at %s in %s", self.host.address, self.host.namespace)
        return self

    def accepts_connections(self) -> bool:
        """Whether the AMQP port answers, asked from inside the node's namespace."""
        probe = f"exec 3<>/dev/tcp/{self.host.address}/{PORT}"
        return subprocess.run(self.host.command(["bash", "-c", probe]), capture_output=True).returncode == 0

    def consumers(self, queue: str) -> int | None:
        """How many consumers `queue` has (None: the node did not say)."""
        listing = subprocess.run(
            self.host.command([str(RABBITMQ_BIN / "rabbitmqctl"), "list_queues", "-q", "--no-table-headers"]
            + ["name", "consumers"]),
            env=self._environment(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        for line in listing.stdout.splitlines():
            name, _, count = line.rpartition("\t")
            if name.strip() == queue and count.strip().isdigit():
                return int(count)
        return None

    def stop(self, first_signal: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
        """Stop the server (its database stays). epmd stays too: the network's teardown ends it."""
        if self.process is not None:
            processes.stop(self.process, first_signal, grace_s)
            self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)  # the fault's length, not a synchronisation
        self.start()

    def _log_tail(self) -> str:
        return processes.log_tail(self.log_path, chars=1500)
