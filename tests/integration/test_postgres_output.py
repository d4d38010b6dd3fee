"""`--output postgresql://...?table=NAME` against a real PostgreSQL: what a run writes
(one row per event, the line as the file output holds it, its record as jsonb), lines that
PostgreSQL's jsonb refuses, one writer per table, and every way the output can be wrong
(a bad URL, a table that is not ours, a --resume of another run's table): exit 2, one
line, no password shown, and nothing created or changed.

Runs are real processes (`run.py`, `stream-processor verify`); the tables are checked
with SQL. The shared server is 127.0.0.1:5432 (the `postgres_url` fixture); the wrong
password case has a private server of its own, with password authentication.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.postgres_instance import drop_output_table, free_port
from stream_processor.sources.generate import generate_file
from tests.conftest import ROOT, run_script, wait_until, write_recording
from tests.e2e.test_misuse import Background, one_line

KEY = "key:wiki,title"
ORDERS = ["total", KEY, "none"]
RUN = ["--workers", "2", "--no-progress", "--time-scale", "0.01"]
PASSWORD = "hunter2"


# -- helpers (tests/chaos/test_postgres_output.py uses them too) -------------------------------


def table_url(base: str, table: str) -> str:
    return f"{base}?table={table}"


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def table_exists(url: str, table: str) -> bool:
    with connect(url) as connection:
        return connection.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is not None


def row_count(url: str, table: str) -> int:
    """The table's rows (0 while it does not exist yet); -1 while the server does not answer."""
    try:
        with connect(url) as connection:
            if connection.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is None:
                return 0
            return connection.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]
    except psycopg.OperationalError:
        return -1


def checkpoint_of(url: str, table: str) -> dict[str, Any] | None:
    with connect(url) as connection:
        if connection.execute("SELECT to_regclass('public.stream_processor_checkpoints')").fetchone()[0] is None:
            return None
        cursor = connection.execute(
            "SELECT header, run_id, low_watermark, beyond, lines, stream_position, updated_at "
            "FROM public.stream_processor_checkpoints WHERE output_table = %s",
            (f"public.{table}",),
        )
        row = cursor.fetchone()
        return None if row is None else dict(zip([column.name for column in cursor.description], row, strict=True))


def rows_of(url: str, table: str) -> list[tuple[int, int, str, Any]]:
    """(offset, position, line, record) of every row, in output order."""
    with connect(url) as connection:
        return connection.execute(
            f'SELECT "offset", position, line, record FROM public.{table} ORDER BY position'
        ).fetchall()


def snapshot(url: str, table: str) -> tuple[list, list[str], dict[str, Any] | None]:
    """Everything a refused run must leave as it was: the table's columns and rows (as
    text, written_at and all) and its checkpoint row."""
    with connect(url) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        rows = [row[0] for row in connection.execute(f"SELECT to_jsonb(t)::text FROM public.{table} t ORDER BY 1")]
    return columns, rows, checkpoint_of(url, table)


def assert_checkpoint_covers_the_rows(url: str, table: str) -> dict[str, Any]:
    """The rows and the checkpoint agree exactly: each offset once, positions 0..lines-1,
    and the offsets are those the checkpoint lists (all below the low watermark, and beyond)."""
    stored = checkpoint_of(url, table)
    assert stored is not None, f"{table} has no checkpoint row"
    with connect(url) as connection:
        offsets = [row[0] for row in connection.execute(f'SELECT "offset" FROM public.{table}')]
        positions = sorted(row[0] for row in connection.execute(f"SELECT position FROM public.{table}"))
    assert len(offsets) == len(set(offsets)) == stored["lines"], (len(offsets), len(set(offsets)), stored["lines"])
    assert positions == list(range(stored["lines"])), "positions are not 0..lines-1"
    beyond = set(stored["beyond"])
    assert all(offset > stored["low_watermark"] for offset in beyond), stored
    assert set(offsets) == set(range(stored["low_watermark"])) | beyond
    return stored


def verify_cli(recording: Path, output: str, order: str = "total") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stream_processor", "verify", str(recording), output, "--order", order]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def assert_exact(url: str, table: str, recording: Path, order: str) -> None:
    """Every event of the recording exactly once, as `order` promises (SQL, then `verify`)."""
    events = recording.read_bytes().count(b"\n")
    stored = assert_checkpoint_covers_the_rows(url, table)
    assert (stored["lines"], stored["low_watermark"], stored["beyond"]) == (events, events, [])
    checked = verify_cli(recording, table_url(url, table), order)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def hunter2_nowhere(run: subprocess.CompletedProcess | Background) -> None:
    assert PASSWORD not in run.stdout + run.stderr, run.stderr


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """About 120 generated events (waits 0.1-100 ms at --time-scale 0.01)."""
    path = tmp_path_factory.mktemp("pg") / "recording.json"
    generate_file(path, minutes=1, rate=2.0, seed=41)
    return path


@pytest.fixture(scope="module")
def file_lines(recording, tmp_path_factory) -> list[bytes]:
    """What the file output holds for the recording (a file-mode run of the same input)."""
    work = tmp_path_factory.mktemp("file-run")
    output = work / "out.json"
    run = run_script("run.py", ["--input", str(recording), "--output", str(output), *RUN], work)
    assert run.returncode == 0, run.stderr
    return output.read_bytes().splitlines()


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_events(tmp_path / "tiny.json", [{"id": n, "wait": 0} for n in range(20)])


# -- what a run writes ------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_a_run_writes_one_row_per_event_as_the_file_output_holds_it(
    recording, file_lines, postgres_url, pg_table, tmp_path, order
):
    url = table_url(postgres_url, pg_table)
    run = run_script("run.py", ["--input", str(recording), "--output", url, "--order", order, *RUN], tmp_path)
    assert run.returncode == 0, run.stderr
    rows = rows_of(postgres_url, pg_table)
    events = len(file_lines)
    assert events == len(recording.read_bytes().splitlines()) > 50
    assert [position for _, position, _, _ in rows] == list(range(events))
    assert sorted(offset for offset, _, _, _ in rows) == list(range(events))
    for offset, _, line, record in rows:
        assert line.encode() == file_lines[offset], f"offset {offset}"
        assert record == json.loads(line), f"offset {offset}"
    if order == "total":
        assert [offset for offset, _, _, _ in rows] == list(range(events))
        assert b"".join(line.encode() + b"\n" for _, _, line, _ in rows) == recording.read_bytes()

    stored = assert_checkpoint_covers_the_rows(postgres_url, pg_table)
    assert (stored["lines"], stored["low_watermark"], stored["beyond"]) == (events, events, [])
    content = recording.read_bytes()
    header = stored["header"]
    assert header["input"] == {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content), "events": events}
    assert header["task"] == "stream_processor.tasks:wait_and_return"
    assert header["order"] == order
    assert len(stored["run_id"]) >= 16

    # A total-order table keeps every order's promise; the others keep their own.
    for mode in ORDERS if order == "total" else [order]:
        checked = verify_cli(recording, url, mode)
        assert checked.returncode == 0, f"verify --order {mode}: {checked.stdout}{checked.stderr}"
        assert f"{events} lines, each event once" in checked.stdout


HOSTILE = {
    "a NUL character": b'{"id": 1, "wait": 0, "title": "a \\u0000 b"}',
    "a number past numeric's range": b'{"id": 2, "wait": 0, "big": 1e500000}',
    "a negative one": b'{"id": 3, "wait": 0, "small": -1e500000}',
    "a lone surrogate": b'{"id": 4, "wait": 0, "title": "\\ud800"}',
    "900 nested arrays": b'{"id": 5, "wait": 0, "deep": ' + b"[" * 900 + b"]" * 900 + b"}",
    "900 nested objects": b'{"id": 6, "wait": 0, "deep": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}",
    "escapes": b'{"id": 7, "wait": 0, "title": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" back\\\\slash \\t \\n \\u001f"}',
    "raw UTF-8": '{"id": 8, "wait": 0, "title": "Zürich 東京 😀"}'.encode(),
    "a repeated key": b'{"id": 9, "wait": 0, "k": 1, "k": 2}',
    "a 40-digit integer": b'{"id": 10, "wait": 0, "n": 1234567890123456789012345678901234567890}',
    "precision past a double": b'{"id": 11, "wait": 0, "x": 0.1000000000000000055511151231257827}',
    "no space at all": b'{"id":12,"wait":0,"t":[1,2.5e3,-0,true,false,null,{}]}',
    "a CR before the newline": b'{"id": 13, "wait": 0}\r',
    "white space around": b'\t {"id": 14, "wait": 0} \t',
    "raw U+2028 and U+2029": '{"id": 15, "wait": 0, "title": "a\u2028b\u2029c"}'.encode(),
}
MUST_BE_REFUSED = ("a NUL character", "a number past numeric's range", "a negative one", "a lone surrogate")


def jsonb_accepts(url: str, line: bytes) -> bool:
    with connect(url) as connection:
        try:
            return connection.execute("SELECT %s::text::jsonb IS NOT NULL", (line.decode(),)).fetchone()[0]
        except (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded):
            return False


def test_lines_jsonb_refuses_keep_their_text_with_a_null_record(postgres_url, pg_table, tmp_path):
    plain = [json.dumps({"id": 100 + n, "wait": 0}).encode() for n in range(6)]
    lines = plain[:3] + list(HOSTILE.values()) + plain[3:]
    names = [None] * 3 + list(HOSTILE) + [None] * 3
    recording = write_recording(tmp_path / "hostile.json", lines)
    url = table_url(postgres_url, pg_table)
    run = run_script("run.py", ["--input", str(recording), "--output", url, *RUN], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr

    accepted = [jsonb_accepts(postgres_url, line) for line in lines]
    for name in MUST_BE_REFUSED:
        assert not accepted[names.index(name)], f"PostgreSQL's jsonb took {name}: the test means nothing"
    rows = rows_of(postgres_url, pg_table)
    assert [offset for offset, _, _, _ in rows] == list(range(len(lines)))
    for (offset, _, line, record), want in zip(rows, lines, strict=True):
        what = names[offset] or "a plain event"
        assert line.encode() == want, f"{what}: the line changed"
        assert (record is not None) == accepted[offset], f"{what}: record {'NULL' if record is None else 'kept'}"
        if record is not None and not what.startswith("900"):  # too deep to compare in Python
            assert record == json.loads(want), what
        refused = f"the line for offset {offset} is kept as text"
        assert (refused in run.stderr) != accepted[offset], f"{what}: {run.stderr}"
    with connect(postgres_url) as connection:  # every record that is kept is its line, as jsonb
        differing = connection.execute(
            f'SELECT "offset" FROM public.{pg_table} WHERE CASE WHEN record IS NULL THEN false '
            "ELSE record IS DISTINCT FROM line::jsonb END"
        ).fetchall()
    assert differing == []
    assert_exact(postgres_url, pg_table, recording, "total")


# -- one writer per table -----------------------------------------------------------------------


def test_a_second_run_on_the_same_table_stops_at_once_and_the_first_finishes(postgres_url, pg_table, tmp_path):
    recording = write_events(tmp_path / "slow.json", [{"id": n, "wait": 0.1} for n in range(120)])
    url = table_url(postgres_url, pg_table)
    args = ["--input", str(recording), "--output", url, "--workers", "2", "--no-progress"]
    with Background(args, tmp_path) as first:
        wait_until(lambda: row_count(postgres_url, pg_table) >= 1, timeout=60, message="the first run's first row")
        run_id = checkpoint_of(postgres_url, pg_table)["run_id"]
        began = time.monotonic()
        second = run_script("run.py", args, tmp_path, timeout=60)
        took = time.monotonic() - began
        assert first.wait(timeout=120) == 0, first.stderr
    assert second.returncode == 2, second.stderr
    line = one_line(second.stderr)
    assert "being written by another run" in line and "advisory lock" in line and pg_table in line, line
    assert took < 20, f"the second run took {took:.1f} s to be refused"
    assert checkpoint_of(postgres_url, pg_table)["run_id"] == run_id  # not started over
    assert_exact(postgres_url, pg_table, recording, "total")


# -- a wrong output: exit 2, one line, no password, nothing created ------------------------------


def assert_nothing_created(url: str, table: str) -> None:
    assert not table_exists(url, table), f"{table} was created"
    assert checkpoint_of(url, table) is None, f"{table} has a checkpoint row"


def _url(user: str = "postgres", port: int = 5432, database: str = "postgres", table: str = "{table}") -> str:
    return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{port}/{database}?table={table}"


WRONG_OUTPUTS = [
    pytest.param(lambda: _url(port=free_port()), "Connection refused", id="a port nobody listens on"),
    pytest.param(lambda: _url(user="nosuchuser"), 'role "nosuchuser" does not exist', id="a role that does not exist"),
    pytest.param(lambda: _url(database="nosuchdb_{table}"), "does not exist", id="a database that does not exist"),
    pytest.param(lambda: _url(table="nosuchschema.{table}"), "nosuchschema", id="a schema that does not exist"),
]


@pytest.mark.parametrize(("make_url", "says"), WRONG_OUTPUTS)
def test_an_output_that_cannot_be_written_is_one_line_exit_2_and_nothing_is_created(
    postgres_url, pg_table, tiny, tmp_path, make_url, says
):
    url = make_url().format(table=pg_table)
    run = run_script("run.py", ["--input", str(tiny), "--output", url, *RUN], tmp_path, timeout=60)
    hunter2_nowhere(run)
    assert run.returncode == 2, f"exit {run.returncode}\n{run.stderr}"
    line = one_line(run.stderr)
    assert says in line and "***" in line, line
    assert_nothing_created(postgres_url, pg_table)


@pytest.mark.parametrize(
    "table",
    ["bad-name", "a.b.c", "1starts_with_a_digit", "x" * 64, "name;DROP TABLE stream_processor_checkpoints"],
    ids=["a hyphen", "three parts", "a leading digit", "64 characters", "SQL in it"],
)
def test_a_table_name_that_is_not_one_is_a_usage_error(postgres_url, tiny, tmp_path, table):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/postgres?table={table}"
    run = run_script("run.py", ["--input", str(tiny), "--output", url, *RUN], tmp_path, timeout=60)
    hunter2_nowhere(run)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]  # argparse's form: its usage, then one line
    assert "--output" in last and "is not a table name" in last, run.stderr
    names = [table, *table.split("."), table[:63]]
    with connect(postgres_url) as connection:
        assert connection.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", (names,)).fetchall() == []
        if table_exists(postgres_url, "stream_processor_checkpoints"):
            found = connection.execute(
                "SELECT output_table FROM public.stream_processor_checkpoints WHERE output_table LIKE ANY(%s)",
                ([f"%.{name}" for name in names],),
            ).fetchall()
            assert found == [], found


@pytest.mark.parametrize("private_pg", ["right-one"], indirect=True)  # its password
def test_a_wrong_password_is_one_line_without_it(private_pg, tiny, tmp_path):
    assert private_pg.url.startswith("postgresql://postgres:right-one@")
    url = table_url(private_pg.url.replace("right-one", PASSWORD), "t_wrong_password")
    run = run_script("run.py", ["--input", str(tiny), "--output", url, *RUN], tmp_path, timeout=60)
    hunter2_nowhere(run)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert 'password authentication failed for user "postgres"' in line and "***" in line, line
    assert_nothing_created(private_pg.url, "t_wrong_password")


FOREIGN = {
    "other columns": "CREATE TABLE public.{t} (id integer PRIMARY KEY, name text); "
    "INSERT INTO public.{t} VALUES (1, 'keep me'), (2, 'me too')",
    "rows no checkpoint describes": 'CREATE TABLE public.{t} ("offset" bigint PRIMARY KEY, position bigint NOT NULL '
    "UNIQUE, line text NOT NULL, record jsonb, written_at timestamptz NOT NULL DEFAULT now()); "
    "INSERT INTO public.{t} (\"offset\", position, line, record) VALUES (0, 0, '{{}}', '{{}}'), (5, 1, 'x', NULL)",
}


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_table_that_is_not_ours_is_refused_and_left_untouched(postgres_url, pg_table, tiny, tmp_path, kind, resume):
    with connect(postgres_url) as connection:
        for statement in FOREIGN[kind].format(t=pg_table).split("; "):
            connection.execute(statement)
    before = snapshot(postgres_url, pg_table)
    args = ["--input", str(tiny), "--output", table_url(postgres_url, pg_table), *RUN] + (
        ["--resume"] if resume else []
    )
    run = run_script("run.py", args, tmp_path, timeout=90)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert pg_table in line, line
    assert (
        "not a stream-processor results table" if kind == "other columns" else "no stream-processor checkpoint"
    ) in line
    assert snapshot(postgres_url, pg_table) == before
    assert before[2] is None


@pytest.mark.parametrize("change", ["another --order", "another input", "another task"])
def test_a_resume_of_another_runs_table_is_refused_and_left_untouched(postgres_url, pg_table, tiny, tmp_path, change):
    url = table_url(postgres_url, pg_table)
    args = ["--input", str(tiny), "--output", url, *RUN]
    made = run_script("run.py", args, tmp_path)
    assert made.returncode == 0, made.stderr
    before = snapshot(postgres_url, pg_table)
    assert len(before[1]) == 20
    if change == "another --order":
        args += ["--order", "none"]
    elif change == "another input":
        other = write_events(tmp_path / "other.json", [{"id": n, "wait": 0} for n in range(21)])
        args[1] = str(other)
    else:
        args += ["--task", "tasks_for_tests:fail_twice_then_pass"]
    run = run_script("run.py", [*args, "--resume"], tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert "--resume refuses to continue" in line and pg_table in line, line
    assert snapshot(postgres_url, pg_table) == before


def test_a_fresh_run_over_an_existing_output_replaces_its_rows(postgres_url, pg_table, tmp_path):
    first = write_events(tmp_path / "first.json", [{"id": n, "wait": 0, "run": "first"} for n in range(30)])
    second = write_events(tmp_path / "second.json", [{"id": n, "wait": 0, "run": "second"} for n in range(12)])
    url = table_url(postgres_url, pg_table)
    for recording in (first, second):
        run = run_script("run.py", ["--input", str(recording), "--output", url, *RUN], tmp_path)
        assert run.returncode == 0, run.stderr
        if recording is first:
            first_run_id = checkpoint_of(postgres_url, pg_table)["run_id"]
    rows = rows_of(postgres_url, pg_table)
    assert [line.encode() for _, _, line, _ in rows] == second.read_bytes().splitlines()
    stored = checkpoint_of(postgres_url, pg_table)
    assert stored["run_id"] != first_run_id
    assert stored["header"]["input"]["events"] == 12
    assert_exact(postgres_url, pg_table, second, "total")
    assert verify_cli(first, url).returncode != 0


def test_tidying_an_output_away_works_on_a_database_no_run_has_written_to(postgres_url):
    # Tests and benchmarks drop their tables with drop_output_table; on a fresh database (a fresh
    # CI machine) the checkpoints table does not exist yet, and the tidy must not fail for it.
    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.execute(f'CREATE TABLE "{schema}".results (x int)')
    try:
        drop_output_table(postgres_url, "results", schema)
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            left = connection.execute("SELECT to_regclass(%s)", (f"{schema}.results",)).fetchone()
        assert left == (None,)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
