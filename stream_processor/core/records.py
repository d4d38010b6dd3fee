"""Reading a recording: JSON Lines, one event per line, each with its offset.

The offset is the 0-based number of the event in the recording; it travels with the
event from here on. Blank lines (many JSONL writers end a file with one) are not
events: they are skipped, counted, and take no offset. A UTF-8 byte order mark at the
start of the file is dropped. `line_number` stays the line's true number in the file,
for messages. A line that cannot be an event becomes a `Record` with an `error` and no
event, so it keeps its place in the output and the rest of the stream goes on.
"""

from __future__ import annotations

import hashlib
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


UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # 0-based number of the event in its stream
    raw: bytes  # the line as received, without its newline
    event: dict[str, Any] | None  # None when the line is not a JSON object
    error: str | None = None  # set for a line that cannot be processed; it gets an error record
    line: int | None = None  # 1-based line number in the recording, when known

    @property
    def line_number(self) -> int:
        """The line's number in its file, or the event's number when the line is unknown."""
        return self.line if self.line is not None else self.offset + 1


def is_blank(raw: bytes) -> bool:
    """A line holding only whitespace: not an event, skipped."""
    return not raw.strip()


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
    except RecursionError:  # valid JSON, but deeper than Python's parser goes
        return None, "nested too deeply to parse (over about 1000 levels of arrays or objects)"
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


def event_lines(stream) -> Iterator[tuple[int, int, bytes]]:
    """(offset, line number, raw line) for every event line of a binary stream: a leading
    BOM is dropped, blank lines are skipped."""
    offset = 0
    for number, line in enumerate(stream, start=1):
        raw = line[:-1] if line.endswith(b"\n") else line
        if number == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        if is_blank(raw):
            continue
        yield offset, number, raw
        offset += 1


def lines_up_to(stream, size: int | None) -> Iterator[bytes]:
    """The lines of a binary stream within its first `size` bytes (all of it if None): what
    is appended to a file while it is read stays unread, and a line it would complete ends
    where `size` does."""
    if size is None:
        yield from stream
        return
    left = size
    while left > 0 and (line := stream.readline(left)):
        left -= len(line)
        yield line


def read_records(
    path: str | Path, start: int = 0, validate: Validator | None = None, size: int | None = None
) -> Iterator[Record]:
    """Yield a `Record` per event from offset `start` on (0-based), good or bad; with `size`,
    from the recording's first `size` bytes only (see `recording_identity`)."""
    with open_recording(path) as stream:
        for offset, number, raw in event_lines(lines_up_to(stream, size)):
            if offset < start:
                continue
            event, error = parse_event(raw, validate)
            yield Record(offset, raw, event, error, number)


def count_events(path: str | Path, size: int | None = None) -> int:
    """Number of events in a recording (in its first `size` bytes): its lines, less the blank ones."""
    with open_recording(path) as stream:
        return sum(1 for _ in event_lines(lines_up_to(stream, size)))


def count_blank_lines(path: str | Path, size: int | None = None) -> int:
    """Blank lines a recording holds (in its first `size` bytes): skipped, not events."""
    with open_recording(path) as stream:
        lines = sum(1 for _ in lines_up_to(stream, size))
    return lines - count_events(path, size)


def count_lines(path: str | Path) -> int:
    """Number of lines (events) in a recording; a last line without newline counts."""
    count, last = 0, b"\n"
    with open_recording(path) as stream:
        while chunk := stream.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def recording_identity(path: str | Path) -> dict[str, Any]:
    """What makes a recording this recording: its content's SHA-256, its size and its
    number of events. --resume insists on the same, and on offsets below that number.

    All three describe the same bytes, the first `size` (the events are counted in those,
    not in what a writer may have appended since), and a file-mode run reads exactly those
    (`read_records(..., size=...)`): the checkpoint's identity is what the output is made
    from, even of a recording that grows during the run."""
    digest = hashlib.sha256()
    size = 0
    with open_recording(path) as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size, "events": count_events(path, size)}
