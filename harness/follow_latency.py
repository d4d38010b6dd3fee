"""How soon `serve --follow` delivers a committed line: commit -> received, p50/p99/max.

    python -m harness.follow_latency [--lines 2000] [--rate 200] [--postgres URL]

For each async mode, and for a file output and (with --postgres) a table: a real
`stream-processor serve --follow` process, the run's own writer (JsonlSink, PostgresSink)
committing one line at a time at a steady rate here, and the project's event-stream client
reading. A line's latency is from its write returning (committed) to its arrival at the
client, on one clock (both are in this process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from harness.postgres_instance import drop_output_table
from stream_processor.core.contracts import Change, End
from stream_processor.output.database import DatabaseOutput
from stream_processor.output.postgres_sink import PostgresSink
from stream_processor.output.sink import JsonlSink
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.sources.sse_client import EventStreamClient

MODES = ("eventlet", "asyncio")


@contextmanager
def follow_server(output: str, async_mode: str) -> Iterator[str]:
    command = [sys.executable, "-m", "stream_processor", "serve", "--follow", output, "--port", "0"]
    process = subprocess.Popen([*command, "--async-mode", async_mode], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("serving "):
            raise RuntimeError(f"the server did not start: {line!r}")
        yield line.split()[1].removesuffix("/rc")
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(output: str, sink_for, lines: int, rate: float, async_mode: str) -> list[float]:
    """Latencies (s) of `lines` lines committed at `rate` a second to `output`."""
    header = {"input": {"events": lines}, "task": "harness.follow_latency", "order": "total"}
    committed_at: list[float] = []
    changes: list[Change] = []
    with follow_server(output, async_mode) as url, sink_for(header) as sink:
        client = EventStreamClient(url + STREAM_PATH)
        client.connect()
        reader = threading.Thread(target=drain, args=(client, changes), daemon=True)
        reader.start()
        try:
            start = time.monotonic()
            for position in range(lines):
                time.sleep(max(0.0, start + position / rate - time.monotonic()))  # pacing, not synchronisation
                sink.write([(position, json.dumps({"position": position, "wait": 0}).encode())])
                committed_at.append(time.monotonic())
            reader.join(timeout=60)
        finally:
            client.close()
    return sorted(change.received_at - committed_at[change.offset] for change in changes)


def drain(client: EventStreamClient, changes: list[Change]) -> None:
    """Take and acknowledge each line as a run does, so the client's window never holds it back."""
    while not isinstance(item := client.inbox.get(timeout=60), End):
        changes.append(item)
        client.acknowledge(item.offset + 1, caught_up=True)


def summary(latencies: list[float]) -> str:
    def ms(quantile: float) -> str:
        return f"{latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] * 1000:.1f}"

    return f"{len(latencies)} lines: p50 {ms(0.5)} ms, p99 {ms(0.99)} ms, max {latencies[-1] * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="lines committed a second")
    parser.add_argument("--postgres", default=None, help="also a table in this database (postgresql://...)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        for async_mode in MODES:
            path = Path(work) / f"{async_mode}.json"
            latencies = measure(str(path), partial(JsonlSink, path), args.lines, args.rate, async_mode)
            print(f"file, {async_mode}: {summary(latencies)}", flush=True)
            if args.postgres:
                print(f"table, {async_mode}: {summary(measure_table(args, async_mode))}", flush=True)
    return 0


def measure_table(args: argparse.Namespace, async_mode: str) -> list[float]:
    table = f"follow_latency_{uuid.uuid4().hex}"
    url = f"{args.postgres}?table={table}"
    try:
        return measure(url, partial(PostgresSink, DatabaseOutput.parse(url)), args.lines, args.rate, async_mode)
    finally:
        drop_output_table(args.postgres, table)


if __name__ == "__main__":
    sys.exit(main())
