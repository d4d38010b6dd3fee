"""A run's settings, each stated once: a field of a frozen group, whose metadata holds its flag,
help text and limits (as Celery's `app/defaults.py` does). The command line is built from these
fields (`add_run_flags`, `from_args`): a default, a help text or a limit changes here only.

The groups, by what a setting changes:
- `EngineOptions`: where and how each event runs (workers, broker, task, retries, time
  limits, batches, and the watchdog that restarts stuck workers);
- `StreamOptions`: how events flow from the source to the output (how many at once, in
  which order lines are written, how long a lost server is waited for);
- `OutputOptions`: the files the run writes (and the recording they must not overwrite);
- `ObserveOptions`: what the run shows while it goes (progress, log, dashboard, metrics);
  none of them changes a result.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from stream_processor.core.batching import DEFAULT_BATCH_MAX, DEFAULT_LINGER_S, DEFAULT_TARGET_S, BatchPolicy
from stream_processor.core.ordering import OrderMode, parse_order
from stream_processor.core.records import MAX_WAIT_S, Record, Validator, check_wait
from stream_processor.engine.execution import load_function
from stream_processor.engine.names import BROKER_ENV, DEFAULT_TASK, QUEUE
from stream_processor.engine.workers import DEFAULT_POOL, Pool
from stream_processor.observe.plot import check_plotting
from stream_processor.output.targets import Output, parse_output
from stream_processor.run.paths import check_run_paths
from stream_processor.run.watchdog import DEFAULT_STALL_S

DASHBOARD_TOKEN_ENV = "STREAM_PROCESSOR_DASHBOARD_TOKEN"
MAX_TASK_TIMEOUT_S = 7 * 24 * 3600.0  # longer is no limit at all: say 0


# --- kinds of value ------------------------------------------------------------------------


def _any(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Kind:
    """The values a setting takes. `read` makes one of a flag's text (its ValueError: argparse's
    "invalid NAME value", or, with `explains`, its own message); a value `fits` or `unfit` says why not."""

    name: str
    read: Callable[[str], Any]
    fits: Callable[[Any], bool] = _any
    unfit: str = ""
    explains: bool = False
    choices: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        return None if self.fits(value) else self.unfit

    def parse(self, text: str) -> Any:
        try:
            value = self.read(text)
        except ValueError as exc:
            if self.explains:
                raise argparse.ArgumentTypeError(str(exc)) from None
            raise
        if not self.fits(value):
            raise argparse.ArgumentTypeError(f"{self.unfit}, got {value if isinstance(value, int) else text}")
        return value


def flag_type(kind: Kind) -> Callable[[str], Any]:
    """`kind` as an argparse `type` (argparse names it in its messages)."""

    def parse(text: str) -> Any:
        return kind.parse(text)

    parse.__name__ = kind.name
    return parse


POSITIVE_INT = Kind("_positive_int", int, lambda value: value >= 1, "must be at least 1")
NON_NEGATIVE_INT = Kind("_non_negative_int", int, lambda value: value >= 0, "must be 0 or more")
PORT = Kind("_port", int, lambda value: 0 <= value <= 65535, "must be a port, 0 to 65535 (0: any free one)")
NON_NEGATIVE_FLOAT = Kind(
    "_non_negative_float", float, lambda value: 0 <= value < math.inf, "must be a finite number >= 0"
)
POSITIVE_FLOAT = Kind("_positive_float", float, lambda value: 0 < value < math.inf, "must be a positive number")
ORDER = Kind("_order_mode", parse_order, explains=True)
POOL = Kind("Pool", Pool, choices=tuple(Pool))
PATH = Kind("Path", Path)
OUTPUT = Kind("output", parse_output, explains=True)  # a file, or postgresql://...?table=NAME
TEXT = Kind("str", str)  # any text: argparse's own default


# --- a setting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """How a setting shows on the command line. `help` may say `{default}`: the flag's default."""

    names: tuple[str, ...] = ()  # none: no flag sets it
    help: str = ""
    kind: Kind | None = None  # None: a switch, off unless given
    negates: bool = False  # a switch that turns the setting off (--no-progress)
    metavar: str | None = None
    scale: float = 1.0  # the flag's unit per the field's: 1000 for a flag in ms of a field in s
    zero_is_none: bool = False  # 0 on the command line is None here (no limit)
    env: str | None = None  # read from this environment variable, not from a flag
    streaming: bool = False  # only on the commands that read a stream (run, consume)
    top_level: bool = False  # also the command's own flag, before the sub-command

    @property
    def name(self) -> str:
        return self.names[-1] if self.names else f"${self.env}"

    @property
    def dest(self) -> str:
        """Where argparse puts it (its own choice: --max-in-flight, max_in_flight)."""
        return self.names[-1].lstrip("-").replace("-", "_")

    def shown(self, value: Any) -> Any:
        """A field's value in the flag's terms."""
        if self.negates:
            return not value
        if value is None and self.zero_is_none:
            return 0
        if isinstance(value, int | float) and not isinstance(value, bool) and self.scale != 1:
            return value * self.scale
        return value

    def value(self, given: Any) -> Any:
        """The flag's value in the field's terms."""
        if self.negates:
            return not given
        if self.zero_is_none and not given:
            return None
        return given / self.scale if self.scale != 1 else given


def setting(default: Any, *names: str, help: str = "", kind: Kind | None = None, **flag: Any) -> Any:
    """A field with its default and its flag."""
    return field(default=default, metadata={"flag": Flag(names, help, kind, **flag)})


def flag_of(item: Field) -> Flag | None:
    return item.metadata.get("flag")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Settings:
    """A group of settings: each value is checked against its kind when the group is made."""

    TITLE: ClassVar[str]

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]
            flag, value = flag_of(item), getattr(self, item.name)
            if flag is None or flag.kind is None or value is None:
                continue
            problem = flag.kind.problem(value)
            if problem:
                raise ValueError(f"{flag.name} {problem}, got {_text(flag.shown(value))}")


def pool_help(how: str) -> str:
    return (
        f"{how} tasks: prefork (default: a process each; any function, CPU-bound or not thread-safe), "
        "threads (for functions that wait, like the reference task or a call to a remote service; hundreds "
        "on a few cores), gevent or eventlet (greenlets: more still, for pure-Python I/O)"
    )


# --- the groups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOptions(Settings):
    TITLE: ClassVar[str] = "workers and tasks"

    workers: int = setting(
        12,
        "--workers",
        kind=NON_NEGATIVE_INT,
        help="workers started for the run: events run at once (processes with --pool prefork, threads "
        "or greenlets spread over a process per core otherwise); 0 = use workers started elsewhere (default {default})",
    )
    pool: Pool = setting(DEFAULT_POOL, "--pool", kind=POOL, help=pool_help("how the run's own workers run"))
    task_events: bool = setting(
        False,
        "--task-events",
        help="send Celery's task events (and worker heartbeats), so Flower and Prometheus exporters see "
        "the run's tasks; each task then costs a few messages more (see docs/guide/monitoring.md)",
    )
    broker: str | None = setting(
        None,
        "--broker",
        kind=TEXT,
        help="broker URL, e.g. amqp://guest:guest@localhost:5672// or redis://localhost:6379/0 "
        f"(default: ${BROKER_ENV}, else an embedded Redis started for the run)",
    )
    time_scale: float = setting(
        1.0,
        "--time-scale",
        kind=NON_NEGATIVE_FLOAT,
        help="multiply each event's wait by this (the reference task only; default {default})",
    )
    task: str = setting(
        DEFAULT_TASK,
        "--task",
        kind=TEXT,
        help="the function to run, package.module:function (default: the reference task)",
    )
    queue: str = setting(
        QUEUE, "--queue", kind=TEXT, help="with --workers 0: the queue the workers consume (default {default})"
    )
    retries: int = setting(
        2,
        "--retries",
        kind=NON_NEGATIVE_INT,
        help="run an event whose task raises up to N more times before its line gets an error record "
        "(default {default})",
    )
    retry_backoff_s: float = setting(
        1.0,
        "--retry-backoff",
        kind=NON_NEGATIVE_FLOAT,
        metavar="S",
        help="seconds before the first retry, doubling for each next one, at most 60 (default {default})",
    )
    task_timeout_s: float | None = setting(
        300.0,
        "--task-timeout",
        kind=NON_NEGATIVE_FLOAT,
        metavar="S",
        zero_is_none=True,
        help="an event whose task runs longer gets an error record; not retried (default {default}; 0 = no limit)",
    )
    batch_max: int = setting(
        DEFAULT_BATCH_MAX,
        "--batch-max",
        kind=POSITIVE_INT,
        metavar="N",
        help="events sent to a worker in one task, at most; 1 = one task per event (default {default})",
    )
    batch_linger_s: float = setting(
        DEFAULT_LINGER_S,
        "--batch-linger-ms",
        kind=NON_NEGATIVE_FLOAT,
        metavar="MS",
        scale=1000.0,
        help="longest an event waits for a batch to fill while every worker is busy (default {default})",
    )
    batch_target_s: float = setting(
        DEFAULT_TARGET_S,
        "--batch-target-ms",
        kind=POSITIVE_FLOAT,
        metavar="MS",
        scale=1000.0,
        help="a batch holds as many events as the measured run time per event fits in this "
        "(default {default}); events that take longer go one per task",
    )
    stall_warning_s: float = setting(
        DEFAULT_STALL_S,
        "--stall-warning",
        kind=POSITIVE_FLOAT,
        metavar="S",
        help="say so when no result has come for S seconds while tasks are out (default {default})",
    )
    stall_timeout_s: float | None = setting(  # None: derived from the time limit; 0: never
        None,
        "--stall-timeout",
        kind=NON_NEGATIVE_FLOAT,
        metavar="S",
        help="restart the run's own workers when no result has come for S seconds while tasks are out "
        "(a worker that stopped taking tasks); default: the task's hard time limit + 30 s; 0 = never",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task_timeout_s and self.task_timeout_s > MAX_TASK_TIMEOUT_S:
            raise ValueError(f"--task-timeout must be 0 (none) to {MAX_TASK_TIMEOUT_S:.0f} s (a week)")
        self.batch_policy()  # its own limits

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
        if record.error or record.event is None:
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


@dataclass(frozen=True)
class StreamOptions(Settings):
    TITLE: ClassVar[str] = "the stream of events"

    max_in_flight: int = setting(
        1000, "--max-in-flight", kind=POSITIVE_INT, help="events read but not yet written, at most (default {default})"
    )
    order: OrderMode = setting(
        OrderMode(),
        "--order",
        kind=ORDER,
        metavar="MODE",
        help="total: every line in input order (default); key:FIELD[,FIELD...]: events with equal values "
        "of those fields run one at a time in input order, each line written as soon as it is done "
        "(e.g. key:wiki,title); none: each line as soon as it is done",
    )
    reconnect_timeout_s: float | None = setting(  # None: never give up
        60.0,
        "--reconnect-timeout",
        kind=NON_NEGATIVE_FLOAT,
        metavar="S",
        zero_is_none=True,
        streaming=True,
        help="give up (exit 1) when the server stays unreachable this long; 0 = keep trying (default {default})",
    )
    keep_canaries: bool = setting(
        False,
        "--keep-canaries",
        streaming=True,
        help="keep EventStreams' canary events (meta.domain canary, its monitoring's); "
        "an event stream's are dropped by default, and counted in the report",
    )


@dataclass(frozen=True)
class OutputOptions(Settings):
    TITLE: ClassVar[str] = "output"

    path: Output = setting(
        Path("results.json"),
        "--output",
        kind=OUTPUT,
        metavar="FILE|URL",
        help="ordered results: a JSON Lines file, or a PostgreSQL table, postgresql://USER@HOST/DB?table=NAME "
        "(default {default})",
    )
    resume: bool = setting(False, "--resume", help="continue after the last complete line of an existing --output")
    reconnect_timeout_s: float | None = setting(  # None: never give up
        60.0,
        "--output-reconnect-timeout",
        kind=NON_NEGATIVE_FLOAT,
        metavar="S",
        zero_is_none=True,
        help="a PostgreSQL --output that stops answering is connected to again for this long, then the run "
        "stops (exit 1; --resume continues it); 0 = keep trying (default {default})",
    )
    report: Path | None = setting(None, "--report", kind=PATH, help="write the run's figures here as JSON")
    plot: Path | None = setting(
        None, "--plot", kind=PATH, metavar="FILE.png", help="draw latency (with its ideal) and in-flight count"
    )
    input_path: Path | None = None  # the recording, if the run reads one (set by the mode; checked against the outputs)


@dataclass(frozen=True)
class ObserveOptions(Settings):
    TITLE: ClassVar[str] = "watching the run"

    progress: bool = setting(True, "--no-progress", negates=True, help="no progress bar, even on a terminal")
    verbose: bool = setting(
        False,
        "-v",
        "--verbose",
        top_level=True,
        help="log at INFO level, and show the workers' own log on stderr",
    )
    dashboard_port: int | None = setting(
        None,
        "--dashboard",
        kind=PORT,
        metavar="PORT",
        help="serve a live page of the run at http://127.0.0.1:PORT/ (0: any free port, logged); "
        f"with ${DASHBOARD_TOKEN_ENV} set, its data needs that token",
    )
    dashboard_token: str | None = setting(None, env=DASHBOARD_TOKEN_ENV)
    metrics_port: int | None = setting(
        None,
        "--metrics-port",
        kind=PORT,
        metavar="P",
        help="serve Prometheus metrics at http://127.0.0.1:P/metrics during the run (0: any free port)",
    )


@dataclass(frozen=True)
class RunOptions:
    engine: EngineOptions = field(default_factory=EngineOptions)
    stream: StreamOptions = field(default_factory=StreamOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    observe: ObserveOptions = field(default_factory=ObserveOptions)

    def reading(self, input_path: Path) -> RunOptions:
        """These options for a run that reads the recording `input_path`."""
        return replace(self, output=replace(self.output, input_path=input_path))

    def check(self) -> None:
        """What the values alone do not say, before anything starts: the files, the plotting
        library, the task, the broker (ValueError: a usage error, exit code 2)."""
        engine, output = self.engine, self.output
        check_run_paths(output.path, output.input_path, output.report, output.plot)
        if output.plot:
            try:
                check_plotting()
            except ImportError as exc:
                raise ValueError(f"--plot: {exc}") from None
        from stream_processor.engine import broker as brokers  # it builds the Celery app: only when a run starts

        external = brokers.resolve_broker(engine.broker)
        if engine.workers:
            load_function(engine.task)  # the local workers will import it: fail here, clearly
        elif external is None:
            raise ValueError("--workers 0 needs --broker URL: workers elsewhere cannot reach the embedded broker")
        if external:
            brokers.check_reachable(external)  # before the output is touched

    def checkpoint_header(self, source: dict[str, Any]) -> dict[str, Any]:
        """What the output is made from, for --resume to check."""
        return {"input": source, "task": self.engine.task, "order": str(self.stream.order)}


GROUPS: tuple[type[Settings], ...] = (OutputOptions, EngineOptions, StreamOptions, ObserveOptions)


# --- the command line -----------------------------------------------------------------------


def add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, item: Field, **overrides: Any) -> None:
    """The argparse argument of one setting, from its metadata."""
    flag = flag_of(item)
    assert flag is not None and flag.names, item.name
    default = flag.shown(item.default)
    arguments: dict[str, Any] = {"dest": flag.dest, "default": default}
    if flag.kind is None:
        arguments["action"] = "store_true"
    else:
        if flag.kind is not TEXT:
            arguments["type"] = flag_type(flag.kind)
        if flag.kind.choices:
            arguments["choices"] = list(flag.kind.choices)
        if flag.metavar:
            arguments["metavar"] = flag.metavar
    arguments["help"] = flag.help.format(default=_text(default))
    parser.add_argument(*flag.names, **{**arguments, **overrides})


def add_run_flags(parser: argparse.ArgumentParser, streaming: bool = False) -> None:
    """A run's flags, a section per group; `streaming`: also those only a stream reads."""
    for group in GROUPS:
        section = parser.add_argument_group(group.TITLE)
        for item in fields(group):  # type: ignore[arg-type]
            flag = flag_of(item)
            if flag is None or not flag.names or (flag.streaming and not streaming):
                continue
            # A flag the command has too: given before the sub-command, it holds unless given again.
            add_flag(section, item, **({"default": argparse.SUPPRESS} if flag.top_level else {}))


def add_top_level_flags(parser: argparse.ArgumentParser) -> None:
    """The settings the command itself takes, before the sub-command (-v)."""
    for group in GROUPS:
        for item in fields(group):  # type: ignore[arg-type]
            flag = flag_of(item)
            if flag is not None and flag.top_level:
                add_flag(parser, item)


def from_args(args: argparse.Namespace) -> RunOptions:
    """The options the command line asked for: the default where a flag is not given, or not
    one of this command's (ValueError for a value out of its limits)."""
    defaults = RunOptions()
    groups = {}
    for member in fields(RunOptions):
        group = type(getattr(defaults, member.name))
        values = {}
        for item in fields(group):
            flag = flag_of(item)
            if flag is None:
                continue
            if flag.env:
                values[item.name] = os.environ.get(flag.env) or None
            elif flag.names and hasattr(args, flag.dest):
                values[item.name] = flag.value(getattr(args, flag.dest))
        groups[member.name] = group(**values)
    return RunOptions(**groups)
