"""Running batches of events as Celery tasks, with results pushed back on a reply queue
of our own.

Each task (one batch) is sent with `reply_to` naming a queue this client declared; the
worker's rpc:// result backend publishes the task's final state there, whatever it is
(success, exception, time limit, lost worker), and, while a batch runs, a report of its
events as they end (state EVENTS_ENDED: see batch_run.py). A consumer thread receives
those messages as the broker delivers them: no per-task polling of a result store. A
reply is matched to its batch by task id; the first final reply for a batch counts, any
later one is dropped and counted (`late_replies_dropped`): a redelivered task, or a host
cut off from the broker that comes back and publishes what another host already did.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from typing import Any, TypeGuard

from celery import states
from kombu import Connection, Queue
from kombu.mixins import ConsumerMixin

from stream_processor.core.outcomes import FAILED, INVALID, LOST, TIMED_OUT
from stream_processor.engine.executor import (
    Batch,
    Completion,
    OnComplete,
    Reply,
    completions_of,
    follows_of,
    well_formed,
)
from stream_processor.engine.tasks import DEFAULT_TASK, EVENTS_ENDED, QUEUE, TASK_NAME, hard_time_limit, make_app

log = logging.getLogger(__name__)

REPLY_QUEUE_TTL_S = 24 * 3600  # RabbitMQ drops an abandoned reply queue after a day


def batch_hard_limit(task_timeout_s: float | None, events: int) -> dict[str, float]:
    """Celery's hard limit for a batch: each event has its own soft limit inside it (it
    raises in the function); this kills a batch whose event swallowed that. Its events
    then run alone, so the culprit alone is killed at the plain hard limit."""
    if not task_timeout_s:
        return {}
    return {"time_limit": (events - 1) * task_timeout_s + hard_time_limit(task_timeout_s)}


class CeleryExecutor:
    """Submit batches to Celery workers through `broker_url`; collect replies on a thread."""

    def __init__(
        self,
        broker_url: str,
        task_path: str = DEFAULT_TASK,
        time_scale: float = 1.0,
        queue: str = QUEUE,
        start_timeout_s: float = 30.0,
        task_timeout_s: float | None = None,
        task_events: bool = False,
    ) -> None:
        # No result backend on this side: it would declare a reply queue per thread that
        # nobody consumes. Workers still publish results to our `reply_to` queue.
        # With task events, it sends each task's task-sent event (Flower shows it as sent).
        self.app = make_app(broker_url, queue, backend="disabled", task_events=task_events)
        self.queue = queue
        self.start_timeout_s = start_timeout_s
        self.task_timeout_s = task_timeout_s
        # What every task of the run carries besides its lines, built once, not per batch.
        self._task_kwargs = {"time_scale": time_scale, "expect": task_path, "timeout_s": task_timeout_s}
        self.run_id = uuid.uuid4().hex[:12]
        self._sequence = itertools.count()
        self._in_flight: dict[str, Batch] = {}  # task id -> its batch, until its final reply
        self.late_replies_dropped = 0  # replies for a task of ours already answered (reply thread only)
        self.reply_queue = Queue(
            f"stream_processor.replies.{self.run_id}",
            routing_key=f"stream_processor.replies.{self.run_id}",
            durable=True,  # survives a broker restart, so replies sent meanwhile wait for us
            auto_delete=False,
            expires=REPLY_QUEUE_TTL_S,
        )
        self._collector: _ReplyCollector | None = None
        self._thread: threading.Thread | None = None
        self._producer = None  # one for the run: acquiring one per task costs more than the send

    def start(self, on_complete: OnComplete) -> None:
        self._collector = _ReplyCollector(
            Connection(self.app.conf.broker_url, transport_options=self._transport_options()),
            self.reply_queue,
            self._to_reply,
            on_complete,
        )
        self._thread = threading.Thread(
            target=self._collector.run, kwargs={"safety_interval": 0.25}, name="reply-collector", daemon=True
        )
        self._thread.start()
        if not self._collector.ready.wait(self.start_timeout_s):
            self.close()
            raise ConnectionError(f"cannot consume replies from the broker within {self.start_timeout_s:.0f} s")

    def _transport_options(self) -> dict[str, Any]:
        return dict(self.app.conf.broker_transport_options or {})

    def submit(self, batch: Batch) -> None:
        task_id = f"{self.run_id}.{next(self._sequence)}"
        self._in_flight[task_id] = batch  # before sending: the reply may come back at once
        tasks = batch.tasks
        self.app.send_task(
            TASK_NAME,
            args=([task.line for task in tasks],),
            kwargs=self._kwargs_for(batch),
            task_id=task_id,
            queue=self.queue,
            reply_to=self.reply_queue.name,
            producer=self._sending_producer(),
            # Celery would otherwise repr() every line into the message headers, for logs.
            argsrepr=f"({len(tasks)} events from offset {tasks[0].offset},)",
            kwargsrepr="",
            **batch_hard_limit(self.task_timeout_s, len(tasks)),
        )

    def _kwargs_for(self, batch: Batch) -> dict[str, Any]:
        kwargs = {**self._task_kwargs, "sent_at": time.time()}
        follows = follows_of(batch.tasks)
        if follows:
            kwargs["follows"] = follows
        if batch.handback_after_s is not None and len(batch.tasks) > 1:
            kwargs["handback_after_s"] = batch.handback_after_s
        if batch.isolate:
            kwargs["isolate"] = True
        return kwargs

    def _sending_producer(self):
        """Submit is called from one thread (the run's core), which owns this producer."""
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)
        return self._producer

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    def _to_reply(self, task_id: str, status: str, result: Any) -> Reply | None:
        """The reply a result message stands for, or None: a report for a batch already
        answered (it overtook nothing: the final reply carried it all), a final reply
        already counted (a repeat after a redelivery, a worker that comes back late), or
        a message that is not ours."""
        if status == EVENTS_ENDED:
            batch = self._in_flight.get(task_id)
            return None if batch is None else _report_of(batch, result)
        batch = self._in_flight.pop(task_id, None)
        if batch is None:
            if task_id.startswith(f"{self.run_id}.") and status in states.READY_STATES:
                self.late_replies_dropped += 1
                log.info("dropped a late reply for task %s: already answered", task_id)
            return None
        tasks = batch.tasks
        if status == states.SUCCESS:
            result = result if isinstance(result, dict) else {}
            worker = result.get("worker")
            handed_back = _indexes(result.get("handed_back"), len(tasks))
            completions = completions_of(
                tasks,
                result.get("outcomes"),
                worker if isinstance(worker, str) else None,
                _handoff_s(result),
                handed_back,
            )
            back = tuple(tasks[index].offset for index in handed_back)
            return Reply(batch.id, completions, back, redelivered=result.get("redelivered") is True)
        kind, why = _failure_of(status, result, self.task_timeout_s, len(tasks))
        return Reply(batch.id, [Completion(task.offset, kind, why) for task in tasks])

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()
            self._producer = None
        if self._collector is not None:
            self._collector.should_stop = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._delete_reply_queue()
        self.app.close()

    def _delete_reply_queue(self) -> None:
        delete_queue(self.app.conf.broker_url, self.reply_queue)


def delete_queue(broker_url: str, queue: Queue) -> None:
    """Best effort: RabbitMQ also expires our queues on its own once unused."""
    try:
        with Connection(broker_url, connect_timeout=2) as connection:
            queue(connection.default_channel).delete()
    except Exception as exc:
        log.debug("could not delete queue %s: %s", queue.name, exc)


class _ReplyCollector(ConsumerMixin):
    """Consumes rpc:// result messages and turns final states into completions."""

    def __init__(self, connection: Connection, queue: Queue, to_reply, on_complete: OnComplete):
        self.connection = connection
        self.queue = queue
        self.to_reply = to_reply
        self.on_complete = on_complete
        self.ready = threading.Event()

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self.queue], callbacks=[self.on_reply], accept=["json"], no_ack=True)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs) -> None:
        self.ready.set()

    def on_connection_error(self, exc, interval) -> None:
        log.warning("broker connection lost (%s); retrying in %.1f s", exc, interval)

    def on_reply(self, body: Any, message) -> None:
        if not isinstance(body, dict) or body.get("status") not in (*states.READY_STATES, EVENTS_ENDED):
            return  # STARTED and the like: nothing to act on
        reply = self.to_reply(str(body.get("task_id")), body["status"], body.get("result"))
        if reply is not None:
            self.on_complete(reply)


def _report_of(batch: Batch, result: Any) -> Reply | None:
    """A running batch's report: its events that ended (each [index, kind, value, run_s])
    and those handed back; None if it is not well formed (the final reply will say)."""
    tasks = batch.tasks
    if not isinstance(result, dict) or not isinstance(result.get("ended"), list):
        return None
    worker = result.get("worker") if isinstance(result.get("worker"), str) else None
    completions = []
    for item in result["ended"]:
        if not isinstance(item, list) or len(item) != 4 or not _indexes(item[:1], len(tasks)):
            return None
        index, *outcome = item
        if not well_formed(outcome):
            return None
        kind, value, run_s = outcome
        completions.append(Completion(tasks[index].offset, kind, value, run_s, worker))
    back = tuple(tasks[index].offset for index in _indexes(result.get("handed_back"), len(tasks)))
    return Reply(batch.id, completions, back, final=False, running=_running(result, tasks), worker=worker)


def _running(result: dict[str, Any], tasks: list) -> tuple[int, float] | None:
    """(offset, seconds it has run) of the event a report names as running, if well formed."""
    running = result.get("running")
    if not isinstance(running, list) or len(running) != 2 or not _indexes(running[:1], len(tasks)):
        return None
    seconds = running[1]
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds < float("inf"):
        return None
    return tasks[running[0]].offset, float(seconds)


def _indexes(value: Any, size: int) -> tuple[int, ...]:
    """Indexes into a batch of `size`, from a message: well-formed ones only."""
    if not isinstance(value, list):
        return ()
    return tuple(i for i in value if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size)


def _handoff_s(result: dict[str, Any]) -> float | None:
    """Celery's cost between two tasks on one process, if this batch measured it: it was
    already waiting when its process finished the one before (see tasks.handoff_timing)."""
    gap, waited = result.get("gap_s"), result.get("waited_s")
    if not (_is_number(gap) and _is_number(waited)):
        return None
    return gap if 0 <= gap < waited else None


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _failure_of(status: str, result: Any, task_timeout_s: float | None, events: int) -> tuple[str, str]:
    """What a batch that did not return means for each of its events: (kind, why)."""
    kind, message = status, result
    if isinstance(result, dict) and "exc_type" in result:
        kind, message = result["exc_type"], result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
    if kind == "WorkerLostError":
        return LOST, f"{kind}: {message}"
    if kind == "TimeLimitExceeded":
        if events > 1:
            return LOST, f"the batch was killed at its hard time limit of {message} s"
        return TIMED_OUT, f"killed at the hard time limit of {hard_time_limit(task_timeout_s or 0):g} s"
    if kind in ("TaskMismatch", "MalformedBatch"):
        return INVALID, f"{kind}: {message}"
    return FAILED, f"{kind}: {message}"
