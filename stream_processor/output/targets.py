"""Where a run's results go: a JSON Lines file (the default) or a PostgreSQL table.

`--output` takes either; `parse_output` tells which, `open_sink` opens its writer. Both
writers keep the same promise (output/sink.py, output/postgres_sink.py): the lines and the
checkpoint that covers them agree after any crash, and `--resume` continues exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stream_processor.output.database import DatabaseOutput, DatabaseOutputError, DatabaseUnreachable, is_database_url
from stream_processor.output.postgres_sink import DEFAULT_RECONNECT_TIMEOUT_S, PostgresSink
from stream_processor.output.sink import JsonlSink, OutputError
from stream_processor.redaction import safe_url

Output = Path | DatabaseOutput
OutputSink = JsonlSink | PostgresSink


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def parse_output(text: str) -> Output:
    """A `postgresql://` URL names a table; another URL is a mistake; anything else is a file's path."""
    if is_database_url(text):
        return DatabaseOutput.parse(text)
    if _URL.match(text):
        raise DatabaseOutputError(
            f"{safe_url(text)}: an output URL must be postgresql://USER@HOST/DB?table=NAME; a file is given by its path"
        )
    return Path(text)


def open_sink(
    output: Output,
    header: dict[str, Any],
    resume: bool,
    begin_later: bool = False,
    reconnect_timeout_s: float | None = DEFAULT_RECONNECT_TIMEOUT_S,
) -> OutputSink:
    """The writer of `output`: it locks it (one run at a time) and reads its checkpoint.
    `reconnect_timeout_s`: how long a lost database is connected to again (None: forever)."""
    if isinstance(output, DatabaseOutput):
        try:
            return PostgresSink(output, header, resume, begin_later, reconnect_timeout_s)
        except DatabaseUnreachable as exc:  # a wrong URL, user, password or database: fix it first
            raise OutputError(str(exc)) from None
    return JsonlSink(output, header, resume, begin_later=begin_later)
