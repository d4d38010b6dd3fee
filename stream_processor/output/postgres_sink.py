"""The PostgreSQL output: the only writer of a results table, exactly once.

Each `write()` is one transaction: the lines go in as rows (COPY), and the table's
checkpoint row is moved to cover them, in the same transaction. So whatever stops the run
(kill -9, a lost connection, PostgreSQL itself restarting), the database holds rows and a
checkpoint that agree, and `--resume` continues from the checkpoint: an offset it lists is
never run again, one it does not list has no row. The primary key on "offset" is the last
guard (a bug would fail loudly), never the mechanism.

One writer per table: a session-level advisory lock on the table's name, taken before
anything is created or read. A second run on the same table stops at once (exit 2); the
first goes on. The lock goes with the connection: when the connection is lost, it is
taken again on the new one before anything else is written.

When the connection is lost mid-run, the sink connects again (for up to
`reconnect_timeout_s`), takes the lock again, and reads the checkpoint: it tells whether the
transaction in flight committed (the checkpoint covers its lines) or not (it is written
again). Past the timeout the run stops (exit 1) and `--resume` continues it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from stream_processor.output.database import DatabaseOutput, DatabaseUnreachable, describe
from stream_processor.output.sink import FORMAT, DoneOffsets, OutputError, check_same_run

log = logging.getLogger(__name__)

DEFAULT_RECONNECT_TIMEOUT_S = 60.0
RECONNECT_EVERY_S = 0.5
COLUMNS = ("offset", "position", "line", "record", "written_at")


class DatabaseSinkError(ConnectionError):
    """The database could not be written for too long, or refused a write: the run stops (exit 1)."""


class PostgresSink:
    """Rows and their checkpoint, one transaction per write; see the module's docstring."""

    def __init__(
        self,
        output: DatabaseOutput,
        header: dict[str, Any] | None = None,
        resume: bool = False,
        begin_later: bool = False,
        reconnect_timeout_s: float | None = DEFAULT_RECONNECT_TIMEOUT_S,  # None: forever
    ) -> None:
        self.output = output
        self.header = {"format": FORMAT, **(header or {})}
        self.reconnect_timeout_s = reconnect_timeout_s
        self.lines_written = 0
        self._pending_position: dict[str, Any] | None = None
        self._saved_position: dict[str, Any] | None = None
        self._jsonb_refusals = 0
        # The writer thread writes; the run's main thread saves the stream's position at the end.
        self._one_at_a_time = threading.RLock()
        self._connection = output.connect()  # DatabaseUnreachable: exit 2, nothing touched
        self._backend_pid = self._connection.info.backend_pid  # the session that holds the lock
        try:
            self._lock()
            _create_tables(self._connection, output)
            self._fresh = not resume
            self.done, self.run_id = self._resume() if resume else self._start_afresh()
        except BaseException as exc:
            self._connection.close()
            if _is_database_error(exc):  # no such schema, no right to create: fix it first (exit 2)
                raise OutputError(f"cannot write {output}: {describe(exc)}") from None
            raise
        if not begin_later:
            self.begin()

    @property
    def start_offset(self) -> int:
        return self.done.low_watermark

    # -- opening -------------------------------------------------------------------------

    def _lock(self) -> None:
        if not _take_lock(self._connection, self.output):
            raise OutputError(
                f"{self.output} is being written by another run right now (its advisory lock is held); "
                "wait for that run, or choose another table"
            )

    def _resume(self) -> tuple[DoneOffsets, str]:
        stored = read_checkpoint(self._connection, self.output)
        if stored is None:
            _refuse_foreign_rows(self._connection, self.output)
            self._fresh = True  # nothing to continue: start afresh, as a file output does
            return DoneOffsets(), uuid.uuid4().hex
        check_same_run(stored["header"], self.header, self.output)
        done = DoneOffsets(stored["low_watermark"], set(stored["beyond"]), stored["lines"])
        self._saved_position = stored["stream_position"]
        return done, stored["run_id"]

    def _start_afresh(self) -> tuple[DoneOffsets, str]:
        """A run without --resume: refused now, before anything starts, if the table is not ours."""
        if read_checkpoint(self._connection, self.output) is None:
            _refuse_foreign_rows(self._connection, self.output)
        return DoneOffsets(), uuid.uuid4().hex

    def begin(self) -> None:
        """The run starts: a fresh output's rows are deleted and its checkpoint set to nothing
        written, in one transaction (until now an earlier output is as it was)."""
        if not self._fresh:
            return  # (a table not ours was refused when the sink opened, under the lock it still holds)
        from psycopg import sql

        with self._connection.transaction():
            self._connection.execute(sql.SQL("TRUNCATE {}").format(self.output.results()))
            self._connection.execute(
                sql.SQL(
                    "INSERT INTO {} (output_table, header, run_id, low_watermark, beyond, lines, updated_at) "
                    "VALUES (%s, %s, %s, 0, '{{}}', 0, now()) ON CONFLICT (output_table) DO UPDATE SET "
                    "header = excluded.header, run_id = excluded.run_id, low_watermark = 0, beyond = '{{}}', "
                    "lines = 0, stream_position = NULL, updated_at = now()"
                ).format(self.output.checkpoints()),
                (self.output.qualified, json.dumps(self.header, sort_keys=True), self.run_id),
            )
        self._fresh = False

    # -- writing -------------------------------------------------------------------------

    def write(self, lines: Sequence[tuple[int, bytes]]) -> None:
        """Rows for `(offset, line)`s, in the order given, and the checkpoint that covers them."""
        if not lines:
            return
        with self._one_at_a_time:
            self._write(lines)

    def _write(self, lines: Sequence[tuple[int, bytes]]) -> None:
        self.begin()
        after = DoneOffsets(self.done.low_watermark, set(self.done.beyond), self.done.lines)
        rows = []
        for offset, line in lines:
            text = line.decode("utf-8")
            rows.append((offset, after.lines, text))
            after.add(offset)
        self._commit_surviving_disconnects(rows, after)
        self.done = after
        self.lines_written += len(rows)

    def note_position(self, position: dict[str, Any]) -> None:
        """Where a live stream resumes (see run/streaming.py): kept with the next write."""
        self._pending_position = position

    def saved_position(self) -> dict[str, Any] | None:
        return self._saved_position

    def save_position(self) -> None:
        with self._one_at_a_time:
            if self._pending_position is not None and not self._connection.closed:
                self._commit_surviving_disconnects([], self.done)

    def _commit_surviving_disconnects(self, rows: list[tuple[int, int, str]], after: DoneOffsets) -> None:
        import psycopg

        deadline: float | None = None
        while True:
            try:
                self._commit(rows, after)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._connection.broken is False and not self._connection.closed:
                    raise DatabaseSinkError(f"cannot write {self.output}: {describe(exc)}") from None
                deadline = deadline or time.monotonic() + (self.reconnect_timeout_s or float("inf"))
                log.warning("lost %s (%s); connecting again", self.output, describe(exc))
                if self._reconnect(deadline, exc) >= after.lines:
                    return  # the transaction in flight had committed

    def _commit(self, rows: list[tuple[int, int, str]], after: DoneOffsets) -> None:
        import psycopg

        try:
            self._transaction(rows, after, refused=set())
        except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded):
            # A line PostgreSQL's jsonb cannot hold (a \u0000 in a string, a number past
            # numeric's range, nesting past its stack): its row keeps the text, record NULL.
            refused = _refused_by_jsonb(self._connection, [text for _, _, text in rows])
            self._note_refusals(rows, refused)
            self._transaction(rows, after, refused)

    def _transaction(self, rows: list[tuple[int, int, str]], after: DoneOffsets, refused: set[int]) -> None:
        from psycopg import sql

        connection = self._connection
        with connection.transaction():
            if rows:
                copy_rows = sql.SQL('COPY {} ("offset", position, line, record) FROM STDIN').format(
                    self.output.results()
                )
                with connection.cursor() as cursor, cursor.copy(copy_rows) as copy:
                    for index, (offset, position, text) in enumerate(rows):
                        copy.write_row((offset, position, text, None if index in refused else text))
            stream_position = self._pending_position
            connection.execute(
                sql.SQL(
                    "UPDATE {} SET low_watermark = %s, beyond = %s, lines = %s, "
                    "stream_position = coalesce(%s, stream_position), updated_at = now() "
                    "WHERE output_table = %s AND run_id = %s"
                ).format(self.output.checkpoints()),
                (
                    after.low_watermark,
                    sorted(after.beyond),
                    after.lines,
                    json.dumps(stream_position) if stream_position is not None else None,
                    self.output.qualified,
                    self.run_id,
                ),
            )
        if stream_position is not None and stream_position is self._pending_position:
            self._saved_position, self._pending_position = stream_position, None

    def _note_refusals(self, rows: list[tuple[int, int, str]], refused: set[int]) -> None:
        for index in sorted(refused):
            self._jsonb_refusals += 1
            if self._jsonb_refusals <= 10:
                log.warning(
                    "%s: the line for offset %d is kept as text; PostgreSQL's jsonb cannot hold it (record NULL)",
                    self.output,
                    rows[index][0],
                )

    def _reconnect(self, deadline: float, cause: BaseException) -> int:
        """Connect again, take the lock again; return how many lines the checkpoint covers."""
        self._connection.close()
        while True:
            try:
                self._connection = self.output.connect()
                # The lost session may still hold the lock (the server has not noticed it is
                # gone: a cut on our side only, for hours): it was ours, so end it.
                if not _take_lock(self._connection, self.output):
                    _end_session(self._connection, self._backend_pid)
                    self._connection.close()
                    raise DatabaseUnreachable("the table's lock is still held by the lost session")
                self._backend_pid = self._connection.info.backend_pid
                stored = read_checkpoint(self._connection, self.output)
                break
            except DatabaseUnreachable:
                if time.monotonic() >= deadline:
                    raise DatabaseSinkError(
                        f"lost {self.output} for {self.reconnect_timeout_s or 0:g} s ({describe(cause)}); every line "
                        "committed before is kept with its checkpoint, and --resume continues the run"
                    ) from None
                time.sleep(RECONNECT_EVERY_S)  # the database is restarting: ask again shortly
            except Exception as exc:  # connected, but it failed straight away: the same story
                self._connection.close()
                if time.monotonic() >= deadline:
                    raise DatabaseSinkError(f"cannot write {self.output}: {describe(exc)}") from None
                time.sleep(RECONNECT_EVERY_S)
        if stored is None or stored["run_id"] != self.run_id:
            raise DatabaseSinkError(f"{self.output} was started over by another run while this one was disconnected")
        log.warning("connected to %s again; %d lines are committed", self.output, stored["lines"])
        return int(stored["lines"])

    def close(self) -> None:
        try:
            self.save_position()
        except Exception as exc:  # closing after a failure: the position is an optimisation only
            log.debug("closing %s: %s", self.output, exc)
        with self._one_at_a_time:
            self._connection.close()  # also releases the advisory lock

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- the tables ---------------------------------------------------------------------------


def _create_tables(connection, output: DatabaseOutput) -> None:
    from psycopg import sql

    with connection.transaction():
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (output_table text PRIMARY KEY, header jsonb NOT NULL, "
                "run_id text NOT NULL, low_watermark bigint NOT NULL, beyond bigint[] NOT NULL, "
                "lines bigint NOT NULL, stream_position jsonb, updated_at timestamptz NOT NULL)"
            ).format(output.checkpoints())
        )
        connection.execute(
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} ("offset" bigint PRIMARY KEY, position bigint NOT NULL UNIQUE, '
                "line text NOT NULL, record jsonb, written_at timestamptz NOT NULL DEFAULT now())"
            ).format(output.results())
        )


def _is_database_error(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error)


def _end_session(connection, pid: int) -> None:
    """End our own earlier session `pid` (it holds the table's lock, and nobody uses it)."""
    import psycopg

    try:
        connection.execute("SELECT pg_terminate_backend(%s)", (pid,))
        connection.commit()
    except psycopg.Error as exc:  # no right to: the lock goes when the server notices the session is gone
        log.warning("cannot end the lost session %d: %s", pid, describe(exc))


def _take_lock(connection, output: DatabaseOutput) -> bool:
    taken = connection.execute("SELECT pg_try_advisory_lock(%s)", (output.lock_key,)).fetchone()
    connection.commit()
    return bool(taken and taken[0])


def read_checkpoint(connection, output: DatabaseOutput) -> dict[str, Any] | None:
    from psycopg import sql
    from psycopg.rows import dict_row

    with connection.transaction(), connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            sql.SQL(
                "SELECT header, run_id, low_watermark, beyond, lines, stream_position FROM {} WHERE output_table = %s"
            ).format(output.checkpoints()),
            (output.qualified,),
        )
        return cursor.fetchone()


def rows_in_order(connection, output: DatabaseOutput) -> Iterator[tuple[int, str]]:
    """(offset, line) of every row, in output order, read in pages (a server-side cursor)."""
    from psycopg import sql

    with connection.transaction(), connection.cursor(name="stream_processor_rows") as cursor:
        cursor.itersize = 2000
        cursor.execute(sql.SQL('SELECT "offset", line FROM {} ORDER BY position').format(output.results()))
        yield from cursor


def _refuse_foreign_rows(connection, output: DatabaseOutput) -> None:
    """A table that no checkpoint describes: another program's (its columns differ) or rows of unknown origin."""
    from psycopg import sql

    with connection.transaction():
        columns = {
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (output.schema, output.table),
            )
        }
        if columns != set(COLUMNS):
            raise OutputError(
                f"{output} is not a stream-processor results table (its columns are {', '.join(sorted(columns))}); "
                "choose another table"
            )
        if connection.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(output.results())).fetchone():
            raise OutputError(
                f"{output} holds rows that no stream-processor checkpoint describes; "
                "choose another table, or empty it first"
            )


def _refused_by_jsonb(connection, texts: list[str]) -> set[int]:
    """Which of `texts` PostgreSQL's jsonb refuses, one savepoint each (only after a batch failed)."""
    import psycopg

    refused = set()
    with connection.transaction():
        for index, text in enumerate(texts):
            try:
                with connection.transaction():
                    connection.execute("SELECT %s::text::jsonb", (text,))
            except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded):
                refused.add(index)
    return refused
