"""The broker kinds a benchmark runs on: the embedded Redis a run starts itself, and RabbitMQ."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from stream_processor.engine.broker import EMBEDDED, EmbeddedRedis
from stream_processor.redaction import safe_url

RABBITMQ = "rabbitmq"
KINDS = (EMBEDDED, RABBITMQ)
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@localhost:5672//"


@dataclass(frozen=True)
class Broker:
    kind: str
    url: str | None  # None: each run starts its own embedded Redis

    def run_flags(self) -> list[str]:
        """What run.py / run_streaming.py need to use this broker."""
        return ["--broker", self.url] if self.url else []

    @property
    def description(self) -> str:
        return safe_url(self.url) if self.url else "embedded redis (one per run)"


@contextmanager
def broker_url(broker: Broker) -> Iterator[str]:
    """A URL the harness itself can use: for the embedded kind, a fresh Redis of its own."""
    if broker.url:
        yield broker.url
        return
    with EmbeddedRedis() as redis:
        yield redis.url


def unreachable_reason(url: str) -> str | None:
    """Why `url` cannot be used (None if its host accepts a connection)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} not reachable ({exc.strerror or exc})"


def resolve(kinds: list[str], rabbitmq_url: str) -> tuple[list[Broker], dict[str, str]]:
    """The brokers to run on, and the ones skipped with the reason why."""
    brokers, skipped = [], {}
    for kind in kinds:
        if kind == EMBEDDED:
            brokers.append(Broker(EMBEDDED, None))
        elif reason := unreachable_reason(rabbitmq_url):
            skipped[kind] = reason
        else:
            brokers.append(Broker(RABBITMQ, rabbitmq_url))
    return brokers, skipped
