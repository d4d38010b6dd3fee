"""The benchmark harness (`python -m benchmarks`): its ideal arithmetic, and smoke runs that
check every scenario reports measured figures beside sane ideals. How fast the project is
lives in the benchmarks, not here: nothing below asserts a speed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, cli_env, processes_with_marker, wait_until

SCENARIOS = {
    "batch",
    "realtime",
    "throughput",
    "heavy-tail",
    "short",
    "high-concurrency",
    "order",
    "order-batch",
    "memory",
    "dashboard",
    "server-rate",
    "server-pacing",
}
OUTPUT_SCENARIOS = {"postgres", "follow"}  # their own test: they need PostgreSQL
WITHOUT_BROKER = {"server-rate", "server-pacing", "follow"}


@pytest.fixture
def harness():
    """The `benchmarks` package: it lives at the repository root (on pytest's pythonpath), not installed."""
    return importlib.import_module("benchmarks.ideals"), importlib.import_module("benchmarks.memory")


# -- the harness's own arithmetic ---------------------------------------------------------


def test_paced_arrivals_divide_timestamps_by_speed_and_never_go_back(harness):
    ideals, _ = harness
    assert ideals.paced_arrivals([100, 104, 102, 110], speed=2) == [0, 2, 2, 5]
    assert ideals.paced_arrivals([100, 101, 103], speed=1) == [0, 1, 3]


def test_an_event_without_timestamp_arrives_with_the_one_ahead(harness):
    ideals, _ = harness
    assert ideals.paced_arrivals([None, 10, None, 12], speed=1) == [0, 0, 0, 2]


def test_makespan_is_the_last_release_with_every_event_there_at_zero(harness):
    ideals, _ = harness
    assert ideals.makespan([2, 1, 1, 1], workers=2) == 3
    assert ideals.makespan([3, 1, 2], workers=1) == 6
    assert ideals.makespan([], workers=4) == 0


def test_span_counts_from_the_first_arrival_and_latency_from_each_arrival(harness):
    ideals, _ = harness
    assert ideals.span([1, 1], workers=2, arrivals=[0, 10]) == 11
    # A short event behind a long one is released with it: its latency includes the wait.
    assert ideals.latencies([1, 5, 1, 1], workers=2, arrivals=[0, 0, 0, 0]) == [1, 5, 5, 5]
    assert ideals.latencies([2, 2], workers=1, arrivals=[0, 1]) == [2, 3]


def test_quantile_is_nearest_rank(harness):
    ideals, _ = harness
    values = list(range(1, 101))
    assert ideals.quantile(values, 0.5) == 50
    assert ideals.quantile(values, 0.99) == 99
    assert ideals.quantile(values, 1.0) == 100
    assert ideals.quantile([7.5], 0.99) == 7.5
    assert ideals.quantile([], 0.5) == 0


def test_rss_checkpoints_take_the_first_sample_past_each_and_growth_compares_last_with_first(harness):
    _, memory = harness
    mb = 1024
    sampler = memory.RssSampler(ROOT / "unused", checkpoints=(500, 1250, 5000))
    sampler.samples = [(0, 40 * mb), (600, 100 * mb), (1300, 105 * mb), (4000, 108 * mb), (5000, 110 * mb)]
    sampler.peak_kb = 112 * mb
    figures = sampler.figures()
    assert [(point["lines"], point["rss_mb"]) for point in figures["checkpoints"]] == [
        (600, 100),
        (1300, 105),
        (5000, 110),
    ]
    assert figures["growth"] == pytest.approx(0.1)
    assert figures["peak_rss_mb"] == 112


def test_line_counter_counts_only_what_was_added(harness, tmp_path):
    _, memory = harness
    output = tmp_path / "out.json"
    counter = memory.LineCounter(output)
    assert counter.update() == 0  # not created yet
    output.write_bytes(b"a\nb\n")
    assert counter.update() == 2
    with open(output, "ab") as stream:
        stream.write(b"c\nd")
    assert counter.update() == 3  # a torn last line is not a line yet


# -- smoke runs ---------------------------------------------------------------------------


def run_benchmarks(args: list[str], tmp_path, timeout: float) -> dict:
    """`python -m benchmarks --smoke ARGS` as a real process; nothing it started may be left."""
    marker = uuid.uuid4().hex
    env = cli_env(marker)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    figures = tmp_path / "bench.json"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(figures), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        wait_until(lambda: not processes_with_marker(marker), timeout=15, message="no process left behind")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(figures.read_text())


def positive(*values) -> bool:
    return all(isinstance(value, int | float) and value > 0 for value in values)


def test_smoke_benchmark_reports_every_scenario_beside_its_ideal(tmp_path):
    # Every scenario, on the embedded broker: about six minutes on 2 cores, more beside other tests.
    results = run_benchmarks(["--brokers", "embedded", "--only", ",".join(sorted(SCENARIOS))], tmp_path, timeout=900)
    assert set(results["scenarios"]) == SCENARIOS
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert results["settings"]["smoke"] is True
    for name, rows in results["scenarios"].items():
        assert rows, f"{name} has no figures"
        broker = "-" if name in WITHOUT_BROKER else "embedded"
        assert all("error" not in row and row["broker"] == broker for row in rows), rows
    _check_batch(results)
    _check_realtime(results)
    _check_throughput(results)
    _check_short(results)
    _check_high_concurrency(results)
    _check_heavy_tail(results)
    _check_order(results)
    _check_order_batch(results)
    _check_memory(results)
    _check_dashboard(results)
    _check_server(results)


@pytest.mark.heavy
def test_smoke_benchmark_puts_the_postgresql_output_and_a_followed_output_beside_the_file(tmp_path, postgres_url):
    args = ["--brokers", "embedded", "--only", "postgres,follow", "--postgres-events", "2000"]
    results = run_benchmarks(args, tmp_path, timeout=600)
    assert set(results["scenarios"]) == OUTPUT_SCENARIOS
    for name, rows in results["scenarios"].items():
        broker = "-" if name in WITHOUT_BROKER else "embedded"
        assert rows and all("error" not in row and row["broker"] == broker for row in rows), rows
    _check_outputs(results)


def test_smoke_benchmark_puts_a_run_with_task_events_beside_one_without(tmp_path):
    results = run_benchmarks(["--brokers", "embedded", "--only", "task-events"], tmp_path, timeout=600)
    rows = results["scenarios"]["task-events"]
    assert [row["batching"] for row in rows] == ["batches (default)", "--batch-max 1"]
    for row in rows:
        assert "error" not in row and row["broker"] == "embedded" and row["events"] > 0
        assert positive(row["off_events_per_s"], row["on_events_per_s"])
        assert row["kept"] == pytest.approx(row["on_events_per_s"] / row["off_events_per_s"], rel=0.01)


def _check_outputs(results: dict) -> None:
    throughput, realtime = results["scenarios"]["postgres"]
    assert throughput["events"] == results["settings"]["postgres_events"]
    assert positive(throughput["file_events_per_s"], throughput["postgresql_events_per_s"])
    share = throughput["postgresql_events_per_s"] / throughput["file_events_per_s"]
    assert throughput["share"] == pytest.approx(share, rel=0.01)
    assert realtime["events"] == results["recording_events"]
    assert positive(realtime["ideal_latency_p99_s"], realtime["postgresql_latency_p99_s"])
    assert realtime["postgresql_write_p99_ms"] > 0  # a commit takes time; the figure is measured, not made up
    added = realtime["postgresql_write_p99_ms"] - realtime["file_write_p99_ms"]
    assert realtime["added_p99_ms"] == pytest.approx(added, abs=0.01)
    rows = results["scenarios"]["follow"]
    assert [row["figure"].split("(")[1].split(")")[0] for row in rows] == ["eventlet", "asyncio"]
    for row in rows:
        assert 0 < row["file_p50_ms"] <= row["file_p99_ms"]
        assert 0 < row["postgresql_p50_ms"] <= row["postgresql_p99_ms"]


def _check_server(results: dict) -> None:
    measured = [row for row in results["scenarios"]["server-rate"] if "skipped" not in row]
    clients = {"node", "ours"} if len(measured) == 8 else {"ours"}  # node rows skip without node
    assert {(r["async_mode"], r["transport"], r["client"]) for r in measured} == {
        (mode, transport, client)
        for mode in ("eventlet", "asyncio")
        for transport in ("socket.io", "sse")
        for client in clients
    }
    for row in measured:
        assert row["events"] == results["settings"]["server_rate_events"]
        assert row["events_per_s"] == pytest.approx(row["events"] / row["seconds"], rel=0.01)
    for row in results["scenarios"]["server-pacing"]:
        if "skipped" not in row:
            assert row["paced_events"] == row["events"] == row["clients"] * results["settings"]["pacing_events"]
            assert 0 <= row["pacing_p50_ms"] <= row["pacing_p99_ms"] <= row["pacing_max_ms"]


def _check_heavy_tail(results: dict) -> None:
    rows = results["scenarios"]["heavy-tail"]
    assert [(row["order"], row["batching"]) for row in rows] == [
        (order, batching) for order in ("none", "total") for batching in ("off (--batch-max 1)", "on (default)")
    ]
    for row in rows:
        assert row["events"] == results["recording_events"] and row["errors"] == 0
        assert positive(row["span_s"], row["ideal_span_s"], row["latency_p99_s"], row["ideal_latency_p99_s"])
        assert row["span_s"] >= row["ideal_span_s"] - 0.01  # nothing beats the zero-overhead run
        assert row["results_per_message"] > 0
        assert (row["worst_wait_before_slow_s"] is None) == (row["order"] != "total")
    assert all(row["handed_back"] == 0 for row in rows if row["batching"].startswith("off"))


def _check_batch(results: dict) -> None:
    rows = results["scenarios"]["batch"]
    assert [row["workers"] for row in rows] == [4, 12, 64]
    for row in rows:
        assert row["events"] == results["recording_events"] and row["errors"] == 0
        assert positive(row["span_s"], row["ideal_span_s"])
        assert 0 < row["efficiency"] <= 1.05
        # The harness's ideal and the run's own agree: same events, same simulation.
        assert row["run_ideal_span_s"] == pytest.approx(row["ideal_span_s"], rel=0.01)


def _check_realtime(results: dict) -> None:
    (row,) = results["scenarios"]["realtime"]
    assert positive(row["span_s"], row["ideal_span_s"], row["latency_p50_s"], row["latency_p99_s"])
    assert positive(row["ideal_latency_p50_s"], row["ideal_latency_p99_s"])
    assert 0 < row["efficiency"] <= 1.05
    assert row["lateness_s"] == pytest.approx(row["span_s"] - row["ideal_span_s"], abs=1e-3)
    assert row["excess_p99_s"] == pytest.approx(row["latency_p99_s"] - row["ideal_latency_p99_s"], abs=1e-3)
    assert row["run_ideal_span_s"] == pytest.approx(row["ideal_span_s"], rel=0.01)


def _check_throughput(results: dict) -> None:
    rows = results["scenarios"]["throughput"]
    assert [row["mode"] for row in rows] == [
        "streaming, batches (default)",
        "streaming, --batch-max 1",
        "file, batches (default)",
        "file, --batch-max 1",
    ]
    for row in rows:
        assert row["events"] == results["settings"]["throughput_events"]
        assert positive(row["pipeline_events_per_s"], row["floor_events_per_s"], row["ratio"])
    assert len({row["floor_events_per_s"] for row in rows}) == 1  # one floor, measured once, for all


def _check_short(results: dict) -> None:
    rows = results["scenarios"]["short"]
    assert [(row["workers"], row["pool"], row["batching"]) for row in rows] == [
        (12, "threads", "on (default)"),
        (12, "prefork", "on (default)"),
        (12, "prefork", "off (--batch-max 1)"),
    ]
    assert [row["target"] for row in rows] == [0.95, None, None]  # the target is the sleeping task's pool's
    for row in rows:
        assert row["events"] == results["recording_events"]
        assert positive(row["span_s"], row["ideal_span_s"]) and 0 < row["efficiency"] <= 1.05


def _check_high_concurrency(results: dict) -> None:
    [row] = results["scenarios"]["high-concurrency"]
    assert (row["workers"], row["pool"], row["events"]) == (64, "threads", results["recording_events"])
    assert positive(row["span_s"], row["ideal_span_s"]) and row["span_s"] >= row["ideal_span_s"] * 0.95
    assert row["excess"] == pytest.approx(row["span_s"] / row["ideal_span_s"] - 1, abs=0.001)


def _check_order(results: dict) -> None:
    rows = {row["order"]: row for row in results["scenarios"]["order"]}
    assert set(rows) == {"total", "key:wiki,title", "none"}
    for row in rows.values():
        assert row["events"] == results["recording_events"]
        assert positive(row["latency_p50_s"], row["ideal_latency_p50_s"], row["ideal_latency_p99_s"])
        # The harness's ideal and the run's own agree (same mode, same arrivals), within a bucket.
        assert row["run_ideal_latency_s"]["p50"] == pytest.approx(row["ideal_latency_p50_s"], rel=0.02, abs=0.002)
    # The modes rank as they must: per key or no order never waits longer than total order.
    assert rows["key:wiki,title"]["ideal_latency_p50_s"] <= rows["total"]["ideal_latency_p50_s"]
    assert rows["none"]["ideal_latency_p50_s"] <= rows["key:wiki,title"]["ideal_latency_p50_s"] + 1e-9


def _check_order_batch(results: dict) -> None:
    rows = results["scenarios"]["order-batch"]
    assert [(row["workers"], row["order"]) for row in rows] == [
        (12, "total"),
        (12, "key:wiki,title"),
        (12, "none"),
    ]
    for row in rows:
        assert row["events"] == results["recording_events"] and row["errors"] == 0
        assert positive(row["latency_p50_s"], row["ideal_latency_p50_s"], row["ideal_latency_p99_s"])
        assert row["run_ideal_latency_s"]["p50"] == pytest.approx(row["ideal_latency_p50_s"], rel=0.02, abs=0.002)
    by_order = {row["order"]: row for row in rows}
    assert by_order["key:wiki,title"]["ideal_latency_p50_s"] <= by_order["total"]["ideal_latency_p50_s"]


def _check_memory(results: dict) -> None:
    (row,) = results["scenarios"]["memory"]
    assert row["events"] == results["settings"]["memory_events"]
    checkpoints = row["checkpoints"]
    assert [point["checkpoint"] for point in checkpoints] == results["settings"]["memory_checkpoints"]
    assert checkpoints[-1]["lines"] == row["events"]
    assert all(0 < point["rss_mb"] <= row["peak_rss_mb"] < 4096 for point in checkpoints)
    assert row["growth"] == pytest.approx(checkpoints[-1]["rss_mb"] / checkpoints[0]["rss_mb"] - 1, abs=1e-3)


def _check_dashboard(results: dict) -> None:
    (row,) = results["scenarios"]["dashboard"]
    if "skipped" in row:  # no Chromium here: said so, not failed (CI installs it)
        assert "Chromium" in row["skipped"] and os.environ.get("STREAM_PROCESSOR_REQUIRE_CHROMIUM") != "1"
        return
    repeats, events = results["settings"]["dashboard_repeats"], results["settings"]["dashboard_events"]
    assert row["events"] == events and row["repeats"] == repeats
    assert len(row["runs_without_page"]) == len(row["runs_with_page"]) == repeats
    assert positive(row["without_page_events_per_s"], row["with_page_events_per_s"])
    pairs = [1 - page / none for none, page in zip(row["runs_without_page"], row["runs_with_page"], strict=True)]
    assert row["pair_overheads"] == pytest.approx(pairs, abs=1e-3)
    assert min(pairs) - 1e-3 <= row["overhead"] <= max(pairs) + 1e-3
    assert positive(row["run_cpu_s_without_page"], row["run_cpu_s_with_page"], row["browser_cpu_s"])
    # The page really watched: open before the first event, the final summary on it, no errors.
    assert row["received_when_page_opened"] == [0] * repeats
    assert row["page_final_events"] == [events] * repeats
    assert row["page_errors"] == []


@pytest.mark.rabbitmq
def test_smoke_throughput_runs_on_rabbitmq(rabbitmq_url, tmp_path):
    # RabbitMQ's own code paths in the harness: the runs' --broker and the Celery floor.
    results = run_benchmarks(
        ["--brokers", "rabbitmq", "--rabbitmq-url", rabbitmq_url, "--only", "throughput"], tmp_path, timeout=200
    )
    assert results["skipped"] == {}
    rows = results["scenarios"]["throughput"]
    assert len(rows) == 4
    for row in rows:
        assert row["broker"] == "rabbitmq" and "error" not in row, row
        assert positive(row["pipeline_events_per_s"], row["floor_events_per_s"], row["ratio"])


def test_an_unreachable_rabbitmq_is_skipped_with_the_reason(tmp_path):
    results = run_benchmarks(
        ["--brokers", "rabbitmq", "--rabbitmq-url", "amqp://guest:guest@127.0.0.1:1//", "--only", "throughput"],
        tmp_path,
        timeout=60,
    )
    assert "127.0.0.1:1 not reachable" in results["skipped"]["rabbitmq"]
    assert results["scenarios"]["throughput"] == []


def test_the_cluster_scenario_runs_only_on_request_and_its_table_shows_each_fault(harness, monkeypatch):
    # Opt-in: it needs root and takes minutes (`python -m benchmarks --only cluster`).
    cli, table = importlib.import_module("benchmarks.cli"), importlib.import_module("benchmarks.table")
    assert "cluster" not in cli.build_parser().parse_args([]).only
    assert cli.build_parser().parse_args(["--only", "cluster"]).only == ["cluster"]
    row = {"broker": "-", "fault": "link-cut", "ok": True, "wall_s": 52.0, "before_events_per_s": 18.9}
    row |= {"recovery_s": 14.5, "lost": 0, "duplicates_written": 0, "late_replies_dropped": 3, "duplicates_dropped": 1}
    settings = importlib.import_module("benchmarks.settings").FULL.as_json()
    results = {"settings": settings, "recording_events": None, "scenarios": {"cluster": [row]}, "skipped": {}}
    results["machine"], results["elapsed_s"] = {"cores": 2, "python": "3", "platform": "linux"}, 60.0
    text = table.render(results)
    assert "link-cut" in text and "14.5" in text and "<= 30" in text
