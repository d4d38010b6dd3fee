"""A streaming run's sources: the event-stream client (same interface as the Socket.IO
`ReplayClient`) against a real server in each async mode, and the choice by URL."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stream_processor.core.contracts import Change, End
from stream_processor.protocol.event_stream import STREAM_PATH, event_id
from stream_processor.protocol.sse_parser import SseEvent
from stream_processor.sources.socketio_client import ReplayClient
from stream_processor.sources.source import SOCKETIO, SSE, open_source, transport_for
from stream_processor.sources.sse_client import EventStreamClient
from tests.conftest import (
    expected_offsets,
    in_each_async_mode,
    mixed_recording,
    paced_recording,
    replay_server,
    wait_until,
    write_recording,
)
from tests.listener import Listener


def drain(source, acknowledge: bool = True, stop_after: int | None = None) -> tuple[list[Change], End | None]:
    """Everything a source puts in its inbox up to `End` (or `stop_after` changes), acknowledging as consume does."""
    changes: list[Change] = []
    while stop_after is None or len(changes) < stop_after:
        item = source.inbox.get(timeout=30)
        if isinstance(item, End):
            return changes, item
        changes.append(item)
        if acknowledge:
            source.acknowledge(item.offset + 1, caught_up=item.offset + 1 >= source.next_offset)
    return changes, None


def connected(url: str, **options):
    source = open_source(url, **options)
    source.connect()
    return source


@in_each_async_mode
def test_the_event_stream_source_gets_every_line_byte_for_byte_even_lines_that_are_not_events(good, tmp_path):
    lines = [good[0], b"{broken", b'{"title": "Caf\xe9"}', b"[" * 3000, *good[1:20]]
    recording = write_recording(tmp_path / "rec.json", lines)
    with replay_server(recording) as (url, _):
        source = connected(url + STREAM_PATH)
        try:
            changes, end = drain(source)
        finally:
            source.close()
    assert [change.line for change in changes] == lines
    assert [change.offset for change in changes] == list(range(len(lines)))
    assert [change.line_number for change in changes[:4]] == [None, 2, 3, 4]  # error events name their line
    assert end == End(len(lines), len(lines)) and source.reconnects == 0


@in_each_async_mode
def test_the_resume_token_of_the_last_written_event_resumes_a_later_run_right_after_it(small_recording):
    lines = small_recording.read_bytes().splitlines()
    with replay_server(small_recording) as (url, _):
        first = connected(url + STREAM_PATH)
        changes, _ = drain(first, stop_after=10)
        first.acknowledge(10, caught_up=False)  # written up to offset 9
        token, forgotten = first.resume_token(9), first.resume_token(3)
        first.close()
        later = connected(url + STREAM_PATH, start_offset=10, resume_token=token)
        rest, end = drain(later)
        later.close()
    assert token == event_id(9) and forgotten is None  # only the unacknowledged window is kept
    assert [c.line for c in changes + rest] == lines and [c.offset for c in rest] == list(range(10, len(lines)))
    assert end.offset == len(lines)


@in_each_async_mode
def test_a_filtered_stream_is_numbered_in_arrival_order_and_resumes_by_token(tmp_path):
    events = mixed_recording(tmp_path / "mixed.json")
    want = [json.dumps(events[offset]).encode() for offset in expected_offsets(events, "de.*")]
    with replay_server(tmp_path / "mixed.json") as (url, _):
        first = connected(url + STREAM_PATH + "?wikis=de.*")
        head, _ = drain(first, stop_after=5)
        token = first.resume_token(4)
        first.close()
        later = connected(url + STREAM_PATH + "?wikis=de.*", start_offset=5, resume_token=token)
        tail, _ = drain(later)
        later.close()
    assert [c.offset for c in head + tail] == list(range(len(want)))  # no gaps for the pipeline
    assert [c.line for c in head + tail] == want


@in_each_async_mode
def test_a_refused_event_stream_says_why(small_recording):
    with replay_server(small_recording, "--token", "s3cret") as (url, _):
        with pytest.raises(ConnectionError, match="HTTP 401: this server needs a token"):
            connected(url + STREAM_PATH, token="wrong")
        accepted = connected(url + STREAM_PATH, token="s3cret")
        changes, end = drain(accepted)
        accepted.close()
    assert end.count == len(changes) > 0


@in_each_async_mode
def test_a_dropped_event_stream_reconnects_with_last_event_id_and_loses_nothing(tmp_path):
    lines = paced_recording(tmp_path / "paced.json", count=40)  # 4 s at speed 10
    with replay_server(tmp_path / "paced.json") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        source = connected(url + STREAM_PATH, realtime=True, speed=10)
        before, _ = drain(source, stop_after=5)
    # The server is gone mid-stream; the source keeps trying until it is back on the same port.
    with replay_server(tmp_path / "paced.json", port=port):
        after, end = drain(source)
        source.close()
    assert [c.line for c in before + after] == lines  # no gap, nothing twice
    assert source.reconnects >= 1 and end.offset == len(lines)


@in_each_async_mode
def test_our_socketio_client_asks_for_batches_and_gets_every_line_in_order(small_recording):
    lines = small_recording.read_bytes().splitlines()
    with replay_server(small_recording) as (url, _), Listener(url, ack_changes=False) as listener:
        listener.emit("subscribe", {"wikis": "*", "with_offsets": True, "raw": True, "batch": 7})
        received = listener.until_end()
        source = connected(url)
        changes, end = drain(source)
        source.close()
    batches = [args[0] for kind, args in received if kind == "changes"]
    assert all(1 <= len(batch) <= 7 for batch in batches) and max(len(batch) for batch in batches) == 7
    assert [item for batch in batches for item in batch] == [[line.decode(), o, o + 1] for o, line in enumerate(lines)]
    assert isinstance(source, ReplayClient) and source.batch > 1
    assert [c.line for c in changes] == lines and end.count == len(lines)


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("http://127.0.0.1:5000", SOCKETIO),
        ("http://127.0.0.1:5000/socket.io/", SOCKETIO),
        ("http://127.0.0.1:5000/v2/stream/recentchange", SSE),
        ("https://stream.wikimedia.org/v2/stream/recentchange?since=2026-01-01T00:00:00Z", SSE),
    ],
)
def test_the_source_is_chosen_by_the_urls_path(url, transport):
    assert transport_for(url) == transport
    assert isinstance(open_source(url), EventStreamClient if transport == SSE else ReplayClient)
    assert isinstance(open_source(url, transport=SSE), EventStreamClient)


def live_id(timestamp_ms: int) -> str:
    """An id as Wikimedia's EventStreams sends it: Kafka positions by timestamp, no offset of ours."""
    return json.dumps(
        [
            {"topic": "eqiad.mediawiki.recentchange", "partition": 0, "timestamp": timestamp_ms},
            {"topic": "codfw.mediawiki.recentchange", "partition": 0, "offset": -1},
        ]
    )


def test_live_events_without_offsets_are_numbered_in_arrival_order_from_the_resume_point():
    source = EventStreamClient(
        "https://stream.example/v2/stream/recentchange", start_offset=100, resume_token=live_id(5)
    )
    for i in range(5):
        source._take(SseEvent("message", b'{"n": %d}' % i, live_id(1000 + i)))
    changes = [source.inbox.get_nowait() for _ in range(5)]
    assert [c.offset for c in changes] == [100, 101, 102, 103, 104] and source.next_offset == 105
    assert source.resume_token(102) == live_id(1002) and source._headers()["Last-Event-ID"] == live_id(1004)
    source.acknowledge(104, caught_up=False)  # written up to 103: its token is still there
    assert source.resume_token(102) is None and source.resume_token(103) == live_id(1003)


def test_a_live_source_resuming_across_runs_sends_the_token_it_was_given():
    source = EventStreamClient("https://stream.example/v2/stream/recentchange", start_offset=7, resume_token=live_id(9))
    assert source._headers()["Last-Event-ID"] == live_id(9)
    ours = EventStreamClient("http://127.0.0.1:1/v2/stream/recentchange", start_offset=7)
    assert ours._headers()["Last-Event-ID"] == event_id(6)  # this project's server: the offset is enough
    assert "Last-Event-ID" not in EventStreamClient("http://127.0.0.1:1/v2/stream/recentchange")._headers()


def test_acknowledging_from_another_thread_while_events_arrive_keeps_every_token_needed():
    source = EventStreamClient("http://127.0.0.1:1/v2/stream/recentchange")
    arriving = threading.Thread(
        target=lambda: [source._take(SseEvent("message", b"{}", event_id(i))) for i in range(20_000)]
    )
    arriving.start()
    written = 0
    while written < 20_000:
        item = source.inbox.get(timeout=10)
        written = item.offset + 1
        source.acknowledge(written, caught_up=False)
        assert source.resume_token(item.offset) == event_id(item.offset)
    arriving.join()
    assert len(source._ids) <= 2


def fat_loop(tmp_path, size: int = 2_000) -> tuple[Path, list[bytes]]:
    """20 events of about `size` bytes, for `serve --loop`: an endless stream, offsets growing."""
    lines = [json.dumps({"id": i, "wiki": "enwiki", "wait": 0, "pad": "p" * size}).encode() for i in range(20)]
    return write_recording(tmp_path / "loop.json", lines), lines


def sent_to_the_stream(url: str) -> int:
    """The next offset the server will send the (one) event stream: where TCP holds it back."""
    clients = httpx.get(f"{url}/status", timeout=10).json()["clients"]
    return next(client["offset"] for client in clients if client["transport"] == "sse")


def stalls(read, timeout: float = 30) -> int:
    """Wait until `read()` gives the same value on two looks a second apart; that value."""
    seen = [read()]
    wait_until(lambda: seen.append(read()) or seen[-1] == seen[-2], timeout=timeout, interval=1, message="a stall")
    return seen[-1]


@in_each_async_mode
def test_the_event_stream_source_stops_reading_at_its_window_and_goes_on_when_acknowledged(tmp_path):
    recording, lines = fat_loop(tmp_path)
    with replay_server(recording, "--loop") as (url, _):
        source = connected(url + STREAM_PATH, window=25)
        try:
            wait_until(lambda: source.inbox.qsize() == 25, timeout=10, message="a full window")
            held_back_at = stalls(lambda: sent_to_the_stream(url))  # the socket, unread, holds the server back
            assert source.inbox.qsize() == 25 and source.next_offset == 25  # nothing read past the window
            first = [source.inbox.get_nowait() for _ in range(10)]
            source.acknowledge(10, caught_up=False)  # written up to offset 9: room for ten more
            wait_until(lambda: source.next_offset == 35, timeout=10, message="ten more read")
            assert stalls(lambda: source.next_offset) == 35
            rest = [source.inbox.get_nowait() for _ in range(25)]
        finally:
            source.close()
    assert held_back_at < 100_000, "the server was not held back"
    assert [c.offset for c in first + rest] == list(range(35))
    assert [c.line for c in first + rest] == [lines[offset % 20] for offset in range(35)]


@in_each_async_mode
def test_the_socketio_source_asks_the_server_for_its_own_window_and_gets_no_more(tmp_path):
    """The Socket.IO client cannot stop reading (python-socketio answers pings on the same
    connection): it subscribes with its window, and the server, whose own is 1000, holds it
    to that one, counted from its acks."""
    recording, lines = fat_loop(tmp_path)
    with replay_server(recording, "--loop") as (url, _):
        source = connected(url, window=25, ack_every=1)
        try:
            wait_until(lambda: source.inbox.qsize() == 25, timeout=10, message="a full window")
            assert stalls(lambda: source.next_offset) == 25  # nothing past the window
            (client,) = httpx.get(f"{url}/status", timeout=10).json()["clients"]
            assert client["window"]["size"] == 25
            first = [source.inbox.get_nowait() for _ in range(10)]
            source.acknowledge(10, caught_up=False)  # written up to offset 9: room for ten more
            wait_until(lambda: source.next_offset == 35, timeout=10, message="ten more sent")
            assert stalls(lambda: source.next_offset) == 35
            rest = [source.inbox.get_nowait() for _ in range(25)]
        finally:
            source.close()
    assert [c.offset for c in first + rest] == list(range(35))
    assert [c.line for c in first + rest] == [lines[offset % 20] for offset in range(35)]


@in_each_async_mode
def test_close_wakes_a_reader_waiting_at_its_window_at_once_and_leaves_no_thread(tmp_path):
    recording, _ = fat_loop(tmp_path)
    with replay_server(recording, "--loop") as (url, _):
        source = connected(url + STREAM_PATH, window=5)
        wait_until(lambda: source.next_offset == 5, timeout=10, message="a full window")
        started = time.monotonic()
        source.close()
        took = time.monotonic() - started
    assert took < 1.0, f"close() took {took:.2f} s"
    assert not source._thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "event-stream"]


@in_each_async_mode
def test_a_reader_held_at_its_window_through_a_server_restart_resumes_with_no_gap_and_nothing_twice(tmp_path):
    recording, lines = fat_loop(tmp_path, size=10_000)  # ~10 MB of socket buffers hold ~1,000 of them
    with replay_server(recording, "--loop") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        source = connected(url + STREAM_PATH, window=10, reconnect_delay_s=0.05)
        wait_until(lambda: source.next_offset == 10, timeout=10, message="a full window")
    # The server is gone while the reader waits at its window; what the socket holds is read
    # first, then the reader finds the connection closed and resumes after the last event it read.
    with replay_server(recording, "--loop", port=port):
        try:
            changes, _ = drain(source, stop_after=4_000)
        finally:
            source.close()
    assert source.reconnects >= 1
    assert [c.offset for c in changes] == list(range(4_000))
    assert [c.line for c in changes] == [lines[offset % 20] for offset in range(4_000)]


def test_an_event_stream_that_never_ends_a_line_stops_the_source_saying_why():
    class EndlessLine(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(b"data: " + b"x" * 1_000_000)

    server = ThreadingHTTPServer(("127.0.0.1", 0), EndlessLine)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = EventStreamClient(f"http://127.0.0.1:{server.server_address[1]}/v2/stream/recentchange")
        source.connect()
        wait_until(lambda: source.failure is not None, timeout=30, message="the source to give up")
        source.close()
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(source.failure, ConnectionError) and "has not ended" in str(source.failure)
    assert source.inbox.empty() and not source._thread.is_alive()
