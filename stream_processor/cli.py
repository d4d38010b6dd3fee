"""Argument parsing only: each subcommand calls one function elsewhere.

Exit codes: 0 all events done; 3 output complete but some events hold error records;
2 usage or input-file errors; 1 anything unexpected; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from stream_processor.broker import resolve_broker
from stream_processor.processes import StartError
from stream_processor.protocol import DEFAULT_MAX_PAYLOAD, TOKEN_ENV
from stream_processor.records import InputFileError
from stream_processor.tasks import BROKER_ENV, DEFAULT_TASK, QUEUE, QUEUE_ENV, TASK_ENV, load_function

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_EVENT_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("stream_processor")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every owned process is stopped on the way out."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_pacing_flags(parser: argparse.ArgumentParser, default_speed: float) -> None:
    parser.add_argument("--realtime", action="store_true", help="pace events by their timestamps")
    parser.add_argument(
        "--speed", type=_positive_float, default=default_speed, help="with --realtime: X times real time (default 1)"
    )


def _add_token_flag(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"shared secret: {role} (default: ${TOKEN_ENV}; prefer it, a flag shows in `ps`)",
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("results.json"), help="ordered results (JSON Lines)")
    parser.add_argument(
        "--workers",
        type=_non_negative_int,
        default=12,
        help="pool processes of a local Celery worker started for the run; 0 = use workers "
        "started elsewhere (default 12)",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help=f"broker URL, e.g. amqp://guest:guest@localhost:5672// or redis://localhost:6379/0 "
        f"(default: ${BROKER_ENV}, else an embedded Redis started for the run)",
    )
    parser.add_argument(
        "--time-scale",
        type=_non_negative_float,
        default=1.0,
        help="multiply each event's wait by this (the reference task only; default 1.0)",
    )
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help="the function to run, package.module:function (default: the reference task)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=1000,
        help="events read but not yet written, at most (default 1000)",
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=2,
        help="run an event whose task raises up to N more times before its line gets an error record (default 2)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=_non_negative_float,
        default=1.0,
        metavar="S",
        help="seconds before the first retry, doubling for each next one, at most 60 (default 1)",
    )
    parser.add_argument(
        "--task-timeout",
        type=_non_negative_float,
        default=300.0,
        metavar="S",
        help="an event whose task runs longer gets an error record; not retried (default 300; 0 = no limit)",
    )
    parser.add_argument("--report", type=Path, default=None, help="write the run's figures here as JSON")
    parser.add_argument(
        "--resume", action="store_true", help="continue after the last complete line of an existing --output"
    )
    parser.add_argument(
        "--queue", default=QUEUE, help=f"with --workers 0: the queue the workers consume (default {QUEUE})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="FILE.png", help="draw latency (with its ideal) and in-flight count"
    )
    parser.add_argument(
        "--metrics-port",
        type=_non_negative_int,
        default=None,
        metavar="P",
        help="serve Prometheus metrics at http://127.0.0.1:P/metrics during the run (0: any free port)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-processor", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    process = commands.add_parser("process", help="process a recording file in order (file mode)")
    process.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording (JSON Lines)")
    _add_run_flags(process)

    run = commands.add_parser("run", help="all in one: replay server, workers, client (streaming mode)")
    run.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording to replay")
    run.add_argument("--url", default=None, help="consume this server instead of starting one")
    _add_token_flag(run, "sent to --url's server (a server started here gets a random one)")
    _add_pacing_flags(run, default_speed=1.0)
    _add_run_flags(run)

    consume = commands.add_parser("consume", help="process the events of a replay server, in order")
    consume.add_argument("--url", default="http://127.0.0.1:5000", help="the server (default %(default)s)")
    consume.add_argument("--realtime", action="store_true", default=None, help="ask the server to pace the replay")
    consume.add_argument("--speed", type=_positive_float, default=None, help="ask for X times real time")
    _add_token_flag(consume, "sent to the server when connecting")
    _add_run_flags(consume)

    serve = commands.add_parser("serve", help="replay a recording over Socket.IO (RCStream protocol, /rc)")
    serve.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording to replay")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    serve.add_argument("--port", type=_non_negative_int, default=5000, help="port (0: any free one; default 5000)")
    serve.add_argument("--loop", action="store_true", help="replay forever")
    serve.add_argument(
        "--window", type=_positive_int, default=1000, help="unacknowledged events held per client (default 1000)"
    )
    _add_token_flag(serve, "refuse any client that does not send it")
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browsers from this origin, e.g. https://example.org (repeatable; default: same origin only)",
    )
    serve.add_argument(
        "--max-payload",
        type=_positive_int,
        default=DEFAULT_MAX_PAYLOAD,
        help="bytes a client may send in one message; a bigger one closes it (default %(default)s)",
    )
    _add_pacing_flags(serve, default_speed=1.0)

    worker = commands.add_parser("worker", help="start a Celery worker for runs with --workers 0")
    worker.add_argument("--broker", default=None, help=f"broker URL (default: ${BROKER_ENV})")
    worker.add_argument("--concurrency", type=_positive_int, default=os.cpu_count() or 1)
    worker.add_argument("--task", default=None, help=f"function to run (default: ${TASK_ENV}, else the reference)")
    worker.add_argument("--queue", default=QUEUE, help=f"queue to consume (default {QUEUE})")
    worker.add_argument("--loglevel", default="INFO")

    verify = commands.add_parser("verify", help="check an output has one line per input event, in order")
    verify.add_argument("input", type=Path)
    verify.add_argument("output", type=Path)
    verify.add_argument(
        "--transformed",
        action="store_true",
        help="the task changes events: check count, completeness and error-record places only",
    )

    generate = commands.add_parser("generate", help="write a synthetic RCStream recording")
    generate.add_argument("--minutes", type=_non_negative_float, default=5.0)
    generate.add_argument("--rate", type=_non_negative_float, default=2.07, help="edits per second")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--output", type=Path, default=None, help="file to write (default: standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # What a user should see even without -v: where metrics are served, where a run resumes.
    logging.getLogger("stream_processor.pipeline").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Terminated):
        print("stream-processor: interrupted; the output holds every result that was in order", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InputFileError) as exc:  # a bad flag, an unreadable recording
        print(f"stream-processor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, StartError) as exc:  # cannot reach or start a server, broker or worker
        print(f"stream-processor: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


class UsageError(Exception):
    pass


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _run_options(args: argparse.Namespace):
    from stream_processor.pipeline import RunOptions

    return RunOptions(
        output=args.output,
        workers=args.workers,
        broker=args.broker,
        time_scale=args.time_scale,
        task=args.task,
        max_in_flight=args.max_in_flight,
        report=args.report,
        resume=args.resume,
        queue=args.queue,
        retries=args.retries,
        retry_backoff_s=args.retry_backoff,
        task_timeout_s=args.task_timeout or None,
        plot=args.plot,
        metrics_port=args.metrics_port,
    )


def _run_and_summarise(run, *run_args, **run_kwargs) -> int:
    """Call a run function, print its summary, map the outcome to an exit code."""
    from stream_processor.report import summary_text

    try:
        report = run(*run_args, **run_kwargs)
    except ValueError as exc:  # RunOptions.check: settings that cannot work together
        raise UsageError(str(exc)) from None
    print(summary_text(report))
    return EXIT_EVENT_ERRORS if report["errors"] else EXIT_OK


def cmd_process(args: argparse.Namespace) -> int:
    from stream_processor.file_mode import process_file

    return _run_and_summarise(process_file, args.input, _run_options(args), show_progress=not args.no_progress)


def cmd_consume(args: argparse.Namespace) -> int:
    from stream_processor.streaming import consume

    return _run_and_summarise(
        consume,
        args.url,
        _run_options(args),
        args.realtime,
        args.speed,
        show_progress=not args.no_progress,
        token=args.token,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from stream_processor.streaming import run_streaming

    return _run_and_summarise(
        run_streaming,
        args.input,
        _run_options(args),
        realtime=args.realtime,
        speed=args.speed,
        url=args.url,
        show_progress=not args.no_progress,
        token=args.token,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from stream_processor.server import ReplayServer

    server = ReplayServer(
        args.input,
        realtime=args.realtime,
        speed=args.speed,
        loop=args.loop,
        window=args.window,
        cors_allowed_origins=args.cors_origin,
        token=args.token,
        max_payload=args.max_payload,
    )
    # The signal may land in any green thread; the server throws it into the serving one.
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    with contextlib.suppress(KeyboardInterrupt):  # the normal way to stop a server
        try:
            server.serve(args.host, args.port, on_listening=lambda url: print(f"serving {url}/rc", flush=True))
        except OSError as exc:  # e.g. the port is taken
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_processor.workers import worker_command

    broker_url = resolve_broker(args.broker)
    if not broker_url:
        raise UsageError(f"a worker needs --broker URL or ${BROKER_ENV}: it joins a broker that runs elsewhere")
    task_path = args.task or os.environ.get(TASK_ENV) or DEFAULT_TASK
    try:
        load_function(task_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    os.environ.update({BROKER_ENV: broker_url, TASK_ENV: task_path, QUEUE_ENV: args.queue})
    command = worker_command(args.concurrency, args.queue, loglevel=args.loglevel)
    os.execv(command[0], command)  # become the worker: signals reach Celery directly


def cmd_verify(args: argparse.Namespace) -> int:
    from stream_processor.verify import verify

    verdict = verify(args.input, args.output, identical=not args.transformed)
    print(verdict.message, file=sys.stdout if verdict.ok else sys.stderr)
    return EXIT_OK if verdict.ok else EXIT_UNEXPECTED


def cmd_generate(args: argparse.Namespace) -> int:
    from stream_processor.generate import generate_file, write_recording

    if args.output is None:
        count = write_recording(sys.stdout, args.minutes, args.rate, args.seed)
    else:
        count = generate_file(args.output, args.minutes, args.rate, args.seed)
    print(f"wrote {count} events", file=sys.stderr)
    return EXIT_OK


COMMANDS = {
    "process": cmd_process,
    "run": cmd_run,
    "consume": cmd_consume,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "verify": cmd_verify,
    "generate": cmd_generate,
}

if __name__ == "__main__":
    sys.exit(main())
