"""Running events as Celery tasks, with results pushed back on a reply queue of our own.

Each task is sent with `reply_to` naming a queue this client declared; the worker's
rpc:// result backend publishes the task's final state there, whatever it is (success,
exception, time limit, revoked). A consumer thread receives those messages as the
broker delivers them: no per-task polling of a result store. The task id carries the
run id and the offset, so a reply is matched without any lookup table.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from celery import states
from kombu import Connection, Queue
from kombu.mixins import ConsumerMixin

from stream_processor.executor import OnComplete
from stream_processor.tasks import DEFAULT_TASK, QUEUE, TASK_NAME, make_app

log = logging.getLogger(__name__)

REPLY_QUEUE_TTL_S = 24 * 3600  # RabbitMQ drops an abandoned reply queue after a day


def time_limits(task_timeout_s: float | None) -> dict[str, float]:
    """Celery's soft limit raises in the task; the hard one kills a task that ignores it."""
    if not task_timeout_s:
        return {}
    return {"soft_time_limit": task_timeout_s, "time_limit": hard_time_limit(task_timeout_s)}


def hard_time_limit(task_timeout_s: float) -> float:
    return task_timeout_s + max(1.0, 0.1 * task_timeout_s)


class CeleryExecutor:
    """Submit events to Celery workers through `broker_url`; collect replies on a thread."""

    def __init__(
        self,
        broker_url: str,
        task_path: str = DEFAULT_TASK,
        time_scale: float = 1.0,
        queue: str = QUEUE,
        start_timeout_s: float = 30.0,
        retries: int = 0,
        backoff_s: float = 1.0,
        task_timeout_s: float | None = None,
    ) -> None:
        # No result backend on this side: it would declare a reply queue per thread that
        # nobody consumes. Workers still publish results to our `reply_to` queue.
        self.app = make_app(broker_url, queue, backend="disabled")
        self.queue = queue
        self.start_timeout_s = start_timeout_s
        # What every task of the run carries besides its event, built once, not per event.
        self._task_kwargs = {"time_scale": time_scale, "expect": task_path, "retries": retries, "backoff_s": backoff_s}
        self._time_limits = time_limits(task_timeout_s)
        self.run_id = uuid.uuid4().hex[:12]
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
            self.run_id,
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

    def submit(self, offset: int, event: dict[str, Any]) -> None:
        self.app.send_task(
            TASK_NAME,
            args=(event,),
            kwargs=self._task_kwargs,
            task_id=f"{self.run_id}:{offset}",
            queue=self.queue,
            reply_to=self.reply_queue.name,
            producer=self._sending_producer(),
            # Celery would otherwise repr() every event into the message headers, for logs.
            argsrepr=f"(event at offset {offset},)",
            kwargsrepr="",
            **self._time_limits,
        )

    def _sending_producer(self):
        """Submit is called from one thread (the run's intake), which owns this producer."""
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)
        return self._producer

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

    def __init__(self, connection: Connection, queue: Queue, run_id: str, on_complete: OnComplete):
        self.connection = connection
        self.queue = queue
        self.run_id = run_id
        self.on_complete = on_complete
        self.ready = threading.Event()

    def get_consumers(self, Consumer, channel):  # noqa: N803 - kombu's signature
        return [Consumer(queues=[self.queue], callbacks=[self.on_reply], accept=["json"], no_ack=True)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs) -> None:
        self.ready.set()

    def on_connection_error(self, exc, interval) -> None:
        log.warning("broker connection lost (%s); retrying in %.1f s", exc, interval)

    def on_reply(self, body: dict[str, Any], message) -> None:
        status = body.get("status")
        if status not in states.READY_STATES:
            return  # RETRY, STARTED: the task is not done yet
        run_id, _, offset = str(body.get("task_id", "")).partition(":")
        if run_id != self.run_id or not offset.isdigit():
            log.debug("ignoring a reply for another run: %s", body.get("task_id"))
            return
        if status == states.SUCCESS:
            self.on_complete(int(offset), True, body.get("result"))
        else:
            self.on_complete(int(offset), False, _error_text(status, body.get("result")))


def _error_text(status: str, result: Any) -> str:
    """One line for an error record: what went wrong, without Celery's wrapping."""
    if isinstance(result, dict) and "exc_type" in result:
        kind, message = result["exc_type"], result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(part) for part in message)
        if kind == "EventFailed":
            return f"failed: {message}"
        if kind == "EventTimedOut":
            return f"timed out: {message}"
        if kind == "TimeLimitExceeded":
            return f"timed out: killed at the hard time limit of {message} s"
        return f"{kind}: {message}"
    return f"{status}: {result}"
