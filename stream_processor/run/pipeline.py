"""Everything a run owns, started in order and stopped in reverse: metrics, output,
broker, workers, executor, the run's core. File mode and streaming mode both run inside
`pipeline()`.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_processor.core.batching import DEFAULT_BATCH_MAX, DEFAULT_LINGER_S, DEFAULT_TARGET_S, BatchPolicy
from stream_processor.core.ordering import TOTAL, OrderMode
from stream_processor.core.processor import Observer, StreamProcessor
from stream_processor.core.records import MAX_WAIT_S, Record, Validator, check_wait, count_blank_lines
from stream_processor.core.retries import RetryPolicy
from stream_processor.engine import broker as brokers
from stream_processor.engine.celery_executor import CeleryExecutor, delete_queue, hard_time_limit
from stream_processor.engine.tasks import (
    DEFAULT_TASK,
    DEFAULT_VISIBILITY_TIMEOUT_S,
    QUEUE,
    RUN_QUEUE_PREFIX,
    load_function,
    task_queue,
)
from stream_processor.engine.workers import DEFAULT_POOL, PREFORK_WORKERS_THAT_FIT, LocalWorkers, Pool
from stream_processor.observe.dashboard import Dashboard
from stream_processor.observe.ideal import IdealRun
from stream_processor.observe.metrics import RunMetrics
from stream_processor.observe.observations import RunObservations
from stream_processor.observe.plot import check_plotting, draw_run
from stream_processor.observe.progress import Progress
from stream_processor.observe.report import build_report, write_report
from stream_processor.observe.trace import RunTrace
from stream_processor.output.sink import JsonlSink
from stream_processor.run.paths import PathError, check_run_paths
from stream_processor.run.watchdog import DEFAULT_STALL_S, StallWatchdog

log = logging.getLogger(__name__)

MAX_TASK_TIMEOUT_S = 7 * 24 * 3600.0  # longer is no limit at all: say 0


@dataclass
class RunOptions:
    output: Path = Path("results.json")
    workers: int = 12
    pool: Pool = DEFAULT_POOL  # how the run's own workers run tasks (see workers.py)
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
    batch_max: int = DEFAULT_BATCH_MAX
    batch_linger_s: float = DEFAULT_LINGER_S
    batch_target_s: float = DEFAULT_TARGET_S
    verbose: bool = False  # the workers' own log on stderr, not in a file
    dashboard_port: int | None = None  # serve the live page on 127.0.0.1 (0: any free port)
    dashboard_token: str | None = None
    stall_warning_s: float = DEFAULT_STALL_S  # say so when no result comes for this long
    stall_timeout_s: float | None = None  # restart the run's own workers after this long (None: derived, 0: never)
    reconnect_timeout_s: float | None = 60.0  # streaming: give up on a server gone this long (None: never)
    input_path: Path | None = None  # the recording, if the run reads one (checked against the outputs)
    order: OrderMode = field(default_factory=OrderMode)

    def check(self) -> None:
        """Reject bad settings before anything starts (usage errors, exit code 2)."""
        if self.workers < 0:
            raise ValueError("--workers must be 0 or more")
        if self.max_in_flight < 1:
            raise ValueError("--max-in-flight must be at least 1")
        if not 0 <= self.time_scale < math.inf:
            raise ValueError("--time-scale must be a finite number >= 0")
        if self.retries < 0 or not self.retry_backoff_s >= 0:
            raise ValueError("--retries and --retry-backoff must be 0 or more")
        if self.task_timeout_s is not None and not 0 <= self.task_timeout_s <= MAX_TASK_TIMEOUT_S:
            raise ValueError(f"--task-timeout must be 0 (none) to {MAX_TASK_TIMEOUT_S:.0f} s (a week)")
        self.batch_policy()  # its own limits
        check_run_paths(self.output, self.input_path, self.report, self.plot)
        if self.plot:
            try:
                check_plotting()
            except ImportError as exc:
                raise ValueError(f"--plot: {exc}") from None
        if self.workers:
            load_function(self.task)  # the local workers will import it: fail here, clearly
        elif brokers.resolve_broker(self.broker) is None:
            raise ValueError("--workers 0 needs --broker URL: workers elsewhere cannot reach the embedded broker")
        external = brokers.resolve_broker(self.broker)
        if external:
            brokers.check_reachable(external)  # before the output is touched

    def batch_policy(self) -> BatchPolicy:
        try:
            return BatchPolicy(self.batch_max, self.batch_linger_s, self.batch_target_s)
        except ValueError as exc:
            raise ValueError(f"--batch-*: {exc}") from None

    @property
    def runs_reference_task(self) -> bool:
        return self.task == DEFAULT_TASK

    def duration_of(self, record: Record) -> float | None:
        """The reference task's run time for this event (0 for a bad line, never sent); None if
        unknown. An event past --task-timeout runs until its time limit stops it."""
        if not self.runs_reference_task:
            return None
        if record.error:
            return 0.0
        duration = record.event["wait"] * self.time_scale
        return min(duration, self.task_timeout_s) if self.task_timeout_s else duration

    def validator(self) -> Validator | None:
        """Events must carry a valid `wait` only for the reference task, which reads it."""
        if not self.runs_reference_task:
            return None
        time_scale = self.time_scale

        def check_scaled_wait(event: dict[str, Any]) -> str | None:
            problem = check_wait(event)
            if problem is None and event["wait"] * time_scale > MAX_WAIT_S:
                scaled = f"{event['wait']:g} s times --time-scale {time_scale:g}"
                return f"field 'wait' is {scaled}: beyond the {MAX_WAIT_S} s limit"
            return problem

        return check_scaled_wait

    def restart_stalled_workers_after_s(self) -> float | None:
        """When the run's own workers count as stuck: no result for longer than an event may
        run (its hard time limit), plus a margin; or what --stall-timeout says."""
        if self.stall_timeout_s is not None:
            return self.stall_timeout_s or None
        return hard_time_limit(self.task_timeout_s) + 30 if self.task_timeout_s else None

    def checkpoint_header(self, source: dict[str, Any]) -> dict[str, Any]:
        """What the output is made from, for --resume to check."""
        return {"input": source, "task": self.task, "order": str(self.order)}


@dataclass
class Pipeline:
    options: RunOptions
    processor: StreamProcessor
    observations: RunObservations
    broker_name: str
    start_offset: int
    sink: JsonlSink

    def begin_output(self) -> None:
        """Replace an earlier output now (see `pipeline(begin=False)`); later calls do nothing."""
        self.sink.begin()

    def take(self, record: Record, arrival_s: float = 0.0, source: str = "input") -> None:
        """One event in: handed to the run's core (blocks on a full window)."""
        if record.error:
            log.error("%s:%d: %s", source, record.line_number, record.error)
        self.processor.submit(record, self.options.duration_of(record), arrival_s)

    def report(self, **extra: Any) -> dict[str, Any]:
        """The run's figures (also written to --report, drawn to --plot); call it once everything has stopped."""
        report = build_report(self.observations, self.options.workers, self.broker_name, **self.settings(), **extra)
        self.observations.final = report
        try:
            if self.options.report:
                write_report(self.options.report, report)
            if self.options.plot:
                title = f"{self.options.workers} workers on {self.broker_name}, order {self.options.order}"
                draw_run(self.observations, self.options.plot, title=title)
        except OSError as exc:  # the run is done and its output complete: say so, and what failed
            raise ReportError(report, f"cannot write {exc.filename or 'the report'}: {exc.strerror or exc}") from exc
        return report

    def settings(self) -> dict[str, Any]:
        policy = self.processor.batching
        return {
            "order": str(self.options.order),
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
    ideal_workers = options.workers if options.runs_reference_task and options.workers else None
    ideal = IdealRun(ideal_workers, options.order.kind == TOTAL, options.max_in_flight) if ideal_workers else None
    return RunObservations(capacity=options.max_in_flight, ideal=ideal, trace=RunTrace())


@contextmanager
def dashboard(options: RunOptions, observations: RunObservations) -> Iterator[Dashboard | None]:
    """The live page, if asked for: up before the run starts, down when the command ends
    (so it shows the final summary too)."""
    if options.dashboard_port is None:
        yield None
        return
    page = Dashboard(observations, token=options.dashboard_token)
    try:
        page.serve(options.dashboard_port)
    except OSError as exc:
        port = options.dashboard_port
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
    show_progress: bool = False,
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

    with ExitStack() as stack:
        if options.metrics_port is not None:
            stack.enter_context(_serve_metrics(observations, options.metrics_port))
        progress = stack.enter_context(Progress(observations, show_progress))
        sink = stack.enter_context(
            JsonlSink(options.output, options.checkpoint_header(source), options.resume, begin_later=True)
        )
        if sink.start_offset:
            log.info("resuming %s after %d complete lines", options.output, sink.start_offset)
        broker = stack.enter_context(brokers.broker_for_run(options.broker, give_up, broker_restarted))
        queue = options.queue
        if options.workers:
            queue = f"{RUN_QUEUE_PREFIX}{uuid.uuid4().hex[:12]}"
            stack.callback(delete_queue, broker.url, task_queue(queue))  # runs after the workers stop
        executor = CeleryExecutor(
            broker.url, options.task, options.time_scale, queue, task_timeout_s=options.task_timeout_s
        )
        processor = StreamProcessor(
            executor,
            sink,
            options.max_in_flight,
            start_offset=sink.start_offset,
            already_done=sink.done.beyond,
            order=options.order,
            observers=[observations, progress, *observers],
            batching=options.batch_policy(),
            retries=RetryPolicy(options.retries, options.retry_backoff_s),
            workers=options.workers or None,
        )
        workers = (
            stack.enter_context(_local_workers(options, broker, queue, give_up, workers_restarted))
            if options.workers
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
                stall_s=options.stall_warning_s,
                observations=observations,
                restart=workers.restart if workers is not None else None,
                restart_after_s=options.restart_stalled_workers_after_s(),
            )
        )
        run = Pipeline(options, processor, observations, broker.name, sink.start_offset, sink)
        observations.settings = {
            **(mode or {}),
            "workers": options.workers,
            "pool": str(options.pool),
            "broker": broker.name,
            "task": options.task,
            "time_scale": options.time_scale,
            "max_in_flight": options.max_in_flight,
            **run.settings(),
        }
        yield run


def _local_workers(options: RunOptions, broker: brokers.RunBroker, queue: str, give_up, restarted) -> LocalWorkers:
    if options.pool is Pool.PREFORK and options.workers > PREFORK_WORKERS_THAT_FIT:
        log.warning(
            "%d prefork processes: a process per worker; for a task that waits, --pool threads runs as many "
            "in a process per core",
            options.workers,
        )
    hard_limit = hard_time_limit(options.task_timeout_s) if options.task_timeout_s else 0.0
    return LocalWorkers(
        broker.url,
        options.workers,
        options.task,
        queue,
        # Redis hands out again a task unacked this long: keep it well above any batch's limit.
        visibility_timeout_s=max(DEFAULT_VISIBILITY_TIMEOUT_S, 2 * options.batch_max * hard_limit),
        # Our own Redis has no other consumer: a dead worker's tasks can go back at once.
        after_crash=(lambda: brokers.requeue_unacked(broker.url)) if broker.embedded else None,
        on_give_up=give_up,
        verbose=options.verbose,
        pool=options.pool,
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
