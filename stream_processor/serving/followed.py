"""A run's output, served while the run writes it (`serve --follow OUTPUT`).

A followed output stands where a `Recording` stands (recording.py's `Replayable`): each
line of the output is one event, its offset (its SSE id) is its position in the output,
0-based, so `Last-Event-ID`, `since` and a Socket.IO `subscribe` from an offset resume as
on a recording. Only committed lines go out, in output order:

- a file (output/sink.py): its checkpoint's complete lines after the header list the
  offsets of the lines written before them (the output is flushed first), so the first N
  output lines are committed, N the offsets listed. A torn line is never read.
- a table (output/postgres_sink.py): rows and the checkpoint row commit in one
  transaction, by one writer, so the rows at positions below the checkpoint's `lines`
  are committed.

One poller thread per server (a real OS thread: the eventlet shell does not monkey-patch,
so neither file polling nor psycopg's waits would be green) keeps what is committed: it
polls every FAST_POLL_S while a replay reads or waits, every IDLE_POLL_S otherwise, and
holds the one database connection. A replay never waits on it: `records_from()` yields
None when nothing is committed beyond where it is, and the replay loop looks again
shortly (replay_loop.FOLLOW_POLL_S). A file's lines are read by the replay itself
(`os.pread` on the poller's descriptor, from a sparse index of line starts); a table's
rows come from pages the poller fetched (`PAGE_ROWS` at a time, the last `MAX_PAGES` kept).

The stream ends when the output is complete: its checkpoint's header names the input's
event count (`input.events`) and every one has its line. Otherwise it stays open, as a
live EventStreams stream does (heartbeats keep it alive).

Started over: a fresh run over a followed output (not `--resume`) would give the same ids
to other lines. The poller takes any sign of it (a file replaced, cut shorter than what was
read, its header or its last bytes read changed; a table's checkpoint with another
`run_id`) as fatal: it logs one error line, and `on_failure` stops the server (exit 1).
A table's rows are read in the same snapshot as its checkpoint, so no row of another run
goes out. A file cannot be read so: a fresh run that empties it and writes past what a
replay reads within one poll (FAST_POLL_S while any replay reads or waits) could have a
few of its lines sent under old ids before the server stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stream_processor.core.records import Record, parse_event
from stream_processor.output.database import DatabaseOutput, DatabaseUnreachable, describe
from stream_processor.output.sink import FORMAT, checkpoint_path

log = logging.getLogger(__name__)

FAST_POLL_S = 0.005  # while a replay waits for more: the committed count is at most this old
IDLE_POLL_S = 0.1  # otherwise: a started-over output is still noticed soon
DEMAND_S = 1.0  # a replay that waited this recently keeps the poller fast
LINES_PER_MARK = 1024  # a file's index keeps the start of every this many lines
READ_BYTES = 1 << 16  # a replay reads a file this much at a time
SCAN_BYTES = 1 << 20  # the poller reads a file (output or checkpoint) this much at a time
FINGERPRINT_BYTES = 64  # the last bytes read of each file, compared whenever the file changes
PAGE_ROWS = 256  # rows per query
READ_AHEAD_PAGES = 3  # fetched beyond the page a replay asks for, when committed
MAX_PAGES = 64  # pages kept (16384 rows): the tail, and the places replays are reading
WANTED_FOR_S = 1.0  # a page no replay asked for again in this long is not fetched
RECONNECT_EVERY_S = 0.5
CONNECT_TIMEOUT_S = 2  # libpq's least
STATEMENT_TIMEOUT_MS = 1000  # every query is a small page or one row


class FollowError(Exception):
    """The followed output cannot be served (any more): one line saying why."""


def follow(output: str | Path | DatabaseOutput, on_failure: Callable[[], None] | None = None) -> FollowedOutput:
    """Follow `output` (a file, or a table): looked at once now, so that what is wrong at the
    start (FollowError, DatabaseUnreachable) stops the server before it serves; `start()` it
    to poll on, on a thread of its own. `on_failure` is called (on that thread) when
    following must stop (the output was started over)."""
    followed: FollowedOutput
    if isinstance(output, DatabaseOutput):
        followed = FollowedTable(output, on_failure)
    else:
        followed = FollowedFile(Path(output), on_failure)
    followed.poll()
    return followed


class FollowedOutput:
    """What both kinds share: the committed count, the poller thread, the end, the status."""

    kind = "?"
    loop = False  # an output is never replayed in a loop
    stamps_meta = False  # its lines go out as the run wrote them, byte for byte
    latest_time: float | None = None  # not scanned for: see ends_before_time

    def __init__(self, shown: str, on_failure: Callable[[], None] | None) -> None:
        self.path = shown  # what the status page and messages name: no password
        self.on_failure = on_failure
        self.failure: str | None = None
        self.polls = 0
        self._lock = threading.Lock()  # the poller's results, as replays read them
        self._committed = 0  # lines committed (and, for a file, scanned)
        self._events: int | None = None  # the input's event count, from the header, when it says
        self._demand_at = 0.0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- what a replay asks ----------------------------------------------------------------

    @property
    def events(self) -> int | None:
        return self._events

    def ends_before(self, offset: int) -> bool:
        """Nothing is left from `offset` on: the input's count is known and `offset` is past it."""
        events = self._events
        return events is not None and offset >= events

    def ends_before_time(self, since: float) -> bool:
        """Never known in advance (the output's times are not scanned): a replay from `since`
        skips to the first line at or after it, and a complete output then sends its end."""
        return False

    def records_from(self, offset: int) -> Iterator[Record | None]:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        events = self._events
        return {
            "output": self.path,
            "kind": self.kind,
            "committed": self._committed,
            "events": events,
            "complete": events is not None and self._committed >= events,
            "polls": self.polls,
            "failure": self.failure,
        }

    def _note_demand(self) -> None:
        """A replay reads or waits for more: poll fast (now, if the poller was idling)."""
        now = time.monotonic()
        idle = now - self._demand_at >= DEMAND_S
        self._demand_at = now
        if idle:
            self._wake.set()

    # -- the poller ------------------------------------------------------------------------

    def poll(self) -> None:
        """Look at the output once (the poller's work; raises FollowError)."""
        self._poll()
        self.polls += 1

    def _poll(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Poll on a thread of its own, until `close()`."""
        self._thread = threading.Thread(target=self._run, name=f"follow {self.path}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                self.poll()
            except FollowError as exc:
                self._fail(str(exc))
                return
            except Exception:  # a bug: say so loudly, and stop serving a stream that may be wrong
                log.exception("following %s failed", self.path)
                self._fail(f"following {self.path} failed (see above); stopping")
                return
            fast = time.monotonic() - self._demand_at < DEMAND_S
            self._wake.wait(FAST_POLL_S if fast else IDLE_POLL_S)

    def _fail(self, message: str) -> None:
        """Stop following: replays send nothing more (they wait), the server is told to stop."""
        self.failure = message
        log.error("%s", message)
        if self.on_failure is not None:
            self.on_failure()


def _record(position: int, raw: bytes) -> Record:
    event, error = parse_event(raw)
    return Record(position, raw, event, error, position + 1)


def _events_in(header: dict[str, Any]) -> int | None:
    """The input's event count, when the header names it (a recording's identity does)."""
    source = header.get("input")
    events = source.get("events") if isinstance(source, dict) else None
    return events if isinstance(events, int) and not isinstance(events, bool) and events >= 0 else None


def _started_over(output: str, what: str) -> FollowError:
    return FollowError(
        f"{output} was started over ({what}): a fresh run reuses the ids served for other lines; "
        "stopping (serve it again to follow the new run)"
    )


# -- a file ---------------------------------------------------------------------------------


class FollowedFile(FollowedOutput):
    """A JSON Lines output and its checkpoint (see the module's docstring)."""

    kind = "file"

    def __init__(self, output: Path, on_failure: Callable[[], None] | None = None) -> None:
        super().__init__(str(output), on_failure)
        self.output = output
        self._marks = array("q", [0])  # byte offset of line k * LINES_PER_MARK
        self._end = 0  # byte offset just past the last committed line
        self._out: _Watched | None = None
        self._checkpoint: _Watched | None = None
        # the poller's own
        self._checkpoint_read = 0  # bytes of the checkpoint read: its complete lines
        self._header: bytes | None = None
        self._listed = 0  # offsets the checkpoint lists
        self._scanned_to = 0  # bytes of the output scanned for line ends (maybe within a line)

    def records_from(self, offset: int) -> Iterator[Record | None]:
        """Committed lines from `offset` on; None whenever the replay has caught up."""
        position, at = offset, None
        while not self.ends_before(position):
            self._note_demand()  # a replay reading, or waiting: the poller looks often (a start-over too)
            with self._lock:
                committed, end = self._committed, self._end
            if position >= committed or self.failure is not None:
                yield None
                continue
            if at is None:
                at = self._byte_offset_of(position)
            assert self._out is not None, "lines are committed once the output is open"
            lines, next_at = _read_lines(self._out.fd, at, end)
            if os.fstat(self._out.fd).st_size < end:
                yield None  # cut shorter under this read (started over): the poller stops the server
                continue
            at = next_at
            for raw in lines:
                yield _record(position, raw)
                position += 1

    def _byte_offset_of(self, position: int) -> int:
        """Where line `position` (committed) starts: from the mark before it, counting lines."""
        with self._lock:
            at = self._marks[position // LINES_PER_MARK]
        skip = position % LINES_PER_MARK
        assert self._out is not None
        while skip:
            data = os.pread(self._out.fd, READ_BYTES, at)
            assert data, "a committed line's start is within the lines scanned"
            start = 0
            while skip and (newline := data.find(b"\n", start)) >= 0:
                start, skip = newline + 1, skip - 1
            at += start if not skip else len(data)
        return at

    def status(self) -> dict[str, Any]:
        return {**super().status(), "checkpoint": str(checkpoint_path(self.output))}

    # -- the poller ------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._out is None and not self._open():
            return
        assert self._out is not None and self._checkpoint is not None
        checkpoint_changed = self._checkpoint.changed(self.path)
        output_changed = self._out.changed(self.path)
        if self._checkpoint.size < self._checkpoint_read or self._out.size < self._end:
            raise _started_over(self.path, "it is shorter than what was read")
        if checkpoint_changed:
            self._check_header()
            self._checkpoint.check_fingerprint(self.path)
            self._read_checkpoint()
        if output_changed:
            self._out.check_fingerprint(self.path)
        if self._committed < self._listed:
            self._scan_output()

    def _open(self) -> bool:
        """Open the output and its checkpoint, once both exist (until then: nothing to serve)."""
        try:
            out = _Watched.open(self.output)
        except FileNotFoundError:
            return False
        try:
            checkpoint = _Watched.open(checkpoint_path(self.output))
        except FileNotFoundError:
            out.close()
            return False
        self._out, self._checkpoint = out, checkpoint
        return True

    def _check_header(self) -> None:
        assert self._checkpoint is not None
        if self._header is not None and os.pread(self._checkpoint.fd, len(self._header), 0) != self._header:
            raise _started_over(self.path, "its checkpoint's header changed")

    def _read_checkpoint(self) -> None:
        """Count the offsets the checkpoint's new complete lines list."""
        assert self._checkpoint is not None
        while self._checkpoint_read < self._checkpoint.size:
            complete = _whole_lines(self._checkpoint.fd, self._checkpoint_read)
            if not complete:
                break  # a line still being written
            for line in complete[:-1].split(b"\n"):
                self._take_checkpoint_line(line)
            self._checkpoint_read += len(complete)
        self._checkpoint.remember(self._checkpoint_read)

    def _take_checkpoint_line(self, line: bytes) -> None:
        if self._header is not None:
            self._listed += _count_offsets(line, self.path)
            return
        header = _parse_header(line, self.path)
        self._header = line + b"\n"
        self._events = _events_in(header)

    def _scan_output(self) -> None:
        """Find the ends of the output's lines up to the count the checkpoint lists."""
        assert self._out is not None
        committed, end, marks = self._committed, self._end, []
        while committed < self._listed and self._scanned_to < self._out.size:
            data = os.pread(self._out.fd, min(SCAN_BYTES, self._out.size - self._scanned_to), self._scanned_to)
            if not data:
                break
            start = 0
            while committed < self._listed and (newline := data.find(b"\n", start)) >= 0:
                start, committed = newline + 1, committed + 1
                end = self._scanned_to + start
                if committed % LINES_PER_MARK == 0:
                    marks.append(end)
            self._scanned_to += len(data) if committed < self._listed else start
        with self._lock:
            self._marks.extend(marks)
            self._committed, self._end = committed, end
        self._out.remember(end)

    def close(self) -> None:
        super().close()
        for watched in (self._out, self._checkpoint):
            if watched is not None:
                watched.close()


class _Watched:
    """One file of a followed output, open for reading: its size as last seen, and the last
    bytes read of it, to tell it is still the same file, only longer."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        identity = os.fstat(fd)
        self.identity = (identity.st_dev, identity.st_ino)
        self.size = -1
        self.modified = -1
        self.fingerprint = (0, b"")  # (where it ends, the bytes before)

    @classmethod
    def open(cls, path: Path) -> _Watched:
        try:
            fd = os.open(path, os.O_RDONLY)
        except NotADirectoryError:
            raise FileNotFoundError(path) from None
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise FollowError(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FollowError(f"{path} is not a file")
        return cls(path, fd)

    def changed(self, output: str) -> bool:
        """Whether it grew (or was touched) since last seen; raises FollowError if it was replaced."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            raise _started_over(output, f"{self.path.name} was removed") from None
        if (now.st_dev, now.st_ino) != self.identity:
            raise _started_over(output, f"{self.path.name} was replaced")
        changed = (now.st_size, now.st_mtime_ns) != (self.size, self.modified)
        self.size, self.modified = now.st_size, now.st_mtime_ns
        return changed

    def remember(self, end: int) -> None:
        start = max(0, end - FINGERPRINT_BYTES)
        self.fingerprint = (end, os.pread(self.fd, end - start, start))

    def check_fingerprint(self, output: str) -> None:
        end, expected = self.fingerprint
        if expected and os.pread(self.fd, len(expected), end - len(expected)) != expected:
            raise _started_over(output, f"{self.path.name} no longer holds what was read")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_lines(fd: int, at: int, end: int) -> tuple[list[bytes], int]:
    """Whole lines from byte `at`, up to `READ_BYTES` of them (one at least, however long);
    [at, end) holds whole lines only. Returns them and where the next one starts."""
    size = min(READ_BYTES, end - at)
    data = os.pread(fd, size, at)
    while (last := data.rfind(b"\n")) < 0 and at + len(data) < end:
        data += os.pread(fd, min(len(data), end - at - len(data)), at + len(data))  # a long line: read on
    return data[:last].split(b"\n"), at + last + 1


def _whole_lines(fd: int, at: int) -> bytes:
    """The whole lines from byte `at` with their newlines, about SCAN_BYTES of them (one at
    least, however long); b"" while the first is torn (still being written)."""
    data = os.pread(fd, SCAN_BYTES, at)
    while (last := data.rfind(b"\n")) < 0:
        more = os.pread(fd, SCAN_BYTES, at + len(data))
        if not more:
            return b""
        data += more
    return data[: last + 1]


def _parse_header(line: bytes, output: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FollowError(f"{output}: its checkpoint is not a stream-processor checkpoint (or is damaged)")
    return header


def _count_offsets(line: bytes, output: str) -> int:
    """How many offsets a checkpoint line lists ("0-99 7 3-5": 104), without listing them
    (output/sink.py's decode_offsets lists them; a run of a million is one entry here)."""
    count = 0
    try:
        for part in line.split():
            start, _, end = part.partition(b"-")
            listed = int(end or start) - int(start) + 1
            if listed < 1:
                raise ValueError(part)
            count += listed
    except ValueError:
        raise FollowError(f"{output}: its checkpoint holds a line that lists no offsets (it is damaged)") from None
    return count


# -- a table ----------------------------------------------------------------------------------


class FollowedTable(FollowedOutput):
    """A PostgreSQL results table and its checkpoint row (see the module's docstring)."""

    kind = "postgresql"

    def __init__(self, output: DatabaseOutput, on_failure: Callable[[], None] | None = None) -> None:
        super().__init__(str(output), on_failure)
        self.output = output
        self._pages: OrderedDict[int, list[bytes]] = OrderedDict()  # page -> its first rows' lines
        self._wanted: dict[int, float] = {}  # position -> when a replay last asked for it
        self._run_id: str | None = None
        self._connection: Any = self._connect()  # at the start: DatabaseUnreachable (exit 2)
        self._lost = False
        self._retry_at = 0.0

    def records_from(self, offset: int) -> Iterator[Record | None]:
        """Committed rows from `offset` on; None whenever they are not fetched (or committed) yet."""
        position = offset
        while not self.ends_before(position):
            lines = self._lines_at(position)
            if not lines:
                yield None
                continue
            for raw in lines:
                yield _record(position, raw)
                position += 1

    def _lines_at(self, position: int) -> list[bytes]:
        """The fetched lines from `position` to its page's end; [] (and asked for) if none is."""
        page, first = divmod(position, PAGE_ROWS)
        with self._lock:
            lines = self._pages.get(page)
            if position < self._committed and lines is not None and first < len(lines) and self.failure is None:
                self._pages.move_to_end(page)
                return lines[first:]
            self._wanted[position] = time.monotonic()
            catching_up = position < self._committed
        self._note_demand()
        if catching_up:  # committed, not fetched yet: the poller fetches it now, not at its next turn
            self._wake.set()
        return []

    def status(self) -> dict[str, Any]:
        return {**super().status(), "connected": not self._lost}

    # -- the poller ------------------------------------------------------------------------

    def _connect(self) -> Any:
        import psycopg

        connection = self.output.connect(
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS}",
        )
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # the checkpoint and rows agree
        return connection

    def _poll(self) -> None:
        import psycopg

        if self._lost and not self._reconnect():
            return
        try:
            self._poll_connected()
        except psycopg.errors.UndefinedTable:
            return  # no run has written it yet: wait
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._lose(exc)
        except psycopg.Error as exc:  # another program's table, no permission: it cannot be followed
            raise FollowError(f"cannot follow {self.output}: {describe(exc)}") from None

    def _poll_connected(self) -> None:
        plan = self._plan()
        with self._connection.transaction():
            checkpoint = self._read_checkpoint()
            if checkpoint is None:
                return  # no checkpoint yet: wait
            header, run_id, lines = checkpoint
            if self._run_id not in (None, run_id):
                raise _started_over(self.path, "its checkpoint names another run")
            pages = {page: self._fetch(page, start, lines) for page, start in plan if start < lines}
        with self._lock:
            self._run_id, self._committed, self._events = run_id, lines, _events_in(header)
            for page, lines_fetched in pages.items():
                if lines_fetched:
                    self._pages.setdefault(page, []).extend(lines_fetched)
                    self._pages.move_to_end(page)
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)

    def _plan(self) -> list[tuple[int, int]]:
        """The pages replays asked for lately, and the READ_AHEAD_PAGES after each (a replay
        catching up reads on without waiting), each with its first position not yet fetched."""
        now, plan = time.monotonic(), {}
        with self._lock:
            for position, asked_at in list(self._wanted.items()):
                page = position // PAGE_ROWS
                if position < self._fetched_to(page) or now - asked_at > WANTED_FOR_S:
                    del self._wanted[position]  # fetched, or nobody waits for it any more
                    continue
                for ahead in range(page, page + 1 + READ_AHEAD_PAGES):
                    if (start := self._fetched_to(ahead)) < (ahead + 1) * PAGE_ROWS:
                        plan[ahead] = start
        return sorted(plan.items())

    def _fetched_to(self, page: int) -> int:
        """One past the last position of `page` fetched (its first one if none is)."""
        return page * PAGE_ROWS + len(self._pages.get(page, ()))

    def _read_checkpoint(self) -> tuple[dict[str, Any], str, int] | None:
        from psycopg import sql

        row = self._connection.execute(
            sql.SQL("SELECT header, run_id, lines FROM {} WHERE output_table = %s").format(self.output.checkpoints()),
            (self.output.qualified,),
        ).fetchone()
        return None if row is None else (row[0] if isinstance(row[0], dict) else {}, row[1], int(row[2]))

    def _fetch(self, page: int, start: int, lines: int) -> list[bytes]:
        """The committed rows from `start` to the page's end, in order ([] if the snapshot
        holds fewer than the checkpoint says: the output is being started over)."""
        from psycopg import sql

        stop = min((page + 1) * PAGE_ROWS, lines)
        rows = self._connection.execute(
            sql.SQL("SELECT position, line FROM {} WHERE position >= %s AND position < %s ORDER BY position").format(
                self.output.results()
            ),
            (start, stop),
        ).fetchall()
        if [position for position, _ in rows] != list(range(start, stop)):
            return []
        return [line.encode("utf-8") for _, line in rows]

    def _lose(self, exc: BaseException) -> None:
        if not self._lost:
            log.warning(
                "lost %s (%s); serving what was fetched, connecting again every %g s",
                self.output,
                describe(exc),
                RECONNECT_EVERY_S,
            )
        self._lost = True
        with contextlib.suppress(Exception):
            self._connection.close()

    def _reconnect(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RECONNECT_EVERY_S
        try:
            self._connection = self._connect()
        except DatabaseUnreachable:
            return False
        self._lost = False
        log.warning("connected to %s again", self.output)
        return True

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self._connection.close()
