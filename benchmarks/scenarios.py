"""The scenarios. Each runs on one broker and returns rows of figures, every measured
figure beside its ideal (for throughput, beside the raw Celery floor; for the dashboard,
beside the same run without the page)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import ideals, outputs, server
from benchmarks.brokers import Broker
from benchmarks.floor import celery_floor
from benchmarks.memory import RssSampler
from benchmarks.page_watch import CpuWatch, PageWatch, both, free_port
from benchmarks.recordings import Recording, write_zero_wait_recording
from benchmarks.runs import ROOT, RunFailed, Watch, run_and_report
from benchmarks.settings import Settings
from benchmarks.tasks import ENDS_ENV
from harness.browser import HeadlessChromium, find_chromium
from stream_processor.core.records import read_records
from stream_processor.engine.workers import PREFORK_WORKERS_THAT_FIT, Pool

MEMORY_GROWTH_TARGET = 0.2  # RSS at the end of the stream within 20 % of RSS at its first checkpoint
THROUGHPUT_RATIO_TARGET = 0.9  # one task per event: the pipeline's own cost on top of Celery's
BATCHED_THROUGHPUT_TARGET = 5.0  # with batches: past Celery's per-task floor
SHORT_TASK_TARGETS = {12: 0.95, 64: 0.80, 256: 0.60}  # with SLEEPING_TASK_POOL
SLEEPING_TASK_POOL = Pool.THREADS  # the pool that fits a task that waits (README: Pools)
HIGH_CONCURRENCY_EXCESS_TARGET = 0.03  # W=256 at full scale: span within 3 % of the ideal
ORDER_MODES = ("total", "key:wiki,title", "none")
ORDER_EXCESS_TARGET_S = 0.05  # key and none: p50 and p99 within 50 ms of the same mode's ideal
DASHBOARD_OVERHEAD_TARGET = 0.02  # zero-wait throughput with the live page open: within 2 % of without
_STARTUP_S = 120.0  # generous: a run starts a broker, workers and maybe a server before its first event
_SLOWEST_EVENTS_PER_S = 50.0  # a zero-wait run slower than this counts as stuck


@dataclass
class Workspace:
    """Where a benchmark's files go, and the recordings its scenarios share."""

    directory: Path
    settings: Settings
    _recording: Recording | None = field(default=None, init=False)
    _zero_wait: dict[int, Path] = field(default_factory=dict, init=False)  # by number of events

    @property
    def recording(self) -> Recording:
        if self._recording is None:
            self._recording = Recording.load(self.settings.recording)
        return self._recording

    def zero_wait(self, events: int) -> Path:
        if events not in self._zero_wait:
            path = self.directory / f"zero-wait-{events}.json"
            self._zero_wait[events] = write_zero_wait_recording(path, events)
        return self._zero_wait[events]

    def output(self, name: str) -> Path:
        """Where run `name` writes its results."""
        return self.directory / f"{name}.out.json"


class LineTimes:
    """When each line of a file appears (the wall clock), watched every millisecond or two
    on a thread while the `with` block runs."""

    POLL_S = 0.001

    def __init__(self, path: Path) -> None:
        self.path = path
        self.at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> LineTimes:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        stream = None
        try:
            while True:
                stopping = self._stop.is_set()  # one last look after the run, then done
                if stream is None and self.path.exists():
                    stream = open(self.path, "rb")  # noqa: SIM115 - kept open across polls, closed below
                if stream is not None:
                    new_lines = stream.read().count(b"\n")  # only what was appended since
                    self.at += [time.time()] * new_lines
                if stopping:
                    return
                self._stop.wait(self.POLL_S)
        finally:
            if stream is not None:
                stream.close()


def batch(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """File mode for each worker count: span vs the ideal FIFO makespan (all events there at 0)."""
    settings, recording = workspace.settings, workspace.recording
    durations = recording.durations(settings.time_scale)
    rows = []
    for workers in settings.batch_workers:
        ideal_span = ideals.makespan(durations, workers)
        report = _run(
            "run.py",
            workspace,
            f"batch-{broker.kind}-w{workers}",
            ["--input", str(recording.path), "--workers", str(workers), "--time-scale", str(settings.time_scale)],
            broker,
            expected_events=len(recording),
            timeout_s=_STARTUP_S + 5 * ideal_span,
        )
        rows.append(
            {
                "broker": broker.kind,
                "workers": workers,
                "time_scale": settings.time_scale,
                **_counts(report),
                **_span_figures(report, ideal_span),
                "run_ideal_span_s": report.get("ideal_span_s"),  # the run's own, as a cross-check
                "wall_s": report["wall_s"],
            }
        )
    return rows


def realtime(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Streaming mode paced by timestamps: finish and per-event latency vs the ideal on those arrivals."""
    settings, recording = workspace.settings, workspace.recording
    workers = settings.stream_workers
    durations = recording.durations(settings.time_scale)
    arrivals = ideals.paced_arrivals(recording.timestamps, settings.speed)
    ideal_span = ideals.span(durations, workers, arrivals)
    ideal_latencies = ideals.latencies(durations, workers, arrivals)
    report = _run(
        "run_streaming.py",
        workspace,
        f"realtime-{broker.kind}",
        ["--input", str(recording.path), "--realtime", "--speed", str(settings.speed)]
        + ["--time-scale", str(settings.time_scale), "--workers", str(workers)],
        broker,
        expected_events=len(recording),
        timeout_s=_STARTUP_S + 3 * ideal_span,
    )
    return [
        {
            "broker": broker.kind,
            "workers": workers,
            "speed": settings.speed,
            "time_scale": settings.time_scale,
            **_counts(report),
            "span_s": report["span_s"],
            "ideal_span_s": round(ideal_span, 4),
            "lateness_s": round(report["span_s"] - ideal_span, 4),
            "efficiency": _share(ideal_span, report["span_s"]),
            **_latencies(report, ideal_latencies),
            "run_ideal_span_s": report.get("ideal_span_s"),
        }
    ]


def throughput(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Zero-wait events per second through the whole pipeline, streaming (server -> client
    -> Celery -> ordered file) and file mode, batching on (the default) and off
    (`--batch-max 1`), each beside the raw Celery per-task floor measured in the same run."""
    workers, count = workspace.settings.stream_workers, workspace.settings.throughput_events
    events = [record.event for record in read_records(workspace.zero_wait(count))]
    floor = celery_floor(broker, events, workers, _zero_wait_timeout_s(count))
    rows = []
    for script, mode in (("run_streaming.py", "streaming"), ("run.py", "file")):
        for batch_max in (None, 1):
            name = f"throughput-{broker.kind}-{mode}-{'batches' if batch_max is None else 'single'}"
            flags = [] if batch_max is None else ["--batch-max", str(batch_max)]
            report = _zero_wait_run(script, broker, workspace, name, count, flags)
            rate = report["events"] / report["span_s"]
            batched = batch_max is None
            rows.append(
                {
                    "broker": broker.kind,
                    "workers": workers,
                    "mode": f"{mode}, {'batches (default)' if batched else '--batch-max 1'}",
                    **_counts(report),
                    "pipeline_span_s": report["span_s"],
                    "pipeline_events_per_s": round(rate, 1),
                    "floor_elapsed_s": floor["elapsed_s"],
                    "floor_events_per_s": floor["events_per_s"],
                    "ratio": _share(rate, floor["events_per_s"]),
                    "target_ratio": BATCHED_THROUGHPUT_TARGET if batched else THROUGHPUT_RATIO_TARGET,
                    "mean_event_run_ms": report.get("batching", {}).get("mean_event_run_ms"),
                }
            )
    return rows


def short_tasks(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """File mode on the recording at a small time scale (about 34 ms an event at 0.02):
    efficiency against the ideal, where Celery's per-task cost decides. Each pool in
    `short_pools` (threads, the pool that fits a task that sleeps, first) at each W of
    `short_workers` it fits (prefork is one process per worker: not at hundreds), and
    prefork with `--batch-max 1` at the smallest W, as the baseline without batches."""
    settings, recording = workspace.settings, workspace.recording
    durations = recording.durations(settings.short_time_scale)
    rows = []
    for workers in settings.short_workers:
        ideal_span = ideals.makespan(durations, workers)
        for pool, batch_max in _short_task_runs(settings, workers):
            flags = ["--pool", pool] + ([] if batch_max is None else ["--batch-max", str(batch_max)])
            report = _run(
                "run.py",
                workspace,
                f"short-{broker.kind}-w{workers}-{pool}-{batch_max or 'batches'}",
                ["--input", str(recording.path), "--workers", str(workers)]
                + ["--time-scale", str(settings.short_time_scale), *flags],
                broker,
                expected_events=len(recording),
                timeout_s=_STARTUP_S + 20 * ideal_span + 60,
            )
            rows.append(
                {
                    "broker": broker.kind,
                    "workers": workers,
                    "pool": pool,
                    "time_scale": settings.short_time_scale,
                    "batching": "on (default)" if batch_max is None else "off (--batch-max 1)",
                    **_counts(report),
                    **_span_figures(report, ideal_span),
                    "target": SHORT_TASK_TARGETS.get(workers) if pool == SLEEPING_TASK_POOL else None,
                    "mean_event_run_ms": report.get("batching", {}).get("mean_event_run_ms"),
                    "handoff_ms": report.get("batching", {}).get("handoff_ms"),
                }
            )
    return rows


def _span_figures(report: dict[str, Any], ideal_span: float) -> dict[str, Any]:
    """The run's span beside the ideal FIFO makespan of the same events and workers."""
    span = report["span_s"]
    return {"span_s": span, "ideal_span_s": round(ideal_span, 4), "efficiency": _share(ideal_span, span)}


def _short_task_runs(settings: Settings, workers: int) -> list[tuple[str, int | None]]:
    fits = [pool for pool in settings.short_pools if pool != Pool.PREFORK or workers <= PREFORK_WORKERS_THAT_FIT]
    runs = [(pool, None) for pool in fits]
    if workers == min(settings.short_workers):
        runs.append((Pool.PREFORK, 1))
    return runs


def high_concurrency(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """File mode on the recording at full scale with hundreds of workers, in the pool
    that fits a task that sleeps: span beside the ideal (W events at once, no overhead)."""
    settings, recording = workspace.settings, workspace.recording
    durations = recording.durations(settings.time_scale)
    workers = settings.high_workers
    ideal_span = ideals.makespan(durations, workers)
    report = _run(
        "run.py",
        workspace,
        f"high-{broker.kind}-w{workers}",
        ["--input", str(recording.path), "--workers", str(workers), "--pool", SLEEPING_TASK_POOL]
        + ["--time-scale", str(settings.time_scale)],
        broker,
        expected_events=len(recording),
        timeout_s=_STARTUP_S + 10 * ideal_span + 60,
    )
    return [
        {
            "broker": broker.kind,
            "workers": workers,
            "pool": SLEEPING_TASK_POOL,
            "time_scale": settings.time_scale,
            **_counts(report),
            **_span_figures(report, ideal_span),
            "excess": round(report["span_s"] / ideal_span - 1, 4) if ideal_span else None,
            "target_excess": HIGH_CONCURRENCY_EXCESS_TARGET,
        }
    ]


def heavy_tail(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """A scorer's heavy tail in file mode: every event of the recording takes 20 ms but one,
    which takes 12 s. In default batches (beside --batch-max 1, and the ideal of each
    mode): order none's p99 and span; in total order, how long after its own end each
    event before the slow one is written (its batch-mates must not wait for it)."""
    settings = workspace.settings
    recording = _heavy_tail_recording(workspace)
    durations = Recording.load(recording).durations(1.0)
    workers, rows = settings.heavy_workers, []
    arrivals = [0.0] * len(durations)
    for order in ("none", "total"):
        ideal_latencies = ideals.mode_latencies(durations, workers, arrivals, [None] * len(durations), order)
        for batch_max in (1, None):
            name = f"heavy-{broker.kind}-{order}-{batch_max or 'batches'}"
            ends, written = workspace.directory / f"{name}.ends", LineTimes(workspace.output(name))
            flags = [] if batch_max is None else ["--batch-max", str(batch_max)]
            with written:
                report = _run(
                    "run.py",
                    workspace,
                    name,
                    ["--input", str(recording), "--workers", str(workers), "--order", order, *flags]
                    + ["--task", "benchmarks.tasks:wait_and_note_the_end"],
                    broker,
                    expected_events=len(durations),
                    timeout_s=_STARTUP_S + 5 * ideals.makespan(durations, workers),
                    env={ENDS_ENV: str(ends), "PYTHONPATH": str(ROOT)},
                )
            rows.append(
                {
                    "broker": broker.kind,
                    "workers": workers,
                    "order": order,
                    "batching": "on (default)" if batch_max is None else "off (--batch-max 1)",
                    **_counts(report),
                    "span_s": report["span_s"],
                    "ideal_span_s": round(ideals.makespan(durations, workers), 4),
                    **_latencies(report, ideal_latencies),
                    "results_per_message": report["replies"]["results_per_message"],
                    "handed_back": report["replies"]["handed_back"],
                    "worst_wait_before_slow_s": _worst_wait(written, ends, settings.heavy_slow_offset)
                    if order == "total"
                    else None,
                }
            )
    return rows


def _heavy_tail_recording(workspace: Workspace) -> Path:
    settings = workspace.settings
    path = workspace.directory / "heavy-tail.json"
    events = [event for event in workspace.recording.events if event is not None]  # lines a run can send
    with open(path, "w") as stream:
        for n, event in enumerate(events):  # n: the event's offset in this recording
            wait = settings.heavy_slow_s if n == settings.heavy_slow_offset else settings.heavy_short_s
            stream.write(json.dumps({**event, "n": n, "wait": wait}) + "\n")
    return path


def _worst_wait(written: LineTimes, ends_path: Path, slow_offset: int) -> float | None:
    """Total order: the longest any event before the slow one waited, from its own end to
    its line written (the lines are in input order, so line i is offset i)."""
    ended = {}
    for line in ends_path.read_text().splitlines():
        n, at = line.split()
        ended[int(n)] = float(at)
    waits = [written.at[n] - ended[n] for n in range(min(slow_offset, len(written.at)))]
    return round(max(waits), 4) if waits else None


def orders(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Each ordering mode, streaming in real time: per-event latency (arrival to written)
    beside the zero-overhead ideal of the same mode on the same arrivals (the harness's)."""
    settings, recording = workspace.settings, workspace.recording
    workers = settings.stream_workers
    durations = recording.durations(settings.time_scale)
    arrivals = ideals.paced_arrivals(recording.timestamps, settings.speed)
    rows = []
    for order in ORDER_MODES:
        ideal_latencies = ideals.mode_latencies(durations, workers, arrivals, recording.keys(order), order)
        report = _run(
            "run_streaming.py",
            workspace,
            f"order-{broker.kind}-{_slug(order)}",
            ["--input", str(recording.path), "--realtime", "--speed", str(settings.speed), "--order", order]
            + ["--time-scale", str(settings.time_scale), "--workers", str(workers)],
            broker,
            expected_events=len(recording),
            timeout_s=_STARTUP_S + 3 * (max(arrivals, default=0) + sum(durations) / workers),
        )
        row = _latency_row(broker, order, settings, report, ideal_latencies)
        rows.append({"workers": workers, "speed": settings.speed, **row})
    return rows


def order_batch(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Each ordering mode in file mode (every event there at 0): per-event latency, read to
    written, beside the zero-overhead ideal of the same mode on the same recording."""
    settings, recording = workspace.settings, workspace.recording
    durations = recording.durations(settings.time_scale)
    arrivals = [0.0] * len(durations)
    rows = []
    for workers in settings.order_batch_workers:
        ideal_span = ideals.makespan(durations, workers)
        for order in ORDER_MODES:
            ideal_latencies = ideals.mode_latencies(durations, workers, arrivals, recording.keys(order), order)
            report = _run(
                "run.py",
                workspace,
                f"order-batch-{broker.kind}-w{workers}-{_slug(order)}",
                ["--input", str(recording.path), "--workers", str(workers), "--order", order]
                + ["--time-scale", str(settings.time_scale)],
                broker,
                expected_events=len(recording),
                timeout_s=_STARTUP_S + 5 * ideal_span,
            )
            rows.append({"workers": workers, **_latency_row(broker, order, settings, report, ideal_latencies)})
    return rows


def _latency_row(
    broker: Broker, order: str, settings: Settings, report: dict[str, Any], ideal_latencies: list[float]
) -> dict[str, Any]:
    """A run in an ordering mode: its latency percentiles beside its ideal's."""
    return {
        "broker": broker.kind,
        "order": order,
        "time_scale": settings.time_scale,
        **_counts(report),
        **_latencies(report, ideal_latencies),
        "target_excess_s": None if order == "total" else ORDER_EXCESS_TARGET_S,
    }


def _latencies(report: dict[str, Any], ideal_latencies: list[float]) -> dict[str, Any]:
    """The run's latency p50 and p99 beside the harness's ideal ones (and the run's own ideal)."""
    measured = report["latency_s"]
    figures: dict[str, Any] = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        ideal = ideals.quantile(ideal_latencies, q)
        figures[f"latency_{name}_s"] = measured[name]
        figures[f"ideal_latency_{name}_s"] = round(ideal, 4)
        figures[f"excess_{name}_s"] = round(measured[name] - ideal, 4)
    figures["run_ideal_latency_s"] = report.get("ideal_latency_s")
    return figures


def _slug(order: str) -> str:
    """An ordering mode as part of a file name."""
    return order.replace(":", "-").replace(",", "-")


def memory(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """The streaming client's RSS at checkpoints of a long zero-wait stream, and its peak."""
    settings, name = workspace.settings, f"memory-{broker.kind}"
    workers, count = settings.stream_workers, settings.memory_events
    sampler = RssSampler(workspace.output(name), settings.memory_checkpoints)
    report = _zero_wait_stream(broker, workspace, name, count, watch=sampler)
    figures = sampler.figures()
    growth = figures["growth"]
    return [
        {
            "broker": broker.kind,
            "workers": workers,
            "mode": "streaming (run_streaming.py; RSS of its main process, the client)",
            **_counts(report),
            "events_per_s": report["events_per_s"],
            **figures,
            "target_growth": MEMORY_GROWTH_TARGET,
            "within_target": growth is not None and growth <= MEMORY_GROWTH_TARGET,
        }
    ]


def dashboard(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Zero-wait throughput of run.py with its live page open in a headless Chromium, beside
    the same run without it: same recording, same settings, in pairs run back to back
    (ABBA, so a drift of the machine weighs on both sides alike). The overhead is the median
    of the pairs'; the CPU seconds of the run's process and of the browser go beside it."""
    chromium = find_chromium()
    if chromium is None:
        return [{"broker": broker.kind, "skipped": "Chromium is not installed (apt-get install chromium)"}]
    settings = workspace.settings
    count, workers = settings.dashboard_events, settings.stream_workers
    args = ["--input", str(workspace.zero_wait(count)), "--workers", str(workers)]
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    browser_cpu, opened_at, final_shown = [], [], []
    with HeadlessChromium(chromium) as browser:
        for repeat in range(settings.dashboard_repeats):
            for with_page in (False, True) if repeat % 2 == 0 else (True, False):
                name = f"dashboard-{broker.kind}-{repeat}-{'page' if with_page else 'none'}"
                viewer = PageWatch(browser, free_port()) if with_page else None
                meter = CpuWatch(browser.pids if with_page else tuple)
                report = _run(
                    "run.py",
                    workspace,
                    name,
                    args + (["--dashboard", str(viewer.port)] if viewer else []),
                    broker,
                    expected_events=count,
                    timeout_s=_zero_wait_timeout_s(count),
                    watch=both(meter.watch, viewer.watch) if viewer else meter.watch,
                )
                rates[with_page].append(round(report["events"] / report["span_s"], 1))
                cpu[with_page].append(round(meter.run_s, 2))
                if viewer:
                    browser_cpu.append(round(meter.stop(), 2))
                    opened_at.append(viewer.received_when_opened)
                    final_shown.append(viewer.final_events())
        problems = list(browser.problems)
    pairs = [round(1 - page / none, 4) for none, page in zip(rates[False], rates[True], strict=True)]
    overhead = statistics.median(pairs)
    return [
        {
            "broker": broker.kind,
            "workers": workers,
            "events": count,
            "repeats": settings.dashboard_repeats,
            "without_page_events_per_s": statistics.median(rates[False]),
            "with_page_events_per_s": statistics.median(rates[True]),
            "overhead": overhead,  # the median of the pairs' 1 - with / without
            "target_overhead": DASHBOARD_OVERHEAD_TARGET,
            "within_target": overhead <= DASHBOARD_OVERHEAD_TARGET,
            "pair_overheads": pairs,
            "runs_without_page": rates[False],
            "runs_with_page": rates[True],
            "run_cpu_s_without_page": statistics.median(cpu[False]),
            "run_cpu_s_with_page": statistics.median(cpu[True]),
            "browser_cpu_s": statistics.median(browser_cpu),  # the page's whole cost outside the run
            # 0 each: the page was open before the run's first event; the final summary showed every event.
            "received_when_page_opened": opened_at,
            "page_final_events": final_shown,
            "page_errors": problems,
        }
    ]


def server_rate(broker: Broker | None, workspace: Workspace) -> list[dict[str, Any]]:
    """The replay server alone: events/s to one client, per async mode, transport and client."""
    recording = workspace.zero_wait(workspace.settings.server_rate_events)
    return server.rates(recording, workspace.directory)


def server_pacing(broker: Broker | None, workspace: Workspace) -> list[dict[str, Any]]:
    """The replay server alone: its pacing error with many clients at 1x, per async mode."""
    settings = workspace.settings
    recording = server.paced_recording(settings.recording, settings.pacing_events, workspace.directory / "paced.json")
    return server.pacing(recording, workspace.directory, settings.pacing_clients)


Scenario = Callable[[Broker | None, Workspace], list[dict[str, Any]]]


def cluster(_broker: None, workspace: Workspace) -> list[dict[str, Any]]:
    """Each fault in the middle of a run on 3 worker hosts (network namespaces): throughput
    before it, seconds until back to 90 % of it, lost events and duplicates (both must be 0)."""
    from dataclasses import asdict

    from harness.cluster import Cluster, ClusterSettings
    from harness.cluster_faults import FAULTS, run_with_fault
    from harness.netns import why_unavailable

    why = why_unavailable()
    if why is not None:
        return [{"skipped": why}]
    settings = workspace.settings
    rows = []
    with Cluster(ClusterSettings(hosts=settings.cluster_hosts, concurrency=settings.cluster_concurrency)) as hosts:
        for fault in FAULTS:
            result = run_with_fault(hosts, fault, settings.recording, settings.cluster_time_scale, workspace.directory)
            rows.append({**asdict(result), "ok": result.ok, "hosts": settings.cluster_hosts})
    return rows


def postgres(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """The PostgreSQL output beside the file output (benchmarks/outputs.py)."""
    count, recording = workspace.settings.postgres_events, workspace.recording
    rows = outputs.throughput_rows(broker, workspace, count, _zero_wait_timeout_s(count))
    paced_span = ideals.paced_arrivals(recording.timestamps, workspace.settings.speed)[-1]
    rows += outputs.realtime_rows(broker, workspace, _STARTUP_S + 3 * paced_span)
    return rows


def task_events(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """What `--task-events` costs: the same zero-wait events in file mode with Celery's task
    events off and on, back to back, batching on (the default) and off (`--batch-max 1`: a
    task per event, so the events' cost at its largest). No monitor listens: each event is
    published (and, on RabbitMQ, dropped unrouted), as when Flower is not running."""
    workers, count = workspace.settings.stream_workers, workspace.settings.throughput_events
    rows = []
    for batch_max in (None, 1):
        batching = "batches (default)" if batch_max is None else "--batch-max 1"
        rates = {}
        for events_on in (False, True):
            name = f"task-events-{broker.kind}-{'batches' if batch_max is None else 'single'}-{events_on}"
            flags = ([] if batch_max is None else ["--batch-max", "1"]) + (["--task-events"] if events_on else [])
            report = _zero_wait_run("run.py", broker, workspace, name, count, flags)
            rates[events_on] = report["events"] / report["span_s"]
        rows.append(
            {
                "broker": broker.kind,
                "workers": workers,
                "batching": batching,
                "events": count,
                "off_events_per_s": round(rates[False], 1),
                "on_events_per_s": round(rates[True], 1),
                "kept": _share(rates[True], rates[False]),
            }
        )
    return rows


def follow(_broker: None, workspace: Workspace) -> list[dict[str, Any]]:
    """`serve --follow`: a line's delay from its commit to a client (benchmarks/outputs.py)."""
    return outputs.follow_rows(workspace.settings.follow_lines, workspace.settings.follow_rate)


SCENARIOS: dict[str, Scenario] = {
    "batch": batch,
    "realtime": realtime,
    "throughput": throughput,
    "short": short_tasks,
    "high-concurrency": high_concurrency,
    "heavy-tail": heavy_tail,
    "order": orders,
    "order-batch": order_batch,
    "memory": memory,
    "dashboard": dashboard,
    "postgres": postgres,
    "follow": follow,
    "task-events": task_events,
    "server-rate": server_rate,
    "server-pacing": server_pacing,
    "cluster": cluster,
}
OPT_IN = ("cluster",)  # needs root and takes minutes: run with --only cluster
WITHOUT_BROKER = ("server-rate", "server-pacing", "cluster", "follow")  # run once, not once per broker
GROUPS = {"server": ["server-rate", "server-pacing"]}  # names --only takes for several scenarios


def _run(
    script: str,
    workspace: Workspace,
    name: str,
    args: list[str],
    broker: Broker,
    expected_events: int,
    timeout_s: float,
    watch: Watch | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One run of `script`; its output is deleted afterwards (a long stream's output is big)."""
    output = workspace.output(name)
    try:
        args = [*args, "--output", str(output), *broker.run_flags()]
        report = run_and_report(script, args, workspace.directory, name, timeout_s, watch, env)
    finally:
        output.unlink(missing_ok=True)
    if report["events"] != expected_events:
        raise RunFailed(f"{name}: {report['events']} events written, {expected_events} expected")
    return report


def _zero_wait_stream(
    broker: Broker, workspace: Workspace, name: str, count: int, watch: Watch | None = None
) -> dict[str, Any]:
    """run_streaming.py on `count` zero-wait events, with the stream scenarios' workers."""
    return _zero_wait_run("run_streaming.py", broker, workspace, name, count, watch=watch)


def _zero_wait_run(
    script: str,
    broker: Broker,
    workspace: Workspace,
    name: str,
    count: int,
    flags: list[str] = (),
    watch: Watch | None = None,
) -> dict[str, Any]:
    """`script` on `count` zero-wait events, with the stream scenarios' workers."""
    return _run(
        script,
        workspace,
        name,
        ["--input", str(workspace.zero_wait(count)), "--workers", str(workspace.settings.stream_workers), *flags],
        broker,
        expected_events=count,
        timeout_s=_zero_wait_timeout_s(count),
        watch=watch,
    )


def _zero_wait_timeout_s(count: int) -> float:
    return _STARTUP_S + count / _SLOWEST_EVENTS_PER_S


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    return {"events": report["events"], "errors": report["errors"]}


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None
