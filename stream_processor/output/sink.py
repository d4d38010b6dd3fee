"""The output and its checkpoint: the only writer of a run's results.

OUTPUT holds one line per event. OUTPUT.checkpoint says what OUTPUT is made from and
which offsets its lines hold:
- its first line is a JSON header: the input's identity, the task, the ordering mode;
- then, for each write to OUTPUT (flushed first), one line with the offsets of the lines
  just written, in write order, runs of consecutive offsets as "a-b": "0-99", "7 3-5".

So the output plus its checkpoint tell exactly which offsets are done, whatever order
the lines were written in. A crash (kill -9) at any moment leaves a checkpoint that
covers at most the output's lines: `--resume` cuts a torn line off either, and cuts off
any output line the checkpoint does not cover yet (written, not yet checkpointed), so
it is written again, once. (A power cut may lose what the OS had not yet written; the
same rules then cut back to what both files agree on.)

One output file, one writer, whatever path names it. The output file itself is locked
(flock on its own open descriptor) before anything is created, truncated or written, then
its checkpoint is. flock locks the file (the inode's open file description), not a name:
a second run that names the same file through a symlink, a hard link, a path with `..` or
a relative path stops at once (exit 2) and touches nothing, not even its checkpoint's name.

The files kept beside the output (OUTPUT.checkpoint, and a stream's OUTPUT.position) are
named after the file a symlink points to, not after the link (`beside()`): a run, a
`--resume` or a `verify` through a symlink finds the checkpoint of the file it writes. A
hard link has no name better than another, so its checkpoint is named after the name
given; the lock still keeps two runs off the one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_processor.redaction import without_credentials

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".checkpoint"
POSITION_SUFFIX = ".position"
FORMAT = "stream-processor checkpoint 1"
CHECKED_FIELDS = ("input", "task", "order")  # what --resume insists be the same


class OutputError(Exception):
    """The output cannot be used as asked: the user can fix it before the run (exit 2)."""


def beside(output: str | Path, suffix: str) -> Path:
    """The file kept beside `output` under `suffix`: beside the file a symlink (or a chain of
    them) points to, so that every name of the output through symlinks means one checkpoint."""
    output = Path(output)
    if output.is_symlink():
        output = Path(os.path.realpath(output))
    return output.with_name(output.name + suffix)


def checkpoint_path(output: str | Path) -> Path:
    return beside(output, CHECKPOINT_SUFFIX)


@dataclass
class DoneOffsets:
    """Which offsets a checkpoint says are written: all below `low_watermark`, and `beyond`."""

    low_watermark: int = 0
    beyond: set[int] = field(default_factory=set)
    lines: int = 0

    def add(self, offset: int) -> None:
        if offset in self:
            raise ValueError(f"offset {offset} is listed twice")
        self.lines += 1
        if offset >= self.low_watermark:
            self.beyond.add(offset)
        while self.low_watermark in self.beyond:
            self.beyond.remove(self.low_watermark)
            self.low_watermark += 1

    def __contains__(self, offset: int) -> bool:
        return offset < self.low_watermark or offset in self.beyond


class JsonlSink:
    """Appends lines and their offsets, flushed, so a reader sees each line as soon as it is due."""

    def __init__(
        self, path: str | Path, header: dict[str, Any] | None = None, resume: bool = False, begin_later: bool = False
    ) -> None:
        """`begin_later`: keep an earlier output as it is until `begin()` (or the first write),
        so that a run that fails to start has destroyed nothing."""
        self.path = Path(path)
        self.header = {"format": FORMAT, **(header or {})}
        # The output file first, by its identity: a run that is refused here has created,
        # truncated and written nothing (not even a checkpoint beside the name it was given).
        self._output = _open_locked(self.path, _output_busy_error)
        checkpoint = None
        self._fresh = False
        try:
            if resume and not checkpoint_path(self.path).exists() and _has_content(self.path):
                # Refuse before _open_locked creates an empty checkpoint: left behind, it made
                # `verify` say "resume it first" about an output that --resume refuses.
                raise _no_checkpoint_error(self.path)
            checkpoint = _open_locked(checkpoint_path(self.path), lambda path: _checkpoint_busy_error(self.path))
            self._checkpoint = checkpoint
            self.done = self._resume() if resume else self._start_afresh()
        except BaseException:
            self._output.close()
            if checkpoint is not None:
                checkpoint.close()
            raise
        self.lines_written = 0
        self._position = PositionFile(beside(self.path, POSITION_SUFFIX))
        if not begin_later:
            self.begin()

    @property
    def start_offset(self) -> int:
        """Where a run continues: every offset below it is written."""
        return self.done.low_watermark

    # -- opening -------------------------------------------------------------------------

    def _start_afresh(self) -> DoneOffsets:
        # Nothing is truncated yet: a run that fails to start (a broker, a worker) must not
        # have emptied the output of the run before. `begin()` does it.
        self._fresh = True
        return DoneOffsets()

    def begin(self) -> None:
        """The run starts: a fresh output (not a resumed one) is emptied now, with its checkpoint."""
        if self._fresh:
            self._output.truncate(0)
            self._checkpoint.seek(0)  # (after _read_header read a torn header, writing there left NULs before it)
            self._checkpoint.truncate(0)
            self._write_header()
            self._fresh = False

    def _write_header(self) -> None:
        self._checkpoint.write(json.dumps(self.header, sort_keys=True).encode() + b"\n")
        self._checkpoint.flush()

    def _resume(self) -> DoneOffsets:
        stored = _read_header(self._checkpoint, self.path)
        if stored is None:
            if _has_content(self.path):
                raise _no_checkpoint_error(self.path)
            return self._start_afresh()
        check_same_run(stored, self.header, self.path)
        if _comparable(stored.get("input")) != stored.get("input"):
            log.warning(
                "%s: its first line (written by an earlier version) holds the stream's URL with its "
                "credentials; continuing, and it stays there until a run without --resume writes a new one",
                checkpoint_path(self.path),
            )
        output_lines = _cut_torn_line(self._output)
        try:
            done = _cut_checkpoint_to(self._checkpoint, output_lines)
            _check_offsets_fit(done, stored.get("input"))
        except ValueError:  # an entry that is not offsets, an offset listed twice or past the input's end
            raise _damaged_error(self.path) from None
        if done.lines < output_lines:
            _cut_to_lines(self._output, done.lines)
        self._output.seek(0, os.SEEK_END)
        self._checkpoint.seek(0, os.SEEK_END)
        return done

    # -- writing -------------------------------------------------------------------------

    def write(self, lines: Sequence[tuple[int, bytes]]) -> None:
        """Append `(offset, line)`s: the lines first (flushed), then their offsets."""
        if not lines:
            return
        self.begin()
        try:
            self._output.write(b"".join(line + b"\n" for _, line in lines))
            self._output.flush()
        except OSError as exc:
            raise SinkError(self.path, exc) from exc
        try:
            self._checkpoint.write(encode_offsets(offset for offset, _ in lines) + b"\n")
            self._checkpoint.flush()
        except OSError as exc:
            raise SinkError(checkpoint_path(self.path), exc) from exc
        self.lines_written += len(lines)

    # -- where a live stream resumes ----------------------------------------------------

    def note_position(self, position: dict[str, Any]) -> None:
        self._position.note(position)

    def saved_position(self) -> dict[str, Any] | None:
        return self._position.saved()

    def save_position(self) -> None:
        self._position.save()

    def close(self) -> None:
        """Flush and close both files. After a failed write (a full disk) what is still
        buffered cannot be written either: it is dropped (resume cuts back to what both
        files hold), and closing says nothing more about it."""
        for stream in (self._output, self._checkpoint):
            if stream.closed:
                continue
            try:
                stream.flush()
                os.fsync(stream.fileno())
            except OSError as exc:
                log.debug("closing %s: %s", stream.name, exc)
            finally:
                _close_dropping_buffer(stream)  # also releases the lock

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class PositionFile:
    """Where an event stream goes on after `--resume`: the id (`Last-Event-ID`) of an event
    written, with its offset, kept beside the output as OUTPUT.position. Written at most
    once a second (atomically: a new file renamed over the old), and when the run ends."""

    EVERY_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[str, Any] | None = None
        self._written_at = 0.0
        self._one_at_a_time = threading.Lock()  # noted by the run's core, saved at the end by the main thread

    def saved(self) -> dict[str, Any] | None:
        try:
            position = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return position if isinstance(position, dict) else None

    def note(self, position: dict[str, Any]) -> None:
        self._pending = position
        if time.monotonic() - self._written_at >= self.EVERY_S:
            self.save()

    def save(self) -> None:
        with self._one_at_a_time:
            if self._pending is None:
                return
            temporary = self.path.with_name(self.path.name + ".new")
            temporary.write_text(json.dumps(self._pending) + "\n")
            os.replace(temporary, self.path)
            self._pending, self._written_at = None, time.monotonic()


class SinkError(OSError):
    """Writing the output or its checkpoint failed (a full disk, say): the run stops."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.message = (
            f"cannot write {path}: {cause.strerror or cause}; every line written before is kept "
            "with its checkpoint, and --resume continues once there is room"
        )

    def __str__(self) -> str:
        return self.message


def _close_dropping_buffer(stream) -> None:
    try:
        stream.close()
    except OSError:  # the buffered bytes that failed once fail again: drop them
        # CPython closes the file itself even then; if it did not, close its descriptor.
        with contextlib.suppress(OSError, ValueError):
            if not stream.closed:
                os.close(stream.fileno())


def _check_offsets_fit(done: DoneOffsets, source: Any) -> None:
    """An offset past the end of the input (its event count, when the header knows it)
    cannot be: the checkpoint is not this input's, or is damaged."""
    events = source.get("events") if isinstance(source, dict) else None
    if not isinstance(events, int):
        return
    if done.low_watermark > events or any(offset >= events for offset in done.beyond):
        raise ValueError(f"the checkpoint lists offsets past the input's {events} events")


def encode_offsets(offsets: Iterator[int]) -> bytes:
    """Offsets in write order, runs of consecutive ones as a-b: 3 4 5 9 2 -> b"3-5 9 2"."""
    parts: list[str] = []
    run: tuple[int, int] | None = None  # (start, last) of the run so far
    for offset in offsets:
        if run is not None and offset == run[1] + 1:
            run = (run[0], offset)
            continue
        if run is not None:
            parts.append(_run_text(*run))
        run = (offset, offset)
    if run is not None:
        parts.append(_run_text(*run))
    return " ".join(parts).encode()


def _run_text(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def decode_offsets(line: bytes) -> Iterator[int]:
    for part in line.split():
        start, _, end = part.partition(b"-")
        yield from range(int(start), int(end or start) + 1)


# -- opening, locking, resuming -----------------------------------------------------------


def _open_locked(path: Path, busy_error: Callable[[Path], OutputError]) -> io.BufferedRandom:
    """`path` opened for reading and writing (created if missing, never truncated), with an
    exclusive flock on the file itself: on whatever name any other run opened it by."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise busy_error(path) from None
    return os.fdopen(descriptor, "r+b")


def _output_busy_error(output: Path) -> OutputError:
    return OutputError(
        f"{output} is being written by another run right now (the file is locked, whatever name or link "
        "that run gave it); wait for that run, or choose another --output"
    )


def _checkpoint_busy_error(output: Path) -> OutputError:
    return OutputError(
        f"{output} is being written by another run right now (its checkpoint {checkpoint_path(output).name} "
        "is locked); wait for that run, or choose another --output"
    )


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:  # missing, or under a non-directory: _open_locked/_open_output say what is wrong
        return False


def _read_header(checkpoint, output: Path) -> dict[str, Any] | None:
    checkpoint.seek(0)
    first = checkpoint.readline()
    if not first:
        return None
    if not first.endswith(b"\n") and not _has_content(output):
        return None  # a torn header, nothing written yet: killed while starting, so start afresh
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not first.endswith(b"\n"):
        raise _damaged_error(output)
    return header


def _damaged_error(output: Path) -> OutputError:
    return OutputError(f"{checkpoint_path(output)} is not a stream-processor checkpoint (or is damaged)")


def _no_checkpoint_error(output: Path) -> OutputError:
    return OutputError(
        f"{output} has no checkpoint ({checkpoint_path(output).name}), so nothing says what "
        "it was made from; --resume refuses to continue it (move it away, or run without --resume)"
    )


def check_same_run(stored: dict[str, Any], current: dict[str, Any], output: object) -> None:
    """Refuse to resume an output another run made (another input, task or order)."""
    differences = [
        f"{name}: it was {_describe(_comparable(stored.get(name)))}, now {_describe(current.get(name))}"
        for name in CHECKED_FIELDS
        if _comparable(stored.get(name)) != current.get(name)
    ]
    if stored.get("format") != FORMAT and not differences:
        differences = [f"format: it was {stored.get('format')}, now {FORMAT}"]
    if differences:
        raise OutputError(
            f"--resume refuses to continue {output}: it was made by another run ("
            + "; ".join(differences)
            + "). Run without --resume to start over, or choose another --output"
        )


def _comparable(source: Any) -> Any:
    """A stream's identity as this version writes it: its URL without credentials. An
    earlier version stored the URL as given, a `?token=` and all: such a checkpoint is the
    same stream, it is continued, and its header, as old as its first line, says nothing
    of the token in any message (it stays in the file: a fresh run writes a clean one)."""
    if isinstance(source, dict) and isinstance(source.get("url"), str):
        return {**source, "url": without_credentials(source["url"])}
    return source


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {value[key]}" for key in sorted(value))
    return str(value)


def _cut_torn_line(stream) -> int:
    """Cut a torn last line (a crash mid-write) and return the number of complete lines."""
    stream.seek(0)
    count = end = position = 0
    while chunk := stream.read(1 << 20):
        newlines = chunk.count(b"\n")
        if newlines:
            count += newlines
            end = position + chunk.rfind(b"\n") + 1
        position += len(chunk)
    stream.truncate(end)
    return count


def _cut_to_lines(stream, lines: int) -> None:
    """Keep the first `lines` lines of `stream`."""
    stream.seek(0)
    seen = position = 0
    while seen < lines and (chunk := stream.read(1 << 20)):
        start = 0
        while seen < lines:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            seen += 1
            start = newline + 1
        position += start if seen == lines else len(chunk)
    stream.truncate(position)


def _cut_checkpoint_to(checkpoint, output_lines: int) -> DoneOffsets:
    """Read the offsets the checkpoint lists, at most `output_lines` of them; cut the
    rest (and a torn last line) off the checkpoint. Returns what is done."""
    checkpoint.seek(0)
    checkpoint.readline()  # the header
    done = DoneOffsets()
    keep_up_to = checkpoint.tell()
    kept_partial: list[int] | None = None
    for line in iter(checkpoint.readline, b""):
        if not line.endswith(b"\n"):
            break  # torn: its output lines are cut too (they count as not checkpointed)
        offsets = list(decode_offsets(line))
        room = output_lines - done.lines
        for offset in offsets[:room]:
            done.add(offset)
        if len(offsets) > room:
            kept_partial = offsets[:room]
            break
        keep_up_to = checkpoint.tell()
    checkpoint.truncate(keep_up_to)
    checkpoint.seek(keep_up_to)
    if kept_partial:
        checkpoint.write(encode_offsets(iter(kept_partial)) + b"\n")
        checkpoint.flush()
    return done
