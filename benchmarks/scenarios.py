"""The four scenarios. Each runs on one broker and returns rows of figures, every
measured figure beside its ideal (or, for throughput, beside the raw Celery floor)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import ideals
from benchmarks.brokers import Broker
from benchmarks.floor import celery_floor
from benchmarks.memory import RssSampler
from benchmarks.recordings import Recording, write_zero_wait_recording
from benchmarks.runs import RunFailed, Watch, run_and_report
from benchmarks.settings import Settings
from stream_processor.records import read_records

MEMORY_GROWTH_TARGET = 0.2  # RSS at the end of the stream within 20 % of RSS at its first checkpoint
THROUGHPUT_RATIO_TARGET = 0.9
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
                "span_s": report["span_s"],
                "ideal_span_s": round(ideal_span, 4),
                "efficiency": _share(ideal_span, report["span_s"]),
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
    measured = report["latency_s"]
    ideal_p50, ideal_p99 = ideals.quantile(ideal_latencies, 0.5), ideals.quantile(ideal_latencies, 0.99)
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
            "latency_p50_s": measured["p50"],
            "ideal_latency_p50_s": round(ideal_p50, 4),
            "excess_p50_s": round(measured["p50"] - ideal_p50, 4),
            "latency_p99_s": measured["p99"],
            "ideal_latency_p99_s": round(ideal_p99, 4),
            "excess_p99_s": round(measured["p99"] - ideal_p99, 4),
            "run_ideal_span_s": report.get("ideal_span_s"),
            "run_ideal_latency_s": report.get("ideal_latency_s"),
        }
    ]


def throughput(broker: Broker, workspace: Workspace) -> list[dict[str, Any]]:
    """Zero-wait events per second through the whole streaming pipeline vs the raw Celery floor."""
    workers, count = workspace.settings.stream_workers, workspace.settings.throughput_events
    report = _zero_wait_stream(broker, workspace, f"throughput-{broker.kind}", count)
    pipeline_rate = report["events"] / report["span_s"]
    events = [record.event for record in read_records(workspace.zero_wait(count))]
    floor = celery_floor(broker, events, workers, _zero_wait_timeout_s(count))
    return [
        {
            "broker": broker.kind,
            "workers": workers,
            **_counts(report),
            "pipeline_span_s": report["span_s"],
            "pipeline_events_per_s": round(pipeline_rate, 1),
            "floor_elapsed_s": floor["elapsed_s"],
            "floor_events_per_s": floor["events_per_s"],
            "ratio": _share(pipeline_rate, floor["events_per_s"]),
            "target_ratio": THROUGHPUT_RATIO_TARGET,
        }
    ]


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


Scenario = Callable[[Broker, Workspace], list[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {"batch": batch, "realtime": realtime, "throughput": throughput, "memory": memory}


def _run(
    script: str,
    workspace: Workspace,
    name: str,
    args: list[str],
    broker: Broker,
    expected_events: int,
    timeout_s: float,
    watch: Watch | None = None,
) -> dict[str, Any]:
    """One run of `script`; its output is deleted afterwards (a long stream's output is big)."""
    output = workspace.output(name)
    try:
        report = run_and_report(
            script, [*args, "--output", str(output), *broker.run_flags()], workspace.directory, name, timeout_s, watch
        )
    finally:
        output.unlink(missing_ok=True)
    if report["events"] != expected_events:
        raise RunFailed(f"{name}: {report['events']} events written, {expected_events} expected")
    return report


def _zero_wait_stream(
    broker: Broker, workspace: Workspace, name: str, count: int, watch: Watch | None = None
) -> dict[str, Any]:
    """run_streaming.py on `count` zero-wait events, with the stream scenarios' workers."""
    return _run(
        "run_streaming.py",
        workspace,
        name,
        ["--input", str(workspace.zero_wait(count)), "--workers", str(workspace.settings.stream_workers)],
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
