"""The command line: argument parsing, and the outcome of a run as an exit code.

Each subcommand calls one function elsewhere. Exit codes: 0 all events done; 3 output
complete but some events hold error records; 2 a problem the user can fix before the
run (a flag, a path, an unreadable recording, an unreachable broker, a --url the client
cannot use or the server refuses as bad); 1 a failure during the run, said in one
sentence; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from stream_processor.core.ordering import OrderMode
from stream_processor.core.processor import RunFailed
from stream_processor.core.records import InputFileError
from stream_processor.engine.execution import load_function
from stream_processor.engine.names import BROKER_ENV, DEFAULT_TASK, QUEUE, QUEUE_ENV, TASK_ENV, TASK_EVENTS_ENV
from stream_processor.engine.processes import StartError
from stream_processor.engine.workers import DEFAULT_POOL, Pool
from stream_processor.output.database import DatabaseUnreachable
from stream_processor.output.sink import OutputError
from stream_processor.protocol.vocabulary import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_SUBSCRIBE_BURST,
    DEFAULT_SUBSCRIBE_RATE,
    TOKEN_ENV,
)
from stream_processor.redaction import RedactingFormatter, redact_text, redact_tracebacks
from stream_processor.run.options import DASHBOARD_TOKEN_ENV as DASHBOARD_TOKEN_ENV  # re-exported
from stream_processor.run.options import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    ORDER,
    OUTPUT,
    PORT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    RunOptions,
    add_run_flags,
    add_top_level_flags,
    flag_type,
    from_args,
    pool_help,
)
from stream_processor.run.paths import PathError
from stream_processor.serving import ASYNC_MODE_ENV, ASYNC_MODES, DEFAULT_ASYNC_MODE
from stream_processor.serving.core import DEFAULT_HEARTBEAT_S, ServerSettings
from stream_processor.sources.generate import DEFAULT_CANARY_EVERY, generate_file, write_recording

DESCRIPTION = """\
Process a stream of events (JSON Lines: a recording, a replay server, or a live
EventStreams feed) in parallel on Celery workers, and write one result line per event
in the order the events arrived, each as soon as it and every earlier one are done.
With no --broker it starts its own broker and workers, and stops them at the end."""

EPILOG = """\
examples:
  stream-processor process --input sampled_rc.json --output results.json
      file mode: the recording straight through 12 local workers (python run.py)
  stream-processor run --realtime --speed 10
      streaming: replay the recording over Socket.IO, paced, and process it (python run_streaming.py)
  stream-processor process --resume
      continue an interrupted run where its output (and checkpoint) ends
  stream-processor worker --broker amqp://user:pass@host:5672//
      a worker on another machine, for runs with --workers 0
  stream-processor verify sampled_rc.json results.json

exit codes: 0 done; 3 done, some lines are error records; 2 fix something first
(flag, path, recording, broker); 1 the run failed (the message says why); 130 interrupted.
Run 'stream-processor COMMAND --help' for a command's flags."""

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_EVENT_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

log = logging.getLogger("stream_processor")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every owned process is stopped on the way out."""


# argparse types, from the options' kinds (one statement of each limit and its message)
_positive_int = flag_type(POSITIVE_INT)
_non_negative_int = flag_type(NON_NEGATIVE_INT)
_port = flag_type(PORT)
_non_negative_float = flag_type(NON_NEGATIVE_FLOAT)
_positive_float = flag_type(POSITIVE_FLOAT)
_order_mode = flag_type(ORDER)
_output = flag_type(OUTPUT)


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


def _add_async_mode_flag(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--async-mode",
        choices=ASYNC_MODES,
        default=os.environ.get(ASYNC_MODE_ENV) or DEFAULT_ASYNC_MODE,
        help=f"{role}: eventlet (WSGI) or asyncio (ASGI on uvicorn) (default: ${ASYNC_MODE_ENV}, else %(default)s)",
    )


def _add_transport_flag(parser: argparse.ArgumentParser, default_text: str) -> None:
    parser.add_argument(
        "--transport",
        choices=("socket.io", "sse"),
        default=None,
        help=f"Socket.IO (RCStream protocol) or the event stream (SSE, EventStreams-style); default: {default_text}",
    )


def _add_pool_flag(parser: argparse.ArgumentParser, how: str) -> None:
    parser.add_argument("--pool", type=Pool, choices=list(Pool), default=DEFAULT_POOL, help=pool_help(how))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-processor",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_top_level_flags(parser)  # -v
    commands = parser.add_subparsers(dest="command", required=True)

    process = commands.add_parser("process", help="process a recording file in order (file mode)")
    process.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording (JSON Lines)")
    add_run_flags(process)

    run = commands.add_parser("run", help="all in one: replay server, workers, client (streaming mode)")
    run.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording to replay")
    run.add_argument("--url", default=None, help="consume this server instead of starting one")
    _add_token_flag(run, "sent to --url's server (a server started here gets a random one)")
    _add_async_mode_flag(run, "the replay server started here")
    _add_transport_flag(run, "socket.io (for --url: by its path)")
    _add_pacing_flags(run, default_speed=1.0)
    add_run_flags(run, streaming=True)

    consume = commands.add_parser("consume", help="process the events of a replay server, in order")
    consume.add_argument("--url", default="http://127.0.0.1:5000", help="the server (default %(default)s)")
    consume.add_argument("--realtime", action="store_true", default=None, help="ask the server to pace the replay")
    consume.add_argument("--speed", type=_positive_float, default=None, help="ask for X times real time")
    _add_token_flag(consume, "sent to the server when connecting")
    _add_transport_flag(consume, "sse for a URL whose path starts with /v2/stream/, else socket.io")
    add_run_flags(consume, streaming=True)

    serve = commands.add_parser("serve", help="replay a recording over Socket.IO (RCStream protocol, /rc)")
    serves = serve.add_mutually_exclusive_group()
    serves.add_argument("--input", type=Path, default=Path("sampled_rc.json"), help="recording to replay")
    serves.add_argument(
        "--follow",
        type=_output,
        default=None,
        metavar="OUTPUT",
        help="serve a run's output (a file, or postgresql://...?table=NAME) while the run writes it: each line "
        "once committed, in order, its position as its id; ends when the output is complete. A fresh run "
        "over it (not --resume) stops the server (exit 1)",
    )
    serve.add_argument(
        "--stream",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="serve FILE as the event stream NAME too (repeatable), e.g. revision-create=rc2.json: "
        "/v2/stream/NAME, or merged by time with others, /v2/stream/recentchange,NAME. A bare NAME is "
        "Wikimedia's mediawiki.NAME, with NAME its alias; --input is recentchange",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    serve.add_argument("--port", type=_port, default=5000, help="port (0: any free one; default 5000)")
    serve.add_argument("--loop", action="store_true", help="replay forever")
    serve.add_argument(
        "--window", type=_positive_int, default=1000, help="unacknowledged events held per client (default 1000)"
    )
    _add_token_flag(serve, "refuse any client that does not send it")
    _add_async_mode_flag(serve, "how the server runs")
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browsers from this origin, e.g. https://example.org (repeatable; default: same origin only); "
        "'*' for any page, as the public EventStreams (no credentials; not with a token)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer requests naming this host (Host header), e.g. example.org; repeatable, '*' for any. "
        "Always allowed: localhost, loopback addresses and the --host address (for 0.0.0.0 or ::, any IP address); "
        "other names get 403, so a web page cannot reach the server through DNS rebinding",
    )
    serve.add_argument(
        "--max-payload",
        type=_positive_int,
        default=DEFAULT_MAX_PAYLOAD,
        help="bytes a client may send in one message; a bigger one closes it (default %(default)s)",
    )
    serve.add_argument(
        "--subscribe-burst",
        type=_positive_int,
        default=DEFAULT_SUBSCRIBE_BURST,
        help="subscribes a client may send at once before the rate applies (default %(default)s)",
    )
    serve.add_argument(
        "--subscribe-rate",
        type=_positive_float,
        default=DEFAULT_SUBSCRIBE_RATE,
        help="subscribes a second a client may send after its burst; more get an error (default %(default)s)",
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=_positive_int,
        default=None,
        metavar="N",
        help="open connections (Socket.IO and event streams) one client address may have (default: no limit; "
        "Wikimedia's EventStreams allows 2)",
    )
    serve.add_argument(
        "--heartbeat",
        type=_positive_float,
        default=DEFAULT_HEARTBEAT_S,
        metavar="S",
        help="an idle event stream gets a comment line this often, in seconds (default %(default)s)",
    )
    serve.add_argument(
        "--max-connection-s",
        type=_positive_float,
        default=None,
        metavar="S",
        help="close each event stream after this many seconds; its client resumes with Last-Event-ID, "
        "as from the public EventStreams, which closes long connections too (default: never)",
    )
    _add_pacing_flags(serve, default_speed=1.0)

    worker = commands.add_parser("worker", help="start a Celery worker for runs with --workers 0")
    worker.add_argument("--broker", default=None, help=f"broker URL (default: ${BROKER_ENV})")
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="tasks at once in this process (default: the cores with prefork, 16 per core otherwise); "
        "with threads or gevent, start one such worker per core",
    )
    _add_pool_flag(worker, "how this worker runs")
    worker.add_argument(
        "--task-events",
        action="store_true",
        help="send Celery's task events and heartbeats, so Flower and Prometheus exporters see its tasks",
    )
    worker.add_argument("--task", default=None, help=f"function to run (default: ${TASK_ENV}, else the reference)")
    worker.add_argument("--queue", default=QUEUE, help=f"queue to consume (default {QUEUE})")
    worker.add_argument("--loglevel", default="INFO")

    verify = commands.add_parser("verify", help="check an output has one line per input event, in order")
    verify.add_argument("input", type=Path)
    verify.add_argument("output", type=_output, help="the run's --output: a file or postgresql://...?table=NAME")
    verify.add_argument(
        "--transformed",
        action="store_true",
        help="the task changes events: check count, completeness and error-record places only",
    )
    verify.add_argument(
        "--order",
        type=_order_mode,
        default=OrderMode(),
        metavar="MODE",
        help="the run's --order: total (default), key:FIELD[,FIELD...] or none",
    )

    generate = commands.add_parser("generate", help="write a synthetic RCStream recording")
    generate.add_argument("--minutes", type=_non_negative_float, default=5.0)
    generate.add_argument("--rate", type=_non_negative_float, default=2.07, help="edits per second")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--output", type=Path, default=None, help="file to write (default: standard output)")
    generate.add_argument(
        "--format",
        choices=("rcstream", "eventstreams"),
        default="rcstream",
        help="rcstream: RCStream's change events; eventstreams: as Wikimedia's EventStreams serves them, "
        "with $schema, meta and canary events (default %(default)s)",
    )
    generate.add_argument(
        "--canary-every",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help=f"with --format eventstreams, a canary after every N edits (0: none; default {DEFAULT_CANARY_EVERY})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Every line on stderr goes through redact_text: no URL's token or password, whoever logs it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    redact_tracebacks()
    # What a user should see even without -v: where metrics are served, where a run resumes.
    logging.getLogger("stream_processor.run.pipeline").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Terminated):
        print("stream-processor: interrupted; the output holds every result that was in order", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InputFileError, PathError, OutputError) as exc:
        print(f"stream-processor: {redact_text(str(exc))}", file=sys.stderr)  # fixable before the run
        return EXIT_USAGE
    except (ConnectionError, StartError, RunFailed) as exc:  # cannot reach or keep something running
        print(f"stream-processor: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_UNEXPECTED


class UsageError(Exception):
    pass


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _run_options(args: argparse.Namespace) -> RunOptions:
    try:
        return from_args(args)
    except ValueError as exc:  # a value past its limit (its flag's type took it)
        raise UsageError(str(exc)) from None


def _run_and_summarise(run, *run_args, **run_kwargs) -> int:
    """Call a run function, print its summary, map the outcome to an exit code."""
    from stream_processor.observe.report import summary_text
    from stream_processor.run.pipeline import ReportError

    try:
        report = run(*run_args, **run_kwargs)
    except ReportError as exc:  # the run is complete; only its report or plot could not be written
        print(summary_text(exc.report))
        print(f"stream-processor: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except ValueError as exc:  # RunOptions.check, an unreachable broker: fix it before the run
        raise UsageError(str(exc)) from None
    print(summary_text(report))
    return EXIT_EVENT_ERRORS if report["errors"] else EXIT_OK


def cmd_process(args: argparse.Namespace) -> int:
    from stream_processor.run.file_mode import process_file

    return _run_and_summarise(process_file, args.input, _run_options(args))


def cmd_consume(args: argparse.Namespace) -> int:
    from stream_processor.run.streaming import consume

    return _run_and_summarise(
        consume,
        args.url,
        _run_options(args),
        args.realtime,
        args.speed,
        token=args.token,
        transport=args.transport,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from stream_processor.run.streaming import run_streaming

    return _run_and_summarise(
        run_streaming,
        args.input,
        _run_options(args),
        realtime=args.realtime,
        speed=args.speed,
        url=args.url,
        token=args.token,
        async_mode=args.async_mode,
        transport=args.transport,
    )


def _follow_output(args: argparse.Namespace):
    """`serve --follow`: the output, looked at once (what is wrong now is a usage error). Once the
    server listens it is polled on; when it cannot be followed any more (started over), SIGTERM
    stops the server as it always does."""
    from stream_processor.serving.followed import FollowError, follow

    if args.loop:
        raise UsageError("--loop replays a recording; --follow serves an output as it grows: give one of them")
    try:
        return follow(args.follow, on_failure=lambda: os.kill(os.getpid(), signal.SIGTERM))
    except (FollowError, DatabaseUnreachable) as exc:
        raise UsageError(str(exc)) from None


def _server_settings(args: argparse.Namespace) -> ServerSettings:
    try:
        return ServerSettings(
            realtime=args.realtime,
            speed=args.speed,
            window=args.window,
            token=args.token,
            cors_origins=tuple(args.cors_origin),
            allowed_hosts=(*args.allowed_host, args.host),  # the address it binds names it too
            max_payload=args.max_payload,
            subscribe_burst=args.subscribe_burst,
            subscribe_rate=args.subscribe_rate,
            max_connections_per_address=args.max_connections_per_address,
            heartbeat_s=args.heartbeat,
            max_connection_s=args.max_connection_s,
            async_mode=args.async_mode,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from stream_processor.serving import create_server
    from stream_processor.serving.streams import StreamError

    settings = _server_settings(args)
    if args.follow is not None and args.stream:
        raise UsageError("--follow serves one output as it grows; --stream adds recordings: give one of them")
    followed = _follow_output(args) if args.follow is not None else None
    try:
        server = create_server(
            followed if followed is not None else args.input, settings, loop=args.loop, streams=args.stream
        )
    except StreamError as exc:
        raise UsageError(str(exc)) from None
    # The signal may land anywhere; each shell knows how to stop its own loop.
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)

    def on_listening(url: str) -> None:
        print(f"serving {url}/rc", flush=True)
        if followed is not None:  # from now on SIGTERM stops the server, whatever runs
            followed.start()

    try:
        with contextlib.suppress(KeyboardInterrupt):  # the normal way to stop a server
            try:
                server.serve(args.host, args.port, on_listening=on_listening)
            except OSError as exc:  # e.g. the port is taken
                raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    finally:
        if followed is not None:
            followed.close()
    # A followed output started over: its one error line is logged already.
    return EXIT_UNEXPECTED if followed is not None and followed.failure else EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_processor.engine.broker import resolve_broker
    from stream_processor.engine.workers import default_concurrency, worker_command

    broker_url = resolve_broker(args.broker)
    if not broker_url:
        raise UsageError(f"a worker needs --broker URL or ${BROKER_ENV}: it joins a broker that runs elsewhere")
    task_path = args.task or os.environ.get(TASK_ENV) or DEFAULT_TASK
    try:
        load_function(task_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    os.environ.update({BROKER_ENV: broker_url, TASK_ENV: task_path, QUEUE_ENV: args.queue})
    os.environ[TASK_EVENTS_ENV] = "1" if args.task_events else "0"
    concurrency = args.concurrency or default_concurrency(args.pool)
    command = worker_command(
        concurrency, args.queue, loglevel=args.loglevel, pool=args.pool, task_events=args.task_events
    )
    os.execv(command[0], command)  # become the worker: signals reach Celery directly


def cmd_verify(args: argparse.Namespace) -> int:
    from stream_processor.output.verify import verify, verify_order

    if args.order.kind == "total" and not args.transformed and isinstance(args.output, Path):
        verdict = verify(args.input, args.output)
    else:
        try:
            verdict = verify_order(args.input, args.output, args.order, identical=not args.transformed)
        except DatabaseUnreachable as exc:  # a wrong URL, user or database: a usage error
            raise OutputError(str(exc)) from None
    print(verdict.message, file=sys.stdout if verdict.ok else sys.stderr)
    return EXIT_OK if verdict.ok else EXIT_UNEXPECTED


def cmd_generate(args: argparse.Namespace) -> int:
    if args.canary_every is not None and args.format != "eventstreams":
        raise UsageError("--canary-every adds canaries to --format eventstreams; RCStream's changes have none")
    canary_every = DEFAULT_CANARY_EVERY if args.canary_every is None else args.canary_every
    if args.output is None:
        count = write_recording(sys.stdout, args.minutes, args.rate, args.seed, args.format, canary_every)
    else:
        count = generate_file(args.output, args.minutes, args.rate, args.seed, args.format, canary_every)
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
