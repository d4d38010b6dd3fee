"""Two stages: stage 1 scores a recording into PostgreSQL, `serve --follow` serves its rows
as they are committed, and stage 2 consumes that stream into its own output. Each stage is
killed (-9) once mid-run and resumed; stage 2's final output must be exact.

With the reference task a line is its event, so stage 2's output must equal the recording
byte for byte, and stage 1's table must hold every event once, in order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream_processor.sources.generate import generate_file
from tests.chaos.test_failures import finish, lines_of, started
from tests.conftest import wait_until

pytestmark = pytest.mark.heavy

EVENTS_AT_LEAST = 150


def rows_in(url: str, table: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if exists else 0


def follow_url(process: subprocess.Popen) -> str:
    line = process.stdout.readline()
    assert line.startswith("serving "), line
    return line.split()[1].removesuffix("/rc") + "/v2/stream/recentchange"


def test_stage_two_consumes_stage_ones_live_results_and_both_survive_a_kill(
    tmp_path: Path, postgres_url: str, pg_table: str, broker_flag: list[str]
):
    recording = tmp_path / "recording.json"
    generate_file(recording, minutes=1.5, rate=2.0, seed=31)
    events = len(lines_of(recording))
    assert events >= EVENTS_AT_LEAST
    stage1_output = f"{postgres_url}?table={pg_table}"
    stage1 = ["--input", str(recording), "--output", stage1_output, "--time-scale", "0.03", "--workers", "3"]
    stage1 += [*broker_flag, "--no-progress"]
    stage2_output = tmp_path / "stage2.json"

    with started(["--follow", stage1_output, "--port", "0"], tmp_path, script="socket_server.py") as (server, _):
        url = follow_url(server)
        stage2 = ["--url", url, "--output", str(stage2_output), "--workers", "3", "--time-scale", "0.03"]
        stage2 += [*broker_flag, "--no-progress"]
        with (
            started(stage1, tmp_path) as (first, _),
            started(stage2, tmp_path, script="socket_client.py") as (
                second,
                _,
            ),
        ):
            # Stage 1 dies a third of the way in; stage 2 keeps what it has, and waits for more.
            wait_until(
                lambda: rows_in(postgres_url, pg_table) >= events // 3, timeout=120, message="stage 1 a third in"
            )
            first.kill()
            first.communicate()
            killed_at = rows_in(postgres_url, pg_table)
            assert killed_at < events, "stage 1 finished before it could be killed"
            with started([*stage1, "--resume"], tmp_path) as (resumed, _):
                # Stage 2 dies half way through what it will read, while stage 1 still writes.
                wait_until(lambda: len(lines_of(stage2_output)) >= events // 2, timeout=120, message="stage 2 half way")
                second.kill()
                second.communicate()
                assert len(lines_of(stage2_output)) < events, "stage 2 finished before it could be killed"
                with started([*stage2, "--resume"], tmp_path, script="socket_client.py") as (resumed2, _):
                    code1, err1 = finish(resumed, timeout=180)
                    code2, err2 = finish(resumed2, timeout=180)
        assert server.poll() is None, "the follow server died"
    assert code1 == 0, err1
    assert code2 == 0, err2
    assert stage2_output.read_bytes() == recording.read_bytes()
    verified = subprocess.run(
        [*_cli(), "verify", str(recording), stage1_output], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stderr
    assert rows_in(postgres_url, pg_table) == events


def _cli() -> list[str]:
    return [sys.executable, "-m", "stream_processor"]
