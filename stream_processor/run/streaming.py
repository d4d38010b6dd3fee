"""Streaming mode: events from a replay server (Socket.IO or an event stream) through the pipeline.

`consume` subscribes to a server that runs anywhere; `run_streaming` also starts (and
stops) a replay server of its own on a free port, so one command does everything.
"""

from __future__ import annotations

import logging
import os
import queue
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

from stream_processor.core.contracts import End, Source
from stream_processor.core.observer import Observer
from stream_processor.core.processor import RunFailed
from stream_processor.core.records import Record, parse_event, recording_identity
from stream_processor.core.replay import ReplaySchedule
from stream_processor.engine import processes
from stream_processor.output.targets import OutputSink
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.protocol.vocabulary import NAMESPACE, TOKEN_ENV
from stream_processor.redaction import safe_url, without_credentials
from stream_processor.run.options import RunOptions
from stream_processor.run.pipeline import Pipeline, blank_lines_of, dashboard, observe, pipeline
from stream_processor.sources.source import SSE, check_url, open_source

log = logging.getLogger(__name__)

STILL_GOING_CHECK_S = 1.0  # while no event arrives, look this often for a reason to stop


class ServerError(processes.StartError):
    """The local replay server did not start."""


def consume(
    url: str,
    options: RunOptions,
    realtime: bool | None = None,
    speed: float | None = None,
    token: str | None = None,
    source: str | None = None,
    identity: dict[str, Any] | None = None,
    server: LocalServer | None = None,
    report_extra: dict[str, Any] | None = None,
    transport: str | None = None,
) -> dict[str, Any]:
    """Subscribe to the replay at `url`, process every event in order; return the report.

    `source` names the recording in error messages (`source:LINE: ...`); default the URL.
    `identity` says what the stream is, for --resume's check; default the URL without its
    credentials (a resume may read the same stream with another token).
    Wherever the URL is shown or stored (log, report, dashboard, checkpoint) it is
    `safe_url(url)`: a token in its query or a password in it never leaves the process.
    `server`: the replay server this run owns, if any (its failure ends the run).
    `transport` (socket.io or sse) forces the kind of source; default: by the URL's path.
    """
    check_url(url, transport)  # a usage error in the URL: before anything starts
    options.check()
    acknowledger = _Acknowledger()
    observations = observe(options)
    with dashboard(options, observations):
        shown = safe_url(url)
        source = source or shown
        mode = {"mode": "streaming", "input": source, "server": shown, "realtime": bool(realtime), "speed": speed}
        identity = identity or {"url": without_credentials(url)}
        with pipeline(options, identity, observations, [acknowledger], mode, begin=False) as run:
            position = run.sink  # where a live stream resumes is kept with the output (see output/sink.py)
            start_offset, resume_token = run.start_offset, None
            saved = _saved_position(position) if options.output.resume and run.start_offset else None
            if saved is not None and saved[0] < run.start_offset:  # after that event: what follows is not all written
                start_offset, resume_token = saved[0] + 1, saved[1]
            client = open_source(
                url,
                start_offset,
                realtime,
                speed,
                ack_every=max(1, options.stream.max_in_flight // 10),
                token=token,
                resume_token=resume_token,
                transport=transport,
                window=options.stream.max_in_flight,
                keep_canaries=options.stream.keep_canaries,
            )
            # Everything before the run's start is written: the source's window counts from there,
            # even when a live stream resumes a little back (what comes again is dropped in _feed).
            client.acknowledge(run.start_offset, caught_up=False)
            acknowledger.client, acknowledger.position = client, position
            client.connect()  # a server that refuses the request as bad (400) leaves the output as it was
            run.begin_output()
            try:
                watch = _StillGoing(run, client, server, options.stream.reconnect_timeout_s)
                _feed(run, client, ReplaySchedule(speed or 1.0) if realtime else None, source, watch)
                run.processor.drain()
            finally:
                client.close()
                position.save_position()
        return run.report(
            url=shown, reconnects=client.reconnects, canaries_dropped=client.canaries_dropped, **(report_extra or {})
        )


class _Acknowledger(Observer):
    """Tells the server what is written, so it keeps sending (its window counts from there),
    and keeps the stream's position beside the output for --resume."""

    client: Source | None = None
    position: OutputSink | None = None

    def on_read(self, duration_s: float | None, arrival_s: float, key: object = None) -> None:
        pass

    def on_written(self, offset: int, latency_s: float, is_error: bool) -> None:
        pass

    def on_watermark(self, low_watermark: int) -> None:
        """`ack N` means every offset below N is written: the low watermark, in every mode."""
        if self.client is not None:
            self.client.acknowledge(low_watermark, caught_up=low_watermark >= self.client.next_offset)
            if self.position is not None and low_watermark > 0:
                sse_id = self.client.resume_token(low_watermark - 1)
                if sse_id is not None:
                    self.position.note_position({"offset": low_watermark - 1, "id": sse_id})


def _saved_position(sink: OutputSink) -> tuple[int, str] | None:
    """(offset, id) of the last stream event saved with the output, if any.

    A live stream has no offsets of its own: the client numbers its events from where the
    run starts. So a resume opens the stream right after the saved event and numbers from
    just past its offset; what comes again below the output's low watermark is dropped."""
    position = sink.saved_position()
    try:
        return int(position["offset"]), str(position["id"])  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        return None


class _StillGoing:
    """What ends a streaming run early instead of letting it wait forever: a failed
    core, an owned server that cannot be kept running, a server gone for too long."""

    def __init__(
        self, run: Pipeline, client: Source, server: LocalServer | None, reconnect_timeout_s: float | None
    ) -> None:
        self.run, self.client, self.server, self.reconnect_timeout_s = run, client, server, reconnect_timeout_s

    def check(self) -> None:
        if self.run.processor.failure is not None:
            raise RunFailed(f"the run cannot go on: {self.run.processor.failure}")
        if self.server is not None and self.server.failure is not None:
            raise self.server.failure
        if self.client.failure is not None:
            raise self.client.failure
        gone_for = self.client.disconnected_for()
        if self.reconnect_timeout_s and gone_for > self.reconnect_timeout_s:
            raise ConnectionError(
                f"lost the connection to {self.client.shown_url} for {gone_for:.0f} s (--reconnect-timeout "
                f"{self.reconnect_timeout_s:g}); the output holds every line written so far, and --resume continues it"
            )


def _feed(run: Pipeline, client: Source, schedule: ReplaySchedule | None, source: str, watch: _StillGoing) -> None:
    """Take events from the client's inbox until the server says the replay has ended.

    The ideal's arrival times are the paced schedule when pacing was asked for, else
    the moments the events actually arrived.
    """
    validate = run.options.engine.validator()
    first_received_at: float | None = None
    while True:
        try:
            item = client.inbox.get(timeout=STILL_GOING_CHECK_S)
        except queue.Empty:
            watch.check()
            continue
        if isinstance(item, End):
            return
        if item.offset < run.start_offset:
            continue  # written before this run resumed: a live stream resumes from a saved event, a little back
        raw = item.line
        event, error = parse_event(raw, validate)
        first_received_at = first_received_at if first_received_at is not None else item.received_at
        arrival = schedule.due(event) if schedule else item.received_at - first_received_at
        run.take(Record(item.offset, raw, event, error, item.line_number), arrival, source=source)


def run_streaming(
    input_path: Path,
    options: RunOptions,
    realtime: bool = False,
    speed: float = 1.0,
    url: str | None = None,
    token: str | None = None,
    async_mode: str | None = None,
    transport: str | None = None,
) -> dict[str, Any]:
    """Start a replay server for `input_path` (unless `url`), consume it over `transport`
    (Socket.IO unless `sse`), stop everything."""
    if url:
        return consume(url, options, realtime, speed, token, transport=transport)
    options = options.reading(input_path)
    options.check()
    identity = recording_identity(input_path)  # also fails now, before anything starts, if unreadable
    token = token or secrets.token_urlsafe(24)  # our own server admits only us
    with local_server(input_path, token, async_mode) as server:
        report = consume(
            server.url + STREAM_PATH if transport == SSE else server.url,
            options,
            realtime,
            speed,
            token,
            source=str(input_path),
            identity=identity,
            server=server,
            report_extra={"input": str(input_path), **blank_lines_of(input_path)},
            transport=transport,
        )
    return report


class LocalServer:
    """A replay server in a child process on a free localhost port, owned by the run.

    If it dies, it is started again on the same port (the client reconnects and
    resubscribes from what it has not received); after 5 deaths a minute the run stops
    with an error instead of waiting for it forever.
    """

    def __init__(
        self, input_path: Path, token: str, async_mode: str | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.input_path = input_path
        self.token = token
        self.async_mode = async_mode
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.url = ""  # where it listens, once it says so
        self.failure: Exception | None = None  # set once it cannot be kept running
        self._supervisor: processes.Supervisor | None = None
        self._pipes: list = []

    def start(self) -> str:
        self._supervisor = processes.Supervisor(
            "replay server", self._spawn, before_restart=self._close_pipes, on_give_up=self._give_up
        )
        self._supervisor.start()
        return self.url

    def _spawn(self) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "stream_processor", "serve", "--input", str(self.input_path), "--port", str(self.port)
        ]  # fmt: skip
        command += ["--async-mode", self.async_mode] if self.async_mode else []
        env = {**os.environ, TOKEN_ENV: self.token}  # not on the command line, where `ps` shows it
        process = processes.spawn(command, stdout=subprocess.PIPE, text=True, env=env)
        self._pipes.append(process.stdout)
        try:
            self.url = _wait_for_url(process, self.start_timeout_s)
        except BaseException:
            processes.stop(process, signal.SIGKILL, grace_s=0)
            raise
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart takes the same port: the client knows it
        return process

    def _close_pipes(self) -> None:
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()

    def _give_up(self, reason: Exception) -> None:
        self.failure = ServerError(f"the replay server for {self.input_path} keeps dying: {reason}")

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop(signal.SIGTERM, grace_s=5.0)
            self._supervisor = None
        self._close_pipes()


@contextmanager
def local_server(
    input_path: Path, token: str, async_mode: str | None = None, start_timeout_s: float = 30.0
) -> Iterator[LocalServer]:
    """A supervised replay server for `input_path`; yields it once it listens (`.url`)."""
    server = LocalServer(input_path, token, async_mode, start_timeout_s)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _wait_for_url(process: subprocess.Popen, timeout_s: float) -> str:
    """The server prints `serving URL` once it listens; wait for that line."""
    deadline = time.monotonic() + timeout_s
    stdout = process.stdout
    assert stdout is not None, "the server is started with stdout=PIPE"
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = stdout.readline()
                if line.startswith("serving "):
                    return line.split()[1].removesuffix(NAMESPACE)
                if not line:
                    raise ServerError(f"replay server exited at start with code {process.wait()}")
    raise ServerError(f"replay server not listening after {timeout_s:.0f} s")
