"""The event-stream client against a server that uses what EventStreams may send and this
project's server does not: a `retry:` time, a byte order mark, canary events. The server
here is a small real HTTP server (tests/http_stand_in.py) that writes those bytes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from stream_processor.core.contracts import Change, End
from stream_processor.protocol.event_stream import event_id
from stream_processor.sources.sse_client import EventStreamClient
from tests.http_stand_in import http_stand_in

CANARY = {"$schema": "/mediawiki/recentchange/1.0.0", "meta": {"domain": "canary", "stream": "mediawiki.recentchange"}}


def event(offset: int, body: dict) -> bytes:
    return f"event: message\nid: {event_id(offset)}\ndata: {json.dumps(body)}\n\n".encode()


@contextmanager
def scripted_server(answers: list[bytes]) -> Iterator[tuple[str, list[float], list[str | None]]]:
    """Answers the n-th connection with answers[n] (then closes it); records when each came
    and the Last-Event-ID it sent."""
    opened: list[float] = []
    last_ids: list[str | None] = []

    def respond(request: BaseHTTPRequestHandler) -> tuple[str, bytes]:
        opened.append(time.monotonic())
        last_ids.append(request.headers.get("Last-Event-ID"))
        return "text/event-stream; charset=utf-8", answers[min(len(opened), len(answers)) - 1]

    with http_stand_in(respond) as url:
        yield f"{url}/v2/stream/recentchange", opened, last_ids


def received(client: EventStreamClient, timeout: float = 30) -> tuple[list[Change], End]:
    changes: list[Change] = []
    deadline = time.monotonic() + timeout
    while True:
        item = client.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, End):
            return changes, item
        changes.append(item)


def read_to_the_end(url: str, **options) -> tuple[EventStreamClient, list[Change]]:
    """A client of `url` with these options, its changes up to `end`, and the client (closed)."""
    client = EventStreamClient(url, **options)
    client.connect()
    try:
        changes, _ = received(client)
    finally:
        client.close()
    return client, changes


def test_the_client_waits_the_servers_retry_time_strips_a_bom_and_drops_canaries():
    # The BOM comes right before `retry`: kept, it would make the field "\ufeffretry", ignored.
    first = b"\xef\xbb\xbfretry: 1500\n\n:ok\n\n" + event(0, {"id": 0}) + event(1, CANARY) + event(2, {"id": 2})
    second = event(3, {"id": 3}) + b'event: end\ndata: {"count": 1, "offset": 4}\n\n'
    with scripted_server([first, second]) as (url, opened, last_ids):
        client, changes = read_to_the_end(url, reconnect_delay_s=0.05)
    assert [json.loads(change.line)["id"] for change in changes] == [0, 2, 3]  # the canary is not among them
    assert [change.offset for change in changes] == [0, 1, 2]  # numbered without it
    assert client.canaries_dropped == 1
    assert last_ids == [None, event_id(2)]  # resumed after the last event it read
    assert opened[1] - opened[0] >= 1.4, "reconnected before the server's retry: 1500 ms"


def test_a_client_told_to_keep_canaries_keeps_them():
    body = event(0, CANARY) + event(1, {"id": 1}) + b'event: end\ndata: {"count": 2, "offset": 2}\n\n'
    with scripted_server([body]) as (url, _, _):
        client, changes = read_to_the_end(url, keep_canaries=True)
    assert [json.loads(change.line).get("meta", {}).get("domain") for change in changes] == ["canary", None]
    assert client.canaries_dropped == 0


def test_a_retry_of_zero_does_not_make_the_client_reconnect_in_a_loop():
    # A server that says `retry: 0` and closes at once, again and again: the client waits at
    # least 100 ms between connections, not as fast as the network goes.
    empty = b"retry: 0\n\n:ok\n\n"
    last = event(0, {"id": 0}) + b'event: end\ndata: {"count": 1, "offset": 1}\n\n'
    with scripted_server([empty] * 5 + [last]) as (url, opened, _):
        client, changes = read_to_the_end(url, reconnect_delay_s=0.05)
    assert [json.loads(change.line)["id"] for change in changes] == [0]
    gaps = [later - earlier for earlier, later in zip(opened, opened[1:], strict=False)]
    assert len(gaps) == 5 and min(gaps[1:]) >= 0.09, gaps  # the first gap is reconnect_delay_s (no retry yet)
