"""The ordered JSON Lines writer and its resume point (the output file is the checkpoint)."""

from __future__ import annotations

import pytest

from stream_processor.sink import JsonlSink, resume_point


def test_write_lines_appends_a_newline_to_each_line(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path) as sink:
        sink.write_lines([b'{"a": 1}', b'{"b": 2}'])
        sink.write_lines(iter([b"[3]"]))
        assert sink.lines_written == 3
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n[3]\n'


def test_lines_are_visible_to_another_reader_right_after_write_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    try:
        sink.write_lines([b"first"])
        with open(path, "rb") as reader:
            assert reader.read() == b"first\n"
        sink.write_lines([b"second", b"third"])
        with open(path, "rb") as reader:
            assert reader.read() == b"first\nsecond\nthird\n"
    finally:
        sink.close()


def test_a_new_sink_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old 1\nold 2\n")
    with JsonlSink(path) as sink:
        assert sink.start_offset == 0
        sink.write_lines([b"new"])
    assert path.read_bytes() == b"new\n"


def test_close_twice_is_harmless(tmp_path):
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.write_lines([b"x"])
    sink.close()
    sink.close()
    assert (tmp_path / "out.jsonl").read_bytes() == b"x\n"


def test_resume_point_of_a_missing_file_is_zero_and_creates_nothing(tmp_path):
    path = tmp_path / "missing.jsonl"
    assert resume_point(path) == 0
    assert not path.exists()


@pytest.mark.parametrize(
    ("data", "complete_lines"),
    [
        (b"", 0),
        (b"\n", 1),
        (b"a\n", 1),
        (b"a\nb\nc\n", 3),
        (b"a\n\nc\n", 3),
    ],
)
def test_resume_point_counts_complete_lines_and_leaves_a_clean_file_alone(tmp_path, data, complete_lines):
    path = tmp_path / "out.jsonl"
    path.write_bytes(data)
    assert resume_point(path) == complete_lines
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"torn", b""),
        (b"a\ntorn", b"a\n"),
        (b'{"id": 1}\n{"id": 2}\n{"id": 3, "ti', b'{"id": 1}\n{"id": 2}\n'),
    ],
)
def test_resume_point_cuts_a_torn_last_line(tmp_path, data, kept):
    path = tmp_path / "out.jsonl"
    path.write_bytes(data)
    assert resume_point(path) == kept.count(b"\n")
    assert path.read_bytes() == kept


def test_resume_point_cuts_a_torn_line_longer_than_its_read_step(tmp_path):
    path = tmp_path / "out.jsonl"
    complete = b"".join(b"line %d\n" % n for n in range(1000))
    torn = b"y" * 200_000  # several of the 64 KiB backwards steps without a newline
    path.write_bytes(complete + torn)
    assert resume_point(path) == 1000
    assert path.read_bytes() == complete


def test_resume_point_of_one_long_line_without_newline_is_zero(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"z" * 150_000)
    assert resume_point(path) == 0
    assert path.read_bytes() == b""


def test_resume_appends_after_the_cut_and_starts_at_the_complete_line_count(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"n": 0}\n{"n": 1}\n{"n": 2')
    with JsonlSink(path, resume=True) as sink:
        assert sink.start_offset == 2
        sink.write_lines([b'{"n": 2}', b'{"n": 3}'])
    assert path.read_bytes() == b'{"n": 0}\n{"n": 1}\n{"n": 2}\n{"n": 3}\n'


def test_resume_of_a_complete_file_keeps_every_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\n")
    with JsonlSink(path, resume=True) as sink:
        assert sink.start_offset == 2
        sink.write_lines([b"c"])
    assert path.read_bytes() == b"a\nb\nc\n"


def test_resume_of_a_missing_file_starts_at_zero_and_creates_it(tmp_path):
    path = tmp_path / "fresh.jsonl"
    with JsonlSink(path, resume=True) as sink:
        assert sink.start_offset == 0
        sink.write_lines([b"a"])
    assert path.read_bytes() == b"a\n"
