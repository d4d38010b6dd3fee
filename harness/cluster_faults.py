"""Faults in the middle of a run on a cluster (cluster.py), and what the run made of them.

`python -m harness.cluster_faults [FAULT ...]` (or `all`) starts a 3-host
cluster, runs the recording through it once per fault (none: a clean run), and prints,
per fault, the output's check (byte-identical to the input, every event exactly once),
the throughput before the fault and the seconds until it is back.

How recovery is measured: the client's output file is sampled every 0.2 s. Throughput
before the fault is the lines written in the 10 s before it (fewer if the run is younger),
per second. Recovery is the time from the fault to the first moment from which the next
5 s write at least 90 % of that rate (or the rest of the run does, if it ends sooner): 0
for a fault the run does not feel. Each fault strikes when a quarter of the lines are out.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.cluster import Cluster, ClusterSettings
from harness.netns import remove_leftovers

log = logging.getLogger(__name__)

DEFAULT_RECORDING = Path("sampled_rc.json")
DEFAULT_TIME_SCALE = 0.4
FAULT_AT = 0.25  # of the lines written
LINK_DOWN_S = 20.0
STALL_S = 15.0  # consumers stopped this long: past the client's stall warning
STALL_WARNING_S = 5.0  # the client's --stall-warning on the cluster
BROKER_DOWN_S = 2.0
SAMPLE_EVERY_S = 0.2
BEFORE_S = 10.0
WINDOW_S = 5.0
RECOVERED_SHARE = 0.9
RUN_TIMEOUT_S = 300.0


# -- the faults: each strikes, waits out its length, and undoes what can be undone -------


def cut_link(cluster: Cluster) -> str:
    worker = cluster.workers[0]
    cluster.network.cut(worker.host)
    time.sleep(LINK_DOWN_S)  # the fault's length
    cluster.network.reconnect(worker.host)
    return f"{worker.hostname}'s link down for {LINK_DOWN_S:g} s"


def kill_worker(cluster: Cluster) -> str:
    worker = cluster.workers[0]
    worker.signal(signal.SIGKILL)  # its pool dies with it; its supervisor starts a new one
    return f"{worker.hostname}'s worker SIGKILLed"


def kill_host(cluster: Cluster) -> str:
    worker = cluster.workers[0]
    pids = cluster.network.kill_processes(worker.host)
    return f"all {len(pids)} processes of {worker.hostname} SIGKILLed"


def restart_broker(cluster: Cluster) -> str:
    cluster.broker.restart(down_s=BROKER_DOWN_S)
    return "broker restarted"


def stop_consumers(cluster: Cluster) -> str:
    """Workers alive but not consuming, on every host: one stopped host alone is masked by
    the others, which keep delivering, and the run's watchdog rightly stays quiet."""
    for worker in cluster.workers:
        worker.signal(signal.SIGSTOP)
    try:
        time.sleep(STALL_S)  # the fault's length
    finally:
        for worker in cluster.workers:
            worker.signal(signal.SIGCONT)
    return f"every host's consumer SIGSTOPped for {STALL_S:g} s"


FAULTS: dict[str, Callable[[Cluster], str] | None] = {
    "clean": None,
    "link-cut": cut_link,
    "worker-kill": kill_worker,
    "host-kill": kill_host,
    "broker-restart": restart_broker,
    "stall": stop_consumers,
}


# -- one run, watched ---------------------------------------------------------------------


@dataclass
class FaultResult:
    fault: str
    what: str
    wall_s: float
    identical: bool
    lost: int
    duplicates_written: int
    late_replies_dropped: int
    duplicates_dropped: int
    before_events_per_s: float | None
    recovery_s: float | None
    watchdog: list[str] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.identical and self.lost == 0 and self.duplicates_written == 0


class OutputWatch:
    """Samples (seconds, lines written) of the run's output file, on a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="output-watch", daemon=True)

    def start(self) -> OutputWatch:
        self._thread.start()
        return self

    def lines(self) -> int:
        try:
            return self.path.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def _watch(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.lines()))
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), self.lines()))


def lines_at(samples: list[tuple[float, int]], at: float) -> int:
    """Lines written by time `at` (the last sample not after it)."""
    written = 0
    for when, lines in samples:
        if when > at:
            break
        written = lines
    return written


def throughput_before(samples: list[tuple[float, int]], fault_at: float) -> float | None:
    first_line_at = next((when for when, lines in samples if lines > 0), None)
    if first_line_at is None or first_line_at >= fault_at:
        return None
    since = max(first_line_at, fault_at - BEFORE_S)
    return (lines_at(samples, fault_at) - lines_at(samples, since)) / (fault_at - since)


def recovery_s(samples: list[tuple[float, int]], fault_at: float, before: float | None, total: int) -> float | None:
    """Seconds from the fault until throughput is back to 90 % of `before` (see the module's doc)."""
    if not before:
        return None
    target = RECOVERED_SHARE * before
    done_at = next((when for when, lines in samples if lines >= total), None)
    for when, lines in samples:
        if when < fault_at:
            continue
        if lines >= total:
            return when - fault_at
        end = when + WINDOW_S
        if done_at is not None and done_at <= end:
            rate = (total - lines) / max(done_at - when, SAMPLE_EVERY_S)
        elif end <= samples[-1][0]:
            rate = (lines_at(samples, end) - lines) / WINDOW_S
        else:
            return None
        if rate >= target:
            return when - fault_at
    return None


def check_output(input_path: Path, output_path: Path) -> tuple[bool, int, int]:
    """(byte-identical, events lost, duplicate lines written)."""
    given, written = input_path.read_bytes(), output_path.read_bytes() if output_path.exists() else b""
    expected, got = Counter(given.splitlines()), Counter(written.splitlines())
    return given == written, sum((expected - got).values()), sum((got - expected).values())


def run_with_fault(
    cluster: Cluster,
    fault: str,
    recording: Path = DEFAULT_RECORDING,
    time_scale: float = DEFAULT_TIME_SCALE,
    directory: Path | None = None,
) -> FaultResult:
    """Run `recording` through the cluster; strike `fault` when a quarter of the lines are out."""
    strike = FAULTS[fault]
    cluster.wait_until_healthy()  # the fault before this one is over
    directory = directory or cluster.directory
    output, report_path, log_path = (directory / f"{fault}.{suffix}" for suffix in ("out.json", "report.json", "log"))
    for path in (output, report_path, log_path):
        path.unlink(missing_ok=True)
    recording = recording.resolve()
    total = recording.read_bytes().count(b"\n")
    args = ["run", "--workers", "0", "--input", str(recording), "--output", str(output)]
    args += ["--time-scale", str(time_scale), "--report", str(report_path), "--no-progress"]
    args += ["--stall-warning", str(STALL_WARNING_S)]
    started = time.monotonic()
    watch = OutputWatch(output).start()
    client = cluster.run_client(args, log_path)
    what, fault_at = "no fault", None
    try:
        if strike is not None:
            fault_at = _wait_for_lines(watch, client, int(total * FAULT_AT))
            if fault_at is not None:
                log.info("%s: striking at %d lines", fault, watch.lines())
                what = strike(cluster)
        exit_code = client.wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - started)))
    except BaseException:
        cluster.stop_client(client)
        raise
    finally:
        watch.stop()
    wall_s = time.monotonic() - started
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    identical, lost, duplicates = check_output(recording, output)
    before = throughput_before(watch.samples, fault_at) if fault_at is not None else None
    return FaultResult(
        fault=fault,
        what=what,
        wall_s=round(wall_s, 1),
        identical=identical,
        lost=lost,
        duplicates_written=duplicates,
        late_replies_dropped=report.get("late_replies_dropped", 0),
        duplicates_dropped=report.get("duplicates_dropped", 0),
        before_events_per_s=round(before, 2) if before else None,
        recovery_s=_rounded(recovery_s(watch.samples, fault_at, before, total)) if fault_at is not None else None,
        watchdog=_watchdog_lines(log_path),
        exit_code=exit_code,
    )


def _wait_for_lines(watch: OutputWatch, client, lines: int, timeout_s: float = RUN_TIMEOUT_S) -> float | None:
    """When the output reached `lines`; None if the run ended first."""
    deadline = time.monotonic() + timeout_s
    while watch.lines() < lines:
        if client.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return time.monotonic()


def _watchdog_lines(log_path: Path) -> list[str]:
    if not log_path.exists():
        return []
    markers = ("no result for", "results are coming in again")
    return [line for line in log_path.read_text(errors="replace").splitlines() if any(m in line for m in markers)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- the command ---------------------------------------------------------------------------


def format_table(results: list[FaultResult]) -> str:
    head = (
        f"{'fault':<15}{'ok':<5}{'wall s':>7}{'before ev/s':>12}{'back to 90% s':>14}"
        f"{'lost':>6}{'dup written':>12}{'late dropped':>13}{'dup dropped':>12}"
    )
    rows = [head]
    for r in results:
        before = f"{r.before_events_per_s:.1f}" if r.before_events_per_s else "-"
        back = f"{r.recovery_s:.1f}" if r.recovery_s is not None else "-"
        rows.append(
            f"{r.fault:<15}{'yes' if r.ok else 'NO':<5}{r.wall_s:>7.1f}{before:>12}{back:>14}"
            f"{r.lost:>6}{r.duplicates_written:>12}{r.late_replies_dropped:>13}{r.duplicates_dropped:>12}"
        )
    return "\n".join(rows)


def parse_faults(names: list[str]) -> list[str]:
    if not names:
        return ["clean"]
    if names == ["all"]:
        return list(FAULTS)
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)} or all")
    return names


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cluster_faults", description=__doc__.split("\n")[0])
    parser.add_argument("faults", nargs="*", help=f"any of {', '.join(FAULTS)}, or all (default: clean)")
    parser.add_argument("--input", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="pool processes per host")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--clean-up", action="store_true", help="only remove the sp- namespaces and links a killed harness left"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.clean_up:
        print("\n".join(f"removed {item}" for item in remove_leftovers()) or "nothing to remove")
        return 0
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    signal.signal(signal.SIGTERM, _raise_interrupt)  # torn down like Ctrl-C
    results = []
    with Cluster(ClusterSettings(args.hosts, args.concurrency)) as cluster:
        for fault in faults:
            result = run_with_fault(cluster, fault, args.input, args.time_scale)
            results.append(result)
            print(f"{fault}: {result.what}; " + json.dumps(asdict(result)), flush=True)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
