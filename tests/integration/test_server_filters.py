"""RCStream subscribe, complete: wildcard wikis, lists mixing names and patterns, and the
object form's filters on type, namespace and bot, against a real server in each async
mode; each subscriber gets exactly the events it asked for, in order."""

from __future__ import annotations

import pytest

from tests.conftest import expected_offsets, in_each_async_mode, mixed_recording, replay_server
from tests.listener import Listener

pytestmark = in_each_async_mode

SUBSCRIPTIONS = {
    "a domain pattern": "*.wikipedia.org",
    "a language pattern": "en.*",
    "names and patterns": ["dewiki", "*.wiktionary.org", "www.wikidata.org"],
    "a one-character wildcard": "??wiki",
    "type": {"type": "new"},
    "types and namespaces": {"wikis": "*", "type": ["edit", "log"], "namespace": [0, 1, 2]},
    "bots only, on a pattern": {"wikis": "*wiki*", "bot": True},
    "everything, listed": {"bot": [True, False]},
}


@pytest.mark.parametrize("subscription", list(SUBSCRIPTIONS.values()), ids=list(SUBSCRIPTIONS))
def test_a_subscriber_gets_exactly_the_events_its_filters_select_in_order(tmp_path, subscription):
    events = mixed_recording(tmp_path / "mixed.json")
    want = expected_offsets(events, subscription)
    assert 0 < len(want) < len(events) or subscription == SUBSCRIPTIONS["everything, listed"]
    request = subscription if isinstance(subscription, dict) else {"wikis": subscription}
    with replay_server(tmp_path / "mixed.json") as (url, _), Listener(url, ack_changes=True) as client:
        client.emit("subscribe", {**request, "with_offsets": True})
        # Counted, not read up to `end`: python-socketio's client hands each message to a
        # thread of its own, so `end` (or a change) can overtake an earlier one.
        received = [client.next() for _ in range(len(want) + 1)]
        assert client.round_trip() == []  # and nothing more came
    changes = sorted((args for kind, args in received if kind == "change"), key=lambda args: args[1])
    assert [offset for _, offset in changes] == want
    assert [event for event, _ in changes] == [events[offset] for offset in want]
    assert ("end", ({"count": len(want), "offset": len(events)},)) in received


BAD_FILTERS = [
    {"wikis": []},
    {"wikis": ["enwiki", ""]},
    {"wikis": ["w"] * 101},
    {"wikis": "*" * 201},
    {"type": 5},
    {"type": []},
    {"namespace": "0"},
    {"namespace": [0, True]},
    {"bot": "yes"},
    {"bot": [1]},
]


def test_bad_filters_get_an_error_each_and_start_nothing(tmp_path):
    events = mixed_recording(tmp_path / "mixed.json", count=20)
    limits = ["--subscribe-burst", "100"]
    with replay_server(tmp_path / "mixed.json", *limits) as (url, _), Listener(url) as client:
        for bad in BAD_FILTERS:
            client.emit("subscribe", bad)
        received = client.round_trip()
        client.emit("subscribe", {"wikis": "de.*", "with_offsets": True})  # still served
        served = client.until_end()
    assert [kind for kind, _ in received] == ["error"] * len(BAD_FILTERS), received
    messages = [args[0]["message"] for _, args in received]
    assert all(len(m) < 300 for m in messages)
    assert "wikis must be" in messages[0] and "type must be" in messages[4] and "namespace must be" in messages[6]
    assert "bot must be" in messages[8]
    assert [args[1] for kind, args in served if kind == "change"] == expected_offsets(events, "de.*")
