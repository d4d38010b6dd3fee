"""The raw Celery floor: how fast zero-wait events go through Celery with nothing else.

Same broker kind and worker concurrency as the pipeline, the same reference task and
messages, but no reading, no window, no reordering, no writing: send every event with
`send_task`, collect every result through an rpc:// backend. The pipeline cannot beat
this; `pipeline / floor` says what the pipeline's own machinery costs.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from typing import Any

from celery.result import ResultSet

from benchmarks.brokers import Broker, broker_url
from stream_processor.engine.celery_executor import delete_queue
from stream_processor.engine.tasks import DEFAULT_TASK, RUN_QUEUE_PREFIX, TASK_NAME, make_app, task_queue
from stream_processor.engine.workers import LocalWorkers


def celery_floor(broker: Broker, events: list[dict[str, Any]], workers: int, timeout_s: float) -> dict[str, Any]:
    """Send `events` to `workers` pool processes, wait for every result; events per second."""
    queue = f"{RUN_QUEUE_PREFIX}bench-{uuid.uuid4().hex[:12]}"  # private, and expires if we die
    with ExitStack() as stack:
        url = stack.enter_context(broker_url(broker))
        stack.callback(delete_queue, url, task_queue(queue))  # runs after the workers stop
        stack.enter_context(LocalWorkers(url, workers, DEFAULT_TASK, queue))
        app = make_app(url, queue, backend="rpc://")
        stack.callback(app.close)
        started = time.monotonic()
        pending = ResultSet([_send(app, event, queue) for event in events])
        results = pending.join_native(timeout=timeout_s, propagate=True)
        elapsed = time.monotonic() - started
    _check(results, events)
    return {"events": len(results), "elapsed_s": round(elapsed, 4), "events_per_s": round(len(results) / elapsed, 1)}


def _send(app, event: dict[str, Any], queue: str):
    # The very message the pipeline sends for a batch of one (see CeleryExecutor.submit), less the reply_to.
    kwargs = {"time_scale": 1.0, "expect": DEFAULT_TASK, "timeout_s": None}
    return app.send_task(TASK_NAME, args=([json.dumps(event)],), kwargs=kwargs, queue=queue)


def _check(results: list[Any], events: list[dict[str, Any]]) -> None:
    """The reference task returns its event unchanged: anything else means the floor measured something else."""
    unchanged = [["done", None]] * len(events)
    if len(results) != len(events) or [result["outcomes"][0][:2] for result in results] != unchanged:
        raise RuntimeError("the Celery floor got results that are not the events it sent")
