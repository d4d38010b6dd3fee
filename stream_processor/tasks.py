"""The Celery app, the reference task, and loading a user's `--task` function.

`celery -A stream_processor.tasks worker` works on any machine that reaches the broker.
The broker comes from STREAM_PROCESSOR_BROKER; the function a worker runs comes from
STREAM_PROCESSOR_TASK (or `stream-processor worker --task`), never from a message.
Results travel back as messages on the submitter's reply queue (the rpc:// backend),
so completions are pushed to the client rather than polled.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from stream_processor.processes import set_parent_death_signal

log = logging.getLogger(__name__)

BROKER_ENV = "STREAM_PROCESSOR_BROKER"
TASK_ENV = "STREAM_PROCESSOR_TASK"
QUEUE_ENV = "STREAM_PROCESSOR_QUEUE"
READY_FILE_ENV = "STREAM_PROCESSOR_READY_FILE"
OWNED_ENV = "STREAM_PROCESSOR_DIE_WITH_PARENT"

DEFAULT_BROKER = "amqp://guest:guest@localhost:5672//"
DEFAULT_TASK = "stream_processor.tasks:wait_and_return"
TASK_NAME = "stream_processor.process"
QUEUE = "stream_processor"  # shared by `--workers 0` runs and workers started on their own
RUN_QUEUE_PREFIX = "stream_processor.run."  # a run's private queue, for its own workers
RUN_QUEUE_TTL_S = 3600  # RabbitMQ drops a run's own queue after an hour unused (a crashed run)


def task_queue(name: str) -> Queue:
    """The queue tasks go through; a run's private queue expires if the run dies."""
    expiry = {"expires": RUN_QUEUE_TTL_S} if name.startswith(RUN_QUEUE_PREFIX) else {}
    return Queue(name, Exchange(name, type="direct"), routing_key=name, **expiry)


def make_app(broker_url: str | None = None, queue: str | None = None, backend: str = "rpc://") -> Celery:
    """The app workers run (results published to each task's reply_to queue), or, with
    backend="disabled", a submitting client that consumes its reply queue itself."""
    broker_url = broker_url or os.environ.get(BROKER_ENV, DEFAULT_BROKER)
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
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_queues=[task_queue(queue)],
        result_persistent=False,
        broker_connection_retry_on_startup=True,
        # Redis only: a task unacked for this long is handed out again. Keep it above
        # any task's run time, or a long task is run twice.
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


app = make_app()


def wait_and_return(event: dict[str, Any], time_scale: float = 1.0) -> dict[str, Any]:
    """The reference scoring function: hold a worker for `wait * time_scale` s, return the event."""
    wait = event["wait"] * time_scale
    start = time.time()
    while time.time() - start < wait:
        time.sleep(0.001)
    return event


def load_function(path: str) -> Callable[..., Any]:
    """Import `package.module:function` and return the function."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--task must look like package.module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--task {path}: cannot import {module_name} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"--task {path}: {module_name} has no function {attribute!r}")
    return function


@cache
def configured_task() -> tuple[str, Callable[..., Any], bool]:
    """The function this worker runs, fixed at start-up: (path, function, takes time_scale)."""
    path = os.environ.get(TASK_ENV) or DEFAULT_TASK
    function = load_function(path)
    return path, function, "time_scale" in inspect.signature(function).parameters


class TaskMismatch(Exception):
    """The submitter expects another function than the one this worker was started with."""


@app.task(name=TASK_NAME)
def process_event(event: dict[str, Any], time_scale: float = 1.0, expect: str = DEFAULT_TASK):
    path, function, takes_time_scale = configured_task()
    if expect != path:
        # The message only names what it expects; it never chooses the code that runs.
        raise TaskMismatch(f"this worker runs {path}, the client expects {expect}")
    if takes_time_scale:
        return function(event, time_scale=time_scale)
    return function(event)


@worker_ready.connect
def _announce_ready(**_kwargs) -> None:
    ready_file = os.environ.get(READY_FILE_ENV)
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))


@worker_process_init.connect
def _die_with_parent(**_kwargs) -> None:
    """Pool processes of a worker we started die with it, even if it is SIGKILLed."""
    if os.environ.get(OWNED_ENV):
        set_parent_death_signal(signal.SIGKILL)
    try:
        configured_task()  # import the user's function once per process, not per event
    except ValueError as exc:
        log.error("%s; every task on this worker will fail", exc)
