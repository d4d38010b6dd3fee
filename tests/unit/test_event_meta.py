"""EventStreams' meta: canaries told apart on any JSON, and a server's stamp of where it
serves an event from: the same bytes when the meta says so already, else only those three
fields changed, never a line break, never an exception."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from stream_processor.protocol.event_meta import is_canary, stamp_meta

TOPIC = "eqiad.mediawiki.recentchange"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
events = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(events, json_values)
def test_a_stamp_changes_only_the_position_and_is_idempotent(event, meta):
    event = {**event, "meta": meta}
    raw = json.dumps(event).encode()
    stamped = stamp_meta(raw, event, TOPIC, 0, 7)
    if not isinstance(meta, dict):
        assert stamped is raw  # no meta object: nothing to fill
        return
    assert b"\n" not in stamped and b"\r" not in stamped
    parsed = json.loads(stamped)
    assert parsed == {**event, "meta": {**meta, "topic": TOPIC, "partition": 0, "offset": 7}}
    assert list(parsed) == list(event)  # keys in their order
    assert stamp_meta(stamped, parsed, TOPIC, 0, 7) is stamped  # said so already: the same bytes


@given(events)
def test_an_event_without_meta_goes_out_as_it_is(event):
    event.pop("meta", None)
    raw = json.dumps(event).encode()
    assert stamp_meta(raw, event, TOPIC, 0, 1) is raw


def test_values_that_only_look_the_same_are_stamped():
    for wrong in ({"offset": 7.0}, {"offset": True, "partition": 0}, {"partition": False}):
        meta = {"topic": TOPIC, "partition": 0, "offset": 7, **wrong}
        event = {"meta": meta}
        stamped = json.loads(stamp_meta(json.dumps(event).encode(), event, TOPIC, 0, 7))
        assert stamped["meta"] == {"topic": TOPIC, "partition": 0, "offset": 7}
        assert type(stamped["meta"]["offset"]) is int and type(stamped["meta"]["partition"]) is int


def test_what_json_cannot_write_again_goes_out_as_it_was():
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    event = {"meta": {}, "deep": deep}
    assert stamp_meta(b"RAW", event, TOPIC, 0, 1) == b"RAW"
    lone = {"meta": {}, "t": "\udc80"}
    assert stamp_meta(b"RAW", lone, TOPIC, 0, 1) == b"RAW"


@given(json_values)
def test_only_an_object_whose_meta_domain_is_canary_is_a_canary(value):
    assert is_canary(value) == (
        isinstance(value, dict) and isinstance(value.get("meta"), dict) and value["meta"].get("domain") == "canary"
    )
    assert is_canary({"meta": {"domain": "canary"}}) and not is_canary({"meta": {"domain": ["canary"]}})
