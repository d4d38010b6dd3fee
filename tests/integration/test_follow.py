"""`serve --follow OUTPUT`: a run's output served while it is written, by a real server
process, to real clients: httpx with httpx-sse (a parser nobody here wrote), and the
project's own event-stream and Socket.IO clients.

The outputs are written here, in steps, by the run's own writers (JsonlSink, PostgresSink);
where a test needs a line written but not yet committed, it writes the two halves itself,
as JsonlSink writes them (the line, flushed; then its checkpoint line), or holds a
PostgreSQL transaction open. "Not served" is checked on the server's own figures once it
has looked at the output several times since (`/status`: follow.polls), never after a sleep.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from stream_processor.core.contracts import Change, End
from stream_processor.output.database import DatabaseOutput
from stream_processor.output.postgres_sink import PostgresSink
from stream_processor.output.sink import FORMAT, JsonlSink, checkpoint_path, encode_offsets
from stream_processor.protocol.event_stream import STREAM_PATH, TOPIC, event_id
from stream_processor.sources.socketio_client import ReplayClient
from stream_processor.sources.sse_client import EventStreamClient
from tests.conftest import ROOT, cli_env, in_each_async_mode, processes_with_marker, terminate, wait_until
from tests.tcp_proxy import DroppingProxy

WAIT_S = 30


START = 1_700_000_000  # the lines' timestamps: one a second from here


def line_at(position: int) -> bytes:
    return json.dumps({"position": position, "timestamp": START + position, "wait": 0}).encode()


def header(events: int | None) -> dict[str, Any]:
    """A checkpoint header as a run writes it; `events` None: an input of unknown length (a live stream)."""
    source: dict[str, Any] = {"url": "http://example.invalid/v2/stream/recentchange"}
    if events is not None:
        source = {"sha256": "0" * 64, "size": 0, "events": events}
    return {"input": source, "task": "tests.follow:result", "order": "total"}


# -- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/status", timeout=10).json()

    def follow(self) -> dict[str, Any]:
        return self.status()["follow"]

    def look_again(self, times: int = 5) -> dict[str, Any]:
        """Wait until the server has polled the output `times` more times (so it has seen
        whatever is there now); its status then."""
        start = self.follow()["polls"]
        wait_until(lambda: self.follow()["polls"] >= start + times, timeout=WAIT_S, message="the server to poll")
        return self.status()

    def exited(self, timeout: float = WAIT_S) -> tuple[int, list[str]]:
        """Its exit code and stderr's lines, once it has exited by itself."""
        self.process.wait(timeout=timeout)
        return self.process.returncode, self.process.stderr.read().splitlines()


@contextmanager
def follow_server(output: str | Path, *flags: str) -> Iterator[Server]:
    """`stream-processor serve --follow OUTPUT` on a free port; stopped (SIGTERM) at the end if still up."""
    marker = uuid.uuid4().hex
    command = [sys.executable, str(ROOT / "socket_server.py"), "--follow", str(output), "--port", "0", *flags]
    process = subprocess.Popen(command, env=cli_env(marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line.startswith("serving "):
            process.wait(timeout=WAIT_S)
            raise AssertionError(f"the server did not start: {line!r} {process.stderr.read()}")
        yield Server(line.split()[1].removesuffix("/rc"), process)
    finally:
        if process.poll() is None:
            terminate(process, marker, timeout=10)
        wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
        process.stdout.close()
        process.stderr.close()


def run_serve(*args: str) -> subprocess.CompletedProcess:
    """`stream-processor serve ARGS` expected to stop by itself (a usage error)."""
    command = [sys.executable, str(ROOT / "socket_server.py"), "--port", "0", *args]
    return subprocess.run(command, env=cli_env(uuid.uuid4().hex), capture_output=True, text=True, timeout=WAIT_S)


# -- the clients ------------------------------------------------------------------------------


@dataclass
class HttpxReader:
    """An event stream read with httpx and httpx-sse on a thread: (event, id's offset, data) as they come."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    events: list[tuple[str, int | None, str]] = field(default_factory=list)
    status: int | None = None

    def __post_init__(self) -> None:
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=120)) as client,
                connect_sse(client, "GET", f"{self.url}{STREAM_PATH}?{self.query}", headers=self.headers) as source,
            ):
                self.status = source.response.status_code
                for event in source.iter_sse():
                    self.events.append((event.event, offset_of(event.id), event.data))
                    if event.event == "end":
                        return
        except httpx.HTTPError:
            pass  # the server stopped: the test says what it expected
        finally:
            self.done.set()

    @property
    def lines(self) -> list[tuple[int | None, bytes]]:
        return [(offset, data.encode()) for kind, offset, data in self.events if kind == "message"]

    @property
    def end(self) -> dict[str, Any] | None:
        ends = [json.loads(data) for kind, _, data in self.events if kind == "end"]
        return ends[0] if ends else None


def offset_of(sse_id: str | None) -> int | None:
    if not sse_id:
        return None
    (position,) = json.loads(sse_id)
    assert position["topic"] == TOPIC and position["partition"] == 0
    return position["offset"] - 1  # an id holds the next position (KafkaSSE's)


class ProjectReader:
    """One of the project's own sources (`consume`'s), drained and acknowledged on a thread, as a run does."""

    def __init__(self, source: EventStreamClient | ReplayClient) -> None:
        self.source = source
        self.changes: list[Change] = []
        self.end: End | None = None
        self.closed = False
        source.connect()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while self.end is None:
            try:
                item = self.source.inbox.get(timeout=0.1)
            except queue.Empty:
                if self.closed:
                    return
                continue
            if isinstance(item, End):
                self.end = item
                return
            self.changes.append(item)
            self.source.acknowledge(item.offset + 1, caught_up=item.offset + 1 >= self.source.next_offset)

    @property
    def lines(self) -> list[tuple[int | None, bytes]]:
        return [(change.offset, change.line) for change in self.changes]

    def close(self) -> None:
        self.closed = True
        self.source.close()
        self._thread.join(timeout=10)


@contextmanager
def every_client(url: str) -> Iterator[dict[str, Any]]:
    """httpx-sse, the project's event-stream client and its Socket.IO client, all reading from the start."""
    readers: dict[str, Any] = {"httpx-sse": HttpxReader(url)}
    project: list[ProjectReader] = []
    try:
        for name, source in (
            ("sse_client", EventStreamClient(url + STREAM_PATH)),
            ("socket.io", ReplayClient(url)),
        ):
            reader = ProjectReader(source)
            project.append(reader)
            readers[name] = reader
        yield readers
    finally:
        for reader in project:
            reader.close()


def received(readers: dict[str, Any]) -> dict[str, int]:
    return {name: len(reader.lines) for name, reader in readers.items()}


def wait_for_lines(readers: dict[str, Any], count: int) -> None:
    wait_until(
        lambda: all(len(reader.lines) >= count for reader in readers.values()),
        timeout=WAIT_S,
        interval=0.01,
        message=f"{count} lines at every client (have {received(readers)})",
    )


def expected(positions: range) -> list[tuple[int | None, bytes]]:
    return [(position, line_at(position)) for position in positions]


# -- writing a file output by halves ----------------------------------------------------------


class HalfWrites:
    """A file output written as JsonlSink writes it, but one half at a time, so a test can
    stop between them: the output line (flushed), then its checkpoint line."""

    def __init__(self, output: Path, events: int | None) -> None:
        self.output = output
        self.checkpoint = checkpoint_path(output)
        self.checkpoint.write_bytes(json.dumps({"format": FORMAT, **header(events)}, sort_keys=True).encode() + b"\n")
        output.write_bytes(b"")

    def output_bytes(self, data: bytes) -> None:
        with self.output.open("ab") as stream:
            stream.write(data)

    def checkpoint_bytes(self, data: bytes) -> None:
        with self.checkpoint.open("ab") as stream:
            stream.write(data)

    def commit(self, positions: range) -> None:
        self.checkpoint_bytes(encode_offsets(iter(positions)) + b"\n")

    def write(self, positions: range) -> None:
        self.output_bytes(b"".join(line_at(position) + b"\n" for position in positions))
        self.commit(positions)


# -- a file output ----------------------------------------------------------------------------


@in_each_async_mode
def test_a_growing_file_output_goes_to_every_client_in_order_with_positions_as_ids_then_ends(tmp_path):
    output = tmp_path / "results.json"
    steps = [range(0, 1), range(1, 6), range(6, 40), range(40, 41), range(41, 120)]
    with follow_server(output) as server:
        # Nothing written yet: it waits (no file, then no checkpoint), serving nothing.
        assert server.look_again()["follow"]["committed"] == 0
        with every_client(server.url) as readers:
            with JsonlSink(output, header(events=120)) as sink:
                for step in steps:
                    sink.write([(position, line_at(position)) for position in step])
                    wait_for_lines(readers, step.stop)
                    assert received(readers) == dict.fromkeys(readers, step.stop)  # nothing beyond what is written
            wait_until(
                lambda: all(reader.end is not None for reader in readers.values()), timeout=WAIT_S, message="the end"
            )
            for name, reader in readers.items():
                assert reader.lines == expected(range(120)), name
            assert readers["httpx-sse"].end == {"count": 120, "offset": 120}
            assert readers["sse_client"].end == End(120, 120)
            assert readers["socket.io"].end == End(120, 120)
        # The output is complete: a resume past its end has nothing left.
        after_the_end = httpx.get(f"{server.url}{STREAM_PATH}", headers={"Last-Event-ID": event_id(119)}, timeout=10)
        assert after_the_end.status_code == 204
        assert server.follow()["complete"] is True


@in_each_async_mode
def test_a_line_goes_out_only_once_its_checkpoint_line_is_written_and_never_torn(tmp_path):
    output = tmp_path / "results.json"
    writes = HalfWrites(output, events=None)  # unknown length: the stream stays open
    writes.write(range(3))
    with follow_server(output) as server, every_client(server.url) as readers:
        wait_for_lines(readers, 3)

        # Line 3 is written and flushed, its checkpoint line is not: it is not committed.
        sent = server.status()["events_sent"]
        writes.output_bytes(line_at(3) + b"\n")
        status = server.look_again()
        assert (status["follow"]["committed"], status["events_sent"]) == (3, sent)
        assert received(readers) == dict.fromkeys(readers, 3)
        writes.commit(range(3, 4))
        wait_for_lines(readers, 4)

        # A torn checkpoint line (no newline yet) commits nothing.
        writes.output_bytes(line_at(4) + b"\n")
        writes.checkpoint_bytes(b"4")
        status = server.look_again()
        assert (status["follow"]["committed"], received(readers)) == (4, dict.fromkeys(readers, 4))
        writes.checkpoint_bytes(b"\n")
        wait_for_lines(readers, 5)

        # A torn output line is never served, even where a checkpoint (wrongly) lists it.
        writes.output_bytes(line_at(5)[:10])
        writes.commit(range(5, 6))
        status = server.look_again()
        assert (status["follow"]["committed"], received(readers)) == (5, dict.fromkeys(readers, 5))
        writes.output_bytes(line_at(5)[10:] + b"\n")
        wait_for_lines(readers, 6)

        for name, reader in readers.items():
            assert reader.lines == expected(range(6)), name
        assert all(reader.end is None for reader in readers.values())  # still open: its length is unknown


def test_last_event_id_since_and_a_subscribe_offset_resume_with_exactly_the_rest(tmp_path):
    output = tmp_path / "results.json"
    with JsonlSink(output, header(events=80)) as sink, follow_server(output) as server:
        sink.write([(position, line_at(position)) for position in range(50)])
        first = HttpxReader(server.url)
        wait_until(lambda: len(first.lines) >= 50, timeout=WAIT_S, message="50 lines")
        resumed = HttpxReader(server.url, headers={"Last-Event-ID": event_id(19)})
        since = HttpxReader(server.url, query=f"since={(START + 60) * 1000}")  # a line not written yet
        by_socketio = ProjectReader(ReplayClient(server.url, start_offset=35))
        try:
            wait_until(lambda: len(resumed.lines) >= 30 and len(by_socketio.lines) >= 15, timeout=WAIT_S)
            sink.write([(position, line_at(position)) for position in range(50, 80)])
            for reader in (first, resumed, since):
                assert reader.done.wait(WAIT_S)
            wait_until(lambda: by_socketio.end is not None, timeout=WAIT_S, message="the Socket.IO end")
        finally:
            by_socketio.close()
    assert first.lines == expected(range(80))
    assert resumed.lines == expected(range(20, 80)) and resumed.end == {"count": 60, "offset": 80}
    assert since.lines == expected(range(60, 80)) and since.end == {"count": 20, "offset": 80}
    assert by_socketio.lines == expected(range(35, 80)) and by_socketio.end == End(45, 80)


def test_an_output_of_unknown_length_stays_open_with_heartbeats(tmp_path):
    output = tmp_path / "results.json"
    with JsonlSink(output, header(events=None)) as sink, follow_server(output, "--heartbeat", "0.2") as server:
        sink.write([(position, line_at(position)) for position in range(3)])
        comments, lines = 0, []
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
            client.stream("GET", f"{server.url}{STREAM_PATH}") as response,
        ):
            for text in response.iter_lines():
                comments += text == ":"
                if text.startswith("data: "):
                    lines.append(text.removeprefix("data: ").encode())
                if comments >= 3:
                    break  # three heartbeats after the lines: open, alive, with nothing more to send
    assert lines == [line_at(position) for position in range(3)]


def fresh_run(output: Path) -> None:
    """A run over the output without --resume: it empties it, and writes other lines."""
    with JsonlSink(output, header(events=None)) as fresh:
        fresh.write([(0, line_at(100))])


def replaced(output: Path) -> None:
    """The output and its checkpoint replaced by other files (renamed over them)."""
    elsewhere = output.with_name("elsewhere.json")
    fresh_run(elsewhere)
    os.replace(checkpoint_path(elsewhere), checkpoint_path(output))
    os.replace(elsewhere, output)


@pytest.mark.parametrize("start_over", [fresh_run, replaced], ids=["fresh run", "replaced"])
def test_an_output_started_over_stops_the_server_with_one_line_and_exit_1(tmp_path, start_over):
    output = tmp_path / "results.json"
    with JsonlSink(output, header(events=None)) as sink:
        sink.write([(position, line_at(position)) for position in range(10)])
    with follow_server(output) as server:
        wait_until(lambda: server.follow()["committed"] == 10, timeout=WAIT_S, message="10 lines committed")
        start_over(output)
        code, stderr = server.exited()
    assert code == 1
    assert len(stderr) == 1 and "started over" in stderr[0] and str(output) in stderr[0], stderr


def test_a_resumed_run_goes_on_serving(tmp_path):
    output = tmp_path / "results.json"
    with JsonlSink(output, header(events=30)) as sink:
        sink.write([(position, line_at(position)) for position in range(10)])
    with follow_server(output) as server:
        reader = HttpxReader(server.url)
        wait_until(lambda: len(reader.lines) == 10, timeout=WAIT_S, message="10 lines")
        with JsonlSink(output, header(events=30), resume=True) as resumed:
            resumed.write([(position, line_at(position)) for position in range(10, 30)])
        assert reader.done.wait(WAIT_S)
        assert server.process.poll() is None
    assert reader.lines == expected(range(30)) and reader.end == {"count": 30, "offset": 30}


# -- usage errors -----------------------------------------------------------------------------


def test_follow_with_input_or_loop_is_a_usage_error(tmp_path):
    output = str(tmp_path / "results.json")
    both = run_serve("--input", "sampled_rc.json", "--follow", output)
    looping = run_serve("--follow", output, "--loop")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr, both.stderr
    assert looping.returncode == 2 and looping.stderr.splitlines() == [
        "stream-processor: --loop replays a recording; --follow serves an output as it grows: give one of them"
    ]


def test_a_database_that_cannot_be_reached_at_the_start_is_one_line_without_the_password():
    url = "postgresql://postgres:hunter2@127.0.0.1:5432/nosuchdb?table=t"
    result = run_serve("--follow", url)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "nosuchdb" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr + result.stdout


# -- a PostgreSQL output ----------------------------------------------------------------------


def table_url(postgres_url: str, table: str, port: int | None = None) -> str:
    base = postgres_url if port is None else postgres_url.replace(":5432/", f":{port}/")
    return f"{base}?table={table}"


def sink_for(postgres_url: str, table: str, events: int | None, resume: bool = False) -> PostgresSink:
    return PostgresSink(DatabaseOutput.parse(table_url(postgres_url, table)), header(events), resume=resume)


@in_each_async_mode
def test_a_growing_table_goes_to_every_client_in_order_and_a_row_only_once_committed(postgres_url, pg_table):
    steps = [range(0, 1), range(1, 6), range(6, 300), range(300, 301), range(301, 599)]
    with follow_server(table_url(postgres_url, pg_table)) as server:
        assert server.look_again()["follow"]["committed"] == 0  # no table yet: it waits
        with every_client(server.url) as readers:
            with sink_for(postgres_url, pg_table, events=600) as sink:
                for step in steps:
                    sink.write([(position, line_at(position)) for position in step])
                    wait_for_lines(readers, step.stop)
                    assert received(readers) == dict.fromkeys(readers, step.stop)
            # The last row and its checkpoint in a transaction held open: not committed, not served.
            sent = server.status()["events_sent"]
            with psycopg.connect(postgres_url) as writer:
                commit_last_row_by_hand(writer, pg_table, 599)
                status = server.look_again()
                assert (status["follow"]["committed"], status["events_sent"]) == (599, sent)
                assert received(readers) == dict.fromkeys(readers, 599)
                writer.commit()
            wait_until(
                lambda: all(reader.end is not None for reader in readers.values()), timeout=WAIT_S, message="the end"
            )
            for name, reader in readers.items():
                assert reader.lines == expected(range(600)), name
            assert readers["httpx-sse"].end == {"count": 600, "offset": 600}


def commit_last_row_by_hand(connection: psycopg.Connection, table: str, position: int) -> None:
    """What PostgresSink's write does in its transaction, left uncommitted (the caller commits)."""
    connection.execute(
        f'INSERT INTO public.{table} ("offset", position, line, record) VALUES (%s, %s, %s, %s::jsonb)',
        (position, position, line_at(position).decode(), line_at(position).decode()),
    )
    connection.execute(
        "UPDATE public.stream_processor_checkpoints SET low_watermark = %s, lines = %s WHERE output_table = %s",
        (position + 1, position + 1, f"public.{table}"),
    )


def test_a_table_resumes_by_last_event_id_and_a_fresh_run_stops_the_server(postgres_url, pg_table):
    with sink_for(postgres_url, pg_table, events=None) as sink:
        sink.write([(position, line_at(position)) for position in range(40)])
    with follow_server(table_url(postgres_url, pg_table)) as server:
        resumed = HttpxReader(server.url, headers={"Last-Event-ID": event_id(24)})
        wait_until(lambda: len(resumed.lines) >= 15, timeout=WAIT_S, message="the rest")
        assert resumed.lines == expected(range(25, 40))
        with sink_for(postgres_url, pg_table, events=None) as fresh:  # a fresh run: another run_id
            fresh.write([(0, line_at(100))])
            code, stderr = server.exited()
    assert code == 1
    assert len(stderr) == 1 and "started over" in stderr[0] and pg_table in stderr[0], stderr
    assert line_at(100) not in [line for _, line in resumed.lines]


@in_each_async_mode
def test_a_database_lost_while_following_keeps_the_server_up_and_it_goes_on_when_back(postgres_url, pg_table):
    with (
        DroppingProxy(5432) as gate,
        sink_for(postgres_url, pg_table, events=70) as sink,
        follow_server(table_url(postgres_url, pg_table, port=gate.port)) as server,
    ):
        sink.write([(position, line_at(position)) for position in range(40)])
        reader = HttpxReader(server.url)
        wait_until(lambda: len(reader.lines) == 40, timeout=WAIT_S, message="40 lines")
        gate.refusing = True
        gate.drop_all()
        sink.write([(position, line_at(position)) for position in range(40, 70)])  # straight to PostgreSQL
        wait_until(lambda: server.follow()["connected"] is False, timeout=WAIT_S, message="the loss noticed")
        late = HttpxReader(server.url, headers={"Last-Event-ID": event_id(29)})  # served from what was fetched
        wait_until(lambda: len(late.lines) == 10, timeout=WAIT_S, message="the fetched lines, while down")
        status = server.look_again(times=3)  # it answers, and goes on trying, while the database is away
        assert status["follow"]["committed"] == 40 and len(reader.lines) == 40
        gate.refusing = False
        assert reader.done.wait(WAIT_S) and late.done.wait(WAIT_S)
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGTERM)
        code, stderr = server.exited()
    assert reader.lines == expected(range(70)) and late.lines == expected(range(30, 70))
    assert code == 0
    assert [line.split(":", 1)[0] for line in stderr] == ["WARNING stream_processor.serving.followed"] * 2, stderr
    assert "lost" in stderr[0] and "again" in stderr[1]


def test_a_restarted_database_keeps_the_server_up_and_it_goes_on_when_back(private_pg):
    """The same with a real restart: PostgreSQL itself stopped (fast: every session ended) and started."""
    with follow_server(private_pg.table_url("restarted")) as server:
        with sink_for(private_pg.url, "restarted", events=60) as sink:
            sink.write([(position, line_at(position)) for position in range(40)])
        reader = HttpxReader(server.url)
        wait_until(lambda: len(reader.lines) == 40, timeout=WAIT_S, message="40 lines")
        private_pg.stop()
        wait_until(lambda: server.follow()["connected"] is False, timeout=WAIT_S, message="the loss noticed")
        late = HttpxReader(server.url, headers={"Last-Event-ID": event_id(34)})  # from what was fetched
        wait_until(lambda: len(late.lines) == 5, timeout=WAIT_S, message="the fetched lines, while down")
        private_pg.start()
        with sink_for(private_pg.url, "restarted", events=60, resume=True) as sink:
            sink.write([(position, line_at(position)) for position in range(40, 60)])
        assert reader.done.wait(WAIT_S) and late.done.wait(WAIT_S)
        assert server.process.poll() is None
    assert reader.lines == expected(range(60)) and late.lines == expected(range(35, 60))
