"""Which pool for which task, measured: `python -m benchmarks.pools [--smoke]`.

One invocation times each pool on two tasks on this machine, at W=12 and W=64 workers:
- `wait`: the reference task, asleep 50 ms per event (a scorer waiting on a remote
  service); its ideal span is events x 50 ms / W (W events at once, no overhead);
- `compute`: a pure-Python loop (CPU-bound); its floor is the loop's time on one core
  (measured here, first) x events / cores: no pool computes faster than the cores do.
Each figure is the run's span (first event read to last line written), beside that ideal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOLS = ("prefork", "threads", "gevent")
WORKERS = (12, 64)
WAIT_S = 0.05
LOOPS = 400_000


def _recording(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def _one_loop_s() -> float:
    from benchmarks.tasks import compute

    started = time.perf_counter()
    compute({"id": 0, "loops": LOOPS})
    return time.perf_counter() - started


def _span(recording: Path, workdir: Path, pool: str, workers: int, task: str | None, broker: list[str]) -> float:
    report = workdir / "report.json"
    args = [sys.executable, str(ROOT / "run.py"), "--input", str(recording), "--output", str(workdir / "out.json")]
    args += ["--workers", str(workers), "--pool", pool, "--no-progress", "--report", str(report), *broker]
    if task:
        args += ["--task", task]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(args, check=True, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(report.read_text())["span_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few events: checks it runs, figures mean little")
    parser.add_argument("--broker", default=None, help="a broker URL (default: the embedded Redis)")
    parser.add_argument("--pools", default=",".join(POOLS))
    args = parser.parse_args(argv)
    broker = ["--broker", args.broker] if args.broker else []
    cores = len(os.sched_getaffinity(0))
    scale = 10 if args.smoke else 1
    wait_events, compute_events = 1280 // scale, 120 // scale
    loop_s = _one_loop_s()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        waits = _recording(workdir / "wait.json", [{"id": n, "wait": WAIT_S} for n in range(wait_events)])
        computes = [{"id": n, "wait": 0, "loops": LOOPS} for n in range(compute_events)]
        loops = _recording(workdir / "compute.json", computes)
        print(f"{cores} cores; one compute event takes {loop_s * 1000:.0f} ms on one core")
        print(f"{'pool':8} {'W':>3}  {'wait: span / ideal':>20}  {'compute: span / floor':>22}")
        for workers in WORKERS:
            for pool in args.pools.split(","):
                wait_span = _span(waits, workdir, pool, workers, None, broker)
                wait_ideal = wait_events * WAIT_S / workers
                compute_span = _span(loops, workdir, pool, workers, "benchmarks.tasks:compute", broker)
                compute_floor = compute_events * loop_s / min(cores, workers)
                print(
                    f"{pool:8} {workers:>3}  {wait_span:8.2f} s / {wait_ideal:5.2f} s  "
                    f"{compute_span:9.2f} s / {compute_floor:5.2f} s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
