"""Everything a run owns, started in order and stopped in reverse: metrics, output,
broker, workers, executor, the run's core. File mode and streaming mode both run inside
`pipeline()`; their settings are `RunOptions` (run/options.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_processor.core.ordering import TOTAL
from stream_processor.core.processor import Observer, StreamProcessor
from stream_processor.core.records import Record, count_blank_lines
from stream_processor.core.retries import RetryPolicy
from stream_processor.engine import broker as brokers
from stream_processor.engine.celery_executor import CeleryExecutor, delete_queue, hard_time_limit
from stream_processor.engine.names import DEFAULT_VISIBILITY_TIMEOUT_S, RUN_QUEUE_PREFIX
from stream_processor.engine.tasks import task_queue
from stream_processor.engine.workers import PREFORK_WORKERS_THAT_FIT, LocalWorkers, Pool
from stream_processor.observe.dashboard import Dashboard
from stream_processor.observe.histogram import LatencyHistogram
from stream_processor.observe.ideal import IdealRun
from stream_processor.observe.metrics import RunMetrics
from stream_processor.observe.observations import RunObservations
from stream_processor.observe.plot import draw_run
from stream_processor.observe.progress import Progress
from stream_processor.observe.report import build_report, write_report
from stream_processor.observe.trace import RunTrace
from stream_processor.output.targets import OutputSink, open_sink
from stream_processor.run.options import EngineOptions, RunOptions
from stream_processor.run.paths import PathError
from stream_processor.run.watchdog import StallWatchdog

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    options: RunOptions
    processor: StreamProcessor
    observations: RunObservations
    broker_name: str
    start_offset: int
    sink: OutputSink

    def begin_output(self) -> None:
        """Replace an earlier output now (see `pipeline(begin=False)`); later calls do nothing."""
        self.sink.begin()

    def take(self, record: Record, arrival_s: float = 0.0, source: str = "input") -> None:
        """One event in: handed to the run's core (blocks on a full window)."""
        if record.error:
            log.error("%s:%d: %s", source, record.line_number, record.error)
        self.processor.submit(record, self.options.engine.duration_of(record), arrival_s)

    def report(self, **extra: Any) -> dict[str, Any]:
        """The run's figures (also written to --report, drawn to --plot); call it once everything has stopped."""
        workers, output = self.options.engine.workers, self.options.output
        report = build_report(self.observations, workers, self.broker_name, **self.settings(), **extra)
        self.observations.final = report
        try:
            if output.report:
                write_report(output.report, report)
            if output.plot:
                title = f"{workers} workers on {self.broker_name}, order {self.options.stream.order}"
                draw_run(self.observations, output.plot, title=title)
        except OSError as exc:  # the run is done and its output complete: say so, and what failed
            raise ReportError(report, f"cannot write {exc.filename or 'the report'}: {exc.strerror or exc}") from exc
        return report

    def settings(self) -> dict[str, Any]:
        policy = self.processor.batching
        return {
            "order": str(self.options.stream.order),
            "batching": {
                "batch_max": policy.batch_max,
                "linger_ms": round(policy.linger_s * 1000, 3),
                "target_ms": round(policy.target_s * 1000, 3),
                "mean_event_run_ms": round(policy.mean_run_s * 1000, 4) if policy.mean_run_s is not None else None,
                "handoff_ms": round(policy.handoff_s * 1000, 4) if policy.handoff_s is not None else None,
            },
        }


class ReportError(RuntimeError):
    """The run finished, but its --report or --plot could not be written (exit 1)."""

    def __init__(self, report: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.report = report


def blank_lines_of(input_path: Path, size: int | None = None) -> dict[str, int]:
    """How many blank lines the recording holds (in its first `size` bytes; skipped: not
    events), said once, for the report."""
    blank = count_blank_lines(input_path, size)
    if blank:
        log.warning("%s: skipped %d blank line%s (not events)", input_path, blank, "" if blank == 1 else "s")
    return {"blank_lines_skipped": blank}


def observe(options: RunOptions) -> RunObservations:
    """The run's observations: what every view of it reads (see observations.py)."""
    engine, stream = options.engine, options.stream
    ideal_workers = engine.workers if engine.runs_reference_task and engine.workers else None
    ideal = IdealRun(ideal_workers, stream.order.kind == TOTAL, stream.max_in_flight) if ideal_workers else None
    return RunObservations(capacity=stream.max_in_flight, ideal=ideal, trace=RunTrace())


@contextmanager
def dashboard(options: RunOptions, observations: RunObservations) -> Iterator[Dashboard | None]:
    """The live page, if asked for: up before the run starts, down when the command ends
    (so it shows the final summary too)."""
    port = options.observe.dashboard_port
    if port is None:
        yield None
        return
    page = Dashboard(observations, token=options.observe.dashboard_token)
    try:
        page.serve(port)
    except OSError as exc:
        raise PathError(f"--dashboard {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    log.info("serving the run's dashboard at %s", page.url)
    with page:
        yield page


@contextmanager
def pipeline(
    options: RunOptions,
    source: dict[str, Any],
    observations: RunObservations,
    observers: Sequence[Observer] = (),
    mode: dict[str, Any] | None = None,
    begin: bool = True,
) -> Iterator[Pipeline]:
    """Start what `options` asks for; `source` identifies the input (for --resume's check).
    `observers` are told of each event read and each line written, after the run's own.
    `mode` says where the events come from, for the run's settings (the dashboard shows them).
    `begin=False`: an earlier output is replaced only at `run.begin_output()` (or the first
    line), once the caller has what it needs too (a stream that accepted the request)."""
    processor: StreamProcessor | None = None

    def give_up(reason: Exception) -> None:  # a broker or worker that keeps dying ends the run
        if processor is not None:
            processor.fail(reason)

    def ask_again_after(why: str, suspects: bool) -> Callable[[float], None]:
        """What a restarted broker or worker group calls: ask again for what it may have lost."""

        def restarted(died_at: float) -> None:
            if processor is not None:
                processor.ask_again(why, suspects=suspects, sent_before=died_at)

        return restarted

    broker_restarted = ask_again_after("the embedded broker restarted", suspects=False)
    # The workers died or stalled with tasks out, maybe because of one of them: suspects.
    workers_restarted = ask_again_after("the run's workers restarted", suspects=True)

    engine, stream, output = options.engine, options.stream, options.output
    with ExitStack() as stack:
        if options.observe.metrics_port is not None:
            stack.enter_context(_serve_metrics(observations, options.observe.metrics_port))
        progress = stack.enter_context(Progress(observations, options.observe.progress))
        sink = open_sink(
            output.path,
            options.checkpoint_header(source),
            output.resume,
            begin_later=True,
            reconnect_timeout_s=output.reconnect_timeout_s,
        )
        stack.callback(sink.close)
        if sink.start_offset:
            log.info("resuming %s after %d complete lines", output.path, sink.start_offset)
        broker = stack.enter_context(brokers.broker_for_run(engine.broker, give_up, broker_restarted))
        queue = engine.queue
        if engine.workers:
            queue = f"{RUN_QUEUE_PREFIX}{uuid.uuid4().hex[:12]}"
            stack.callback(delete_queue, broker.url, task_queue(queue))  # runs after the workers stop
        executor = CeleryExecutor(
            broker.url,
            engine.task,
            engine.time_scale,
            queue,
            task_timeout_s=engine.task_timeout_s,
            task_events=engine.task_events,
        )
        processor = StreamProcessor(
            executor,
            TimedWrites(sink, observations.output_write),
            stream.max_in_flight,
            start_offset=sink.start_offset,
            already_done=sink.done.beyond,
            order=stream.order,
            observers=[observations, progress, *observers],
            batching=engine.batch_policy(),
            retries=RetryPolicy(engine.retries, engine.retry_backoff_s),
            workers=engine.workers or None,
        )
        workers = (
            stack.enter_context(_local_workers(options, broker, queue, give_up, workers_restarted))
            if engine.workers
            else None
        )
        if begin:
            sink.begin()  # only now is an earlier output replaced: everything the run needs has started
        processor.start()
        stack.callback(processor.close)
        stack.enter_context(
            StallWatchdog(
                processor,
                broker.url,
                queue,
                stall_s=engine.stall_warning_s,
                observations=observations,
                restart=workers.restart if workers is not None else None,
                restart_after_s=restart_stalled_workers_after_s(engine),
            )
        )
        run = Pipeline(options, processor, observations, broker.name, sink.start_offset, sink)
        observations.settings = {
            **(mode or {}),
            "workers": engine.workers,
            "pool": str(engine.pool),
            "broker": broker.name,
            "task": engine.task,
            "time_scale": engine.time_scale,
            "max_in_flight": stream.max_in_flight,
            **run.settings(),
        }
        yield run


class TimedWrites:
    """The sink as the run's core sees it: each write timed, for the report's output_write_s."""

    def __init__(self, sink: OutputSink, durations: LatencyHistogram) -> None:
        self.sink, self.durations = sink, durations

    def write(self, lines: Sequence[tuple[int, bytes]]) -> None:
        started = time.monotonic()
        self.sink.write(lines)
        if lines:
            self.durations.add(time.monotonic() - started, len(lines))


def restart_stalled_workers_after_s(engine: EngineOptions) -> float | None:
    """When the run's own workers count as stuck: no result for longer than an event may
    run (its hard time limit), plus a margin; or what --stall-timeout says."""
    if engine.stall_timeout_s is not None:
        return engine.stall_timeout_s or None
    return hard_time_limit(engine.task_timeout_s) + 30 if engine.task_timeout_s else None


def _local_workers(options: RunOptions, broker: brokers.RunBroker, queue: str, give_up, restarted) -> LocalWorkers:
    engine = options.engine
    if engine.pool is Pool.PREFORK and engine.workers > PREFORK_WORKERS_THAT_FIT:
        log.warning(
            "%d prefork processes: a process per worker; for a task that waits, --pool threads runs as many "
            "in a process per core",
            engine.workers,
        )
    hard_limit = hard_time_limit(engine.task_timeout_s) if engine.task_timeout_s else 0.0
    return LocalWorkers(
        broker.url,
        engine.workers,
        engine.task,
        queue,
        # Redis hands out again a task unacked this long: keep it well above any batch's limit.
        visibility_timeout_s=max(DEFAULT_VISIBILITY_TIMEOUT_S, 2 * engine.batch_max * hard_limit),
        # Our own Redis has no other consumer: a dead worker's tasks can go back at once.
        after_crash=(lambda: brokers.requeue_unacked(broker.url)) if broker.embedded else None,
        on_give_up=give_up,
        verbose=options.observe.verbose,
        pool=engine.pool,
        task_events=engine.task_events,
        # Only where a task can be lost with its worker: elsewhere asking again only runs it twice.
        after_restart=restarted if broker.may_lose_a_dying_workers_task else None,
    )


def _serve_metrics(observations: RunObservations, port: int) -> RunMetrics:
    metrics = RunMetrics(observations)
    try:
        bound = metrics.serve(port)
    except OSError as exc:
        raise PathError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    log.info("serving Prometheus metrics at http://127.0.0.1:%d/metrics", bound)
    return metrics
