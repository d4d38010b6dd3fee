"""A PostgreSQL output: where it is, the two tables it uses, and connecting to it.

`--output postgresql://USER@HOST:PORT/DB?table=NAME` names a database and a table in it
(`schema.name` for another schema than `public`; default table `stream_results`). Every
other part of the URL is libpq's own (`sslmode=`, `connect_timeout=`, a password).

The results table holds one row per line, the checkpoint table one row per results
table. Both are created by the first run that writes them:

    <table>                       "offset" (primary key), position (unique: the line's
                                  place in the output, from 0), line (text, as a file
                                  holds it), record (jsonb, NULL where PostgreSQL's jsonb
                                  cannot hold the line), written_at
    stream_processor_checkpoints  output_table (primary key), header (what the output is
                                  made from), run_id, low_watermark, beyond (offsets
                                  written above the low watermark), lines,
                                  stream_position, updated_at

A results row and the checkpoint that covers it are written in one transaction: the
database never holds one without the other, whatever stops the run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stream_processor.redaction import redact_text, safe_url

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")
DEFAULT_TABLE = "stream_results"
DEFAULT_SCHEMA = "public"
CHECKPOINTS_TABLE = "stream_processor_checkpoints"
CONNECT_TIMEOUT_S = 5
TABLE_PARAMETER = "table"
# A network that drops packets silently must not hang a write for ever: the kernel gives up
# on a peer that stops answering within about 10 s, and the reconnect logic takes over.
DEAD_PEER_DETECTION = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data this long means the peer is gone
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class DatabaseOutputError(ValueError):
    """The URL cannot name a results table: a usage error (exit 2)."""


def is_database_url(text: str) -> bool:
    return urlsplit(text).scheme.lower() in SCHEMES if "://" in text else False


@dataclass(frozen=True)
class DatabaseOutput:
    """Where the results go: `conninfo` for libpq (our own `table=` taken out), and the table."""

    conninfo: str
    schema: str
    table: str

    @classmethod
    def parse(cls, url: str) -> DatabaseOutput:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES:
            raise DatabaseOutputError(f"{safe_url(url)}: a database output starts with postgresql://")
        ours = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)]
        tables = [value for name, value in ours if name == TABLE_PARAMETER]
        rest = [(name, value) for name, value in ours if name != TABLE_PARAMETER]
        if len(tables) > 1:
            raise DatabaseOutputError(f"{safe_url(url)}: give one table=, not {len(tables)}")
        schema, table = _schema_and_table(tables[0] if tables else DEFAULT_TABLE, url)
        conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
        return cls(conninfo, schema, table)

    @property
    def qualified(self) -> str:
        """schema.table: the output's name in the checkpoint table and in messages."""
        return f"{self.schema}.{self.table}"

    def __str__(self) -> str:
        """The output as messages show it: no password, the table named."""
        return f"{safe_url(self.conninfo)} table {self.qualified}"

    @property
    def lock_key(self) -> int:
        """The advisory lock one writer of this table holds (a signed 64-bit key)."""
        digest = hashlib.sha256(f"stream-processor output {self.qualified}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def results(self):
        from psycopg import sql

        return sql.Identifier(self.schema, self.table)

    def checkpoints(self):
        from psycopg import sql

        return sql.Identifier(self.schema, CHECKPOINTS_TABLE)

    def connect(self, autocommit: bool = False, **options: Any) -> psycopg.Connection:
        """A connection, or DatabaseUnreachable with one line that names the output (no password)."""
        import psycopg

        try:
            return psycopg.connect(
                self.conninfo,
                autocommit=autocommit,
                connect_timeout=options.pop("connect_timeout", CONNECT_TIMEOUT_S),
                application_name="stream-processor",
                **{**DEAD_PEER_DETECTION, **options},
            )
        except psycopg.Error as exc:
            raise DatabaseUnreachable(f"cannot connect to {self}: {describe(exc)}") from None


class DatabaseUnreachable(ConnectionError):
    """The database did not answer, or refused us (wrong user, password or database)."""


def describe(exc: BaseException) -> str:
    """A database error in one line, without any password it may quote."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # libpq's "connection failed: ... failed: FATAL:  reason": the reason is what matters
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"\s+", " ", text)
    if "failed:" in text:
        text = text.rsplit("failed:", 1)[1].strip() or text
    return redact_text(text)


def _schema_and_table(name: str, url: str) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise DatabaseOutputError(
            f"{safe_url(url)}: table={name!r} is not a table name (letters, digits and _, "
            "at most 63, optionally schema.table)"
        )
    return (DEFAULT_SCHEMA, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
