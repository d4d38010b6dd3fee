"""The figures as text tables on stdout, each measured figure beside its ideal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Cell = Callable[[dict[str, Any]], str]
Column = tuple[str, Cell]  # header, how a row shows in it


def figure(key: str, spec: str = "", prefix: str = "") -> Cell:
    """The row's figure `key`, formatted with `spec`; "-" when the run has none."""
    return lambda row: "-" if row.get(key) is None else prefix + format(row[key], spec)


def median_and_range(key: str, runs: str) -> Cell:
    """A median with the lowest and highest of the runs it is the median of."""
    return lambda row: f"{row[key]:.0f} ({min(row[runs]):.0f}-{max(row[runs]):.0f})"


def two(first: str, second: str, spec: str) -> Cell:
    return lambda row: f"{format(row[first], spec)} / {format(row[second], spec)}"


def rss_at_checkpoints(row: dict[str, Any]) -> str:
    return " / ".join(f"{point['rss_mb']:.1f}" for point in row["checkpoints"]) or "-"


BROKER, WORKERS = ("broker", figure("broker")), ("W", figure("workers", "d"))
RUN = [BROKER, WORKERS, ("events", figure("events", "d"))]  # what every table but realtime starts with
ORDER_COLUMNS: list[Column] = [
    BROKER,
    WORKERS,
    ("order", figure("order")),
    ("p50 s", figure("latency_p50_s", ".3f")),
    ("ideal p50", figure("ideal_latency_p50_s", ".3f")),
    ("p99 s", figure("latency_p99_s", ".3f")),
    ("ideal p99", figure("ideal_latency_p99_s", ".3f")),
    ("excess p50 s", figure("excess_p50_s", ".3f")),
    ("excess p99 s", figure("excess_p99_s", ".3f")),
    ("target", figure("target_excess_s", ".3f", prefix="<= ")),
]
COLUMNS: dict[str, list[Column]] = {
    "batch": [
        *RUN,
        ("span s", figure("span_s", ".3f")),
        ("ideal s", figure("ideal_span_s", ".3f")),
        ("efficiency", figure("efficiency", ".1%")),
    ],
    "realtime": [
        BROKER,
        WORKERS,
        ("span s", figure("span_s", ".3f")),
        ("ideal s", figure("ideal_span_s", ".3f")),
        ("lateness s", figure("lateness_s", ".3f")),
        ("p50 s", figure("latency_p50_s", ".3f")),
        ("ideal p50", figure("ideal_latency_p50_s", ".3f")),
        ("p99 s", figure("latency_p99_s", ".3f")),
        ("ideal p99", figure("ideal_latency_p99_s", ".3f")),
        ("excess p99 s", figure("excess_p99_s", ".3f")),
    ],
    "throughput": [
        *RUN,
        ("mode", figure("mode")),
        ("pipeline ev/s", figure("pipeline_events_per_s", ".0f")),
        ("celery floor ev/s", figure("floor_events_per_s", ".0f")),
        ("ratio", figure("ratio", ".2f")),
        ("target", figure("target_ratio", ".2f", prefix=">= ")),
    ],
    "short": [
        *RUN,
        ("pool", figure("pool")),
        ("batching", figure("batching")),
        ("span s", figure("span_s", ".3f")),
        ("ideal s", figure("ideal_span_s", ".3f")),
        ("efficiency", figure("efficiency", ".1%")),
        ("target", figure("target", ".0%", prefix=">= ")),
    ],
    "high-concurrency": [
        *RUN,
        ("pool", figure("pool")),
        ("span s", figure("span_s", ".3f")),
        ("ideal s", figure("ideal_span_s", ".3f")),
        ("excess", figure("excess", "+.1%")),
        ("target", figure("target_excess", ".0%", prefix="<= ")),
    ],
    "heavy-tail": [
        BROKER,
        WORKERS,
        ("order", figure("order")),
        ("batching", figure("batching")),
        ("span s", figure("span_s", ".3f")),
        ("ideal s", figure("ideal_span_s", ".3f")),
        ("p99 s", figure("latency_p99_s", ".3f")),
        ("ideal p99", figure("ideal_latency_p99_s", ".3f")),
        ("results/msg", figure("results_per_message", ".2f")),
        ("handed back", figure("handed_back", "d")),
        ("worst wait before slow s", figure("worst_wait_before_slow_s", ".3f")),
    ],
    "order": ORDER_COLUMNS,
    "order-batch": ORDER_COLUMNS,
    "dashboard": [
        *RUN,
        ("without page ev/s (range)", median_and_range("without_page_events_per_s", "runs_without_page")),
        ("with page ev/s (range)", median_and_range("with_page_events_per_s", "runs_with_page")),
        ("overhead (pairs' median)", figure("overhead", "+.1%")),
        ("target", figure("target_overhead", ".0%", prefix="<= ")),
        ("run CPU s without / with", two("run_cpu_s_without_page", "run_cpu_s_with_page", ".2f")),
        ("browser CPU s", figure("browser_cpu_s", ".2f")),
        ("runs", figure("repeats", "d", prefix="2 x ")),
    ],
    "memory": [
        *RUN,
        ("RSS MB at checkpoints", rss_at_checkpoints),
        ("peak MB", figure("peak_rss_mb", ".1f")),
        ("growth", figure("growth", "+.1%")),
        ("target", figure("target_growth", ".0%", prefix="<= ")),
    ],
    "server-rate": [
        ("mode", figure("async_mode")),
        ("transport", figure("transport")),
        ("client", figure("client")),
        ("events", figure("events", "d")),
        ("events/s", figure("events_per_s", ",d")),
        ("target", figure("target_events_per_s", ",d", prefix=">= ")),
    ],
    "postgres": [
        BROKER,
        ("figure", figure("figure")),
        ("file output", figure("file_shown")),
        ("PostgreSQL output", figure("postgresql_shown")),
        ("result", figure("result_shown")),
        ("target", figure("target_shown")),
    ],
    "task-events": [
        *RUN,
        ("batching", figure("batching")),
        ("events off ev/s", figure("off_events_per_s", ".0f")),
        ("events on ev/s", figure("on_events_per_s", ".0f")),
        ("kept", figure("kept", ".1%")),
    ],
    "follow": [
        ("figure", figure("figure")),
        ("file output", figure("file_shown")),
        ("PostgreSQL output", figure("postgresql_shown")),
        ("result", figure("result_shown")),
        ("target", figure("target_shown")),
    ],
    "cluster": [
        ("fault", figure("fault")),
        ("ok", lambda row: "yes" if row["ok"] else "NO"),
        ("wall s", figure("wall_s", ".1f")),
        ("before ev/s", figure("before_events_per_s", ".1f")),
        ("back to 90% s", figure("recovery_s", ".1f")),
        ("target", lambda row: "<= 30" if row["fault"] == "link-cut" else "-"),
        ("lost", figure("lost", "d")),
        ("dup written", figure("duplicates_written", "d")),
        ("late replies dropped", figure("late_replies_dropped", "d")),
        ("dup completions dropped", figure("duplicates_dropped", "d")),
    ],
    "server-pacing": [
        ("mode", figure("async_mode")),
        ("clients", figure("clients", "d")),
        ("paced events", figure("paced_events", "d")),
        ("p50 ms", figure("pacing_p50_ms", ".1f")),
        ("p99 ms", figure("pacing_p99_ms", ".1f")),
        ("max ms", figure("pacing_max_ms", ".1f")),
        ("target p99", figure("target_p99_ms", ".0f", prefix="<= ")),
    ],
}


def titles(results: dict[str, Any]) -> dict[str, str]:
    settings = results["settings"]
    recording = f"{settings['recording']} ({results['recording_events']} events)"
    checkpoints = "/".join(str(checkpoint) for checkpoint in settings["memory_checkpoints"])
    return {
        "batch": f"batch: file mode (run.py) on {recording}, time scale {settings['time_scale']:g}; "
        "ideal = zero-overhead FIFO makespan, efficiency = ideal / span",
        "realtime": f"realtime: run_streaming.py --realtime --speed {settings['speed']:g} on {recording}, "
        f"time scale {settings['time_scale']:g}; ideal = zero-overhead run on the paced arrivals, "
        "latencies per event, in order",
        "throughput": f"throughput: {settings['throughput_events']} zero-wait events, streaming (run_streaming.py) "
        "and file mode (run.py), batching on and off, vs raw Celery one task per event (send_task + rpc:// "
        "results, same broker and concurrency); ratio = pipeline / floor",
        "short": f"short tasks: file mode on {recording}, time scale {settings['short_time_scale']:g}, "
        "each pool (threads first: the one that fits a task that sleeps; prefork up to W=64, and with "
        "--batch-max 1 at the smallest W); ideal = zero-overhead FIFO makespan, efficiency = ideal / span",
        "high-concurrency": f"high concurrency: file mode on {recording}, time scale {settings['time_scale']:g}, "
        f"W={settings['high_workers']} in the threads pool; ideal = zero-overhead FIFO makespan, "
        "excess = span / ideal - 1",
        "heavy-tail": f"heavy tail: file mode on {recording}, each event {settings['heavy_short_s']:g} s but "
        f"offset {settings['heavy_slow_offset']} ({settings['heavy_slow_s']:g} s), W={settings['heavy_workers']}, "
        "default batches beside --batch-max 1; targets: none p99 within 50 ms and span within 1 % of --batch-max "
        "1's; total: each event before the slow one written within 100 ms of its own end (worst wait)",
        "order": f"order: run_streaming.py --realtime --speed {settings['speed']:g} --order MODE on {recording}, "
        f"time scale {settings['time_scale']:g}; ideal = the zero-overhead run of the same mode on the paced "
        "arrivals; latency per event, arrival to written",
        "order-batch": f"order, file mode: run.py --workers W --order MODE on {recording}, time scale "
        f"{settings['time_scale']:g}; ideal = the zero-overhead run of the same mode, every event there at 0; "
        "latency per event, read to written",
        "memory": f"memory: streaming client (run_streaming.py main process) RSS on {settings['memory_events']} "
        f"zero-wait events, at {checkpoints} lines written; ideal = flat, growth = last / first checkpoint - 1",
        "dashboard": f"dashboard: {settings['dashboard_events']} zero-wait events through run.py with its live page "
        "open in headless Chromium vs the same run without it, in back-to-back pairs; overhead = 1 - with / without",
        "server-rate": f"server rate: {settings['server_rate_events']} zero-wait events to one client, no pacing, "
        "first event to end; node = socket.io-client (plain RCStream) or npm eventsource, "
        "ours = ReplayClient (batch 100) or EventStreamClient, inbox drained only",
        "cluster": f"cluster: {settings['recording']} on {settings['cluster_hosts']} worker hosts x "
        f"{settings['cluster_concurrency']} processes (network namespaces, private RabbitMQ), time scale "
        f"{settings['cluster_time_scale']:g}, each fault when a quarter of the lines are out; before = lines/s in "
        "the 10 s before it; back to 90% = from the fault to the first moment the next 5 s run at >= 90 % of before",
        "postgres": f"postgres: the PostgreSQL output beside the file output, same events and workers, back to "
        f"back: {settings['postgres_events']} zero-wait events in file mode; the recording streamed with "
        f"--realtime --speed {settings['speed']:g}, time scale {settings['time_scale']:g} (the output adds the "
        "time its writes take: a table's commits)",
        "task-events": f"task events: {settings['throughput_events']} zero-wait events in file mode with Celery's "
        "task events off, then on (--task-events), back to back, nothing listening; kept = on / off",
        "follow": f"follow: serve --follow of an output written one line at a time, {settings['follow_lines']} lines "
        f"at {settings['follow_rate']:g} a second, read by the project's SSE client; a line's delay from its commit "
        "(the write returned) to its arrival, one clock",
        "server-pacing": f"server pacing: {settings['pacing_clients']} clients at 1x (half socket.io-client, half "
        f"npm eventsource, one Node process), the first {settings['pacing_events']} events of "
        f"{settings['recording']}; the server's lateness per event (/status)",
    }


def render(results: dict[str, Any]) -> str:
    scenario_titles = titles(results)
    blocks = []
    for scenario, rows in results["scenarios"].items():
        blocks.append(f"{scenario_titles[scenario]}\n{_table(COLUMNS[scenario], rows)}")
    blocks.append(_footer(results))
    return "\n\n".join(blocks)


def _table(columns: list[Column], rows: list[dict[str, Any]]) -> str:
    lines = [[header for header, _ in columns]]
    failures = []
    for row in rows:
        if "error" in row:
            failures.append(f"  {row['broker']}: FAILED: {row['error']}")
        elif "skipped" in row:
            failures.append(f"  {row.get('broker', '-')}: skipped: {row['skipped']}")
        else:
            lines.append([cell(row) for _, cell in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    text = ["  " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(text + failures)


def _footer(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"machine: {machine['cores']} cores, Python {machine['python']}, {machine['platform']}; "
        f"took {results['elapsed_s']:.0f} s" + (" (smoke scale)" if results["settings"]["smoke"] else ""),
    ]
    lines += [f"{kind} skipped: {reason}" for kind, reason in results["skipped"].items()]
    return "\n".join(lines)
