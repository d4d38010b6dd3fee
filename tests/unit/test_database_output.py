"""`--output postgresql://...`: which table a URL names, and what of it may be shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_processor.output.database import DEFAULT_TABLE, DatabaseOutput, DatabaseOutputError, describe
from stream_processor.output.targets import parse_output


def test_a_url_names_a_table_in_public_by_default_and_keeps_libpqs_own_parameters():
    output = DatabaseOutput.parse("postgresql://app:s3cret@db.example:5433/scores?sslmode=require&connect_timeout=3")
    assert (output.schema, output.table) == ("public", DEFAULT_TABLE)
    assert output.conninfo == "postgresql://app:s3cret@db.example:5433/scores?sslmode=require&connect_timeout=3"


def test_table_takes_a_schema_and_is_taken_out_of_what_libpq_sees():
    output = DatabaseOutput.parse("postgres://u@h/db?table=stage.results&sslmode=disable")
    assert (output.schema, output.table, output.qualified) == ("stage", "results", "stage.results")
    assert "table=" not in output.conninfo and "sslmode=disable" in output.conninfo


def test_what_is_shown_never_holds_the_password():
    output = DatabaseOutput.parse("postgresql://app:hunter2@db/scores?table=t&password=hunter3")
    shown = str(output)
    assert "hunter2" not in shown and "hunter3" not in shown
    assert "public.t" in shown and "db" in shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?table=a-b",
        "postgresql://h/db?table=a.b.c",
        "postgresql://h/db?table=1abc",
        "postgresql://h/db?table=",
        "postgresql://h/db?table=x;drop%20table%20y",
        "postgresql://h/db?table=" + "a" * 64,
        "postgresql://h/db?table=a&table=b",
    ],
)
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(url):
    with pytest.raises(DatabaseOutputError, match="table"):
        DatabaseOutput.parse(url)


def test_each_table_has_its_own_lock_and_the_same_table_always_the_same():
    first = DatabaseOutput.parse("postgresql://h/db?table=a")
    assert first.lock_key == DatabaseOutput.parse("postgresql://other@h2/db?table=public.a").lock_key
    assert first.lock_key != DatabaseOutput.parse("postgresql://h/db?table=b").lock_key
    assert -(2**63) <= first.lock_key < 2**63


def test_an_output_is_a_table_only_for_a_postgresql_url():
    assert isinstance(parse_output("postgresql://h/db"), DatabaseOutput)
    assert isinstance(parse_output("POSTGRES://h/db"), DatabaseOutput)
    assert parse_output("results.json") == Path("results.json")
    assert parse_output("postgresql.json") == Path("postgresql.json")
    with pytest.raises(DatabaseOutputError, match="must be postgresql://"):
        parse_output("mysql://app:hunter2@h/db")


def test_a_database_error_is_one_line_without_its_password():
    error = Exception(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
        'authentication failed for user "app"\nDETAIL: postgresql://app:hunter2@127.0.0.1/db'
    )
    text = describe(error)
    assert "\n" not in text and "hunter2" not in text
    assert "password authentication failed" in text
