"""Reading a recording: JSON Lines, one event per line, each with its offset.

The offset is the 0-based line number; it travels with the event from here on.
A line that cannot be an event becomes a `Record` with an `error` and no event,
so it keeps its place in the output and the rest of the stream goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Validator = Callable[[dict[str, Any]], str | None]

MAX_WAIT_S = 24 * 3600  # a longer `wait` is a typo or garbage, not an edit to score


class InputFileError(Exception):
    """The recording itself cannot be read (missing, a directory, no permission)."""


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    raw: bytes  # the line as received, without its newline
    event: dict[str, Any] | None  # None when the line is not a JSON object
    error: str | None = None  # set for a line that cannot be processed; it gets an error record

    @property
    def line_number(self) -> int:
        return self.offset + 1


def parse_event(raw: bytes, validate: Validator | None = None) -> tuple[dict | None, str | None]:
    """Decode one line into an event dict, or say what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        event = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(event, dict):
        return None, f"not a JSON object (got {type(event).__name__})"
    # An event that fails validation is kept beside its error: its id goes in the error record.
    return event, validate(event) if validate else None


def _reject_constant(name: str) -> float:
    # json accepts NaN/Infinity by default; they are not JSON and do not round-trip.
    raise ValueError(f"{name} is not valid JSON")


def check_wait(event: dict[str, Any]) -> str | None:
    """The reference task's contract: `wait` is a number of seconds, 0 to a day."""
    if "wait" not in event:
        return "missing field 'wait'"
    wait = event["wait"]
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        return f"field 'wait' must be a number of seconds, got {json.dumps(wait)}"
    if not math.isfinite(wait) or wait < 0:
        return f"field 'wait' must be a non-negative number of seconds, got {wait}"
    if wait > MAX_WAIT_S:
        return f"field 'wait' is {wait:g} s, beyond the {MAX_WAIT_S} s limit"
    return None


def open_recording(path: str | Path):
    """Open a recording for binary reading, turning OS errors into one clear message."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller owns the handle
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory, not a recording") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None


def read_records(path: str | Path, start: int = 0, validate: Validator | None = None) -> Iterator[Record]:
    """Yield a `Record` per line from line `start` on (0-based), good or bad."""
    with open_recording(path) as stream:
        for offset, line in enumerate(stream):
            if offset < start:
                continue
            raw = line[:-1] if line.endswith(b"\n") else line
            event, error = parse_event(raw, validate)
            yield Record(offset, raw, event, error)


def count_lines(path: str | Path) -> int:
    """Number of lines (events) in a recording; a last line without newline counts."""
    count, last = 0, b"\n"
    with open_recording(path) as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")
