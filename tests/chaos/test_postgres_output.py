"""What breaks, with a PostgreSQL output: the run and its workers killed (-9) at random
moments while rows are being written, then --resume; PostgreSQL itself stopped mid-run
and started again; PostgreSQL away for longer than the run waits for it.

Whatever happens, the table and its checkpoint must agree (each offset once, positions
0..lines-1, exactly the offsets the checkpoint lists), and once the run is complete, the
table must hold every event exactly once in the order its mode promises (`verify`).

The kills use the shared server (127.0.0.1:5432); the restarts a private server of their
own (harness/postgres_instance.py), never the shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from stream_processor.output.database import DatabaseOutput
from stream_processor.output.postgres_sink import DatabaseSinkError, PostgresSink
from stream_processor.sources.generate import generate_file
from tests.conftest import processes_with_marker, wait_until
from tests.e2e.test_misuse import Background, not_ours
from tests.integration.test_postgres_output import (
    ORDERS,
    assert_checkpoint_covers_the_rows,
    assert_exact,
    checkpoint_of,
    connect,
    row_count,
    rows_of,
    table_url,
)

pytestmark = [pytest.mark.chaos, pytest.mark.heavy]  # kill loops start many processes: one at a time

# Generated waits (0.1-10 s, about 1.5 s on average) at --time-scale 0.02: 2-200 ms, about
# 30 ms; four workers write the ~370 events in a few seconds, a commit every few rows.
RUN = ["--workers", "4", "--no-progress", "--pool", "prefork", "--time-scale", "0.02"]
KILLS = 2  # kill points per order and broker: four per order
DOWN_S = 3.0  # how long PostgreSQL stays away in the restart test


@pytest.fixture(scope="module")
def busy_recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pg-chaos") / "recording.json"
    generate_file(path, minutes=3, rate=2.0, seed=7)
    return path


def events_in(recording: Path) -> int:
    return recording.read_bytes().count(b"\n")


def kill_run_and_workers(run: Background) -> None:
    """kill -9 of the run and, at the same moment, of everything it started (its Celery
    worker and pool processes, its embedded broker): nothing gets to clean up."""
    victims = [run.process.pid] + [
        pid for entry in processes_with_marker(run.marker) if (pid := int(entry.split(":")[0])) != run.process.pid
    ]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.process.wait(timeout=10)


def lock_released(url: str, table: str) -> bool:
    """Whether the table's advisory lock is free: the killed run's session is gone (the
    server notices a dead client on its own, a moment later)."""
    key = DatabaseOutput.parse(table_url(url, table)).lock_key
    with connect(url) as connection:
        if not connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            return False
        connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return True


def kill_and_resume(
    recording: Path, url: str, table: str, args: list[str], kill_at: list[int], tmp_path: Path, script: str = "run.py"
) -> None:
    """Start the run, kill it -9 once the table has `kill_at[0]` rows, --resume, kill it at
    `kill_at[1]` rows (or its first new row, if it has that many already), ...; then --resume to the end."""
    events = events_in(recording)
    run_ids = set()
    for attempt, rows in enumerate(kill_at):
        before = max(row_count(url, table), 0)
        target = max(rows, before + 1)
        with Background(args + (["--resume"] if attempt else []), tmp_path, script=script) as run:
            wait_until(
                lambda: row_count(url, table) >= target or not run.alive(),  # noqa: B023 (called at once)
                timeout=120,
                message=f"{target} rows",
            )
            assert run.alive(), f"run {attempt + 1} ended before row {target} (exit {run.process.poll()}): {run.stderr}"
            kill_run_and_workers(run)
        wait_until(lambda: lock_released(url, table), timeout=30, message="the killed run's session to end")
        stored = assert_checkpoint_covers_the_rows(url, table)
        assert before < stored["lines"] < events, f"kill {attempt + 1}: {stored['lines']} of {events} lines"
        run_ids.add(stored["run_id"])
    with Background(args + ["--resume"], tmp_path, script=script) as run:
        code = run.wait(timeout=180)
    assert code == 0, run.stderr
    assert "Traceback" not in run.stderr
    run_ids.add(checkpoint_of(url, table)["run_id"])
    assert len(run_ids) == 1, "a --resume started the table over"


# -- kill -9, then --resume ---------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_kill_9_of_the_run_and_its_workers_then_resume_writes_each_event_exactly_once(
    busy_recording, postgres_url, pg_table, tmp_path, broker_flag, order
):
    events = events_in(busy_recording)
    rng = random.Random(f"{order} {bool(broker_flag)}")  # seeded: each case kills at its own moments, every time
    kill_at = sorted(rng.sample(range(events // 10, events * 6 // 10), KILLS))
    url = table_url(postgres_url, pg_table)
    args = ["--input", str(busy_recording), "--output", url, "--order", order, *RUN, *broker_flag]
    kill_and_resume(busy_recording, postgres_url, pg_table, args, kill_at, tmp_path)
    assert_exact(postgres_url, pg_table, busy_recording, order)
    rows = rows_of(postgres_url, pg_table)
    lines = busy_recording.read_bytes().splitlines()
    assert all(line.encode() == lines[offset] for offset, _, line, _ in rows)
    if order == "total":
        assert [offset for offset, _, _, _ in rows] == list(range(events))


def test_a_killed_streaming_run_resumes_exactly(busy_recording, postgres_url, pg_table, tmp_path):
    """`stream-processor run` (replay server, client, workers): its resume position is kept in the checkpoint row."""
    events = events_in(busy_recording)
    url = table_url(postgres_url, pg_table)
    args = ["--input", str(busy_recording), "--output", url, *RUN]
    kill_at = [random.Random("streaming").randrange(events // 10, events * 6 // 10)]
    kill_and_resume(busy_recording, postgres_url, pg_table, args, kill_at, tmp_path, script="run_streaming.py")
    assert_exact(postgres_url, pg_table, busy_recording, "total")
    assert [
        line.encode() for _, _, line, _ in rows_of(postgres_url, pg_table)
    ] == busy_recording.read_bytes().splitlines()


# -- PostgreSQL stopped mid-run ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_run_rides_out_a_postgresql_restart(busy_recording, private_pg, tmp_path, mode):
    """pg_ctl stop (fast: sessions ended, a clean shutdown; immediate: as a crash) while
    rows are being written, started again seconds later: the run goes on and ends exact."""
    events, table = events_in(busy_recording), "results"
    args = ["--input", str(busy_recording), "--output", private_pg.table_url(table), *RUN]
    with Background(args, tmp_path) as run:
        wait_until(lambda: row_count(private_pg.url, table) >= events // 4, timeout=120, message="a quarter written")
        private_pg.stop(mode)
        try:
            wait_until(
                lambda: "connecting again" in run.stderr or not run.alive(), timeout=60, message="the loss noticed"
            )
            assert run.alive(), run.stderr
            time.sleep(DOWN_S)  # the outage's length, not a synchronisation
            assert run.alive(), run.stderr
        finally:
            private_pg.start()
        code = run.wait(timeout=180)
    assert code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "connected to" in run.stderr and "again;" in run.stderr, run.stderr
    assert not_ours(run.stderr) == [], run.stderr
    assert_exact(private_pg.url, table, busy_recording, "total")


def test_an_outage_past_the_reconnect_timeout_stops_the_run_and_resume_finishes_it(
    busy_recording, private_pg, tmp_path
):
    events, table = events_in(busy_recording), "results"
    args = ["--input", str(busy_recording), "--output", private_pg.table_url(table), *RUN]
    with Background([*args, "--output-reconnect-timeout", "2"], tmp_path) as run:
        wait_until(lambda: row_count(private_pg.url, table) >= events // 4, timeout=120, message="a quarter written")
        private_pg.stop("immediate")
        began = time.monotonic()
        code = run.wait(timeout=60)
        took = time.monotonic() - began
    assert code == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert not_ours(run.stderr) == [], run.stderr
    final = [line for line in run.stderr.splitlines() if line.startswith("stream-processor:")]
    assert len(final) == 1, run.stderr
    assert "lost" in final[0] and "for 2 s" in final[0] and "--resume" in final[0], final[0]
    assert 2 <= took < 30, f"the run stopped {took:.1f} s after PostgreSQL"

    private_pg.start()
    stored = assert_checkpoint_covers_the_rows(private_pg.url, table)
    assert events // 4 <= stored["lines"] < events
    with Background([*args, "--resume"], tmp_path) as run:
        code = run.wait(timeout=180)
    assert code == 0, run.stderr
    assert_exact(private_pg.url, table, busy_recording, "total")


def test_the_sink_gives_up_past_its_reconnect_timeout_and_a_resumed_sink_continues_exactly(private_pg):
    """In process: offsets written out of order (a `beyond` set), PostgreSQL gone during a
    write, DatabaseSinkError once the timeout has passed, nothing of that write committed;
    a resumed sink has the committed offsets and only those, and completes the table."""
    output = DatabaseOutput.parse(private_pg.table_url("results"))
    header = {"input": {"events": 300}, "task": "test", "order": "none"}
    offsets = list(range(300))
    random.Random(5).shuffle(offsets)
    lines = [(offset, json.dumps({"id": offset, "wait": 0}).encode()) for offset in offsets]
    sink = PostgresSink(output, header, reconnect_timeout_s=1.5)
    try:
        sink.write(lines[:100])
        sink.write(lines[100:140])
        private_pg.stop("immediate")
        began = time.monotonic()
        with pytest.raises(DatabaseSinkError, match=r"lost .* for 1\.5 s"):
            sink.write(lines[140:200])
        took = time.monotonic() - began
    finally:
        sink.close()
    assert 1.5 <= took < 15, took
    private_pg.start()
    committed = {offset for offset, _ in lines[:140]}
    stored = assert_checkpoint_covers_the_rows(private_pg.url, "results")
    assert stored["lines"] == 140 and stored["beyond"], stored
    with PostgresSink(output, header, resume=True) as resumed:
        assert {offset for offset in range(300) if offset in resumed.done} == committed
        resumed.write([(offset, line) for offset, line in lines if offset not in resumed.done])
    stored = assert_checkpoint_covers_the_rows(private_pg.url, "results")
    assert (stored["lines"], stored["low_watermark"], stored["beyond"]) == (300, 300, [])
    rows = rows_of(private_pg.url, "results")
    assert [offset for offset, _, _, _ in rows] == offsets
    assert all(record == {"id": offset, "wait": 0} for offset, _, _, record in rows)
