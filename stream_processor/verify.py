"""Checking an output against its recording: one line per event, in order."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from stream_processor.records import event_lines, open_recording


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


def verify(input_path: str | Path, output_path: str | Path, identical: bool = True) -> Verdict:
    """Compare line by line. Every output line must be complete, and an error record
    must carry its own offset (so it sits in its place). With `identical` (the default
    task), every other line must equal its input line byte for byte.
    """
    lines = errors = 0
    with open_recording(input_path) as recording, open_recording(output_path) as actual:
        expected = (raw for _, _, raw in event_lines(recording))  # blank lines are not events
        for offset, (want, got) in enumerate(itertools.zip_longest(expected, actual)):
            if want is None:
                return Verdict(False, f"output has {offset + 1 + _count(actual)} lines, input only {offset} events")
            if got is None:
                return Verdict(False, f"output has {offset} lines, input {offset + 1 + _count(expected)} events")
            problem, is_error = _line_problem(offset, want, got, identical)
            if problem:
                return Verdict(False, f"line {offset + 1}: {problem}")
            lines += 1
            errors += is_error
    return Verdict(True, f"{lines} lines in order ({errors} error records in place)")


def _count(rest) -> int:
    return sum(1 for _ in rest)


def _line_problem(offset: int, want: bytes, got: bytes, identical: bool) -> tuple[str | None, bool]:
    if not got.endswith(b"\n"):
        return "torn (no newline at the end)", False
    if want == got[:-1]:
        return None, False
    try:
        value = json.loads(got)
    except ValueError:
        return "not valid JSON", False
    if isinstance(value, dict) and "error" in value:
        if value.get("offset") != offset:
            return f"error record for offset {value.get('offset')} is out of place", True
        return None, True
    return ("differs from the input" if identical else None), False
