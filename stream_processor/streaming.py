"""Streaming mode: events from a Socket.IO replay server through the pipeline.

`consume` subscribes to a server that runs anywhere; `run_streaming` also starts (and
stops) a replay server of its own on a free port, so one command does everything.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stream_processor import processes
from stream_processor.client import End, ReplayClient
from stream_processor.pipeline import Pipeline, RunOptions, pipeline
from stream_processor.progress import Progress
from stream_processor.protocol import TOKEN_ENV
from stream_processor.records import Record, open_recording, parse_event
from stream_processor.replay import ReplaySchedule

log = logging.getLogger(__name__)


class ServerError(processes.StartError):
    """The local replay server did not start."""


def consume(
    url: str,
    options: RunOptions,
    realtime: bool | None = None,
    speed: float | None = None,
    show_progress: bool = True,
    token: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Subscribe to the replay at `url`, process every event in order; return the report.

    `source` names the recording in error messages (`source:LINE: ...`); default the URL.
    """
    options.check()
    progress = Progress(show_progress)
    client: ReplayClient | None = None  # set before the first event, so before the first line is written

    def on_written(offset: int, latency_s: float, is_error: bool) -> None:
        progress.on_written(offset, latency_s, is_error)
        client.acknowledge(offset + 1, caught_up=offset + 1 >= client.next_offset)

    with progress, pipeline(options, on_written=on_written) as run:
        client = ReplayClient(
            url, run.start_offset, realtime, speed, ack_every=max(1, options.max_in_flight // 10), token=token
        )
        client.connect()
        try:
            _feed(run, client, progress, ReplaySchedule(speed or 1.0) if realtime else None, source or url)
            run.processor.drain()
        finally:
            client.close()
    return run.report(url=url, reconnects=client.reconnects)


def _feed(
    run: Pipeline, client: ReplayClient, progress: Progress, schedule: ReplaySchedule | None, source: str
) -> None:
    """Take events from the client's inbox until the server says the replay has ended.

    The ideal's arrival times are the paced schedule when pacing was asked for, else
    the moments the events actually arrived.
    """
    validate = run.options.validator()
    first_received_at: float | None = None
    while not isinstance(item := client.inbox.get(), End):
        raw = item.line
        event, error = parse_event(raw, validate)
        first_received_at = first_received_at if first_received_at is not None else item.received_at
        arrival = schedule.due(event) if schedule else item.received_at - first_received_at
        progress.on_received()
        run.take(Record(item.offset, raw, event, error, item.line_number), arrival, source=source)


def run_streaming(
    input_path: Path,
    options: RunOptions,
    realtime: bool = False,
    speed: float = 1.0,
    url: str | None = None,
    show_progress: bool = True,
    token: str | None = None,
) -> dict[str, Any]:
    """Start a replay server for `input_path` (unless `url`), consume it, stop everything."""
    options.check()
    if url:
        return consume(url, options, realtime, speed, show_progress, token)
    open_recording(input_path).close()  # a missing file fails now, before anything starts
    token = token or secrets.token_urlsafe(24)  # our own server admits only us
    with local_server(input_path, token) as server_url:
        report = consume(server_url, options, realtime, speed, show_progress, token, source=str(input_path))
    report["input"] = str(input_path)
    return report


@contextmanager
def local_server(input_path: Path, token: str, start_timeout_s: float = 30.0) -> Iterator[str]:
    """A replay server in a child process on a free localhost port; yields its URL."""
    command = [sys.executable, "-m", "stream_processor", "serve", "--input", str(input_path), "--port", "0"]
    env = {**os.environ, TOKEN_ENV: token}  # not on the command line, where `ps` shows it
    process = processes.spawn(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield _wait_for_url(process, start_timeout_s)
    finally:
        processes.stop(process, signal.SIGTERM, grace_s=5.0)
        process.stdout.close()


def _wait_for_url(process: subprocess.Popen, timeout_s: float) -> str:
    """The server prints `serving URL` once it listens; wait for that line."""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = process.stdout.readline()
                if line.startswith("serving "):
                    return line.split()[1]
                if not line:
                    raise ServerError(f"replay server exited at start with code {process.wait()}")
    raise ServerError(f"replay server not listening after {timeout_s:.0f} s")
