"""Reading a recording: offsets, raw bytes, bad lines in place, input-file errors, line counts."""

from __future__ import annotations

import json

import pytest

from stream_processor.core.records import (
    InputFileError,
    check_wait,
    count_blank_lines,
    count_events,
    count_lines,
    open_recording,
    read_records,
    recording_identity,
)


def write(tmp_path, data: bytes, name: str = "recording.json"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_offsets_are_zero_based_line_numbers(tmp_path):
    lines = [json.dumps({"id": n, "wait": 0.1}) for n in range(5)]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    records = list(read_records(path))
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert [r.line_number for r in records] == [1, 2, 3, 4, 5]
    assert [r.event["id"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r.error is None for r in records)


def test_raw_bytes_are_kept_exactly_without_the_newline(tmp_path):
    raw_lines = [
        b'{"title": "Caf\\u00e9",   "wait":1}',
        b'  {"a" : [1,2 , 3]}   ',
        '{"title": "Zürich"}'.encode(),
    ]
    path = write(tmp_path, b"\n".join(raw_lines) + b"\n")
    records = list(read_records(path))
    assert [r.raw for r in records] == raw_lines
    assert records[0].event == {"title": "Café", "wait": 1}
    assert records[2].event == {"title": "Zürich"}


def test_last_line_without_newline_is_read_whole(tmp_path):
    path = write(tmp_path, b'{"n": 1}\n{"n": 2}')
    records = list(read_records(path))
    assert [r.raw for r in records] == [b'{"n": 1}', b'{"n": 2}']
    assert records[1].event == {"n": 2}
    assert records[1].offset == 1


BAD_LINES = [
    pytest.param(b"[" * 3000, "nested too deeply", id="deeply-nested"),
    pytest.param(b'{"a":' * 3000, "nested too deeply", id="deeply-nested-objects"),
    pytest.param(b'{"id": 1, "wait": ', "not valid JSON", id="broken-json"),
    pytest.param(b"[1, 2, 3]", "not a JSON object (got list)", id="array"),
    pytest.param(b"42", "not a JSON object (got int)", id="number"),
    pytest.param(b'"hello"', "not a JSON object (got str)", id="string"),
    pytest.param(b"null", "not a JSON object", id="null"),
    pytest.param(b'{"title": "caf\xe9"}', "UTF-8", id="invalid-utf8"),
    pytest.param(b'{"wait": NaN}', "NaN", id="nan-literal"),
    pytest.param(b'{"wait": Infinity}', "Infinity", id="infinity-literal"),
    pytest.param(b'{"wait": -Infinity}', "Infinity", id="minus-infinity-literal"),
]


@pytest.mark.parametrize(("bad", "fragment"), BAD_LINES)
def test_a_bad_line_becomes_an_error_record_and_the_rest_still_reads(tmp_path, bad, fragment):
    path = write(tmp_path, b'{"id": 1, "wait": 0.5}\n' + bad + b'\n{"id": 3, "wait": 2}\n')
    records = list(read_records(path))
    assert len(records) == 3
    first, broken, last = records
    assert first.event == {"id": 1, "wait": 0.5} and first.error is None
    assert broken.offset == 1
    assert broken.raw == bad
    assert broken.event is None
    assert broken.error and fragment in broken.error
    assert last.offset == 2
    assert last.event == {"id": 3, "wait": 2} and last.error is None


BAD_WAITS = [
    pytest.param(b'{"id": 7}', "missing field 'wait'", id="missing"),
    pytest.param(b'{"id": 7, "wait": -0.5}', "non-negative", id="negative"),
    pytest.param(b'{"id": 7, "wait": -1}', "non-negative", id="negative-int"),
    pytest.param(b'{"id": 7, "wait": "1.5"}', '"1.5"', id="string"),
    pytest.param(b'{"id": 7, "wait": true}', "true", id="boolean"),
    pytest.param(b'{"id": 7, "wait": null}', "null", id="null"),
    pytest.param(b'{"id": 7, "wait": [1]}', "[1]", id="list"),
    pytest.param(b'{"id": 7, "wait": NaN}', "NaN", id="nan"),
    pytest.param(b'{"id": 7, "wait": 1e999}', "inf", id="overflows-to-infinity"),
    pytest.param(b'{"id": 7, "wait": 1e300}', "beyond the 86400 s limit", id="huge"),
    pytest.param(b'{"id": 7, "wait": 86400.5}', "beyond", id="just-over-a-day"),
]


@pytest.mark.parametrize(("bad", "fragment"), BAD_WAITS)
def test_check_wait_turns_a_bad_wait_into_an_error_record(tmp_path, bad, fragment):
    path = write(tmp_path, bad + b'\n{"id": 8, "wait": 1}\n')
    broken, good = read_records(path, validate=check_wait)
    assert broken.raw == bad
    assert broken.error and fragment in broken.error
    assert good.error is None and good.event == {"id": 8, "wait": 1}


@pytest.mark.parametrize("bad", [-1, -0.001, "2", True, False, None, float("nan"), float("inf"), {"s": 1}])
def test_check_wait_names_the_field_for_every_bad_value(bad):
    problem = check_wait({"wait": bad})
    assert problem is not None
    assert "'wait'" in problem


@pytest.mark.parametrize("good", [0, 3, 0.0, 0.01, 10, 2.5, 86400])
def test_check_wait_accepts_zero_to_a_day_including_integers(good):
    assert check_wait({"wait": good}) is None


def test_integer_wait_reads_as_a_valid_event(tmp_path):
    path = write(tmp_path, b'{"wait": 3}\n{"wait": 0}\n')
    records = list(read_records(path, validate=check_wait))
    assert [r.error for r in records] == [None, None]
    assert [r.event["wait"] for r in records] == [3, 0]


def test_without_a_validator_a_missing_wait_is_fine(tmp_path):
    path = write(tmp_path, b'{"id": 1}\n')
    (record,) = read_records(path)
    assert record.error is None and record.event == {"id": 1}


def test_start_skips_lines_and_keeps_their_offsets(tmp_path):
    path = write(tmp_path, b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(6)))
    records = list(read_records(path, start=4))
    assert [r.offset for r in records] == [4, 5]
    assert [r.event["n"] for r in records] == [4, 5]
    assert list(read_records(path, start=6)) == []
    assert list(read_records(path, start=100)) == []


def test_empty_file_has_no_records(tmp_path):
    assert list(read_records(write(tmp_path, b""))) == []


def test_open_recording_on_a_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "events.json"
    with pytest.raises(InputFileError, match="no such file") as raised:
        open_recording(missing)
    assert str(missing) in str(raised.value)
    with pytest.raises(InputFileError):
        list(read_records(missing))


def test_open_recording_on_a_directory_names_the_path(tmp_path):
    with pytest.raises(InputFileError, match="directory") as raised:
        open_recording(tmp_path)
    assert str(tmp_path) in str(raised.value)
    with pytest.raises(InputFileError):
        count_lines(tmp_path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\n", 1),
        (b"a", 1),
        (b"a\n", 1),
        (b"a\nb", 2),
        (b"a\nb\n", 2),
        (b"a\n\n\nb\n", 4),
    ],
)
def test_count_lines_counts_a_last_line_without_newline(tmp_path, data, expected):
    assert count_lines(write(tmp_path, data)) == expected


@pytest.mark.parametrize(
    ("data", "events", "blank"),
    [(b"", 0, 0), (b"\n", 0, 1), (b"a", 1, 0), (b"a\n\n\nb\n", 2, 2), (b"a\n  \t\r\nb\n\n", 2, 2), (b"a\n ", 1, 1)],
)
def test_count_events_skips_blank_lines(tmp_path, data, events, blank):
    path = write(tmp_path, data)
    assert count_events(path) == events == len(list(read_records(path)))
    assert count_blank_lines(path) == blank


def test_blank_lines_are_skipped_and_take_no_offset_but_line_numbers_stay_true(tmp_path):
    path = write(tmp_path, b'{"n": 0}\n\n   \n{"n": 1}\r\n\n{"n": 2}\n\n')
    records = list(read_records(path))
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.line_number for r in records] == [1, 4, 6]
    assert [r.event["n"] for r in records] == [0, 1, 2]
    assert records[1].raw == b'{"n": 1}\r'  # kept byte for byte: written back as it came
    assert [r.offset for r in read_records(path, start=2)] == [2]


def test_a_leading_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path, b'\xef\xbb\xbf{"n": 0}\n{"n": 1}\n')
    first, second = read_records(path)
    assert first.raw == b'{"n": 0}' and first.event == {"n": 0} and first.error is None
    assert second.offset == 1


def test_a_byte_order_mark_elsewhere_is_bad_input(tmp_path):
    path = write(tmp_path, b'{"n": 0}\n\xef\xbb\xbf{"n": 1}\n')
    _, second = read_records(path)
    assert second.error and "JSON" in second.error


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_count_lines_across_read_chunks(tmp_path, trailing_newline):
    line = b'{"pad": "' + b"x" * 90 + b'"}'
    lines = 30_000  # about 3 MB: several 1 MiB chunks
    data = b"\n".join([line] * lines) + (b"\n" if trailing_newline else b"")
    assert count_lines(write(tmp_path, data)) == lines


def test_count_lines_when_a_chunk_ends_exactly_on_a_newline_and_more_follows(tmp_path):
    chunk = 1 << 20
    data = b"x" * (chunk - 1) + b"\n" + b"tail"
    assert count_lines(write(tmp_path, data)) == 2


def test_reading_the_first_size_bytes_ignores_what_was_appended_since(tmp_path):
    path = write(tmp_path, b'{"id": 0}\n\n{"id": 1}')  # a blank line, and a last line without newline
    identity = recording_identity(path)
    assert identity["size"] == len(path.read_bytes()) and identity["events"] == 2
    with path.open("ab") as stream:
        stream.write(b'23}\n{"id": 2}\n\n')  # completes the last line, adds an event and a blank line
    records = list(read_records(path, size=identity["size"]))
    assert [(r.offset, r.raw, r.line) for r in records] == [(0, b'{"id": 0}', 1), (1, b'{"id": 1}', 3)]
    assert list(read_records(path, start=1, size=identity["size"]))[0].raw == b'{"id": 1}'
    assert count_events(path, identity["size"]) == 2 and count_blank_lines(path, identity["size"]) == 1
    assert count_events(path) == 3 and count_blank_lines(path) == 2
