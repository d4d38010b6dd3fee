"""The EventStreams-compatible event stream (GET /v2/stream/recentchange) against a real
server in each async mode, read with httpx and httpx-sse (an SSE parser nobody here
wrote): events byte for byte with their offsets, resuming with Last-Event-ID, since,
filters, pacing, heartbeats, the end, bad requests, tokens and origins, and a reader
that stops reading."""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from stream_processor.protocol.event_stream import STREAM_PATH, TOPIC
from stream_processor.sources.generate import START_TIMESTAMP
from tests.conftest import (
    expected_offsets,
    in_each_async_mode,
    mixed_recording,
    paced_recording,
    replay_server,
    wait_until,
    write_recording,
)

pytestmark = in_each_async_mode


def read_stream(
    url: str, query: str = "", headers: dict | None = None, stop_after: int | None = None, timeout: float = 30
) -> list[ServerSentEvent]:
    """Events of one stream, up to and including `end` (or the first `stop_after`)."""
    events: list[ServerSentEvent] = []
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(client, "GET", f"{url}{STREAM_PATH}?{query}", headers=dict(headers or {})) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            events.append(event)
            if event.event == "end" or (stop_after is not None and len(events) == stop_after):
                break
    return events


def offset_of(event: ServerSentEvent) -> int:
    (position,) = json.loads(event.id)
    assert position["topic"] == TOPIC and position["partition"] == 0
    return position["offset"] - 1  # an id holds the next position (KafkaSSE's)


def get(url: str, path: str, headers: dict | None = None) -> httpx.Response:
    return httpx.get(f"{url}{path}", headers=headers, timeout=10)


def test_every_event_arrives_as_its_recorded_line_with_its_offset_then_an_end(small_recording):
    lines = small_recording.read_bytes().splitlines()
    with replay_server(small_recording) as (url, _):
        events = read_stream(url)
    messages, end = events[:-1], events[-1]
    assert all(event.event == "message" for event in messages)
    assert [event.data.encode() for event in messages] == lines  # byte for byte
    assert [offset_of(event) for event in messages] == list(range(len(lines)))
    assert (end.event, json.loads(end.data)) == ("end", {"count": len(lines), "offset": len(lines)})


def test_last_event_id_resumes_right_after_that_event_with_no_gap_and_no_repeat(small_recording):
    lines = small_recording.read_bytes().splitlines()
    with replay_server(small_recording) as (url, _):
        first = read_stream(url, stop_after=10)
        rest = read_stream(url, headers={"Last-Event-ID": first[-1].id})
        at_the_end = get(url, STREAM_PATH, {"Last-Event-ID": rest[-2].id})
    received = [event.data.encode() for event in first + rest[:-1]]
    assert received == lines
    assert at_the_end.status_code == 204  # nothing left: an EventSource stops reconnecting


def test_since_starts_at_the_first_event_at_or_after_that_time_in_iso_8601_or_epoch_ms(tmp_path):
    lines = paced_recording(tmp_path / "timed.json", count=30, gap_s=2)  # timestamps 2 s apart
    moment = START_TIMESTAMP + 2 * 7 - 1  # one second before event 7
    iso = datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
    with replay_server(tmp_path / "timed.json") as (url, _):
        by_ms = read_stream(url, f"since={moment * 1000}")
        by_iso = read_stream(url, f"since={iso}")
    for events in (by_ms, by_iso):
        assert [offset_of(event) for event in events[:-1]] == list(range(7, len(lines)))


def test_a_resume_past_the_end_by_offset_or_by_time_gets_204_so_an_eventsource_stops(tmp_path):
    lines = paced_recording(tmp_path / "timed.json", count=30, gap_s=2)
    latest_ms = (START_TIMESTAMP + 2 * 29) * 1000  # the last event's time
    after_ms = latest_ms + 1

    def position(**fields) -> dict:
        return {"Last-Event-ID": json.dumps([{"topic": TOPIC, "partition": 0, **fields}])}

    with replay_server(tmp_path / "timed.json") as (url, _):
        answers = {
            "since ms": get(url, f"{STREAM_PATH}?since={after_ms}"),
            "since iso": get(url, f"{STREAM_PATH}?since=2999-01-01T00:00:00Z"),
            "id timestamp": get(url, STREAM_PATH, position(timestamp=after_ms)),
            "id offset": get(url, STREAM_PATH, position(offset=len(lines))),  # the next position: past the end
            "id far offset": get(url, STREAM_PATH, position(offset=10**30)),
        }
        at_the_latest = read_stream(url, f"since={latest_ms}")
        by_id_time = read_stream(url, headers=position(timestamp=latest_ms))
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(answers, 204)
    assert all(answer.content == b"" for answer in answers.values())
    for events in (at_the_latest, by_id_time):  # at the latest time: the last event, then the end
        assert [offset_of(event) for event in events] == [len(lines) - 1, len(lines) - 1]


def test_the_end_carries_the_last_lines_id_so_a_reconnect_gets_204_even_when_nothing_matched(small_recording):
    count = len(small_recording.read_bytes().splitlines())
    with replay_server(small_recording) as (url, _):
        matching_nothing = read_stream(url, "wikis=nothing.example")
        everything = read_stream(url)
        reconnects = [get(url, f"{STREAM_PATH}?wikis=nothing.example", {"Last-Event-ID": matching_nothing[-1].id})]
        reconnects.append(get(url, STREAM_PATH, {"Last-Event-ID": everything[-1].id}))
    assert [event.event for event in matching_nothing] == ["end"]
    assert offset_of(matching_nothing[-1]) == offset_of(everything[-1]) == count - 1
    assert [answer.status_code for answer in reconnects] == [204, 204]


@pytest.mark.parametrize(
    ("query", "subscription"),
    [
        ("wikis=*.wikipedia.org", "*.wikipedia.org"),
        ("wikis=dewiki,*.wiktionary.org&wikis=www.wikidata.org", ["dewiki", "*.wiktionary.org", "www.wikidata.org"]),
        ("type=edit,log&namespace=0&namespace=1,2", {"type": ["edit", "log"], "namespace": [0, 1, 2]}),
        ("wikis=*wiki*&bot=true", {"wikis": "*wiki*", "bot": True}),
    ],
    ids=["pattern", "names and patterns", "type and namespace", "bot"],
)
def test_query_parameters_filter_like_subscribe_does(tmp_path, query, subscription):
    events = mixed_recording(tmp_path / "mixed.json")
    with replay_server(tmp_path / "mixed.json") as (url, _):
        received = read_stream(url, query)
    want = expected_offsets(events, subscription)
    assert [offset_of(event) for event in received[:-1]] == want
    assert [json.loads(event.data) for event in received[:-1]] == [events[offset] for offset in want]


def test_a_paced_stream_sends_each_event_on_schedule(tmp_path):
    lines = paced_recording(tmp_path / "paced.json", count=40)  # 1 s apart: 2 s at speed 20
    arrivals = []
    with (
        replay_server(tmp_path / "paced.json") as (url, _),
        httpx.Client(timeout=30) as client,
        connect_sse(client, "GET", f"{url}{STREAM_PATH}?realtime=true&speed=20") as source,
    ):
        for event in source.iter_sse():
            arrivals.append(time.monotonic())
            if event.event == "end":
                break
    late = sorted(abs((arrival - arrivals[0]) - offset / 20) for offset, arrival in enumerate(arrivals[: len(lines)]))
    assert len(arrivals) == len(lines) + 1
    assert late[int(0.99 * (len(late) - 1))] < 0.05, f"p99 {late[-1] * 1000:.0f} ms off schedule"


def test_heartbeats_keep_an_idle_stream_open(tmp_path):
    paced_recording(tmp_path / "sparse.json", count=3, gap_s=600)  # ten minutes between edits
    with replay_server(tmp_path / "sparse.json", "--heartbeat", "0.2") as (url, _):
        lines = []
        with httpx.Client(timeout=10) as client, client.stream("GET", f"{url}{STREAM_PATH}?realtime=true") as response:
            for line in response.iter_lines():
                lines.append(line)
                if lines.count(":") >= 3:
                    break
    assert lines[0] == ":ok" and lines.count(":") >= 3
    assert sum(line.startswith("data: ") for line in lines) == 1  # the first edit, then only comments


def test_lines_that_are_not_events_arrive_as_error_events_carrying_the_line(good, tmp_path):
    latin1 = b'{"id": 201, "title": "Caf\xe9 au lait", "wait": 0.01}'
    lines = [good[0], b"{broken", latin1, b"[" * 3000, good[1]]
    recording = write_recording(tmp_path / "bad.json", lines)
    with replay_server(recording) as (url, _):
        events = read_stream(url)
        filtered = read_stream(url, "wikis=enwiki")
    assert [event.event for event in events] == ["message", "error", "error", "error", "message", "end"]
    assert [offset_of(event) for event in events[:-1]] == [0, 1, 2, 3, 4]
    errors = [json.loads(event.data) for event in events if event.event == "error"]
    assert errors[0]["line"] == "{broken" and errors[0]["message"].startswith("line 2 of the recording is not an event")
    assert "base64" in errors[1] and errors[2]["line"] == "[" * 3000
    assert [event.event for event in filtered] == ["message", "message", "end"]  # bad lines pass no filter


BAD_REQUESTS = [
    ("?since=soon", {}, "since must be"),
    ("?speed=0", {}, "speed must be"),
    ("?namespace=zero", {}, "namespace must be"),
    ("?bot=maybe", {}, "bot must be"),
    ("?wikis=" + ",".join(["w"] * 101), {}, "at most 100"),
    ("?" + "&".join(f"type=t{i}" for i in range(300)), {}, "too many query parameters"),
    ("", {"Last-Event-ID": "not json"}, "Last-Event-ID is not JSON"),
    ("", {"Last-Event-ID": "[" * 1500}, "Last-Event-ID"),
    ("", {"Last-Event-ID": "x" * 5000}, "at most 2000"),
    ("", {"Last-Event-ID": json.dumps([{"topic": TOPIC, "partition": 0, "offset": -5}])}, "offset >= 0"),
    ("", {"Last-Event-ID": json.dumps([{"topic": "codfw.mediawiki.recentchange", "offset": 3}])}, "names no position"),
]


def test_bad_stream_requests_get_400_saying_why_and_the_server_keeps_serving(small_recording):
    with replay_server(small_recording) as (url, _):
        answers = [get(url, STREAM_PATH + query, headers) for query, headers, _ in BAD_REQUESTS]
        posted = httpx.post(f"{url}{STREAM_PATH}", timeout=10)
        served = read_stream(url)
    for (query, _, fragment), answer in zip(BAD_REQUESTS, answers, strict=True):
        assert answer.status_code == 400, (query, answer.text)
        assert fragment in answer.json()["error"] and len(answer.text) < 500, answer.text
    assert posted.status_code == 405
    assert len(served) == len(small_recording.read_bytes().splitlines()) + 1


def test_with_a_token_the_stream_needs_it_and_other_origins_need_to_be_allowed(small_recording):
    flags = ["--token", "s3cret", "--cors-origin", "https://dash.example"]
    with replay_server(small_recording, *flags) as (url, _):
        refused = get(url, STREAM_PATH)
        wrong = get(url, STREAM_PATH, {"Authorization": "Bearer nope"})
        by_header = read_stream(url, headers={"Authorization": "Bearer s3cret"}, stop_after=1)
        by_query = read_stream(url, "token=s3cret", stop_after=1)
        evil = get(url, STREAM_PATH + "?token=s3cret", {"Origin": "https://evil.example"})
        with httpx.Client(timeout=10) as client:
            headers = {"Origin": "https://dash.example", "Authorization": "Bearer s3cret"}
            with client.stream("GET", f"{url}{STREAM_PATH}", headers=headers) as allowed:
                allowed_origin = allowed.headers.get("access-control-allow-origin")
    assert refused.status_code == 401 and wrong.status_code == 401
    assert by_header[0].event == "message" and by_query[0].event == "message"
    assert evil.status_code == 403
    assert allowed_origin == "https://dash.example"


def test_streams_beyond_the_per_address_limit_get_429_until_one_closes(tmp_path):
    paced_recording(tmp_path / "sparse.json", count=3, gap_s=600)  # paced streams stay open
    flags = ["--max-connections-per-address", "2", "--heartbeat", "1"]
    with replay_server(tmp_path / "sparse.json", *flags) as (url, _):
        with stalled_reader(url, "realtime=true"), stalled_reader(url, "realtime=true"):
            wait_until(lambda: len(get(url, "/status").json()["clients"]) == 2, timeout=10, message="two streams")
            third = get(url, STREAM_PATH)
        # A closed stream is noticed at its next write at the latest: a heartbeat.
        wait_until(lambda: not get(url, "/status").json()["clients"], timeout=30, message="the streams closed")
        admitted = read_stream(url, stop_after=1)
    assert third.status_code == 429 and "too many connections" in third.json()["error"]
    assert admitted[0].event == "message"


@contextmanager
def stalled_reader(url: str, query: str = ""):
    """A stream request on a bare socket that reads the response's first bytes, then never again."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small: the server feels it at once
    try:
        connection.sendall(f"GET {STREAM_PATH}?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert connection.recv(100).startswith(b"HTTP/1.1 200")
        yield
    finally:
        connection.close()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def test_a_reader_that_stops_reading_is_held_back_by_its_socket_and_costs_bounded_memory(tmp_path):
    lines = [json.dumps({"id": i, "wiki": "enwiki", "wait": 0, "pad": "p" * 10_000}).encode() for i in range(20)]
    recording = write_recording(tmp_path / "fat.json", lines)
    with replay_server(recording, "--loop") as (url, process), stalled_reader(url):
        before = rss_mb(process.pid)

        def stalled_offset() -> int:
            return next(c["offset"] for c in get(url, "/status").json()["clients"] if c["transport"] == "sse")

        # It stops: two looks a second apart find the same offset (the socket holds it back)...
        seen = [stalled_offset()]
        wait_until(
            lambda: seen.append(stalled_offset()) or seen[-1] == seen[-2], timeout=30, interval=1, message="a stall"
        )
        # ...while the server goes on serving others, and its memory stays put.
        others = read_stream(url, stop_after=100)
        after = rss_mb(process.pid)
    assert seen[-1] < 10_000, f"{seen[-1]} events of 10 KB sent to a reader that reads nothing"
    assert len(others) == 100
    assert after - before < 50, f"RSS grew {after - before:.0f} MB"
