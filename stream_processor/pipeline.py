"""Everything a run owns, started in order and stopped in reverse: broker, workers,
executor, sink, processor. File mode and streaming mode both run inside `pipeline()`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stream_processor import broker as brokers
from stream_processor.celery_executor import CeleryExecutor, delete_queue, hard_time_limit
from stream_processor.ideal import IdealSchedule
from stream_processor.metrics import RunMetrics
from stream_processor.plot import RunTrace, check_plotting, draw_run
from stream_processor.processor import OnWritten, StreamProcessor
from stream_processor.records import Record, Validator, check_wait
from stream_processor.report import RunStats, build_report, write_report
from stream_processor.sink import JsonlSink
from stream_processor.tasks import (
    DEFAULT_TASK,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    QUEUE,
    RETRY_BACKOFF_MAX_S,
    RUN_QUEUE_PREFIX,
    load_function,
    task_queue,
)
from stream_processor.workers import LocalWorkers

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    output: Path = Path("results.json")
    workers: int = 12
    broker: str | None = None
    time_scale: float = 1.0
    task: str = DEFAULT_TASK
    max_in_flight: int = 1000
    report: Path | None = None
    resume: bool = False
    queue: str = QUEUE  # where tasks go when the workers run elsewhere (--workers 0)
    retries: int = 2
    retry_backoff_s: float = 1.0
    task_timeout_s: float | None = 300.0  # None or 0: no limit
    plot: Path | None = None  # draw the run here (PNG) at the end
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1 (0: any free port)

    def check(self) -> None:
        """Reject bad settings before anything starts (usage errors, exit code 2)."""
        if self.workers < 0:
            raise ValueError("--workers must be 0 or more")
        if self.max_in_flight < 1:
            raise ValueError("--max-in-flight must be at least 1")
        if not self.time_scale >= 0:
            raise ValueError("--time-scale must be a non-negative number")
        if self.retries < 0 or not self.retry_backoff_s >= 0:
            raise ValueError("--retries and --retry-backoff must be 0 or more")
        if self.task_timeout_s is not None and not self.task_timeout_s >= 0:
            raise ValueError("--task-timeout must be 0 (none) or more")
        if self.plot:
            try:
                check_plotting()
            except ImportError as exc:
                raise ValueError(f"--plot: {exc}") from None
        if self.workers:
            load_function(self.task)  # the local workers will import it: fail here, clearly
        elif brokers.resolve_broker(self.broker) is None:
            raise ValueError("--workers 0 needs --broker URL: workers elsewhere cannot reach the embedded broker")

    @property
    def runs_reference_task(self) -> bool:
        return self.task == DEFAULT_TASK

    def duration_of(self, record: Record) -> float | None:
        """The reference task's run time for this event (0 for a bad line, never sent); None if unknown."""
        if not self.runs_reference_task:
            return None
        return 0.0 if record.error else record.event["wait"] * self.time_scale

    def validator(self) -> Validator | None:
        """Events must carry a valid `wait` only for the reference task, which reads it."""
        return check_wait if self.runs_reference_task else None


class Observer(Protocol):
    """What watches a run: its figures, its live metrics, its plot."""

    def on_read(self, duration_s: float | None, arrival_s: float) -> None: ...

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None: ...


@dataclass
class Pipeline:
    options: RunOptions
    processor: StreamProcessor
    stats: RunStats
    broker_name: str
    start_offset: int
    observers: list[Observer]
    trace: RunTrace | None = None

    def take(self, record: Record, arrival_s: float = 0.0, source: str = "input") -> None:
        """One event in: counted, compared with the ideal, submitted (blocks on a full window)."""
        if record.error:
            log.error("%s:%d: %s", source, record.line_number, record.error)
        duration = self.options.duration_of(record)
        for observer in self.observers:
            observer.on_read(duration, arrival_s)
        self.processor.submit(record)

    def report(self, **extra: Any) -> dict[str, Any]:
        """The run's figures (also written to --report, drawn to --plot); call it once everything has stopped."""
        report = build_report(self.stats, self.options.workers, self.broker_name, **extra)
        if self.options.report:
            write_report(self.options.report, report)
        if self.options.plot and self.trace is not None:
            draw_run(self.trace, self.options.plot, title=f"{self.options.workers} workers on {self.broker_name}")
        return report


@contextmanager
def pipeline(options: RunOptions, on_written: OnWritten | None = None) -> Iterator[Pipeline]:
    """Start what `options` asks for; `on_written` is called per line, after the run's stats."""
    stats = RunStats()
    ideal_workers = options.workers if options.runs_reference_task and options.workers else None
    if ideal_workers:
        stats.ideal = IdealSchedule(ideal_workers)
    observers: list[Observer] = [stats]
    trace = RunTrace(workers=ideal_workers) if options.plot else None
    processor: StreamProcessor | None = None

    def give_up(reason: Exception) -> None:  # a broker or worker that keeps dying ends the run
        if processor is not None:
            processor.fail(reason)

    with ExitStack() as stack:
        if options.metrics_port is not None:
            observers.append(stack.enter_context(_serve_metrics(options.metrics_port)))
        if trace is not None:
            observers.append(trace)
        broker = stack.enter_context(brokers.broker_for_run(options.broker, on_give_up=give_up))
        queue = options.queue
        if options.workers:
            queue = f"{RUN_QUEUE_PREFIX}{uuid.uuid4().hex[:12]}"
            stack.callback(delete_queue, broker.url, task_queue(queue))  # runs after the workers stop
        sink = stack.enter_context(JsonlSink(options.output, resume=options.resume))
        if sink.start_offset:
            log.info("resuming %s after %d complete lines", options.output, sink.start_offset)
        executor = CeleryExecutor(
            broker.url,
            options.task,
            options.time_scale,
            queue,
            retries=options.retries,
            backoff_s=options.retry_backoff_s,
            task_timeout_s=options.task_timeout_s,
        )
        processor = StreamProcessor(
            executor,
            sink,
            options.max_in_flight,
            start_offset=sink.start_offset,
            on_written=_fan_out(observers, on_written),
        )
        if options.workers:
            stack.enter_context(_local_workers(options, broker, queue, give_up))
        processor.start()
        stack.callback(processor.close)
        yield Pipeline(options, processor, stats, broker.name, sink.start_offset, observers, trace)


def _local_workers(options: RunOptions, broker: brokers.RunBroker, queue: str, give_up) -> LocalWorkers:
    hard_limit = hard_time_limit(options.task_timeout_s) if options.task_timeout_s else 0.0
    return LocalWorkers(
        broker.url,
        options.workers,
        options.task,
        queue,
        # Redis hands out again a task unacked this long: keep it well above any attempt.
        visibility_timeout_s=max(DEFAULT_VISIBILITY_TIMEOUT_S, 2 * hard_limit + RETRY_BACKOFF_MAX_S),
        # Our own Redis has no other consumer: a dead worker's tasks can go back at once.
        after_crash=(lambda: brokers.requeue_unacked(broker.url)) if broker.embedded else None,
        on_give_up=give_up,
    )


def _serve_metrics(port: int) -> RunMetrics:
    metrics = RunMetrics()
    bound = metrics.serve(port)
    log.info("serving Prometheus metrics at http://127.0.0.1:%d/metrics", bound)
    return metrics


def _fan_out(observers: list[Observer], on_written: OnWritten | None) -> OnWritten:
    """One on_written hook that tells every observer (the caller's last)."""
    hooks = [observer.on_written for observer in observers] + ([on_written] if on_written else [])

    def tell_all(offset: int, latency_s: float, is_error: bool) -> None:
        for hook in hooks:
            hook(offset, latency_s, is_error)

    return tell_all
