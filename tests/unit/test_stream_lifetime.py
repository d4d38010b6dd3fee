"""An event stream's end as EventStreams ends one: a failure while streaming goes out as
`event: error` and the stream closes; `--max-connection-s` closes it on time, mid-wait."""

from __future__ import annotations

import json
from collections.abc import Iterator

import socketio

from stream_processor.core.records import Record
from stream_processor.serving.base_shell import ShellBase
from stream_processor.serving.core import ServerSettings, ServingCore
from stream_processor.serving.http_endpoints import EventStream
from stream_processor.serving.recording import Recording
from stream_processor.serving.replay_loop import Send, Step, Wait
from stream_processor.serving.subscriber import SSE, Subscriber
from tests.conftest import FakeClock


class Shell(ShellBase):
    def _answering(self, decide):
        return decide  # the Socket.IO handlers are not used here


def shell(settings: ServerSettings, clock, tmp_path) -> Shell:
    (tmp_path / "empty.json").write_bytes(b"")
    return Shell(
        ServingCore(Recording(tmp_path / "empty.json"), settings, clock=clock), socketio.Server(async_mode="threading")
    )


def record(offset: int) -> Record:
    raw = json.dumps({"id": offset}).encode()
    return Record(offset, raw, {"id": offset}, None, offset + 1)


def stream_of(steps: Iterator[Step]) -> EventStream:
    return EventStream(Subscriber("sse-1", SSE, "127.0.0.1", waker=None), steps, [])


def test_a_failure_while_streaming_goes_out_as_an_error_event_and_the_stream_ends(tmp_path):
    def failing() -> Iterator[Step]:
        yield Send([record(0)], 0)
        raise OSError("the disk went away")

    chunks = list(shell(ServerSettings(), FakeClock(0.0), tmp_path)._stream_chunks(stream_of(failing())))
    written = b"".join(chunk for chunk in chunks if isinstance(chunk, bytes))
    assert written.count(b"event: message") == 1
    last = written.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    assert "OSError" in json.loads(last.split(b"data: ", 1)[1])["message"]
    assert b"the disk went away" not in written  # what failed is in the log, not told to clients


def test_max_connection_s_cuts_a_long_wait_short_and_closes_at_the_next_step(tmp_path):
    clock = FakeClock(100.0)

    def slow() -> Iterator[Step]:
        yield Send([record(0)], 0)
        yield Wait(60.0)  # e.g. a paced replay's gap
        clock.now = 102.0  # the shell waited what it was told, and time passed
        yield Send([record(1)], 0)

    chunks = list(shell(ServerSettings(max_connection_s=2.0), clock, tmp_path)._stream_chunks(stream_of(slow())))
    waits = [chunk for chunk in chunks if isinstance(chunk, Wait) and chunk.timeout]
    assert waits == [Wait(2.0)]  # not 60 s: the stream closes at 102
    assert b"".join(c for c in chunks if isinstance(c, bytes)).count(b"event: message") == 1
