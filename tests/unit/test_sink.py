"""The output and its checkpoint (stream_processor/sink.py).

OUTPUT holds one line per event; OUTPUT.checkpoint holds a JSON header, then one line per
write listing the offsets just written. The checkpoint is locked for the sink's lifetime.
`--resume` checks the header, cuts torn lines and whatever the two files do not agree on,
and says which offsets are done. The crash properties below model a run killed at any
moment (and a power cut that lost either file's tail) and check that resuming, then
finishing, leaves every offset written exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_processor.output.sink import (
    CHECKED_FIELDS,
    FORMAT,
    DoneOffsets,
    JsonlSink,
    OutputError,
    checkpoint_path,
    decode_offsets,
    encode_offsets,
)

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20  # the sink reads files in steps of this size when it cuts them
HEADER = {"input": {"sha256": "ab" * 32, "size": 4096}, "task": "reference", "order": "total"}
OTHER_VALUES = {"input": {"sha256": "cd" * 32, "size": 4096}, "task": "slow", "order": "key:user"}

# Each example writes and cuts real files in its own directory under tmp_path.
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- helpers ----------------------------------------------------------------------------------


def line_for(offset: int) -> bytes:
    """A line that says which offset it stands for (of varying length)."""
    return json.dumps({"offset": offset, "pad": "x" * (offset % 7)}).encode()


def output_lines(path: Path) -> list[bytes]:
    """The output's lines; it must end with a complete line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"torn last line in {path}: {data[-40:]!r}"
    return data.split(b"\n")[:-1]


def output_offsets(path: Path) -> list[int]:
    return [json.loads(line)["offset"] for line in output_lines(path)]


def read_checkpoint(path: Path) -> tuple[dict, list[int]]:
    """The checkpoint's header and every offset it lists, in write order (all lines complete)."""
    data = checkpoint_path(path).read_bytes()
    assert data.endswith(b"\n"), f"torn last line in the checkpoint: {data[-40:]!r}"
    header, *entries = data.split(b"\n")[:-1]
    return json.loads(header), [offset for entry in entries for offset in decode_offsets(entry)]


def done_offsets(done: DoneOffsets) -> set[int]:
    return set(range(done.low_watermark)) | done.beyond


def first_missing(offsets: set[int]) -> int:
    return next(offset for offset in range(len(offsets) + 1) if offset not in offsets)


def both_files(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), checkpoint_path(path).read_bytes()


def write_file_pair(path: Path, output: bytes, checkpoint: bytes | None) -> None:
    path.write_bytes(output)
    if checkpoint is not None:
        checkpoint_path(path).write_bytes(checkpoint)


def header_line(header: dict = HEADER) -> bytes:
    return json.dumps({"format": FORMAT, **header}, sort_keys=True).encode() + b"\n"


def write_groups(path: Path, groups: list[list[int]], header: dict = HEADER, resume: bool = False) -> None:
    with JsonlSink(path, header, resume=resume) as sink:
        for group in groups:
            sink.write([(offset, line_for(offset)) for offset in group])


@dataclass
class Sizes:
    output: int
    checkpoint: int


def write_groups_measured(path: Path, groups: list[list[int]], resume: bool) -> list[Sizes]:
    """Write `groups` (one write each), and return both files' sizes before the first and after each."""
    sizes = []
    with JsonlSink(path, HEADER, resume=resume) as sink:
        for group in [None, *groups]:
            if group is not None:
                sink.write([(offset, line_for(offset)) for offset in group])
            sizes.append(Sizes(path.stat().st_size, checkpoint_path(path).stat().st_size))
    return sizes


def complete_checkpoint_offsets(checkpoint: bytes) -> list[int]:
    """The offsets that a (possibly cut) checkpoint's complete entry lines list."""
    entries = checkpoint.split(b"\n")[1:-1]  # after the header, before the (possibly torn) rest
    return [offset for entry in entries for offset in decode_offsets(entry)]


@st.composite
def groups_of(draw, offsets: list[int]) -> list[list[int]]:
    """`offsets` in their order, split into writes of arbitrary sizes."""
    groups, rest = [], list(offsets)
    while rest:
        size = draw(st.integers(1, len(rest)))
        groups.append(rest[:size])
        rest = rest[size:]
    return groups


@st.composite
def runs(draw, max_offsets: int = 60) -> tuple[int, list[list[int]]]:
    """(n, the writes of a run over range(n) in any order)."""
    n = draw(st.integers(0, max_offsets))
    return n, draw(groups_of(draw(st.permutations(range(n)))))


def crash(path: Path, output_size: int, checkpoint_size: int) -> None:
    """What a kill (or a power cut) leaves: each file cut at some byte."""
    os.truncate(path, output_size)
    os.truncate(checkpoint_path(path), checkpoint_size)


def resume_and_check(path: Path, n: int, written_in_order: list[int]) -> JsonlSink:
    """Resume after a crash and check that both files, and `done`, agree on exactly the lines
    that survived in both: the first min(complete output lines, checkpointed offsets) written."""
    cut_output, cut_checkpoint = both_files(path)
    survived = written_in_order[: min(cut_output.count(b"\n"), len(complete_checkpoint_offsets(cut_checkpoint)))]
    sink = JsonlSink(path, HEADER, resume=True)
    try:
        assert done_offsets(sink.done) == set(survived)
        assert sink.done.lines == len(survived)
        assert sink.start_offset == first_missing(set(survived))
        assert all(offset >= sink.start_offset for offset in sink.done.beyond)
        assert output_lines(path) == [line_for(offset) for offset in survived]  # no torn or unlisted line
        header, listed = read_checkpoint(path)
        assert header == {"format": FORMAT, **HEADER}
        assert listed == survived  # nothing listed beyond the output's lines
        assert len(set(survived)) == len(survived)
        assert set(survived) <= set(range(n))
    except BaseException:
        sink.close()
        raise
    return sink


def finish_and_check(sink: JsonlSink, path: Path, n: int, missing_order: list[int]) -> None:
    """Write what `sink.done` lacks, then check that every offset is there exactly once."""
    assert sorted(missing_order) == [offset for offset in range(n) if offset not in sink.done]
    with sink:
        sink.write([(offset, line_for(offset)) for offset in missing_order])
    lines = output_lines(path)
    offsets = output_offsets(path)
    assert sorted(offsets) == list(range(n))
    assert lines == [line_for(offset) for offset in offsets]
    header, listed = read_checkpoint(path)
    assert header == {"format": FORMAT, **HEADER}
    assert listed == offsets  # the checkpoint says, line by line, which offset each line is
    with JsonlSink(path, HEADER, resume=True) as again:
        assert again.start_offset == n
        assert again.done.beyond == set()


def run_dir(tmp_path: Path) -> Path:
    """A fresh directory for one hypothesis example."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


# -- basics ----------------------------------------------------------------------------------


def test_write_appends_each_line_with_a_newline(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        sink.write([(0, b'{"a": 1}'), (1, b'{"b": 2}')])
        sink.write([(2, b"[3]")])
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n[3]\n'


def test_each_write_is_visible_to_another_reader_at_once_in_both_files(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        sink.write([(0, b"first")])
        assert path.read_bytes() == b"first\n"
        assert checkpoint_path(path).read_bytes() == header_line() + b"0\n"
        sink.write([(1, b"second"), (2, b"third")])
        assert path.read_bytes() == b"first\nsecond\nthird\n"
        assert checkpoint_path(path).read_bytes() == header_line() + b"0\n1-2\n"


class _WatchedStream:
    """A checkpoint stream that records what the output file holds whenever an entry is written."""

    def __init__(self, stream, output: Path) -> None:
        self._stream, self._output, self.output_seen = stream, output, []

    def write(self, data: bytes) -> int:
        self.output_seen.append(self._output.read_bytes())
        return self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def test_each_writes_lines_reach_the_output_before_its_checkpoint_entry(tmp_path):
    """What the crash properties below assume: a checkpoint entry never lists a line not yet in the output."""
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        sink._checkpoint = watched = _WatchedStream(sink._checkpoint, path)
        sink.write([(0, b"a"), (1, b"b")])
        sink.write([(2, b"c")])
    assert watched.output_seen == [b"a\nb\n", b"a\nb\nc\n"]


def test_checkpoint_starts_with_the_header_and_lists_each_writes_offsets(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[3, 4, 5, 9, 2], [0], [1, 6, 7, 8]])
    header, *entries = checkpoint_path(path).read_bytes().split(b"\n")
    assert json.loads(header) == {"format": FORMAT, **HEADER}
    assert entries == [b"3-5 9 2", b"0", b"1 6-8", b""]
    assert output_offsets(path) == [3, 4, 5, 9, 2, 0, 1, 6, 7, 8]


def test_an_empty_write_writes_nothing(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        sink.write([])
        assert sink.lines_written == 0
    assert both_files(path) == (b"", header_line())


def test_lines_written_counts_this_sinks_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        assert sink.lines_written == 0
        sink.write([(0, b"a"), (1, b"b")])
        sink.write([(2, b"c")])
        assert sink.lines_written == 3
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.lines_written == 0  # the resumed lines are in `done`, not here
        sink.write([(3, b"d")])
        assert sink.lines_written == 1


def test_a_new_sink_without_resume_replaces_the_output_and_its_checkpoint(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0, 1, 2], [3]], header={**HEADER, "task": "old"})
    with JsonlSink(path, HEADER) as sink:
        assert sink.start_offset == 0
        assert done_offsets(sink.done) == set()
        assert both_files(path) == (b"", header_line())
        sink.write([(0, b"new")])
    assert both_files(path) == (b"new\n", header_line() + b"0\n")


def test_without_a_header_the_checkpoint_header_holds_only_the_format(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path) as sink:
        sink.write([(0, b"x")])
    assert read_checkpoint(path) == ({"format": FORMAT}, [0])
    with JsonlSink(path, resume=True) as sink:
        assert sink.start_offset == 1


def test_close_twice_is_harmless(tmp_path):
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path, HEADER)
    sink.write([(0, b"x")])
    sink.close()
    sink.close()
    assert both_files(path) == (b"x\n", header_line() + b"0\n")


# -- encode_offsets / decode_offsets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("offsets", "encoded"),
    [
        ([3, 4, 5, 9, 2], b"3-5 9 2"),
        ([], b""),
        ([0], b"0"),
        ([0, 1, 2, 3], b"0-3"),
        ([5, 4, 3], b"5 4 3"),
        ([2, 2, 3], b"2 2-3"),
        ([1, 2, 1, 2], b"1-2 1-2"),
        ([10, 11, 99, 100, 7], b"10-11 99-100 7"),
    ],
)
def test_encode_offsets_writes_runs_of_consecutive_offsets_as_a_dash_b(offsets, encoded):
    assert encode_offsets(iter(offsets)) == encoded
    assert list(decode_offsets(encoded)) == offsets


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 2**40),
            st.integers(0, 30),  # small ones: repeats and runs
            st.integers(0, 20).flatmap(lambda start: st.just(list(range(start, start + 5)))),
            st.integers(5, 20).flatmap(lambda start: st.just(list(range(start, start - 5, -1)))),
        ),
        max_size=40,
    )
)
def test_decode_offsets_undoes_encode_offsets_for_any_offsets(items):
    offsets = [offset for item in items for offset in (item if isinstance(item, list) else [item])]
    encoded = encode_offsets(iter(offsets))
    assert b"\n" not in encoded
    assert list(decode_offsets(encoded)) == offsets
    assert len(encoded.split()) <= len(offsets)


# -- the lock ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True], ids=["afresh", "resume"])
def test_a_second_sink_on_a_live_output_fails_and_touches_nothing(tmp_path, resume):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as first:
        first.write([(0, b"a"), (1, b"b")])
        before = both_files(path)
        with pytest.raises(OutputError, match="another run"):
            JsonlSink(path, HEADER, resume=resume)
        assert both_files(path) == before
        with pytest.raises(OutputError, match="another run"):  # the failed attempt did not drop the lock
            JsonlSink(path, HEADER, resume=resume)
        first.write([(2, b"c")])
    assert both_files(path) == (b"a\nb\nc\n", header_line() + b"0-1\n2\n")


def test_once_the_first_sink_is_closed_a_second_opens(tmp_path):
    path = tmp_path / "out.jsonl"
    first = JsonlSink(path, HEADER)
    first.write([(0, b"a")])
    with pytest.raises(OutputError):
        JsonlSink(path, HEADER, resume=True)
    first.close()
    with JsonlSink(path, HEADER, resume=True) as second:
        assert second.start_offset == 1
        second.write([(1, b"b")])
    assert both_files(path) == (b"a\nb\n", header_line() + b"0\n1\n")


HOLDER = """
import json, sys
from stream_processor.output.sink import JsonlSink
with JsonlSink(sys.argv[1], json.loads(sys.argv[2])) as sink:
    sink.write([(0, b"from the child"), (1, b"again")])
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_sink_in_another_process_holds_the_output_until_it_closes(tmp_path):
    path = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), json.dumps(HEADER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert child.stdout.readline() == b"holding\n"  # returns early (b"") if the child dies
        before = both_files(path)
        assert before == (b"from the child\nagain\n", header_line() + b"0-1\n")
        for resume in (False, True):
            with pytest.raises(OutputError, match="another run"):
                JsonlSink(path, HEADER, resume=resume)
            assert both_files(path) == before
        child.stdin.write(b"done\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 2
    assert both_files(path) == before


def other_name_for(path: Path, how: str) -> Path:
    """Another name for the file `path` (made here if it is a link): the lock must see through it."""
    if how == "symlink":
        link = path.with_name("link.jsonl")
        link.symlink_to(path)
        return link
    if how == "relative symlink":
        link = path.with_name("relative-link.jsonl")
        link.symlink_to(path.name)
        return link
    if how == "hard link":
        link = path.with_name("hard-link.jsonl")
        link.hardlink_to(path)
        return link
    if how == "a path with ..":
        (path.parent / "sub").mkdir(exist_ok=True)
        return path.parent / "sub" / ".." / path.name
    assert how == "relative path"
    return Path(os.path.relpath(path))


LINK_NAMES = ["symlink", "relative symlink", "hard link", "a path with ..", "relative path"]


@pytest.mark.parametrize("how", LINK_NAMES)
def test_a_sink_in_another_process_holds_the_file_under_any_other_name(tmp_path, monkeypatch, how):
    path = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path)  # for the relative path
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), json.dumps(HEADER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert child.stdout.readline() == b"holding\n"  # returns early (b"") if the child dies
        name = other_name_for(path, how)
        before = both_files(path)
        listing = sorted(p.name for p in tmp_path.iterdir())
        mtime = path.stat().st_mtime_ns
        for resume in (False, True):
            with pytest.raises(OutputError, match="another run") as refused:
                JsonlSink(name, HEADER, resume=resume)
            assert str(name) in str(refused.value)
            assert both_files(path) == before
            assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no checkpoint beside the other name
            assert path.stat().st_mtime_ns == mtime
        child.stdin.write(b"done\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert both_files(path) == before


@pytest.mark.parametrize("how", ["symlink", "relative symlink"])
def test_a_symlinked_output_keeps_its_checkpoint_beside_the_file_it_points_to(tmp_path, how):
    path = tmp_path / "out.jsonl"
    path.touch()
    link = other_name_for(path, how)
    assert checkpoint_path(link) == checkpoint_path(path)
    write_groups(path, [[0, 1]])
    with JsonlSink(link, HEADER, resume=True) as sink:  # a resume through the link finds it
        assert sink.start_offset == 2
        sink.write([(2, line_for(2))])
    assert output_offsets(path) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.jsonl", "out.jsonl.checkpoint", link.name])


# -- resume: is it the same run? ---------------------------------------------------------------


def test_resume_with_the_same_header_continues_after_the_lines_so_far(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0, 1, 2], [3, 4]])
    before = both_files(path)
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 5
        assert sink.done == DoneOffsets(low_watermark=5, beyond=set(), lines=5)
        assert both_files(path) == before  # a clean stop: nothing to cut
        sink.write([(5, line_for(5))])
    assert output_offsets(path) == [0, 1, 2, 3, 4, 5]
    assert read_checkpoint(path)[1] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("field", CHECKED_FIELDS)
def test_resume_refuses_another_runs_output_and_names_what_differs(tmp_path, field):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0, 1]])
    before = both_files(path)
    with pytest.raises(OutputError) as raised:
        JsonlSink(path, {**HEADER, field: OTHER_VALUES[field]}, resume=True)
    message = str(raised.value)
    assert f"{field}: it was " in message
    assert [name for name in CHECKED_FIELDS if f"{name}: " in message] == [field]
    assert both_files(path) == before


def test_resume_names_every_field_that_differs_with_both_values(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0]])
    with pytest.raises(OutputError) as raised:
        JsonlSink(path, {**HEADER, "task": "slow", "order": "none"}, resume=True)
    message = str(raised.value)
    assert "task: it was reference, now slow" in message
    assert "order: it was total, now none" in message
    assert "input" not in message


def test_resume_ignores_header_fields_it_does_not_check(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0]], header={**HEADER, "note": "first run"})
    with JsonlSink(path, {**HEADER, "note": "second run"}, resume=True) as sink:
        assert sink.start_offset == 1


def test_resume_refuses_an_output_with_content_but_no_checkpoint(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\n")
    with pytest.raises(OutputError, match="no checkpoint"):
        JsonlSink(path, HEADER, resume=True)
    assert path.read_bytes() == b"a\nb\n"
    # Nothing left behind either: an empty checkpoint made `verify` say "resume it first".
    assert not checkpoint_path(path).exists()


def test_resume_refuses_an_output_with_content_and_an_empty_checkpoint(tmp_path):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"a\n", b"")
    with pytest.raises(OutputError, match="no checkpoint"):
        JsonlSink(path, HEADER, resume=True)
    assert both_files(path) == (b"a\n", b"")


@pytest.mark.parametrize(
    ("output", "checkpoint"),
    [(None, None), (b"", None), (None, b""), (b"", b"")],
    ids=["neither", "empty-output", "empty-checkpoint", "both-empty"],
)
def test_resume_with_nothing_written_starts_afresh_at_zero(tmp_path, output, checkpoint):
    path = tmp_path / "out.jsonl"
    if output is not None:
        path.write_bytes(output)
    if checkpoint is not None:
        checkpoint_path(path).write_bytes(checkpoint)
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 0
        assert done_offsets(sink.done) == set()
        assert both_files(path) == (b"", header_line())
        sink.write([(0, b"a")])
    assert both_files(path) == (b"a\n", header_line() + b"0\n")


@pytest.mark.parametrize(
    "checkpoint",
    [
        b"hello\n0\n",
        b"[1, 2]\n0\n",
        b'{"format": "something else", "task": "reference"}\n0\n',
        b'"' + FORMAT.encode() + b'"\n0\n',
        b"\xff\xfe\n0\n",
    ],
    ids=["text", "json-list", "other-format", "json-string", "binary"],
)
def test_resume_refuses_a_checkpoint_that_is_not_ours(tmp_path, checkpoint):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"a\n", checkpoint)
    with pytest.raises(OutputError, match="not a stream-processor checkpoint"):
        JsonlSink(path, HEADER, resume=True)
    assert both_files(path) == (b"a\n", checkpoint)


def test_resume_refuses_a_checkpoint_whose_offsets_are_damaged(tmp_path):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"a\nb\n", header_line() + b"0\n\x00\x00\x00\n")
    before = both_files(path)
    with pytest.raises(OutputError, match="damaged"):
        JsonlSink(path, HEADER, resume=True)
    assert both_files(path) == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda tmp_path: tmp_path / "missing-directory" / "out.jsonl", "cannot write"),
        (lambda tmp_path: tmp_path / "a-file" / "out.jsonl", "cannot write"),
        (lambda tmp_path: tmp_path / "a-directory", None),  # (the CLI's path checks name this one first)
    ],
    ids=["missing-directory", "under-a-file", "a-directory"],
)
@pytest.mark.parametrize("resume", [False, True], ids=["afresh", "resume"])
def test_an_unwritable_output_is_an_output_error(tmp_path, where, message, resume):
    (tmp_path / "a-file").write_bytes(b"not a directory")
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(OutputError, match=message):
        JsonlSink(where(tmp_path), HEADER, resume=resume)


# -- the crash properties ----------------------------------------------------------------------


@st.composite
def killed_runs(draw):
    """A run killed at any moment. Each write flushes the output before its checkpoint line,
    so the checkpoint lists only whole writes' offsets: after k whole writes, the next write's
    output is cut anywhere, and the checkpoint anywhere within what it had after k writes
    (a torn entry too; the header only while the output is still empty)."""
    n, groups = draw(runs())
    k = draw(st.integers(0, len(groups)))
    return n, groups, k, draw(st.floats(0, 1)), draw(st.floats(0, 1))


def between(low: int, high: int, fraction: float) -> int:
    return low + round((high - low) * fraction)


@PROPERTY
@given(killed_runs(), st.data())
def test_resume_after_a_kill_at_any_moment_then_finishing_writes_each_offset_once(tmp_path, killed_run, data):
    n, groups, k, output_fraction, checkpoint_fraction = killed_run
    path = run_dir(tmp_path) / "out.jsonl"
    sizes = write_groups_measured(path, groups, resume=False)
    output_size = between(sizes[k].output, sizes[min(k + 1, len(groups))].output, output_fraction)
    lowest_checkpoint = 0 if output_size == 0 else sizes[0].checkpoint
    crash(path, output_size, between(lowest_checkpoint, sizes[k].checkpoint, checkpoint_fraction))
    written = [offset for group in groups for offset in group]
    assert len(complete_checkpoint_offsets(checkpoint_path(path).read_bytes())) <= path.read_bytes().count(b"\n")

    sink = resume_and_check(path, n, written)
    missing = [offset for offset in written if offset not in sink.done]
    finish_and_check(sink, path, n, data.draw(st.permutations(missing), label="missing written in"))


@PROPERTY
@given(runs(), st.floats(0, 1), st.floats(0, 1), st.data())
def test_resume_cuts_a_checkpoint_longer_than_the_output_back_to_it(
    tmp_path, run, output_fraction, checkpoint_fraction, data
):
    """A power cut may keep the checkpoint's tail and lose the output's: both are cut to what they agree on."""
    n, groups = run
    path = run_dir(tmp_path) / "out.jsonl"
    full = write_groups_measured(path, groups, resume=False)[-1]
    output_size = between(0, full.output, output_fraction)
    lowest_checkpoint = 0 if output_size == 0 else len(header_line())
    crash(path, output_size, between(lowest_checkpoint, full.checkpoint, checkpoint_fraction))
    written = [offset for group in groups for offset in group]

    sink = resume_and_check(path, n, written)
    missing = [offset for offset in written if offset not in sink.done]
    finish_and_check(sink, path, n, data.draw(st.permutations(missing), label="missing written in"))


@PROPERTY
@given(st.integers(0, 40), st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=4), st.data())
def test_runs_killed_again_while_resuming_still_end_with_each_offset_once(tmp_path, n, crashes, data):
    """Kill, resume, write part of the rest, kill again (either file may lose any of its new tail), ..."""
    path = run_dir(tmp_path) / "out.jsonl"
    write_groups(path, [])  # a run that wrote its header only
    written: list[int] = []  # the offsets of every line written so far, in order
    for output_fraction, checkpoint_fraction in crashes:
        with resume_and_check(path, n, written) as sink:
            missing = [offset for offset in range(n) if offset not in sink.done]
        groups = data.draw(groups_of(data.draw(st.permutations(missing))))
        sizes = write_groups_measured(path, groups, resume=True)
        written = output_offsets(path)
        crash(
            path,
            between(sizes[0].output, sizes[-1].output, output_fraction),
            between(sizes[0].checkpoint, sizes[-1].checkpoint, checkpoint_fraction),
        )
    sink = resume_and_check(path, n, written)
    finish_and_check(sink, path, n, [offset for offset in range(n) if offset not in sink.done])


# -- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, len(header_line()) // 2, len(header_line()) - 1])
def test_resume_after_a_kill_while_the_header_was_written_starts_afresh(tmp_path, cut):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"", header_line()[:cut])
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 0
        assert both_files(path) == (b"", header_line())
        sink.write([(0, b"a")])
    assert both_files(path) == (b"a\n", header_line() + b"0\n")


@pytest.mark.parametrize("cut", [1, len(header_line()) // 2, len(header_line()) - 1])
def test_resume_refuses_a_torn_header_beside_an_output_with_content(tmp_path, cut):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"a\n", header_line()[:cut])
    with pytest.raises(OutputError, match="not a stream-processor checkpoint"):
        JsonlSink(path, HEADER, resume=True)
    assert both_files(path) == (b"a\n", header_line()[:cut])


def test_resume_of_an_empty_output_with_a_header_only_starts_at_zero_and_changes_nothing(tmp_path):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"", header_line())
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.done == DoneOffsets()
        assert both_files(path) == (b"", header_line())


def test_resume_of_an_output_with_lines_but_a_header_only_checkpoint_cuts_them_all(tmp_path):
    path = tmp_path / "out.jsonl"
    write_file_pair(path, b"a\nb\ntorn", header_line())
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.done == DoneOffsets()
        assert both_files(path) == (b"", header_line())


@pytest.mark.parametrize(
    "line",
    ["café ☕ 日本語".encode(), b"\xff\xfe\x00 not utf-8 \x80", b"\r carriage \r return \r", b"", b"   "],
    ids=["utf-8", "not-utf-8", "carriage-returns", "empty", "blank"],
)
def test_any_bytes_but_a_newline_are_kept_exactly_and_counted_as_one_line(tmp_path, line):
    path = tmp_path / "out.jsonl"
    with JsonlSink(path, HEADER) as sink:
        sink.write([(0, line), (1, b"after")])
        sink.write([(2, line)])
    expected = line + b"\n" + b"after\n" + line + b"\n"
    assert path.read_bytes() == expected
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 3
    assert path.read_bytes() == expected
    path.write_bytes(expected + line[:-1])  # torn (or, for an empty line, nothing more)
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 3
    assert path.read_bytes() == expected


@pytest.mark.parametrize(
    "length",
    [CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK // 2],
    ids=["newline-ends-a-read", "newline-starts-a-read", "newline-after-a-read", "one-and-a-half-reads"],
)
def test_lines_around_a_megabyte_are_kept_and_cut_whole(tmp_path, length):
    path = tmp_path / "out.jsonl"
    long_lines = [bytes([ord("a") + offset]) * length for offset in range(3)]
    with JsonlSink(path, HEADER) as sink:
        sink.write([(0, long_lines[0])])
        sink.write([(1, long_lines[1]), (2, long_lines[2])])
    complete = path.read_bytes()
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 3
    assert path.read_bytes() == complete

    # A torn long line is cut off, and the checkpoint entry listing it is cut to the lines kept.
    os.truncate(path, len(complete) - 1)
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 2
    assert path.read_bytes() == long_lines[0] + b"\n" + long_lines[1] + b"\n"
    assert read_checkpoint(path)[1] == [0, 1]

    # A torn checkpoint entry: the (long, complete) line it was for is cut off the output.
    os.truncate(checkpoint_path(path), checkpoint_path(path).stat().st_size - 1)
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.start_offset == 1
    assert path.read_bytes() == long_lines[0] + b"\n"
    assert read_checkpoint(path)[1] == [0]


def test_offsets_written_out_of_order_give_the_low_watermark_and_the_offsets_beyond(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[0, 2, 3], [5], [1, 7]])
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.done == DoneOffsets(low_watermark=4, beyond={5, 7}, lines=6)
        assert sink.start_offset == 4
        assert [offset for offset in range(9) if offset not in sink.done] == [4, 6, 8]
        sink.write([(6, line_for(6)), (4, line_for(4))])
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.done == DoneOffsets(low_watermark=8, beyond=set(), lines=8)


def test_a_resume_with_none_done_at_the_start_keeps_everything_beyond(tmp_path):
    path = tmp_path / "out.jsonl"
    write_groups(path, [[9, 4], [7]])
    with JsonlSink(path, HEADER, resume=True) as sink:
        assert sink.done == DoneOffsets(low_watermark=0, beyond={4, 7, 9}, lines=3)
        assert sink.start_offset == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 50), unique=True))
def test_done_offsets_holds_exactly_the_offsets_added_in_any_order(offsets):
    done = DoneOffsets()
    for offset in offsets:
        done.add(offset)
    assert done.lines == len(offsets)
    assert done.low_watermark == first_missing(set(offsets))
    assert done.beyond == {offset for offset in offsets if offset > done.low_watermark}
    assert {offset for offset in range(60) if offset in done} == set(offsets)
