"""Saying plainly when a run waits on work that nobody is doing, and acting on it.

A run with batches out and no result for `stall_s` seconds is stuck, or merely busy
with long events. The watchdog, on a thread of its own (it talks to the broker), then
asks the broker about the task queue: RabbitMQ says how many consumers it has, Redis
only how many tasks wait in it. It logs one warning saying what it found, which workers
went quiet, and what to do; again after twice the wait while the stall lasts; and a
line when results flow again. It never ends the run: workers may still come.

A worker can look alive and stop consuming (celery #8030, #8091, #10205: after a broker
reconnect). When the run has its own workers and nothing has come back for
`restart_after_s` (longer than any batch may run), the watchdog restarts them: their
tasks go back to the queue and run again. Workers started elsewhere are named, not
touched: they are not the run's to restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kombu import Connection

from stream_processor.redaction import safe_url

log = logging.getLogger(__name__)

DEFAULT_STALL_S = 10.0
CHECK_EVERY_S = 1.0


class Core(Protocol):
    """What the watchdog reads of the run's core (plain numbers, read from another thread)."""

    batches_out: int

    def idle_since(self) -> float | None: ...


class QueueState(Protocol):
    def __call__(self) -> tuple[int | None, int | None]: ...  # (tasks waiting, consumers), None if unknown


class StallWatchdog:
    def __init__(
        self,
        core: Core,
        broker_url: str,
        queue: str,
        stall_s: float = DEFAULT_STALL_S,
        clock: Callable[[], float] = time.monotonic,
        queue_state: QueueState | None = None,
        observations=None,
        restart: Callable[[], None] | None = None,
        restart_after_s: float | None = None,
    ) -> None:
        self.core = core
        self.observations = observations  # who ran what, lately: to name the workers that went quiet
        self.restart = restart  # the run's own workers, if any
        self.restart_after_s = restart_after_s
        self.restarts = 0
        self.broker = safe_url(broker_url)
        self.queue = queue
        self.stall_s = stall_s
        self.clock = clock
        self.queue_state = queue_state or (lambda: broker_queue_state(broker_url, queue))
        self.warnings: list[str] = []  # what it said, for the report and for tests
        self._next_warning_after = stall_s
        self._stalled = False
        self._restarted_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StallWatchdog:
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> StallWatchdog:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception as exc:  # a broker that does not answer is not a reason to die
                log.debug("watchdog check failed: %s", exc)

    def check(self) -> str | None:
        """Look once; return the warning it logged, if any."""
        idle_since = self.core.idle_since()
        waited = 0.0 if idle_since is None or not self.core.batches_out else self.clock() - idle_since
        if waited < self.stall_s:
            if self._stalled:
                log.warning("results are coming in again")
                self._stalled, self._next_warning_after = False, self.stall_s
            return None
        restart = self.restart
        if restart is not None and self.restart_after_s and waited >= self.restart_after_s:
            # Once restarted, the workers get as long again to bring a result (starting
            # them and handing back their tasks takes seconds), not one more check.
            if self._restarted_at is None or self.clock() - self._restarted_at >= self.restart_after_s:
                return self._restart_workers(waited, restart)
            return None
        if waited < self._next_warning_after:
            return None
        self._stalled = True
        self._next_warning_after = waited * 2
        message = self._describe_stall(waited)
        self.warnings.append(message)
        log.warning("%s", message)
        return message

    def _restart_workers(self, waited: float, restart: Callable[[], None]) -> str:
        message = (
            f"no result for {waited:.0f} s while {self.core.batches_out} tasks are out, longer than any batch may "
            f"run: restarting the run's workers (their tasks run again){self._quiet_workers()}"
        )
        log.warning("%s", message)
        self.warnings.append(message)
        self.restarts += 1
        self._restarted_at = self.clock()
        restart()
        self._stalled, self._next_warning_after = False, self.stall_s
        return message

    def _quiet_workers(self) -> str:
        """The worker processes that ran events lately and went quiet."""
        if self.observations is None:
            return ""
        now = self.clock()
        quiet = [
            worker
            for worker, seen in list(self.observations.workers.items())
            if now - seen.last_seen_at >= self.stall_s
        ]
        hosts = _by_host(quiet)
        named = ", ".join(hosts[:8]) + (" ..." if len(hosts) > 8 else "")
        return f"; quiet since their last result: {named}" if quiet else ""

    def _describe_stall(self, waited: float) -> str:
        waiting, consumers = self.queue_state()
        head = f"no result for {waited:.0f} s while {self.core.batches_out} tasks are out{self._quiet_workers()}"
        start_one = f"start one with: stream-processor worker --broker {self.broker} --queue {self.queue}"
        where = f"queue {self.queue} on {self.broker}"
        if consumers == 0 and waiting is not None:
            return f"{head}: nothing is consuming {where} ({waiting} tasks wait there); {start_one}"
        if consumers:
            return (
                f"{head}; queue {self.queue} has {consumers} consumers and {waiting} tasks waiting: "
                "long events, or workers that stopped taking tasks"
            )
        if waiting:
            return f"{head}, and {waiting} wait in {where}: is a worker consuming it? {start_one}"
        return f"{head}; still waiting for the workers ({where})"


def _by_host(workers: list[str]) -> list[str]:
    """ "host:pid" names grouped by host: `host1 (pids 7, 8)`, the host being what one acts on."""
    pids: dict[str, list[str]] = {}
    for worker in sorted(workers):
        host, _, pid = worker.rpartition(":")
        pids.setdefault(host or worker, []).append(pid)
    return [f"{host} (pid{'s' if len(ids) > 1 else ''} {', '.join(ids)})" for host, ids in pids.items()]


def broker_queue_state(url: str, queue: str) -> tuple[int | None, int | None]:
    """(tasks waiting, consumers) of a queue: RabbitMQ knows both; Redis only the first
    (its consumer count is always 0, so it is reported as unknown)."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.default_channel
        _, waiting, consumers = channel.queue_declare(queue=queue, passive=True)
        is_redis = connection.transport_cls in ("redis", "rediss", "redis+socket") or "redis" in url.split(":", 1)[0]
        return waiting, None if is_redis else consumers
