"""Synthetic RCStream recordings: reproducible, the right shape, valid for the reference task."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from stream_processor.core.records import check_wait, parse_event
from stream_processor.protocol.event_meta import is_canary, stamp_meta
from stream_processor.protocol.event_stream import TOPIC
from stream_processor.sources.generate import generate_events, generate_file

SHIPPED_RECORDING = Path(__file__).resolve().parents[2] / "sampled_rc.json"
RCSTREAM_FIELDS = {
    "id",
    "type",
    "timestamp",
    "title",
    "user",
    "comment",
    "namespace",
    "bot",
    "minor",
    "length",
    "revision",
    "server_url",
    "server_name",
    "server_script_path",
    "wiki",
    "wait",
}


@pytest.fixture(scope="module")
def five_minutes() -> list[dict]:
    return list(generate_events(5, 2.07, seed=3))


def test_same_seed_gives_identical_events():
    assert list(generate_events(2, 2.07, seed=42)) == list(generate_events(2, 2.07, seed=42))


def test_different_seeds_give_different_events():
    assert list(generate_events(2, 2.07, seed=42)) != list(generate_events(2, 2.07, seed=43))


def test_same_seed_gives_byte_identical_files(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    count = generate_file(first, minutes=1, rate=2.07, seed=9)
    assert generate_file(second, minutes=1, rate=2.07, seed=9) == count
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().count(b"\n") == count


@pytest.mark.parametrize("seed", [1, 2, 277])
def test_five_minutes_at_2_07_per_second_is_roughly_620_events(seed):
    # Poisson with mean 5 * 60 * 2.07 = 621: sd about 25, so 500..750 is over 4 sd each way.
    assert 500 <= sum(1 for _ in generate_events(5, 2.07, seed)) <= 750


def test_zero_minutes_gives_no_events():
    assert list(generate_events(0, 2.07, seed=1)) == []


def test_timestamps_are_integers_non_decreasing_within_the_five_minutes(five_minutes):
    stamps = [event["timestamp"] for event in five_minutes]
    assert all(type(stamp) is int for stamp in stamps)
    assert stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] <= 300
    assert stamps[-1] - stamps[0] >= 240  # ~620 arrivals spread over the whole 5 minutes


def test_every_event_has_the_rcstream_change_fields(five_minutes):
    for event in five_minutes:
        expected = RCSTREAM_FIELDS | ({"patrolled"} if event["type"] == "new" else set())
        assert set(event) == expected, event
        assert event["type"] in {"edit", "new"}
        assert type(event["id"]) is int
        assert isinstance(event["title"], str) and event["title"]
        assert isinstance(event["user"], str) and event["user"]
        assert isinstance(event["comment"], str)
        assert type(event["namespace"]) is int
        assert type(event["bot"]) is bool
        assert type(event["minor"]) is bool
        assert set(event["length"]) == {"old", "new"}
        assert set(event["revision"]) == {"old", "new"}
        assert type(event["revision"]["new"]) is int
        assert event["server_url"] == "https://en.wikipedia.org"
        assert event["server_name"] == "en.wikipedia.org"
        assert event["server_script_path"] == "/w"
        assert event["wiki"] == "enwiki"
        assert 0.01 <= event["wait"] <= 10


def test_new_pages_have_no_old_revision_and_carry_patrolled(five_minutes):
    new_pages = [event for event in five_minutes if event["type"] == "new"]
    edits = [event for event in five_minutes if event["type"] == "edit"]
    assert new_pages and edits  # 8 % of ~620 events are new pages
    for event in new_pages:
        assert event["revision"]["old"] is None
        assert type(event["patrolled"]) is bool
    for event in edits:
        assert type(event["revision"]["old"]) is int
        assert event["revision"]["old"] < event["revision"]["new"]
        assert "patrolled" not in event


def test_waits_spread_over_their_range(five_minutes):
    waits = [event["wait"] for event in five_minutes]
    assert min(waits) < 0.5 and max(waits) > 2  # lognormal around 1 s, not a constant


def test_every_line_passes_check_wait(five_minutes):
    for event in five_minutes:
        parsed, problem = parse_event(json.dumps(event).encode(), validate=check_wait)
        assert problem is None
        assert parsed == event


def test_generated_file_is_ascii_with_unicode_escapes(tmp_path):
    path = tmp_path / "rc.json"
    generate_file(path, minutes=5, rate=2.07, seed=5)
    data = path.read_bytes()
    assert data.isascii()
    assert b"\\u" in data  # non-ASCII titles travel as \uXXXX escapes, like the real feed


def test_shipped_recording_is_seed_277_serialised_one_event_per_line():
    expected = "".join(json.dumps(event) + "\n" for event in generate_events(5, 2.07, 277)).encode()
    assert SHIPPED_RECORDING.read_bytes() == expected


@pytest.fixture(scope="module")
def eventstreams_lines(tmp_path_factory) -> list[bytes]:
    path = tmp_path_factory.mktemp("es") / "es.json"
    generate_file(path, minutes=3, rate=2.07, seed=3, format="eventstreams", canary_every=25)
    return path.read_bytes().splitlines()


def test_the_eventstreams_format_is_the_same_edits_with_schema_meta_and_canaries(eventstreams_lines, five_minutes):
    events = [json.loads(line) for line in eventstreams_lines]
    edits = [event for event in events if not is_canary(event)]
    canaries = [event for event in events if is_canary(event)]
    assert [{k: v for k, v in e.items() if k not in ("$schema", "meta")} for e in edits] == list(
        generate_events(3, 2.07, seed=3)
    )
    assert len(canaries) == len(edits) // 25 and all(events[26 * n + 25] in canaries for n in range(len(canaries)))
    assert all(list(event)[:2] == ["$schema", "meta"] for event in events)
    for offset, event in enumerate(events):
        meta = event["meta"]
        assert (meta["stream"], meta["topic"], meta["partition"], meta["offset"]) == (
            "mediawiki.recentchange",
            TOPIC,
            0,
            offset,
        )
        assert datetime.fromisoformat(meta["dt"]).timestamp() == event["timestamp"]
        assert meta["domain"] == ("canary" if event in canaries else event["server_name"])
        assert check_wait(event) is None  # the reference task can run every line, canaries too
    times = [event["timestamp"] for event in events]
    assert times == sorted(times)  # pacing by time still works


def test_the_server_sends_a_generated_eventstreams_line_as_it_is(eventstreams_lines):
    for offset, line in enumerate(eventstreams_lines):
        assert stamp_meta(line, json.loads(line), TOPIC, 0, offset) is line


def test_the_eventstreams_format_is_reproducible_and_the_default_unchanged(tmp_path):
    one, two, plain = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "plain.json"
    generate_file(one, minutes=1, seed=5, format="eventstreams")
    generate_file(two, minutes=1, seed=5, format="eventstreams")
    generate_file(plain, minutes=1, seed=5)
    assert one.read_bytes() == two.read_bytes()
    assert [json.loads(line) for line in plain.read_bytes().splitlines()] == list(generate_events(1, 2.07, seed=5))
