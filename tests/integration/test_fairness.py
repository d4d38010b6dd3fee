"""One client cannot freeze the replay server for the others (issue 9).

A subscriber whose filter never matches makes the server scan the whole recording; the
scan must share the server (yield regularly), a resubscribe or a disconnect must stop it
promptly, and a client may not subscribe faster than the rate limit. A pathological line
in the recording must not end anybody's replay either. Real server processes, real
python-socketio clients.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stream_processor.core.records import count_events
from stream_processor.sources.generate import generate_file
from tests.conftest import in_each_async_mode, paced_recording, replay_server, write_recording
from tests.listener import Listener

FIRST_CHANGE_BOUND_S = 2.0
NEVER_MATCHES = "nothing-matches.example"

pytestmark = in_each_async_mode


@pytest.fixture(scope="module")
def big_recording(tmp_path_factory) -> Path:
    """About 50,000 edits, every one of en.wikipedia.org."""
    path = tmp_path_factory.mktemp("fairness") / "big.json"
    assert generate_file(path, minutes=400, rate=2.1, seed=9) >= 50_000
    return path


def first_change_after_connecting(url: str) -> tuple[float, tuple]:
    """Seconds from starting to connect to the first change of a new subscriber, and that change."""
    started = time.monotonic()
    with Listener(url) as newcomer:
        newcomer.emit("subscribe", {"wikis": "*", "with_offsets": True})
        kind, args = newcomer.next(timeout=30)
        elapsed = time.monotonic() - started
    assert kind == "change", (kind, args)
    return elapsed, args


def test_a_greedy_subscriber_scanning_for_a_wiki_that_never_matches_does_not_freeze_a_new_client(big_recording):
    # A high rate limit: the scans themselves must share the server, not the limit.
    with replay_server(big_recording, "--subscribe-burst", "100") as (url, _), Listener(url) as greedy:
        for _ in range(40):
            greedy.emit("subscribe", NEVER_MATCHES)
        # Not waiting for the server to answer: the old server answered nobody until every scan was done.
        elapsed, (_event, offset) = first_change_after_connecting(url)
        assert offset == 0
        assert elapsed < FIRST_CHANGE_BOUND_S, f"the first change took {elapsed:.1f} s"
        started = time.monotonic()
        greedy.round_trip(timeout=60)  # the greedy client itself is answered promptly too
        assert time.monotonic() - started < FIRST_CHANGE_BOUND_S
        # The greedy client's last scan still ends, with nothing found.
        assert greedy.until_end(timeout=60)[-1] == ("end", ({"count": 0, "offset": count_events(big_recording)},))


def test_a_resubscribe_stops_the_scan_it_replaces(big_recording):
    with replay_server(big_recording, "--subscribe-burst", "100") as (url, _), Listener(url) as client:
        for _ in range(20):
            client.emit("subscribe", NEVER_MATCHES)
        client.emit("subscribe", {"wikis": "*", "with_offsets": True, "offset": 7})
        # The replaced scans end silently: the first thing back is the last subscription's first change.
        assert client.next(timeout=FIRST_CHANGE_BOUND_S * 5)[0] == "change"
        received = [client.next(timeout=10) for _ in range(5)]
    assert all(kind == "change" for kind, _ in received), received


def test_subscribes_beyond_the_rate_limit_get_an_error_and_start_nothing(tmp_path):
    lines = paced_recording(tmp_path / "paced.json", count=20)  # one second at speed 20
    limit = ["--subscribe-burst", "5", "--subscribe-rate", "0.1"]
    with replay_server(tmp_path / "paced.json", *limit) as (url, _), Listener(url) as client:
        for offset in range(8):  # each a valid subscription of its own, told apart by its offset
            client.emit(
                "subscribe", {"wikis": "*", "with_offsets": True, "realtime": True, "speed": 20, "offset": offset}
            )
        received = client.until_end(timeout=30)
    errors = [args[0]["message"] for kind, args in received if kind == "error"]
    assert len(errors) == 3 and all("too many subscribes" in e for e in errors), errors
    # The replay that ended is the fifth subscription's (offset 4): the refused ones started nothing.
    assert received[-1] == ("end", ({"count": len(lines) - 4, "offset": len(lines)},))


def test_a_deeply_nested_line_does_not_end_a_replay(small_recording, tmp_path):
    good = small_recording.read_bytes().splitlines()[:3]
    unclosed, closed = b"[" * 3000, b"[" * 3000 + b"]" * 3000
    lines = [good[0], unclosed, good[1], closed, good[2]]
    recording = write_recording(tmp_path / "deep.json", lines)
    with replay_server(recording) as (url, _), Listener(url) as client:
        # Counted, not read up to `end`: python-socketio's client may hand `end` over before an error.
        client.emit("subscribe", {"wikis": "*", "with_offsets": True, "raw": True})
        raw = [client.next() for _ in range(len(lines) + 1)]  # every line, then end
        client.emit("subscribe", "*")
        plain = [client.next() for _ in range(len(lines) + 1)]  # three changes, two errors, end
        assert client.round_trip() == []  # and nothing more came
    assert sorted((args for kind, args in raw if kind == "change"), key=lambda args: args[1]) == [
        (line.decode(), offset, offset + 1) for offset, line in enumerate(lines)
    ]
    assert ("end", ({"count": 5, "offset": 5},)) in raw
    errors = sorted(args[0]["message"] for kind, args in plain if kind == "error")
    assert [e.split(":")[0] for e in errors] == [
        "line 2 of the recording is not an event",
        "line 4 of the recording is not an event",
    ]
    assert all("nested too deeply" in e or "not valid JSON" in e for e in errors), errors
    assert len([kind for kind, _ in plain if kind == "change"]) == 3
