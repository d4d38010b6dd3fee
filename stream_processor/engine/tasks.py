"""The Celery app, the reference task, and loading a user's `--task` function.

`celery -A stream_processor.engine.tasks worker` works on any machine that reaches the broker.
The broker comes from STREAM_PROCESSOR_BROKER; the function a worker runs comes from
STREAM_PROCESSOR_TASK (or `stream-processor worker --task`), never from a message.
Results travel back as messages on the submitter's reply queue (the rpc:// backend),
so completions are pushed to the client rather than polled.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from kombu import Exchange, Queue
from kombu.utils.compat import detect_environment

from stream_processor.core.outcomes import LOST, TIMED_OUT
from stream_processor.engine.batch_run import BatchRun, Report, process_monitor
from stream_processor.engine.execution import load_function, run_events, when_too_many_abandoned
from stream_processor.engine.names import (
    BROKER_ENV,
    BROKER_HEARTBEAT_ENV,
    DEFAULT_BROKER,
    DEFAULT_BROKER_HEARTBEAT_S,
    DEFAULT_TASK,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    EVENTS_ENDED,
    OWNED_ENV,
    PUBLISH_RETRY_POLICY,
    QUEUE,
    QUEUE_ENV,
    READY_FILE_ENV,
    REDIS_MAX_CONNECTIONS,
    RUN_QUEUE_PREFIX,
    RUN_QUEUE_TTL_S,
    TASK_ENV,
    TASK_EVENTS_ENV,
    TASK_NAME,
    VISIBILITY_TIMEOUT_ENV,
)
from stream_processor.engine.processes import set_parent_death_signal

log = logging.getLogger(__name__)


def task_queue(name: str) -> Queue:
    """The queue tasks go through; a run's private queue expires if the run dies."""
    expiry = {"expires": RUN_QUEUE_TTL_S} if name.startswith(RUN_QUEUE_PREFIX) else {}
    return Queue(name, Exchange(name, type="direct"), routing_key=name, **expiry)


def make_app(
    broker_url: str | None = None, queue: str | None = None, backend: str = "rpc://", task_events: bool | None = None
) -> Celery:
    """The app workers run (results published to each task's reply_to queue), or, with
    backend="disabled", a submitting client that consumes its reply queue itself.
    `task_events` (default: $STREAM_PROCESSOR_TASK_EVENTS is 1): Celery's task events, sent
    and received, started, succeeded..., which Flower and Prometheus exporters read."""
    broker_url = broker_url or os.environ.get(BROKER_ENV, DEFAULT_BROKER)
    if task_events is None:
        task_events = os.environ.get(TASK_EVENTS_ENV) == "1"
    queue = queue or os.environ.get(QUEUE_ENV, QUEUE)
    app = Celery("stream_processor", broker=broker_url, backend=backend)
    app.conf.update(
        # JSON only, both ways: a pickle message is refused, never executed.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A short event must never wait behind a long one a busy process prefetched,
        # and a task whose worker dies goes back to the queue rather than being lost.
        task_acks_late=True,
        # A pool process that dies running a task (killed, or killed by the task) is
        # reported to the client as lost, which runs the event again up to --retries
        # times: an event that always kills its process must not be redelivered forever.
        # A whole worker that dies never acks: the broker hands its tasks out again.
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_queues=[task_queue(queue)],
        # Tasks and results are persistent messages on durable queues: a broker
        # restart loses neither.
        result_persistent=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for its broker to come back
        broker_heartbeat=_seconds_from_env(BROKER_HEARTBEAT_ENV, DEFAULT_BROKER_HEARTBEAT_S),
        # Redis only: a task unacked for this long is handed out again. Keep it above
        # any task's time limit, or a long task is run twice.
        broker_transport_options={
            "visibility_timeout": _seconds_from_env(VISIBILITY_TIMEOUT_ENV, DEFAULT_VISIBILITY_TIMEOUT_S),
            # Redis only: connections of a process, at most (made as needed). kombu's 10 is
            # too few for a threads or gevent worker whose tasks ack and reply at once:
            # "MaxConnectionsError: Too many connections", and a lost ack.
            "max_connections": REDIS_MAX_CONNECTIONS,
        },
        worker_hijack_root_logger=False,
        # Off unless asked for (--task-events): each task then costs a few event messages
        # more (see docs/guide/monitoring.md for what that measured).
        worker_send_task_events=task_events,
        task_send_sent_event=task_events,
        event_serializer="json",
    )
    return app


def _seconds_from_env(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


GREEN_POLL_S = 0.02  # how long a green worker on Redis waits for a task before it looks again


def _look_for_tasks_sooner_on_redis() -> None:
    """gevent and eventlet workers consume without an event loop (Celery's synloop: a
    drain of up to 2 s at a time). On Redis, once every greenlet holds a task, kombu stops
    asking for more and waits out that drain (kombu.transport.redis.MultiChannelPoller.get):
    a greenlet freed meanwhile idles up to 2 s. Each drain waits a few ms instead."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.MultiChannelPoller.get

    def get(self, callback, timeout=None):
        return original(self, callback, GREEN_POLL_S if timeout is None else min(timeout, GREEN_POLL_S))

    kombu_redis.MultiChannelPoller.get = get  # type: ignore[method-assign]  # a deliberate patch of kombu's method


if detect_environment() in ("gevent", "eventlet"):
    _look_for_tasks_sooner_on_redis()

app = make_app()


def wait_and_return(event: dict[str, Any], time_scale: float = 1.0) -> dict[str, Any]:
    """The reference scoring function: hold a worker for `wait * time_scale` s, return the event.

    It waits the way a scorer that calls a remote service does: asleep, using no CPU (a
    poll every millisecond, as it once did, cost 2 % of a core per worker: on 2 cores
    and 64 workers, most of the machine). A time limit's signal still interrupts it.
    """
    deadline = time.monotonic() + event["wait"] * time_scale
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)
    return event


@cache
def configured_task() -> tuple[str, Callable[..., Any], bool]:
    """The function this worker runs, fixed at start-up: (path, function, takes time_scale)."""
    path = os.environ.get(TASK_ENV) or DEFAULT_TASK
    function = load_function(path)
    return path, function, "time_scale" in inspect.signature(function).parameters


class TaskMismatch(Exception):
    """The submitter expects another function than the one this worker was started with."""


class MalformedBatch(Exception):
    """A message whose arguments are not a list of lines: not from a stream-processor client."""


_slot = threading.local()  # `number`: the slot the running task holds, in this thread or greenlet
_free_slots: list[int] = []  # heap: slots given back, lowest first
_new_slots = itertools.count(1)
_slots_lock = threading.Lock()


def worker_identity() -> str:
    """Who ran what, carried in each result: host:pid of a pool process (prefork), and
    host:pid/N for the Nth concurrent task of a process that runs many (threads, gevent):
    each counts as a worker (a run with workers elsewhere counts the workers it hears
    from). N is a slot, reused: gevent starts a greenlet per task."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    number = getattr(_slot, "number", None)
    return base if number is None else f"{base}/{number}"


@contextmanager
def _holding_a_slot() -> Iterator[None]:
    """A task of a process that runs many at once holds the lowest free slot while it runs."""
    if threading.current_thread() is threading.main_thread() and _green_environment() is None:
        yield  # prefork (or a lone process): the process is the worker
        return
    with _slots_lock:
        number = heapq.heappop(_free_slots) if _free_slots else next(_new_slots)
    _slot.number = number
    try:
        yield
    finally:
        _slot.number = None
        with _slots_lock:
            heapq.heappush(_free_slots, number)


def _green_environment() -> str | None:
    environment = detect_environment()
    return None if environment == "default" else environment


# A batch of events in, one outcome per event out (see execution.py). Retries are the
# client's: an event whose function raised comes back FAILED and is sent again alone.
@app.task(name=TASK_NAME, bind=True, throws=(TaskMismatch, MalformedBatch))
def run_batch(
    self,
    lines: list[str],
    time_scale: float = 1.0,
    expect: str = DEFAULT_TASK,
    timeout_s: float | None = None,
    sent_at: float | None = None,
    follows: list[int] | None = None,
    handback_after_s: float | None = None,
    isolate: bool = False,
) -> dict[str, Any]:
    with _holding_a_slot():
        return _run_batch(self, lines, time_scale, expect, timeout_s, sent_at, follows, handback_after_s, isolate)


def _run_batch(self, lines, time_scale, expect, timeout_s, sent_at, follows, handback_after_s, isolate):
    path, function, takes_time_scale = configured_task()
    if expect != path:
        # The message only names what it expects; it never chooses the code that runs.
        raise TaskMismatch(f"this worker runs {path}, the client expects {expect}")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise MalformedBatch("a batch is a list of JSON lines, as strings")
    if follows is not None and (
        not isinstance(follows, list)
        or len(follows) != len(lines)
        or not all(isinstance(index, int) and not isinstance(index, bool) for index in follows)
    ):
        raise MalformedBatch("follows must list, per line, the index of the line it follows (or -1)")
    call_kwargs = {"time_scale": time_scale} if takes_time_scale else {}
    timing = handoff_timing(sent_at)
    if isolate is True and len(lines) == 1:
        # An event that was running when a worker that runs many died: it may be what
        # killed it. It runs in a process of its own, so that it can kill only that.
        outcome = run_isolated(path, lines[0], timeout_s, call_kwargs)
        return {"worker": worker_identity(), "outcomes": [outcome], **timing}
    if (self.request.delivery_info or {}).get("redelivered"):
        # Its worker was lost (or cut off) with it, maybe after reporting some of its events:
        # run none of them; the client sends again only those it has no outcome for.
        everything = list(range(len(lines)))
        return {
            "worker": worker_identity(),
            "outcomes": [None] * len(lines),
            "handed_back": everything,
            "redelivered": True,
        }
    run = BatchRun(len(lines), _seconds(handback_after_s))
    outcomes, handed_back = _run_reporting(self, run, function, lines, timeout_s, call_kwargs, follows)
    _last_batch_end.at = time.time()
    return {"worker": worker_identity(), "outcomes": outcomes, "handed_back": list(handed_back), **timing}


def _run_reporting(task, run: BatchRun, function, lines, timeout_s, call_kwargs, follows):
    """Run a batch's events; while it runs, the process's monitor publishes each event's
    outcome soon after it ends, the tail it hands back, and the event running once it runs
    long (see batch_run.py)."""
    request, backend = task.request, task.backend  # the monitor's thread has no request of its own
    monitor = process_monitor()
    worker = worker_identity()  # the runner's: the monitor's thread is not the worker running it
    monitor.watch(run, lambda report: _publish(backend, request, report, worker))
    try:
        outcomes = run_events(function, lines, timeout_s, call_kwargs, follows, run)
    finally:
        handed_back = run.finish()
        monitor.unwatch(run)
    return outcomes, handed_back


def _publish(backend, request, report: Report, worker: str) -> None:
    ended = [[index, *outcome] for index, outcome in sorted(report.outcomes.items())]
    meta = {"worker": worker, "ended": ended, "handed_back": list(report.handed_back)}
    if report.running is not None:
        meta["running"] = list(report.running)  # [index, seconds it has run]
    backend.store_result(request.id, meta, EVENTS_ENDED, request=request)


def _seconds(value: Any) -> float | None:
    """A number of seconds from a message, or None (not a positive finite number)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    return None


_last_batch_end = threading.local()  # `at`: in this pool process, thread or greenlet


def run_isolated(path: str, line: str, timeout_s: float | None, call_kwargs: dict[str, Any]) -> list:
    """One event's outcome, run in a child process (`python -m stream_processor.engine.isolated`):
    its main thread gets the time limit's signal, and if the function ends the process,
    only the child dies: the event is LOST (and the run counts an attempt)."""
    request = {"task": path, "line": line, "timeout_s": timeout_s, "call_kwargs": call_kwargs}
    limit = hard_time_limit(timeout_s) if timeout_s else None
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "stream_processor.engine.isolated"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, TASK_ENV: path},
    )
    try:
        out, err = child.communicate(json.dumps(request).encode(), timeout=limit)
    except Exception as exc:
        # eventlet's green subprocess has a TimeoutExpired of its own, and raises the stdlib's.
        if not any(cls.__name__ == "TimeoutExpired" for cls in type(exc).__mro__):
            child.kill()
            raise
        child.kill()
        child.communicate()
        return [TIMED_OUT, f"killed at the hard time limit of {limit:g} s", time.perf_counter() - started]
    run_s = time.perf_counter() - started
    try:
        outcome = json.loads(out)
    except ValueError:
        why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {child.returncode}"]
        return [LOST, f"its process died running it alone (code {child.returncode}): {why[0]}", run_s]
    return outcome


def hard_time_limit(task_timeout_s: float) -> float:
    """Seconds after which a task that ignores its time limit is killed."""
    return task_timeout_s + max(1.0, 0.1 * task_timeout_s)


def handoff_timing(sent_at: float | None) -> dict[str, float | None]:
    """How long this process sat idle before this batch (`gap_s`), and how long the
    batch waited since it was sent (`waited_s`). When the batch waited longer than the
    process idled, it was already queued: the gap is what Celery costs between tasks,
    which the client weighs batch sizes against."""
    now = time.time()
    last = getattr(_last_batch_end, "at", 0.0)
    gap = now - last if last else None
    waited = now - sent_at if isinstance(sent_at, int | float) and not isinstance(sent_at, bool) else None
    return {"gap_s": gap, "waited_s": waited}


@worker_init.connect
def _recycle_when_threads_pile_up(**_kwargs) -> None:
    """Threads pool: events past their limit leave threads running (execution.call_within).
    When too many pile up, this worker shuts down warmly (the tasks it runs end and are
    acked first) and exits 0: the run starts it again (worker_group.py); a worker started
    on its own needs its supervisor (systemd, Kubernetes) to."""
    asked: list[int] = []

    def recycle(count: int) -> None:
        if not asked:
            asked.append(count)
            log.warning("%d threads left running past their time limit: restarting this worker", count)
            os.kill(os.getpid(), signal.SIGTERM)

    when_too_many_abandoned(recycle)


@worker_ready.connect
def _announce_ready(**_kwargs) -> None:
    ready_file = os.environ.get(READY_FILE_ENV)
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))


# The client parses each line before sending it, with Python's usual recursion limit and a
# shallow stack; here a line is parsed deeper in Celery's stack. Room to spare, so that a
# line the client took is never refused here for its depth (the C stack has plenty).
WORKER_RECURSION_LIMIT = 4000


@worker_process_init.connect
def _die_with_parent(**_kwargs) -> None:
    """Pool processes of a worker we started die with it, even if it is SIGKILLed."""
    if os.environ.get(OWNED_ENV):
        set_parent_death_signal(signal.SIGKILL)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), WORKER_RECURSION_LIMIT))
    try:
        configured_task()  # import the user's function once per process, not per event
    except ValueError as exc:
        log.error("%s; every task on this worker will fail", exc)
