"""Fifty clients at once on one server, in each async mode: half over Socket.IO, half over
the event stream, with different filters, all paced at 1x (real time): each gets
exactly the events it asked for, in order, and the server keeps roughly to the schedule.

The recording is short (eight seconds of edits, five a second, timestamps in whole
seconds as RCStream's are), so the test runs at 1x and still takes seconds.
python-socketio's client hands each message to a thread of its own, which can reorder
them; so Socket.IO clients subscribe with offsets and are checked against them, while
the event stream's order is checked as it arrives.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from stream_processor.protocol.event_stream import STREAM_PATH, offset_of_id
from stream_processor.sources.generate import START_TIMESTAMP, generate_events
from tests.conftest import WIKIS, expected_offsets, in_each_async_mode, replay_server, write_recording
from tests.listener import Listener

pytestmark = in_each_async_mode
CLIENTS = 50
FILTERS = [
    ("*", ""),
    ("*.wikipedia.org", "wikis=*.wikipedia.org"),
    ({"wikis": ["dewiki", "www.wikidata.org"]}, "wikis=dewiki,www.wikidata.org"),
    ({"type": "edit", "namespace": [0, 1]}, "type=edit&namespace=0,1"),
    ({"wikis": "en.*", "bot": False}, "wikis=en.*&bot=false"),
]


def paced_mixed_recording(path: Path, seconds: int = 8, per_second: int = 5) -> list[dict]:
    events = []
    generated = generate_events(minutes=60, rate=2.0, seed=23)
    for i in range(seconds * per_second):
        server_name, wiki = WIKIS[i % len(WIKIS)]
        timestamp = START_TIMESTAMP + i // per_second
        events.append({**next(generated), "server_name": server_name, "wiki": wiki, "timestamp": timestamp})
    write_recording(path, [json.dumps(event).encode() for event in events])
    return events


def socketio_client(url: str, subscription, expected: int) -> list[int]:
    """The offsets a Socket.IO subscriber gets, by offset: all `expected` changes and the end
    (counted: a message can overtake another in python-socketio's client), then nothing."""
    request = subscription if isinstance(subscription, dict) else {"wikis": subscription}
    with Listener(url) as client:
        client.emit("subscribe", {**request, "with_offsets": True, "realtime": True, "speed": 1})
        received = [client.next(timeout=30) for _ in range(expected + 1)]
        assert client.round_trip() == []
    assert sum(kind == "end" for kind, _ in received) == 1
    return sorted(args[1] for kind, args in received if kind == "change")


def sse_client(url: str, query: str) -> list[int]:
    offsets = []
    with (
        httpx.Client(timeout=60) as http,
        connect_sse(http, "GET", f"{url}{STREAM_PATH}?realtime=true&{query}") as source,
    ):
        for event in source.iter_sse():
            if event.event == "end":
                break
            offsets.append(offset_of_id(event.id))
    return offsets


@pytest.mark.heavy
def test_fifty_clients_with_mixed_transports_and_filters_each_get_exactly_their_events(tmp_path):
    events = paced_mixed_recording(tmp_path / "paced.json")
    start = threading.Barrier(CLIENTS)
    with replay_server(tmp_path / "paced.json") as (url, _):

        def one(i: int) -> tuple[str, object, list[int]]:
            subscription, query = FILTERS[i % len(FILTERS)]
            start.wait(timeout=30)  # all fifty at once
            if i % 2:
                return "sse", subscription, sse_client(url, query)
            return (
                "socket.io",
                subscription,
                socketio_client(url, subscription, len(expected_offsets(events, subscription))),
            )

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            results = list(pool.map(one, range(CLIENTS)))
        status = httpx.get(f"{url}/status", timeout=10).json()
    for transport, subscription, offsets in results:
        assert offsets == expected_offsets(events, subscription), (transport, subscription)
    assert {transport for transport, _, _ in results} == {"socket.io", "sse"}
    pacing = status["pacing_error_ms"]
    assert pacing["count"] == sum(len(offsets) for _, _, offsets in results)
    print(f"server pacing error, {CLIENTS} clients at 1x: p50 {pacing['p50']} ms, p99 {pacing['p99']} ms")
    # A sanity bound, not a figure: the fifty clients share this process and the machine's cores
    # with the server and with other tests. The benchmark measures pacing against its 20 ms
    # target, clients in a process of their own; a replay that stalled would be seconds late.
    assert pacing["p50"] < 50 and pacing["p99"] < 2000
