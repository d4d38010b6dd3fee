"""Running the project's own commands (run.py, run_streaming.py) as child processes.

Each run is a process the harness owns: started in its own session (a Ctrl-C reaches
only the harness, which then stops it with SIGTERM, and the run stops what it started),
bound to die with the harness, and stopped on any way out. Its report is the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream_processor.engine import processes
from stream_processor.engine.tasks import BROKER_ENV

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.05
STOP_GRACE_S = 30.0  # a run stops its own workers and broker on SIGTERM: give it time to do so
OK_EXIT_CODES = (0, 3)  # 3: output complete, some events hold error records (counted in the report)


class RunFailed(Exception):
    """A run exited with an error, or did not finish in time."""


Watch = Callable[[int], None]  # called with the run's pid while it runs


def run_and_report(
    script: str,
    args: list[str],
    workdir: Path,
    name: str,
    timeout_s: float,
    watch: Watch | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`python ROOT/script ARGS --report ...` to the end; return its JSON report."""
    report_path = workdir / f"{name}.report.json"
    command = [sys.executable, str(ROOT / script), *args, "--no-progress", "--report", str(report_path)]
    stderr_path = workdir / f"{name}.stderr"
    with open(workdir / f"{name}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = processes.spawn(
            command, cwd=workdir, env={**_run_environment(), **(env or {})}, stdout=stdout, stderr=stderr
        )
        try:
            _wait(process, timeout_s, watch)
        finally:
            if process.poll() is None:  # an error or Ctrl-C here: the run cleans up after itself
                processes.stop(process, signal.SIGTERM, grace_s=STOP_GRACE_S)
    if process.returncode not in OK_EXIT_CODES:
        raise RunFailed(f"{script} exited with code {process.returncode}: {_tail(stderr_path)}")
    return json.loads(report_path.read_text())


def _run_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(BROKER_ENV, None)  # no --broker must mean the embedded broker, whatever the shell says
    return env


def _wait(process: subprocess.Popen, timeout_s: float, watch: Watch | None) -> None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise RunFailed(f"{Path(process.args[1]).name} still running after {timeout_s:.0f} s")
        if watch:
            watch(process.pid)
        time.sleep(POLL_S)


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no output on stderr"
