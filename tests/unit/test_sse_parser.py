"""The client's SSE parser, against the HTML standard's rules, fed in pieces of any size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processor.protocol.sse_parser import EventTooLarge, SseEvent, SseParser

STREAM = (
    b":ok\n\n"
    b'event: message\nid: 1\ndata: {"a": 1}\n\n'
    b": a heartbeat\n\n"
    b"data:no space\r\ndata:  two spaces\r\n\r\n"  # CRLF; only one space is dropped
    b"id: 2\rdata: after a CR\r\r"  # CR alone
    b"event: end\ndata: {}\n\n"
    b"retry: 1500\n"
    b"data\n\n"  # a field with no colon: empty data
)
EXPECTED = [
    SseEvent("message", b'{"a": 1}', "1"),
    SseEvent("message", b"no space\n two spaces", "1"),  # the id persists
    SseEvent("message", b"after a CR", "2"),
    SseEvent("end", b"{}", "2"),
    SseEvent("message", b"", "2"),
]


def parse_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list[SseEvent], SseParser]:
    parser, events, start = SseParser(), [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        events += parser.feed(stream[start:cut])
        start = cut
    return events, parser


def test_events_comments_ids_and_line_endings_follow_the_standard():
    events, parser = parse_in_pieces(STREAM, [])
    assert events == EXPECTED and parser.retry_ms == 1500


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_way_of_cutting_the_stream_gives_the_same_events(cuts):
    assert parse_in_pieces(STREAM, cuts)[0] == EXPECTED


@given(st.lists(st.integers(0, len(STREAM) + 3), max_size=20))
def test_a_byte_order_mark_at_the_start_is_dropped_however_the_stream_is_cut(cuts):
    assert parse_in_pieces(b"\xef\xbb\xbf" + STREAM, cuts)[0] == EXPECTED


def test_only_the_first_byte_order_mark_is_dropped_and_a_lookalike_start_is_kept():
    # A second BOM is part of the first line's field name (no field "\ufeffdata"): the event is ignored
    assert parse_in_pieces(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [])[0] == []
    assert parse_in_pieces(b"\xefdata: x\n\n", [1])[0] == []  # not a BOM: the line is "\xefdata"
    assert parse_in_pieces(b"data: \xef\xbb\xbf\n\n", [])[0] == [SseEvent("message", b"\xef\xbb\xbf", None)]


def test_a_ten_megabyte_line_in_small_chunks_comes_out_whole():
    line = b"x" * 10_000_000
    stream = b"data: " + line + b"\n\n"
    events, _ = parse_in_pieces(stream, list(range(0, len(stream), 65_536)))
    assert events == [SseEvent("message", line, None)]


def test_data_stays_bytes_even_when_it_is_not_utf8():
    assert list(SseParser().feed(b"data: caf\xe9\n\n")) == [SseEvent("message", b"caf\xe9", None)]


def test_an_event_past_the_cap_raises_saying_so_whether_in_one_line_or_many():
    endless = SseParser(max_event_bytes=1000)
    with pytest.raises(EventTooLarge, match="has not ended"):
        for _ in range(20):
            list(endless.feed(b"data: " + b"x" * 100))  # no line ever ends
    many_lines = SseParser(max_event_bytes=1000)
    with pytest.raises(EventTooLarge):
        for _ in range(40):
            list(many_lines.feed(b"data: " + b"x" * 50 + b"\n"))  # lines end, the event does not
    assert list(SseParser(max_event_bytes=1000).feed(b"data: x\n\n" * 200)) == [SseEvent("message", b"x", None)] * 200
