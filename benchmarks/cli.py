"""`python -m benchmarks`: argument parsing, then the suite, the table and the JSON.

Exit codes: 0 every scenario ran; 1 some failed (the table says which); 2 usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from benchmarks import brokers
from benchmarks.scenarios import GROUPS, OPT_IN, SCENARIOS
from benchmarks.settings import FULL, SMOKE
from benchmarks.suite import failures, run_suite
from benchmarks.table import render
from stream_processor.cli.main import Terminated, _positive_float, _positive_int, _raise_terminated

DESCRIPTION = (
    "Benchmarks of stream_processor: batch, realtime, throughput, short tasks, ordering modes, memory and the "
    "dashboard, each beside its ideal or floor; the replay server's rate and pacing beside their targets; "
    "on request (--only cluster), recovery from faults on a 3-host cluster."
)


def _names(allowed: tuple[str, ...] | list[str], groups: dict[str, list[str]] | None = None):
    groups = groups or {}

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        names = [member for name in names for member in groups.get(name, [name])]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join([*allowed, *groups])}; got {text!r}")
        return list(dict.fromkeys(names))

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    parser.add_argument("--smoke", action="store_true", help="small scale, a minute or two (default: full scale)")
    parser.add_argument(
        "--only",
        type=_names(list(SCENARIOS), GROUPS),
        default=[name for name in SCENARIOS if name not in OPT_IN],
        help="scenarios, comma-separated; server = server-rate,server-pacing (default all but "
        f"{', '.join(OPT_IN)}, which needs root: a cluster in network namespaces)",
    )
    parser.add_argument(
        "--brokers", type=_names(brokers.KINDS), default=list(brokers.KINDS), help="default: embedded,rabbitmq"
    )
    parser.add_argument("--rabbitmq-url", default=brokers.DEFAULT_RABBITMQ_URL, help="default %(default)s")
    parser.add_argument("--recording", type=Path, default=None, help="batch and realtime (default sampled_rc.json)")
    parser.add_argument("--time-scale", type=_positive_float, default=None, help="full 1, smoke 0.02")
    parser.add_argument("--speed", type=_positive_float, default=None, help="realtime replay speed: full 1, smoke 50")
    parser.add_argument("--throughput-events", type=_positive_int, default=None, help="full 20000, smoke 3000")
    parser.add_argument("--postgres-events", type=_positive_int, default=None, help="full 20000, smoke 5000")
    parser.add_argument("--memory-events", type=_positive_int, default=None, help="full 100000, smoke 5000")
    parser.add_argument("--dashboard-events", type=_positive_int, default=None, help="full 50000, smoke 5000")
    parser.add_argument(
        "--dashboard-repeats", type=_positive_int, default=None, help="runs with the page and without: full 7, smoke 2"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="benchmarks: %(message)s", stream=sys.stderr)
    settings = (SMOKE if args.smoke else FULL).with_overrides(
        recording=args.recording and args.recording.resolve(),
        time_scale=args.time_scale,
        speed=args.speed,
        throughput_events=args.throughput_events,
        memory_events=args.memory_events,
        postgres_events=args.postgres_events,
        dashboard_events=args.dashboard_events,
        dashboard_repeats=args.dashboard_repeats,
    )
    if not settings.recording.is_file():
        print(f"benchmarks: {settings.recording}: no such file", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_terminated)  # Terminated: every process started is stopped
    try:
        chosen, skipped = brokers.resolve(args.brokers, args.rabbitmq_url)
        results = run_suite(settings, chosen, skipped, args.only)
    except (KeyboardInterrupt, Terminated):
        print("benchmarks: interrupted; every process started has been stopped", file=sys.stderr)
        return 130
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failures(results) else 0
