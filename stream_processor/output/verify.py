"""Checking an output against its recording: one line per event, in the order its mode promises."""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stream_processor.core.ordering import NONE, TOTAL, OrderMode
from stream_processor.core.records import count_lines, event_lines, open_recording, parse_event
from stream_processor.output.database import DatabaseOutput
from stream_processor.output.sink import checkpoint_path, decode_offsets


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


def verify_order(
    input_path: str | Path, output: str | Path | DatabaseOutput, order: OrderMode, identical: bool = True
) -> Verdict:
    """Check an output (a file or a PostgreSQL table) of any ordering mode: every input event
    exactly once, and the order the mode promises (total: input order; key: each key's lines
    in input order; none: any). Which event a line stands for comes from the output's
    checkpoint (a table's rows carry it), or, for a file without one, from the line itself
    (the reference task's lines are their events; an error record names its offset)."""
    with open_recording(input_path) as recording:
        events = [(raw, number) for _, number, raw in event_lines(recording)]
    if isinstance(output, DatabaseOutput):
        lines, problem = _database_lines(output, len(events))
    else:
        lines, problem = _file_lines(output, events, identical)
    if problem:
        return Verdict(False, problem)
    try:
        return _check_lines(lines, events, order, identical)
    except _Mismatch as exc:
        return Verdict(False, str(exc))


def _check_lines(
    lines: Iterator[tuple[bytes, int]], events: list[tuple[bytes, int]], order: OrderMode, identical: bool
) -> Verdict:
    seen: set[int] = set()
    last_of_key: dict[object, int] = {}
    errors = 0
    for number, (line, offset) in enumerate(lines, start=1):
        where = f"line {number} of the output"
        if offset in seen:
            return Verdict(False, f"{where} repeats the event at offset {offset}")
        seen.add(offset)
        problem, is_error = _line_problem(offset, events[offset][0], line, identical)
        if problem:
            return Verdict(False, f"{where} (offset {offset}): {problem}")
        errors += is_error
        key = _order_key(order, events[offset][0], offset)
        if key in last_of_key and last_of_key[key] > offset:
            return Verdict(
                False, f"{where} (offset {offset}) comes after offset {last_of_key[key]} of the same {order} order"
            )
        last_of_key[key] = offset
    if len(seen) < len(events):
        missing = min(set(range(len(events))) - seen)
        return Verdict(False, f"the event at offset {missing} (input line {events[missing][1]}) has no line")
    return Verdict(True, f"{len(seen)} lines, each event once, in {order} order ({errors} error records)")


def _file_lines(output_path: str | Path, events: list[tuple[bytes, int]], identical: bool):
    """((line, offset) for each line of the file, None) or (None, what is wrong)."""
    offsets, problem = _offsets_of_lines(output_path, events, identical)
    if problem:
        return None, problem

    def lines() -> Iterator[tuple[bytes, int]]:
        with open_recording(output_path) as actual:
            yield from zip(actual, offsets, strict=True)

    return lines(), None


def _database_lines(output: DatabaseOutput, events: int):
    """((line, offset) for each row in output order, None) or (None, what is wrong): the rows
    must be the lines 0..N-1 that the table's checkpoint covers."""
    from stream_processor.output.postgres_sink import read_checkpoint, rows_in_order

    connection = output.connect()
    stored = read_checkpoint(connection, output)
    if stored is None:
        connection.close()
        return None, f"{output} has no stream-processor checkpoint: it is not an output of a run"
    bad = next((offset for offset in stored["beyond"] if not 0 <= offset < events), None)
    if stored["low_watermark"] > events or bad is not None:
        connection.close()
        return None, f"the checkpoint of {output} lists offsets past the input's {events} events"

    def lines() -> Iterator[tuple[bytes, int]]:
        rows = 0
        with connection:
            for offset, line in rows_in_order(connection, output):
                rows += 1
                if not 0 <= offset < events:
                    raise _Mismatch(f"{output} holds offset {offset}, but the input has only {events} events")
                yield line.encode() + b"\n", offset
        if rows != stored["lines"]:
            raise _Mismatch(f"{output} has {rows} rows, but its checkpoint covers {stored['lines']} lines")

    return lines(), None


class _Mismatch(Exception):
    pass


def _order_key(order: OrderMode, raw: bytes, offset: int) -> object:
    """Lines with equal keys must keep input order: one key for total order, none at all
    (each its own) for none, the event's key in key mode."""
    if order.kind == TOTAL:
        return "all"
    if order.kind == NONE:
        return ("offset", offset)
    event, _ = parse_event(raw)
    key = order.key_of(event)
    return ("offset", offset) if key is None else key


def _offsets_of_lines(output_path: str | Path, events: list[tuple[bytes, int]], identical: bool):
    """(the offset of each output line, None) or (None, what is wrong)."""
    checkpoint = checkpoint_path(output_path)
    lines = count_lines(output_path)
    if checkpoint.exists():
        with open(checkpoint, "rb") as stream:
            stream.readline()  # the header
            offsets = [offset for entry in stream for offset in decode_offsets(entry)]
        if len(offsets) != lines:
            return None, f"the checkpoint lists {len(offsets)} lines, the output has {lines}: resume it first"
        bad = next((offset for offset in offsets if not 0 <= offset < len(events)), None)
        if bad is not None:
            return None, f"the output holds offset {bad}, but the input has only {len(events)} events"
        return offsets, None
    if not identical:
        return None, f"{output_path} has no checkpoint to say which event each line is"
    return _offsets_by_content(output_path, events), None


def _offsets_by_content(output_path: str | Path, events: list[tuple[bytes, int]]) -> list[int]:
    by_line: dict[bytes, deque[int]] = {}
    for offset, (raw, _) in enumerate(events):
        by_line.setdefault(raw, deque()).append(offset)
    offsets = []
    with open_recording(output_path) as actual:
        for line in actual:
            candidates = by_line.get(line.rstrip(b"\n"))
            if candidates:
                offsets.append(candidates.popleft())
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            claimed = record.get("offset") if isinstance(record, dict) else None
            offsets.append(claimed if isinstance(claimed, int) and 0 <= claimed < len(events) else -1)
    return offsets
