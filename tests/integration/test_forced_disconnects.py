"""A hundred dropped connections during one replay, on each transport and in each async
mode: our clients (the Socket.IO `ReplayClient` and the `EventStreamClient`) reconnect
and resume, and every event arrives exactly once, in order. The drops are real: a TCP
proxy between client and server cuts every connection through it."""

from __future__ import annotations

import threading

import pytest

from stream_processor.core.contracts import End
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.sources.generate import generate_file
from stream_processor.sources.source import open_source
from tests.conftest import in_each_async_mode, replay_server
from tests.tcp_proxy import DroppingProxy

pytestmark = in_each_async_mode
DROPS = 100
EVENTS_BETWEEN_DROPS = 20
SPEED = 400  # paced, about 1,000 events a second: data arrives as it is sent, not ahead of the drops


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("drops") / "rec.json"
    generate_file(path, minutes=45, rate=2.5, seed=4)  # about 6,700 events: more than the drops need
    return path


@pytest.mark.heavy
@pytest.mark.parametrize("path", ["", STREAM_PATH], ids=["socket.io", "sse"])
def test_a_hundred_dropped_connections_during_one_replay_lose_and_repeat_nothing(recording, path):
    lines = recording.read_bytes().splitlines()
    assert len(lines) > (DROPS + 2) * EVENTS_BETWEEN_DROPS
    with replay_server(recording) as (url, _), DroppingProxy(int(url.rsplit(":", 1)[1])) as proxy:
        source = open_source(proxy.url + path, realtime=True, speed=SPEED, reconnect_delay_s=0.02)
        source.connect()
        drops = []

        def drop_after_progress() -> None:
            """Cut the connections each time the client has received a few more events."""
            while len(drops) < DROPS:
                target = source.next_offset + EVENTS_BETWEEN_DROPS
                while source.next_offset < target:
                    if finished.wait(0.005):
                        return
                if cut := proxy.drop_all():  # none open: the client is between connections; next time
                    drops.append(cut)

        finished = threading.Event()
        dropper = threading.Thread(target=drop_after_progress)
        dropper.start()
        received = []
        try:
            while not isinstance(item := source.inbox.get(timeout=60), End):
                received.append(item)
                source.acknowledge(item.offset + 1, caught_up=item.offset + 1 >= source.next_offset)
        finally:
            finished.set()
            dropper.join()
            source.close()
    assert len(drops) == DROPS, f"the replay ended after {len(drops)} drops"
    assert [change.offset for change in received] == list(range(len(lines)))  # no gap, nothing twice
    assert [change.line for change in received] == lines
    assert source.reconnects >= DROPS
