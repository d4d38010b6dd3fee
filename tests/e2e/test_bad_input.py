"""Bad input in recordings: each bad line gets an error record in its place and a
FILE:LINE: message; the rest of the stream goes on.

Recordings go through `python run.py` (and `run_streaming.py`) as real processes with real
Celery workers on the embedded broker. Bad input to the replay server itself is in
test_server_bad_input.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_script, ten_megabyte_lines, write_recording

FAST = ["--workers", "2", "--time-scale", "0.01", "--no-progress"]


# -- recordings through run.py ------------------------------------------------------------


def output_lines(output: Path) -> list[bytes]:
    """The output's lines; every line, the last one included, must end with a newline."""
    data = output.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the output's last line is not terminated"
    return data.split(b"\n")[:-1]


def assert_lines_in_place(
    run, recording: Path, output: Path, lines: list[bytes], bad: dict[int, str], ids: dict[int, Any] | None = None
) -> list[dict[str, Any]]:
    """One output line per input line, in order: each bad line an error record naming its
    offset and saying what is wrong (`bad[offset]` is a fragment of that), each good line
    byte-identical; stderr names FILE:LINE: for each bad line and no other; exit code 3."""
    assert run.returncode == (3 if bad else 0), run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    written = output_lines(output)
    assert len(written) == len(lines)
    records = []
    for offset, line in enumerate(written):
        located = f"{recording}:{offset + 1}: "
        if offset not in bad:
            assert line == lines[offset], f"line {offset + 1} changed"
            assert located not in run.stderr
            continue
        assert len(line) < 1000, f"the error record of line {offset + 1} is {len(line)} bytes"
        record = json.loads(line)
        assert record["offset"] == offset
        assert bad[offset] in record["error"], record
        assert set(record) <= {"error", "offset", "id"}, record
        if ids is not None:
            assert record.get("id") == ids.get(offset), record
        assert located in run.stderr, f"stderr does not name {located!r}:\n{run.stderr}"
        records.append(record)
    assert f"events      {len(lines)}  ({len(bad)} with errors)" in run.stdout, run.stdout
    return records


def test_an_empty_recording_gives_an_empty_output_a_summary_and_exit_0(run_cli, tmp_path):
    recording, output = write_recording(tmp_path / "empty.json", []), tmp_path / "out.json"
    output.write_bytes(b"stale results\n")
    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == b""
    assert "events      0  (0 with errors)" in run.stdout
    assert "Traceback" not in run.stderr


def test_binary_garbage_lines_get_error_records_in_place(run_cli, good, tmp_path):
    rng = random.Random(20161124)

    def garbage(size: int) -> bytes:  # random bytes with a NUL and a \xff, and no newline
        return b"\x00" + rng.randbytes(size).replace(b"\n", b"") + b"\xff"

    lines = list(good[:12])
    bad = {
        0: "not valid UTF-8",
        3: "not valid UTF-8",
        4: "not valid UTF-8",
        7: "not valid JSON",
        9: "not valid JSON",
        11: "not valid UTF-8",
    }
    lines[0], lines[3], lines[4], lines[11] = garbage(1), garbage(200), garbage(5000), garbage(64)
    lines[7] = b"\x00"  # valid UTF-8, not JSON
    lines[9] = good[9] + b"\x00"  # a good event with a NUL after it
    recording, output = write_recording(tmp_path / "garbage.json", lines), tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    assert_lines_in_place(run, recording, output, lines, bad, ids={})


@pytest.mark.heavy
def test_a_ten_megabyte_line_goes_through_whole_and_an_invalid_one_gets_a_short_error(run_cli, good, tmp_path):
    big_valid, big_invalid = ten_megabyte_lines()
    lines = [good[0], big_valid, good[1], big_invalid, good[2]]
    recording, output = write_recording(tmp_path / "big.json", lines), tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    (record,) = assert_lines_in_place(run, recording, output, lines, {3: "not valid JSON"}, ids={})
    assert "column 10000" in record["error"]  # where in the line the JSON breaks
    assert max(len(line) for line in run.stderr.splitlines()) < 1000, "stderr echoes the line"


def test_bad_waits_get_error_records_in_place_with_the_event_id(run_cli, good, tmp_path):
    lines = list(good[:10])
    lines[1] = b'{"id": 101, "wait": NaN}'
    lines[3] = b'{"id": 102, "wait": 1e300}'
    lines[4] = b'{"id": 103, "wait": -2.5}'
    lines[6] = b'{"id": 104, "title": "no wait here"}'
    lines[8] = b'{"id": 105, "wait": -0.0}'  # zero: a good line
    bad = {1: "NaN", 3: "beyond the 86400 s limit", 4: "non-negative", 6: "missing field 'wait'"}
    recording, output = write_recording(tmp_path / "waits.json", lines), tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    # A NaN line is not JSON, so it has no event and no id; the others carry theirs.
    assert_lines_in_place(run, recording, output, lines, bad, ids={3: 102, 4: 103, 6: 104})


def test_invalid_utf8_inside_a_line_is_an_error_record_naming_the_byte(run_cli, good, tmp_path):
    lines = list(good[:6])
    lines[1] = b'{"id": 201, "title": "Caf\xc3\x28 au lait", "wait": 0.01}'  # \xc3 starts no character
    lines[3] = b'{"id": 202, "title": "\xed\xa0\x80 surrogate", "wait": 0.01}'  # a UTF-16 surrogate
    lines[4] = '{"id": 203, "title": "Zürich 東京", "wait": 0.01}'.encode()  # real UTF-8: a good line
    first_bad_bytes = {1: lines[1].index(b"\xc3"), 3: lines[3].index(b"\xed")}
    bad = {offset: f"at byte {position}" for offset, position in first_bad_bytes.items()}
    recording, output = write_recording(tmp_path / "utf8.json", lines), tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    records = assert_lines_in_place(run, recording, output, lines, bad, ids={})
    assert all("not valid UTF-8" in record["error"] for record in records)


def test_a_last_line_without_a_newline_still_counts(run_cli, good, tmp_path):
    lines = list(good[:5]) + [b'{"id": 301, "title": "the unterminated last line", "wait": 0.01}']
    recording = write_recording(tmp_path / "unterminated.json", lines, trailing_newline=False)
    output = tmp_path / "out.json"

    run = run_cli(["--input", str(recording), "--output", str(output)] + FAST)

    assert_lines_in_place(run, recording, output, lines, {})
    assert output.read_bytes() == recording.read_bytes() + b"\n"


def test_a_directory_as_input_is_one_line_on_stderr_exit_2_and_the_output_untouched(run_cli, tmp_path):
    output = tmp_path / "out.json"
    output.write_bytes(b"earlier results\n")
    run = run_cli(["--input", str(tmp_path), "--output", str(output)] + FAST)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert str(tmp_path) in run.stderr and "directory" in run.stderr
    assert "Traceback" not in run.stderr
    assert output.read_bytes() == b"earlier results\n"


# -- the same recordings through run_streaming.py (a Socket.IO server of its own) ------------


@pytest.mark.heavy
def test_run_streaming_carries_ten_megabyte_lines_into_a_complete_output(good, tmp_path):
    big_valid, big_invalid = ten_megabyte_lines()
    # Three 10 MB lines: three chances for the race, so the test fails whenever the bug is there.
    big_again = big_valid.replace(b'"id": 424242', b'"id": 454545')
    lines = [good[0], big_valid, good[1], big_invalid, good[2], big_again, *good[3:8]]
    recording, output = write_recording(tmp_path / "big.json", lines), tmp_path / "out.json"

    run = run_script("run_streaming.py", ["--input", str(recording), "--output", str(output)] + FAST, tmp_path)

    assert "Traceback" not in run.stderr
    assert len(output_lines(output)) == len(lines), f"exit {run.returncode}; stderr:\n{run.stderr}"
    assert run.returncode == 3, run.stderr
    written = output_lines(output)
    assert written[1] == big_valid and written[5] == big_again
    assert json.loads(written[3])["offset"] == 3 and len(written[3]) < 1000
    assert written[:3] + written[4:] == lines[:3] + lines[4:], "a line changed"


def test_run_streaming_reports_a_non_utf8_line_like_file_mode(good, tmp_path):
    lines = list(good[:4])
    lines[1] = b'{"id": 201, "title": "Caf\xe9 au lait", "wait": 0.01}'  # Latin-1, not UTF-8
    recording, output = write_recording(tmp_path / "latin1.json", lines), tmp_path / "out.json"

    run = run_script("run_streaming.py", ["--input", str(recording), "--output", str(output)] + FAST, tmp_path)

    assert_lines_in_place(run, recording, output, lines, {1: "not valid UTF-8"}, ids={})
