"""The replay server's core without any server: the replay loop's steps, a subscriber's
flow control, what a transport has written, and who may connect. A fake clock, no I/O
but a recording file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_processor.protocol.hosts import host_allowed
from stream_processor.protocol.tokens import offered_token, token_accepted
from stream_processor.serving.access import AddressLimit, origin_allowed
from stream_processor.serving.delivery import Delivery, DeliverySessions
from stream_processor.serving.recording import Recording
from stream_processor.serving.replay_loop import (
    BACKLOG_POLL_S,
    GIVE_A_TURN,
    TURN_RECORDS,
    Finish,
    Pacing,
    Send,
    Wait,
    replay,
)
from stream_processor.serving.socketio_internals import is_data_frame, polling_packets
from stream_processor.serving.subscriber import SOCKETIO, SSE, Subscriber
from stream_processor.serving.subscription import SubscribeError, parse_subscription
from tests.conftest import FakeClock, write_recording


class CountingWaker:
    def __init__(self) -> None:
        self.wakes = 0

    def set(self) -> None:
        self.wakes += 1


def recording_of(tmp_path: Path, events: list[dict], loop: bool = False) -> Recording:
    return Recording(write_recording(tmp_path / "rec.json", [json.dumps(e).encode() for e in events]), loop)


def edits(count: int, wiki: str = "enwiki", gap_s: int = 0) -> list[dict]:
    return [{"id": i, "wiki": wiki, "timestamp": 1000 + i * gap_s} for i in range(count)]


def start(subscriber: Subscriber, recording: Recording, payload, window=1000, pacing=None, clock=None):
    subscription = parse_subscription(payload, realtime=False, speed=1.0)
    generation = subscriber.restart(subscription)
    return replay(subscriber, generation, subscription, recording, window, pacing or Pacing(), clock or FakeClock())


def sent_offsets(steps) -> list[int]:
    return [record.offset for step in steps if isinstance(step, Send) for record in step.records]


def sse_subscriber() -> Subscriber:
    return Subscriber("s", SSE, "127.0.0.1", CountingWaker())


@pytest.mark.parametrize("loop", [False, True])
def test_a_resume_by_time_past_the_latest_event_has_nothing_to_send_looping_or_not(tmp_path, loop):
    events = [{"id": 0, "timestamp": 100}, {"id": 1, "timestamp": 300}, {"id": 2, "timestamp": 200}, {"id": 3}]
    recording = recording_of(tmp_path, events, loop)  # not increasing: the latest is not the last
    assert recording.latest_time == 300
    assert not recording.ends_before_time(300) and recording.ends_before_time(300.001)
    timeless = Recording(
        write_recording(tmp_path / "timeless.json", [b'{"id": 1}', b"{broken", b'{"timestamp": 1e999}'])
    )
    assert timeless.latest_time is None and timeless.ends_before_time(0)


def test_a_timestamp_too_large_for_a_float_is_no_time_not_an_error(tmp_path):
    recording = recording_of(tmp_path, [{"id": 0, "timestamp": 10**400}, {"id": 1, "timestamp": 5}])
    assert recording.latest_time == 5
    assert sent_offsets(start(sse_subscriber(), recording, {"realtime": True})) == [0, 1]


def test_a_subscribe_speed_too_large_for_a_float_is_refused_not_an_error():
    with pytest.raises(SubscribeError, match="speed must be"):
        parse_subscription({"speed": 10**400}, realtime=False, speed=1.0)


def test_an_unpaced_replay_sends_every_event_in_batches_then_finishes(tmp_path):
    steps = list(start(sse_subscriber(), recording_of(tmp_path, edits(100)), "*", pacing=Pacing(batch=32)))
    assert sent_offsets(steps) == list(range(100))
    assert all(len(step.records) <= 32 for step in steps if isinstance(step, Send))
    assert steps[-1] == Finish(100, 100)


def test_a_scan_for_a_wiki_that_never_matches_gives_the_others_a_turn_regularly(tmp_path):
    steps = list(start(sse_subscriber(), recording_of(tmp_path, edits(1000)), "nothing.example"))
    turns = [i for i, step in enumerate(steps) if step == GIVE_A_TURN]
    assert len(turns) >= 1000 // TURN_RECORDS - 1
    assert steps[-1] == Finish(0, 1000) and not any(isinstance(step, Send) for step in steps)


def test_a_resubscribe_ends_the_replay_it_replaces_at_its_next_step(tmp_path):
    subscriber, recording = sse_subscriber(), recording_of(tmp_path, edits(1000))
    first = start(subscriber, recording, "nothing.example")
    assert next(first) == GIVE_A_TURN  # scanning
    start(subscriber, recording, "*")  # a new generation
    assert list(first) == []  # no Finish: a superseded replay ends silently


def test_a_client_that_acks_gets_at_most_window_unacknowledged_events(tmp_path):
    subscriber = Subscriber("a", SOCKETIO, "127.0.0.1", CountingWaker())
    steps = start(subscriber, recording_of(tmp_path, edits(20)), {"with_offsets": True}, window=5)
    sent = []
    for step in steps:
        if isinstance(step, Send):
            sent += [record.offset for record in step.records]
        elif step == Wait(None):  # waits for an ack
            assert len(subscriber.unacked) == 5 and subscriber.room(5) == 0
            subscriber.acknowledge(sent[-1] - 1)  # all but the last one sent
    assert sent == list(range(20))


def test_a_plain_client_waits_while_its_transport_holds_window_packets(tmp_path):
    delivery = Delivery()
    subscriber = Subscriber("p", SOCKETIO, "127.0.0.1", CountingWaker(), delivery=delivery)
    steps = start(subscriber, recording_of(tmp_path, edits(10)), "*", window=4)
    waits = 0
    for step in steps:
        if isinstance(step, Send):
            delivery.hand(len(step.records))  # what a shell does when it emits
            assert delivery.backlog <= 4
        elif step == Wait(BACKLOG_POLL_S):
            waits += 1
            assert delivery.backlog == 4
            delivery.wrote(3)  # the transport caught up a little
    assert waits >= 2


def test_a_paced_replay_waits_for_each_event_and_heartbeats_through_long_silences(tmp_path):
    clock = FakeClock()
    steps = start(
        sse_subscriber(),
        recording_of(tmp_path, edits(3, gap_s=40)),  # 40 s between events
        {"realtime": True},
        pacing=Pacing(heartbeat_s=15),
        clock=clock,
    )
    kinds = []
    for step in steps:
        kinds.append(type(step).__name__)
        if isinstance(step, Wait) and step.timeout:
            clock.now += step.timeout
    # Each 40 s gap: silent waits of 15 s with a heartbeat after each, then the rest of the wait.
    gap = ["Wait", "Heartbeat", "Wait", "Heartbeat", "Wait"]
    assert kinds == ["Send", *gap, "Send", *gap, "Send", "Finish"]


def test_a_paced_replay_records_how_late_each_event_went_out(tmp_path):
    clock = FakeClock()
    subscriber = sse_subscriber()
    steps = start(subscriber, recording_of(tmp_path, edits(2, gap_s=1)), {"realtime": True}, clock=clock)
    for step in steps:
        if isinstance(step, Wait) and step.timeout:
            clock.now += step.timeout + 0.25  # woken a quarter of a second late
    assert subscriber.pacing_error.count == 2 and subscriber.pacing_error.max == pytest.approx(0.25, rel=0.01)


# -- what a transport has written ------------------------------------------------------


def test_written_packets_never_exceed_what_was_handed():
    delivery = Delivery()
    delivery.wrote(3)  # engine.io's handshake and connect packets: nothing of ours
    assert delivery.backlog == 0
    delivery.hand(5)
    delivery.wrote(2)
    assert delivery.backlog == 3


def test_polling_payloads_and_websocket_frames_are_counted_from_the_wire_format():
    assert polling_packets(b"") == 0 and polling_packets(b"2") == 1 and polling_packets(b"42/rc,[]\x1e42/rc,[]") == 2
    assert is_data_frame(b"\x81\x05hello") and is_data_frame(b"\x82\x01x") and is_data_frame(b"\xc1\x05hello")
    assert not is_data_frame(b"\x89\x00") and not is_data_frame(b"\x88\x00")  # ping, close
    assert not is_data_frame(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_sessions_are_found_by_the_sid_their_handshake_gave_out():
    sessions = DeliverySessions()
    delivery = sessions.for_request("EIO=4&transport=polling")
    sessions.learn_session(b'0{"sid":"abc","upgrades":["websocket"]}', delivery)
    assert sessions.for_request("EIO=4&transport=websocket&sid=abc") is delivery
    assert sessions.for_request("EIO=4&transport=polling&sid=unknown") is None
    sessions.learn_session(b"not a handshake", Delivery())  # ignored


# -- who may connect -------------------------------------------------------------------


def test_a_token_is_taken_from_socketio_auth_then_the_header_then_the_query():
    assert offered_token("Bearer from-header", "token=from-query", {"token": "from-auth"}) == "from-auth"
    assert offered_token("Bearer from-header", "token=from-query") == "from-header"
    assert offered_token("Basic xyz", "token=from-query") == "from-query"
    assert offered_token(None, "other=1") is None
    assert token_accepted(None, None) and token_accepted("s3cret", "s3cret")
    assert not token_accepted("s3cret", None) and not token_accepted("s3cret", "S3cret")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "BeArEr s3cret", "Bearer   s3cret  ", "bearer\ts3cret"],
)
def test_the_bearer_scheme_is_case_insensitive_and_spaces_around_the_token_do_not_count(authorization):
    assert offered_token(authorization, "") == "s3cret"


@pytest.mark.parametrize("authorization", ["", " ", "Bearer", "Bearer ", "Basic s3cret", "Bearers s3cret"])
def test_an_authorization_without_a_bearer_token_offers_the_querys(authorization):
    assert offered_token(authorization, "token=q") == "q"


def test_a_token_with_a_lone_surrogate_is_a_wrong_token_not_an_error():
    assert not token_accepted("s3cret", "\ud800")


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.0.0.1",
        "127.0.0.1:5000",
        "127.9.9.9:80",
        "localhost",
        "LocalHost:5000",
        "localhost.:1",
        "[::1]",
        "[::1]:5000",
        "[::ffff:127.0.0.1]:5000",
    ],
)
def test_loopback_hosts_and_no_host_are_allowed(host):
    assert host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.com",
        "evil.com:5000",
        "localhost.evil.com",
        "127.0.0.1.evil.com",
        "10.0.0.5:5000",
        "0.0.0.0",
        "127.0.0.1,evil.com",
        "evil.com, 127.0.0.1",
        "127.0.0.1 evil.com",
        "[::1",
        "::1",
        "127.0.0.1:99999999",
        "évil.com",
        "127.0.0.1\x00",
        "a" * 400,
        "127.0.0.1:",
        "127.0.0.1:port",
    ],
)
def test_other_hosts_and_malformed_ones_are_refused(host):
    assert not host_allowed(host)


def test_named_hosts_and_the_bound_address_are_allowed_and_a_wildcard_bind_allows_any_address():
    assert host_allowed("example.org", ("example.org",)) and host_allowed("Example.ORG.:8080", ("example.org",))
    assert not host_allowed("www.example.org", ("example.org",))
    assert host_allowed("192.168.1.5:5000", ("192.168.1.5",)) and not host_allowed("192.168.1.6", ("192.168.1.5",))
    assert host_allowed("[2001:db8::1]:80", ("2001:db8:0::1",)) and host_allowed("[2001:db8::1]", ("[2001:db8::1]",))
    assert host_allowed("example.org", ("example.org:5000",))  # a port in an entry does not count
    assert host_allowed("192.168.1.6:5000", ("0.0.0.0",)) and host_allowed("[2001:db8::1]", ("::",))
    assert not host_allowed("evil.com", ("0.0.0.0",))  # a name still has to be listed
    assert host_allowed("evil.com", ("*",)) and not host_allowed("127.0.0.1,evil.com", ("*",))


def test_browsers_from_other_origins_are_refused_unless_listed():
    assert origin_allowed(None, "http", "127.0.0.1:5000", ())  # not a browser
    assert origin_allowed("http://127.0.0.1:5000", "http", "127.0.0.1:5000", ())  # same origin
    assert not origin_allowed("https://evil.example", "http", "127.0.0.1:5000", ())
    assert origin_allowed("https://dash.example", "http", "127.0.0.1:5000", ("https://dash.example",))


def test_connections_per_address_are_limited_and_released():
    limit = AddressLimit(2)
    assert limit.admit("a") and limit.admit("a") and not limit.admit("a") and limit.admit("b")
    limit.release("a")
    assert limit.admit("a")
    assert all(AddressLimit(None).admit("a") for _ in range(100))


# -- recorded lines as they are, in Socket.IO packets -------------------------------------


def test_a_recorded_line_goes_into_a_packet_as_it_is_and_decodes_to_the_same_event():
    from stream_processor.serving import socketio_json
    from stream_processor.serving.socketio_json import EncodedJson

    line = '{"title": "Z\\u00fcrich  東京", "n": 1.50, "nested": {"a": [1, 2]}}'
    packet = socketio_json.dumps(["change", EncodedJson(line), 7], separators=(",", ":"))
    assert packet == '["change",' + line + ",7]"
    assert socketio_json.loads(packet) == ["change", json.loads(line), 7]
    assert socketio_json.dumps(["error", {"message": "x"}]) == json.dumps(["error", {"message": "x"}])


@pytest.mark.parametrize("window", [0, -1, True, "25", 2.5, 10**8, None])
def test_a_subscribe_window_is_a_whole_number_within_bounds_or_none(window):
    payload = {"with_offsets": True, "window": window}
    if window is None:
        assert parse_subscription(payload, realtime=False, speed=1.0).window_within(1000) == 1000
        return
    with pytest.raises(SubscribeError, match="window must be a whole number"):
        parse_subscription(payload, realtime=False, speed=1.0)


def test_a_client_that_asks_for_a_smaller_window_is_held_to_it_and_never_to_a_larger_one(tmp_path):
    recording = recording_of(tmp_path, edits(20))
    for asked, held_to in ((5, 5), (5000, 10)):
        payload = {"with_offsets": True, "window": asked}
        window = parse_subscription(payload, realtime=False, speed=1.0).window_within(10)
        subscriber = Subscriber("a", SOCKETIO, "127.0.0.1", CountingWaker())
        for step in start(subscriber, recording, payload, window=window):
            if step == Wait(None):  # waits for an ack: the window is full
                break
        assert len(subscriber.unacked) == held_to, (asked, window)
