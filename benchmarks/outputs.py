"""The PostgreSQL output beside the file output, in the same invocation, on the same events.

- throughput: `postgres_events` zero-wait events in file mode (run.py), to a file and to a
  table: events/s of each and their ratio (target: the table keeps >= 50 %);
- latency at real time: the recording streamed paced by its timestamps (run_streaming.py
  --realtime, at the benchmark's speed and time scale: 1x at full scale) to a file and to a
  table: each line's latency (arrival to written) p50/p99 for both, and what the output's
  own writes took (the run's `output_write_s`: for a table, its commit), whose p99 is the
  latency the output adds (target <= 20 ms);
- a followed output: a line's delay from its commit to a client of `serve --follow`
  (harness/follow_latency.py), file and table (target <= 50 ms p99).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import ideals
from benchmarks.brokers import Broker
from benchmarks.runs import RunFailed, run_and_report
from harness.postgres_instance import drop_output_table

POSTGRES_URL_ENV = "STREAM_PROCESSOR_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
THROUGHPUT_SHARE_TARGET = 0.5
ADDED_LATENCY_TARGET_S = 0.020
FOLLOW_LATENCY_TARGET_S = 0.050


def postgres_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


@contextmanager
def scratch_table(prefix: str) -> Iterator[str]:
    """A fresh table name for one run, dropped (with its checkpoint row) afterwards."""
    table = f"bench_{prefix.replace('-', '_')}_{uuid.uuid4().hex[:10]}"
    try:
        yield table
    finally:
        drop_output_table(postgres_url(), table)


def output_runs(
    workspace, broker: Broker, name: str, script: str, args: list[str], events: int, timeout_s: float
) -> dict[str, dict[str, Any]]:
    """The same run to a file and to a table: their reports, by output kind."""
    reports = {}
    for kind in ("file", "postgresql"):
        run_name = f"{name}-{broker.kind}-{kind}"
        with scratch_table(name) as table:
            file_output = workspace.output(run_name)
            output = str(file_output) if kind == "file" else f"{postgres_url()}?table={table}"
            try:
                run_args = [*args, "--output", output, *broker.run_flags()]
                reports[kind] = run_and_report(script, run_args, workspace.directory, run_name, timeout_s)
            finally:
                file_output.unlink(missing_ok=True)
        if reports[kind]["events"] != events:
            raise RunFailed(f"{run_name}: {reports[kind]['events']} events written, {events} expected")
    return reports


def throughput_rows(broker: Broker, workspace, count: int, timeout_s: float) -> list[dict[str, Any]]:
    workers = workspace.settings.stream_workers
    args = ["--input", str(workspace.zero_wait(count)), "--workers", str(workers)]
    reports = output_runs(workspace, broker, "output-throughput", "run.py", args, count, timeout_s)
    rates = {kind: report["events"] / report["span_s"] for kind, report in reports.items()}
    return [
        {
            "broker": broker.kind,
            "figure": "throughput, file mode, zero-wait",
            "events": count,
            "workers": workers,
            "file_events_per_s": round(rates["file"], 1),
            "postgresql_events_per_s": round(rates["postgresql"], 1),
            "share": round(rates["postgresql"] / rates["file"], 4),
            "target_share": THROUGHPUT_SHARE_TARGET,
            "file_write_p99_ms": _ms(reports["file"]["output_write_s"]["p99"]),
            "postgresql_write_p99_ms": _ms(reports["postgresql"]["output_write_s"]["p99"]),
            **shown(
                f"{rates['file']:.0f} ev/s",
                f"{rates['postgresql']:.0f} ev/s",
                f"{rates['postgresql'] / rates['file']:.1%} kept",
                f">= {THROUGHPUT_SHARE_TARGET:.0%}",
            ),
        }
    ]


def realtime_rows(broker: Broker, workspace, timeout_s: float) -> list[dict[str, Any]]:
    settings, recording = workspace.settings, workspace.recording
    workers = settings.stream_workers
    args = ["--input", str(recording.path), "--realtime", "--speed", str(settings.speed)]
    args += ["--time-scale", str(settings.time_scale), "--workers", str(workers)]
    reports = output_runs(workspace, broker, "output-realtime", "run_streaming.py", args, len(recording), timeout_s)
    durations = recording.durations(settings.time_scale)
    arrivals = ideals.paced_arrivals(recording.timestamps, settings.speed)
    ideal_p99 = ideals.quantile(ideals.latencies(durations, workers, arrivals), 0.99)
    file, table = reports["file"], reports["postgresql"]
    return [
        {
            "broker": broker.kind,
            "figure": f"latency, streaming at {settings.speed:g}x (time scale {settings.time_scale:g})",
            "events": len(recording),
            "ideal_latency_p99_s": round(ideal_p99, 4),
            "file_latency_p99_s": file["latency_s"]["p99"],
            "postgresql_latency_p99_s": table["latency_s"]["p99"],
            "file_write_p99_ms": _ms(file["output_write_s"]["p99"]),
            "postgresql_write_p99_ms": _ms(table["output_write_s"]["p99"]),
            "added_p99_ms": _ms(table["output_write_s"]["p99"] - file["output_write_s"]["p99"]),
            "target_added_p99_ms": _ms(ADDED_LATENCY_TARGET_S),
            **shown(
                f"p99 {file['latency_s']['p99']:.3f} s (writes p99 {_ms(file['output_write_s']['p99']):.2f} ms)",
                f"p99 {table['latency_s']['p99']:.3f} s (commits p99 {_ms(table['output_write_s']['p99']):.2f} ms)",
                f"adds {_ms(table['output_write_s']['p99'] - file['output_write_s']['p99']):.2f} ms p99 "
                f"(ideal p99 {ideal_p99:.3f} s)",
                f"<= {_ms(ADDED_LATENCY_TARGET_S):.0f} ms",
            ),
        }
    ]


def follow_rows(lines: int, rate: float) -> list[dict[str, Any]]:
    """A line's delay from its commit to a client of `serve --follow`, file beside table."""
    from functools import partial

    from harness.follow_latency import measure
    from stream_processor.output.database import DatabaseOutput
    from stream_processor.output.postgres_sink import PostgresSink
    from stream_processor.output.sink import JsonlSink

    rows = []
    for async_mode in ("eventlet", "asyncio"):
        with tempfile.TemporaryDirectory(prefix="stream-processor-follow-") as work:
            path = Path(work) / "output.json"
            file = measure(str(path), partial(JsonlSink, path), lines, rate, async_mode)
        with scratch_table("follow") as table:
            url = f"{postgres_url()}?table={table}"
            table_latencies = measure(url, partial(PostgresSink, DatabaseOutput.parse(url)), lines, rate, async_mode)
        if len(file) != lines or len(table_latencies) != lines:
            raise RunFailed(f"follow: {len(file)} and {len(table_latencies)} of {lines} lines arrived")
        p99 = {"file": _quantile(file, 0.99), "postgresql": _quantile(table_latencies, 0.99)}
        rows.append(
            {
                "broker": "-",
                "figure": f"serve --follow ({async_mode}): commit to client, {lines} lines at {rate:g}/s",
                "file_p50_ms": _ms(_quantile(file, 0.5)),
                "file_p99_ms": _ms(p99["file"]),
                "postgresql_p50_ms": _ms(_quantile(table_latencies, 0.5)),
                "postgresql_p99_ms": _ms(p99["postgresql"]),
                "target_p99_ms": _ms(FOLLOW_LATENCY_TARGET_S),
                **shown(
                    f"p50 {_ms(_quantile(file, 0.5)):.1f} ms, p99 {_ms(p99['file']):.1f} ms",
                    f"p50 {_ms(_quantile(table_latencies, 0.5)):.1f} ms, p99 {_ms(p99['postgresql']):.1f} ms",
                    f"worst p99 {_ms(max(p99.values())):.1f} ms",
                    f"<= {_ms(FOLLOW_LATENCY_TARGET_S):.0f} ms p99",
                ),
            }
        )
    return rows


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def shown(file: str, postgresql: str, result: str, target: str) -> dict[str, str]:
    """A row's cells as the table prints them (the figures beside them go to the JSON)."""
    return {"file_shown": file, "postgresql_shown": postgresql, "result_shown": result, "target_shown": target}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
