"""A whole benchmark: the chosen scenarios on each broker, and the facts that frame them."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import celery
import kombu

from benchmarks.brokers import Broker
from benchmarks.runs import ROOT
from benchmarks.scenarios import SCENARIOS, WITHOUT_BROKER, Workspace
from benchmarks.settings import Settings

log = logging.getLogger("benchmarks")
RECORDING_SCENARIOS = {
    "batch",
    "realtime",
    "short",
    "high-concurrency",
    "heavy-tail",
    "order",
    "order-batch",
    "postgres",
}


def run_suite(
    settings: Settings, brokers: list[Broker], skipped: dict[str, str], scenarios: list[str]
) -> dict[str, Any]:
    """Every scenario on every broker; a scenario that fails is recorded and the rest go on."""
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "settings": settings.as_json(),
        "brokers": {broker.kind: broker.description for broker in brokers},
        "skipped": skipped,
        "scenarios": {name: [] for name in scenarios},
    }
    with tempfile.TemporaryDirectory(prefix="stream-processor-bench-") as directory:
        workspace = Workspace(Path(directory), settings)
        replays_recording = RECORDING_SCENARIOS & set(scenarios)
        results["recording_events"] = len(workspace.recording) if replays_recording else None
        for name in scenarios:
            for broker in [None] if name in WITHOUT_BROKER else brokers:
                log.info("%s on %s ...", name, broker.kind if broker else "no broker")
                results["scenarios"][name] += _rows_or_failure(name, broker, workspace)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def _rows_or_failure(name: str, broker: Broker | None, workspace: Workspace) -> list[dict[str, Any]]:
    """The scenario's rows, or one row saying why it failed (a long benchmark goes on)."""
    kind = broker.kind if broker else "-"
    try:
        return [{"broker": kind, **row} for row in SCENARIOS[name](broker, workspace)]
    except Exception as exc:
        log.exception("%s on %s failed", name, kind)
        return [{"broker": kind, "error": f"{type(exc).__name__}: {exc}"}]


def failures(results: dict[str, Any]) -> list[str]:
    return [
        f"{name} on {row['broker']}: {row['error']}"
        for name, rows in results["scenarios"].items()
        for row in rows
        if "error" in row
    ]


def machine_facts() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "memory_gib": _memory_gib(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "commit": _commit(),
        "executable": sys.executable,
    }


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            total_kb = int(meminfo.readline().split()[1])  # MemTotal comes first
        return round(total_kb / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        return None


def _commit() -> str | None:
    """The commit benchmarked, marked "+changes" when the work tree differs from it."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return None
    # --no-optional-locks: never take the index lock from under someone committing.
    dirty = _git("--no-optional-locks", "status", "--porcelain")
    return head + ("+changes" if dirty else "")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
