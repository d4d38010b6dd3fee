"""Streams by name (aliases, comma lists, a trailing slash) and a comma list merged in time
order, each record carrying every stream's next position, from where each was resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_processor.protocol.event_stream import (
    Resume,
    StreamRecord,
    StreamRequestError,
    parse_positions,
    positions_id,
)
from stream_processor.serving.recording import Recording
from stream_processor.serving.sse_request import parse_stream_path
from stream_processor.serving.streams import MergedStreams, StreamCatalog, StreamError, open_catalog

RC, REV = "eqiad.mediawiki.recentchange", "eqiad.mediawiki.revision-create"


def recording(path: Path, times: list[int | None]) -> Recording:
    lines = [json.dumps({"n": i, **({"timestamp": t} if t is not None else {})}) for i, t in enumerate(times)]
    path.write_text("\n".join(lines) + "\n")
    return Recording(path)


@pytest.fixture
def catalog(tmp_path) -> StreamCatalog:
    return StreamCatalog(
        recording(tmp_path / "rc.json", [10, 20, 30, 40]),
        {"revision-create": recording(tmp_path / "rev.json", [15, None, 35])},
    )


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/v2/stream/recentchange", ["recentchange"]),
        ("/v2/stream/recentchange/", ["recentchange"]),
        ("/v2/stream/mediawiki.recentchange,revision-create", ["mediawiki.recentchange", "revision-create"]),
    ],
)
def test_a_path_lists_stream_names_with_or_without_a_trailing_slash(path, names):
    assert parse_stream_path(path) == names


@pytest.mark.parametrize(
    "path", ["/v2/stream/", "/v2/stream/recentchange,", "/v2/stream/recentchange//", "/v2/stream/recentchange,nope"]
)
def test_a_path_naming_no_stream_or_an_unknown_one_is_a_400(catalog, path):
    with pytest.raises(StreamRequestError) as refused:
        catalog.resolve(parse_stream_path(path))
    assert refused.value.status == 400


def test_names_and_aliases_resolve_each_stream_once_in_the_order_named(catalog):
    streams = catalog.resolve(["revision-create", "recentchange", "mediawiki.recentchange"])
    assert [stream.name for stream in streams] == ["mediawiki.revision-create", "mediawiki.recentchange"]
    assert catalog.names() == ["mediawiki.recentchange", "mediawiki.revision-create", "recentchange", "revision-create"]


def test_an_unknown_stream_is_a_400_naming_the_ones_served(catalog):
    with pytest.raises(StreamRequestError, match="no such stream: 'nope'.*revision-create") as refused:
        catalog.resolve(["recentchange", "nope"])
    assert refused.value.status == 400


def test_streams_merge_in_time_order_each_record_naming_every_streams_next_position(catalog):
    merged = MergedStreams(catalog.resolve(["recentchange", "revision-create"]), {})
    records = list(merged.records_from(0))
    assert all(isinstance(record, StreamRecord) for record in records)
    # rc at 10 20 30 40, rev at 15 (no time: stays after 15) 35; ties go to the stream named first
    order = [(record.raw.decode(), record.positions) for record in records]
    assert [json.loads(raw) for raw, _ in order] == [
        {"n": 0, "timestamp": 10},
        {"n": 0, "timestamp": 15},
        {"n": 1},
        {"n": 1, "timestamp": 20},
        {"n": 2, "timestamp": 30},
        {"n": 2, "timestamp": 35},
        {"n": 3, "timestamp": 40},
    ]
    assert [record.offset for record in records] == list(range(7))  # numbered in the merged order
    assert order[2][1] == ((RC, 1), (REV, 2)) and order[-1][1] == ((RC, 4), (REV, 3))
    assert merged.end_id() == positions_id([(RC, 4), (REV, 3)])


def test_a_merge_resumed_from_an_id_goes_on_in_each_stream_where_it_was(catalog):
    streams = catalog.resolve(["recentchange", "revision-create"])
    every = list(MergedStreams(streams, {}).records_from(0))
    for cut, record in enumerate(every):
        starts = parse_positions(positions_id(record.positions), [stream.name for stream in streams])
        rest = list(MergedStreams(streams, starts).records_from(0))
        assert [r.raw for r in rest] == [r.raw for r in every[cut + 1 :]], cut
    assert MergedStreams(
        streams,
        parse_positions(
            merged_end := every[-1].positions and positions_id(every[-1].positions),
            ["mediawiki.recentchange", "mediawiki.revision-create"],
        ),
    ).ends_before(0), merged_end


def test_a_stream_starts_at_its_time_or_the_beginning_when_the_id_does_not_name_it(catalog):
    streams = catalog.resolve(["recentchange", "revision-create"])
    starts = {"mediawiki.recentchange": Resume(since=25.0)}
    rest = [json.loads(record.raw) for record in MergedStreams(streams, starts).records_from(0)]
    assert [r.get("timestamp") for r in rest] == [15, None, 30, 35, 40]


def test_an_id_of_a_merge_is_refused_with_404_by_a_request_for_one_of_its_streams(catalog):
    text = positions_id([(RC, 1), (REV, 2)])
    with pytest.raises(StreamRequestError) as refused:
        parse_positions(text, ["mediawiki.recentchange"])
    assert refused.value.status == 404 and "revision-create" in str(refused.value)


@pytest.mark.parametrize(
    ("specs", "loop", "fragment"),
    [
        (["recentchange=FILE"], False, "served already"),
        (["mediawiki.recentchange=FILE"], False, "served already"),
        (["x=FILE", "x=FILE"], False, "twice"),
        (["no-equals"], False, "NAME=FILE"),
        (["a,b=FILE"], False, "NAME=FILE"),
        (["a/b=FILE"], False, "NAME=FILE"),
        (["a?b=FILE"], False, "NAME=FILE"),  # a client could never ask for it
        (["a%20b=FILE"], False, "NAME=FILE"),
        (["\u00e9t\u00e9=FILE"], False, "NAME=FILE"),
        ([".hidden=FILE"], False, "NAME=FILE"),
        (["=FILE"], False, "NAME=FILE"),
        (["x" * 101 + "=FILE"], False, "NAME=FILE"),
        (["x="], False, "NAME=FILE"),
        (["x=FILE"], True, "--loop"),
    ],
)
def test_a_bad_stream_option_is_a_usage_error_saying_why(tmp_path, specs, loop, fragment):
    default = recording(tmp_path / "rc.json", [1])
    recording(tmp_path / "other.json", [1])
    with pytest.raises(StreamError, match=fragment):
        open_catalog(default, [spec.replace("FILE", str(tmp_path / "other.json")) for spec in specs], loop)
