"""The event stream's wire format: ids, Last-Event-ID, since, query parameters, event text."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processor.core.records import Record
from stream_processor.protocol.event_stream import (
    LEGACY_TOPIC,
    TOPIC,
    Resume,
    StreamRequestError,
    encode_record,
    end_event,
    event_id,
    offset_of_id,
    parse_last_event_id,
    parse_positions,
    position_id,
)
from stream_processor.serving.sse_request import parse_since, parse_stream_request

CODFW = "codfw.mediawiki.recentchange"


def test_an_id_holds_the_next_position_as_kafkasse_does_and_resumes_right_after_its_event():
    assert TOPIC == "eqiad.mediawiki.recentchange"  # the topic production names
    assert json.loads(event_id(41)) == [{"topic": TOPIC, "partition": 0, "offset": 42}]
    assert parse_last_event_id(event_id(41)) == Resume(offset=42)
    assert offset_of_id(event_id(41)) == 41


def test_an_id_built_by_hand_in_kafkasse_style_resumes_at_the_offset_it_names():
    # KafkaSSE sends offset + 1 (the next to read): a client that builds [{..., offset: N}] starts at N
    text = json.dumps([{"topic": TOPIC, "partition": 0, "offset": 7}])
    assert parse_last_event_id(text) == Resume(offset=7)
    assert parse_last_event_id(position_id(0)) == Resume(offset=0)


def test_an_id_from_before_names_the_event_itself_and_resumes_after_it():
    text = json.dumps([{"topic": LEGACY_TOPIC, "partition": 0, "offset": 7}])
    assert parse_last_event_id(text) == Resume(offset=8)
    assert offset_of_id(text) == 7


@pytest.mark.parametrize(
    "positions",
    [
        [{"topic": TOPIC, "partition": 0, "timestamp": 1480000005000}],
        # production's ids (useTimestampForId) name both datacenters' topics, by time
        [
            {"topic": TOPIC, "partition": 0, "timestamp": 1480000005000},
            {"topic": CODFW, "partition": 0, "timestamp": 1480000009000},
        ],
        [{"topic": CODFW, "partition": 0, "timestamp": 1480000005000}],
        [{"topic": CODFW, "partition": 0, "offset": 99}, {"topic": TOPIC, "partition": 0, "timestamp": 1480000005000}],
    ],
)
def test_a_timestamp_id_resumes_at_that_time(positions):
    assert parse_last_event_id(json.dumps(positions)) == Resume(since=1480000005.0)
    assert offset_of_id(json.dumps(positions)) is None  # the client cannot number from it


def test_an_offset_in_this_servers_topic_wins_over_a_time_in_the_other():
    positions = [{"topic": CODFW, "partition": 0, "timestamp": 1}, {"topic": TOPIC, "partition": 0, "offset": 5}]
    assert parse_last_event_id(json.dumps(positions)) == Resume(offset=5)


@pytest.mark.parametrize(
    "positions",
    [
        [{"topic": "eqiad.mediawiki.revision-create", "partition": 0, "offset": 5}],
        [{"topic": TOPIC, "partition": 0, "offset": 5}, {"topic": "somewhere.else", "partition": 0, "offset": 1}],
        [{"topic": TOPIC, "partition": 3, "offset": 5}],
    ],
)
def test_an_id_naming_another_topic_or_partition_is_refused_with_404_as_kafkasse_does(positions):
    with pytest.raises(StreamRequestError) as refused:
        parse_last_event_id(json.dumps(positions))
    assert refused.value.status == 404


def test_unknown_query_parameters_are_ignored_as_eventstreams_does():
    subscription = parse_stream_request("_=1700000000&foo=bar&speed=2", None, realtime=False, speed=1.0)
    assert subscription.speed == 2.0


@pytest.mark.parametrize(
    "bogus",
    [
        "",
        "42",
        "not json",
        "{}",
        "[1, 2]",
        "[" * 5000,
        "[]",
        json.dumps([{"topic": CODFW, "partition": 0, "offset": 5}]),  # no position here
        json.dumps([{"topic": TOPIC, "partition": 0, "offset": -1}]),
        json.dumps([{"topic": TOPIC, "partition": 0, "offset": "5"}]),
        json.dumps([{"topic": TOPIC, "partition": 0, "offset": True}]),
        json.dumps([{"topic": TOPIC, "partition": 0, "timestamp": "NaN"}]),
        json.dumps([{"topic": TOPIC, "partition": 0, "offset": 1}] * 100),
    ],
)
def test_a_bogus_last_event_id_is_refused_saying_why(bogus):
    with pytest.raises(StreamRequestError) as refused:
        parse_last_event_id(bogus)
    assert 0 < len(str(refused.value)) < 300


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
plausible = st.sampled_from([TOPIC, CODFW, LEGACY_TOPIC, "eqiad.mediawiki.revision-create", 0, 1, -1, 0.0, 10**20])
positions = st.lists(
    st.dictionaries(
        st.sampled_from(["topic", "partition", "offset", "timestamp", "extra"]), plausible | json_values, max_size=4
    ),
    max_size=3,
)
STREAMS = ["mediawiki.recentchange", "mediawiki.revision-create"]


@given(shaped=positions | json_values, streams=st.sampled_from([STREAMS[:1], STREAMS]))
def test_any_json_as_an_id_resumes_somewhere_or_is_a_400_or_404_never_a_crash(shaped, streams):
    text = json.dumps(shaped)  # NaN and Infinity too: json.loads takes them
    try:
        resumes = parse_positions(text, streams)
    except StreamRequestError as refused:
        assert refused.status in (400, 404) and 0 < len(str(refused)) < 300
    else:
        assert resumes and set(resumes) <= set(streams)
        for resume in resumes.values():
            assert (resume.since is None and resume.offset >= 0) or resume.since >= 0
    offset = offset_of_id(text)
    assert offset is None or isinstance(offset, int)


@pytest.mark.parametrize(
    ("since", "seconds"),
    [
        ("1480000005000", 1480000005.0),
        ("2016-11-24T15:06:45Z", 1480000005.0),
        ("2016-11-24T15:06:45", 1480000005.0),  # no zone: UTC
        ("2016-11-24T16:06:45+01:00", 1480000005.0),
    ],
)
def test_since_takes_iso_8601_or_epoch_milliseconds(since, seconds):
    assert parse_since(since) == seconds


@pytest.mark.parametrize("since", ["", "yesterday", "-5", "1e3", "9" * 40, "2016-13-45"])
def test_a_since_that_is_no_time_is_refused(since):
    with pytest.raises(StreamRequestError):
        parse_since(since)


def test_query_parameters_give_filters_pacing_and_a_start():
    subscription = parse_stream_request(
        "wikis=en.*,dewiki&wikis=*.wiktionary.org&type=edit&namespace=0,1&bot=false&realtime=true&speed=2.5"
        "&since=1480000005000&token=x",
        None,
        realtime=False,
        speed=1.0,
    )
    event = {"server_name": "en.wikipedia.org", "wiki": "enwiki", "type": "edit", "namespace": 1, "bot": False}
    assert subscription.matches(event) and not subscription.matches({**event, "namespace": 2})
    assert subscription.filter.wikis.summary() == ["dewiki", "en.*", "*.wiktionary.org"]
    assert (subscription.realtime, subscription.speed, subscription.since) == (True, 2.5, 1480000005.0)


def test_last_event_id_takes_precedence_over_since():
    subscription = parse_stream_request("since=1480000005000", event_id(9), realtime=False, speed=1.0)
    assert (subscription.offset, subscription.since) == (10, None)


@pytest.mark.parametrize(
    "query",
    [
        "wikis=",
        "namespace=zero",
        "namespace=" + "9" * 20,
        "bot=yes",
        "realtime=maybe",
        "speed=0",
        "speed=nan",
        "speed=inf",
        "speed=-1",
        "since=soon",
        "speed=1&speed=2",
        "&".join(f"wikis=w{i}" for i in range(300)),
        "wikis=" + ",".join(["w"] * 101),
    ],
)
def test_hostile_query_strings_are_refused_saying_why(query):
    with pytest.raises(StreamRequestError) as refused:
        parse_stream_request(query, None, realtime=False, speed=1.0)
    assert 0 < len(str(refused.value)) < 400


def test_an_event_goes_out_as_the_recorded_line_byte_for_byte_with_its_id():
    raw = '{"id": 1, "title": "Zürich \\u00e9"}'.encode()
    text = encode_record(Record(7, raw, json.loads(raw), None, 9))
    assert text == b"event: message\nid: " + event_id(7).encode() + b"\ndata: " + raw + b"\n\n"


def test_a_line_that_is_not_an_event_goes_as_an_error_carrying_the_line():
    record = Record(3, b"{broken", None, "not valid JSON (...)", 4)
    kind, id_line, data = encode_record(record).decode().strip().split("\n")
    assert (kind, id_line) == ("event: error", f"id: {event_id(3)}")
    described = json.loads(data.removeprefix("data: "))
    assert described == {
        "message": "line 4 of the recording is not an event: not valid JSON (...)",
        "offset": 3,
        "line_number": 4,
        "line": "{broken",
    }


def test_a_line_that_is_not_utf8_or_holds_a_carriage_return_travels_whole_inside_json():
    latin1 = Record(0, b'{"t": "Caf\xe9"}', None, "not valid UTF-8", 1)
    described = json.loads(encode_record(latin1).split(b"\ndata: ")[1])
    assert base64.b64decode(described["base64"]) == latin1.raw
    with_cr = Record(1, b'{"a":\r1}', {"a": 1}, None, 2)
    text = encode_record(with_cr)
    assert text.count(b"\r") == 0 and json.loads(text.split(b"\ndata: ")[1])["line"] == '{"a":\r1}'


def test_the_end_of_a_replay_is_an_end_event_whose_id_resumes_past_the_recording():
    assert end_event(5, 12) == b"event: end\nid: " + event_id(11).encode() + b'\ndata: {"count": 5, "offset": 12}\n\n'
    assert parse_last_event_id(event_id(11)) == Resume(offset=12)  # past the end: 204
    assert end_event(0, 0) == b'event: end\ndata: {"count": 0, "offset": 0}\n\n'  # an empty recording


# Digits outside ASCII pass str.isdigit(), and int() or float() take some of them: each
# once made a 500. Strings and JSON values a number is parsed from must be plain digits.
ODD_NUMBERS = ["--5", "²", "٣", "１", "1_0", " 1", "1 ", "+1", "0x1", "", "-", "1e3", "9" * 10]


@pytest.mark.parametrize("text", ODD_NUMBERS)
def test_a_namespace_that_is_not_plain_ascii_digits_is_refused(text):
    with pytest.raises(StreamRequestError, match="namespace must be whole numbers"):
        parse_stream_request(f"namespace={quote(text)}", None, realtime=False, speed=1.0)


@pytest.mark.parametrize("text", [*ODD_NUMBERS[:-1], "²" * 20, "1" * 17, "-1", "2016-11-24T15:06:45Z" + "0" * 60])
def test_a_since_that_is_not_plain_ascii_digits_or_iso_8601_is_refused(text):
    with pytest.raises(StreamRequestError, match="since"):
        parse_since(text)


@pytest.mark.parametrize("text", ["²", "١", "1_0", " 1", "1 ", "+1", "0x1", "1e999", "1" * 50, "nan", "Infinity"])
def test_a_speed_that_is_not_a_plain_decimal_is_refused(text):
    with pytest.raises(StreamRequestError, match="speed must be"):
        parse_stream_request(f"speed={quote(text)}", None, realtime=False, speed=1.0)


@pytest.mark.parametrize(("text", "speed"), [("2", 2.0), ("2.5", 2.5), (".5", 0.5), ("1e2", 100.0), ("3.", 3.0)])
def test_a_plain_decimal_speed_is_taken(text, speed):
    assert parse_stream_request(f"speed={text}", None, realtime=False, speed=1.0).speed == speed


@pytest.mark.parametrize("timestamp", [10**400, -(10**400), 10**16, 1e300])
def test_a_last_event_id_timestamp_out_of_range_is_refused(timestamp):
    with pytest.raises(StreamRequestError, match="timestamp"):
        parse_last_event_id(json.dumps([{"topic": TOPIC, "partition": 0, "timestamp": timestamp}]))
