"""`verify()`: one complete output line per input line, in order, error records in place."""

from __future__ import annotations

import json

import pytest

from stream_processor.core.records import InputFileError
from stream_processor.output.verify import verify

INPUT_LINES = [json.dumps({"id": 100 + n, "title": f"Caf\u00e9 {n}", "wait": 0.5 * n}) for n in range(6)]


def write_lines(path, lines, final_newline=True):
    path.write_bytes(("\n".join(lines) + ("\n" if final_newline else "")).encode())
    return path


@pytest.fixture
def recording(tmp_path):
    return write_lines(tmp_path / "input.json", INPUT_LINES)


def test_identical_files_pass(recording, tmp_path):
    output = write_lines(tmp_path / "output.json", INPUT_LINES)
    verdict = verify(recording, output)
    assert verdict.ok, verdict.message
    assert f"{len(INPUT_LINES)} lines" in verdict.message
    assert "0 error records" in verdict.message


def test_input_without_final_newline_matches_an_output_with_one(tmp_path):
    recording = write_lines(tmp_path / "input.json", INPUT_LINES, final_newline=False)
    output = write_lines(tmp_path / "output.json", INPUT_LINES)
    assert verify(recording, output).ok


@pytest.mark.parametrize("index", [0, 3, len(INPUT_LINES) - 1])
def test_a_differing_line_fails_and_names_its_line_number(recording, tmp_path, index):
    lines = list(INPUT_LINES)
    lines[index] = json.dumps({"id": 100 + index, "title": "changed", "wait": 1})
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert not verdict.ok
    assert verdict.message.startswith(f"line {index + 1}:")
    assert "differs" in verdict.message


def test_swapped_lines_fail_at_the_first_of_them(recording, tmp_path):
    lines = list(INPUT_LINES)
    lines[2], lines[3] = lines[3], lines[2]
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert not verdict.ok
    assert verdict.message.startswith("line 3:")


def test_a_line_that_is_not_json_fails(recording, tmp_path):
    lines = list(INPUT_LINES)
    lines[1] = "{oops"
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert not verdict.ok
    assert verdict.message.startswith("line 2:")
    assert "JSON" in verdict.message


@pytest.mark.parametrize("kept", [0, 1, 4])
def test_a_shorter_output_fails_naming_both_counts(recording, tmp_path, kept):
    output = tmp_path / "output.json"
    if kept:
        write_lines(output, INPUT_LINES[:kept])
    else:
        output.write_bytes(b"")
    verdict = verify(recording, output)
    assert not verdict.ok
    assert verdict.message == f"output has {kept} lines, input {len(INPUT_LINES)} events"


@pytest.mark.parametrize("extra", [1, 3])
def test_a_longer_output_fails_naming_both_counts(recording, tmp_path, extra):
    lines = INPUT_LINES + [json.dumps({"extra": n}) for n in range(extra)]
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert not verdict.ok
    assert verdict.message == f"output has {len(INPUT_LINES) + extra} lines, input only {len(INPUT_LINES)} events"


def test_a_torn_last_line_fails(recording, tmp_path):
    output = write_lines(tmp_path / "output.json", INPUT_LINES, final_newline=False)
    verdict = verify(recording, output)
    assert not verdict.ok
    assert verdict.message.startswith(f"line {len(INPUT_LINES)}:")
    assert "torn" in verdict.message


def test_a_half_written_last_line_fails(recording, tmp_path):
    output = tmp_path / "output.json"
    output.write_bytes(("\n".join(INPUT_LINES[:-1]) + "\n" + INPUT_LINES[-1][:10]).encode())
    verdict = verify(recording, output)
    assert not verdict.ok
    assert "torn" in verdict.message


def test_error_records_at_their_own_offsets_pass_and_are_counted(recording, tmp_path):
    lines = list(INPUT_LINES)
    for offset in (1, 4):
        lines[offset] = json.dumps({"error": "ValueError: boom", "offset": offset, "id": 100 + offset})
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert verdict.ok, verdict.message
    assert "2 error records" in verdict.message


@pytest.mark.parametrize("wrong_offset", [2, 5, None, "4"])
def test_an_error_record_with_a_wrong_offset_fails(recording, tmp_path, wrong_offset):
    lines = list(INPUT_LINES)
    record = {"error": "ValueError: boom"}
    if wrong_offset is not None:
        record["offset"] = wrong_offset
    lines[4] = json.dumps(record)
    verdict = verify(recording, write_lines(tmp_path / "output.json", lines))
    assert not verdict.ok
    assert verdict.message.startswith("line 5:")
    assert "out of place" in verdict.message


def test_not_identical_accepts_changed_lines(recording, tmp_path):
    lines = [json.dumps({"id": 100 + n, "title_length": n}) for n in range(len(INPUT_LINES))]
    output = write_lines(tmp_path / "output.json", lines)
    assert not verify(recording, output).ok
    verdict = verify(recording, output, identical=False)
    assert verdict.ok, verdict.message


def test_not_identical_still_checks_counts_torn_lines_and_error_offsets(recording, tmp_path):
    changed = [json.dumps({"n": n}) for n in range(len(INPUT_LINES))]
    short = write_lines(tmp_path / "short.json", changed[:-1])
    assert not verify(recording, short, identical=False).ok
    torn = write_lines(tmp_path / "torn.json", changed, final_newline=False)
    assert not verify(recording, torn, identical=False).ok
    misplaced = list(changed)
    misplaced[2] = json.dumps({"error": "x", "offset": 3})
    assert not verify(recording, write_lines(tmp_path / "misplaced.json", misplaced), identical=False).ok


def test_a_missing_output_raises_input_file_error(recording, tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        verify(recording, tmp_path / "missing.json")
