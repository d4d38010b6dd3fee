"""The ordering modes end to end: `--order key:F,G` and `--order none` with real workers,
real brokers and real processes; resume after kill -9; one slow key holding back no other;
a stuck key bounding memory by the window."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stream_processor.core.ordering import parse_order
from stream_processor.core.processor import StreamProcessor
from stream_processor.core.records import Record
from stream_processor.engine.executor import LocalExecutor
from tests.chaos.test_failures import celery_processes, finish, kill, lines_of, started, write_events
from tests.conftest import ROOT, processes_with_marker, wait_until

# prefork: these tests kill and count pool processes (tests/test_pools.py covers every pool)
FAST = ["--workers", "4", "--no-progress", "--pool", "prefork"]
KEY = "key:wiki,title"


def keyed_events(count: int, seed: int, pages: int = 6, wait: tuple[float, float] = (0.0, 0.3)) -> list[dict]:
    """Events of a few pages on two wikis, so that many share a key; some lack the fields."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        event: dict = {"id": n, "wait": round(rng.uniform(*wait), 3)}
        if n % 11 != 5:  # every eleventh event has no key at all
            event["wiki"] = rng.choice(["enwiki", "dewiki"])
            event["title"] = f"Page {rng.randrange(pages)}"
        events.append(event)
    return events


def verify(recording: Path, output: Path, order: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stream_processor", "verify", str(recording), str(output), "--order", order]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


def assert_each_key_in_input_order(recording: Path, output: Path) -> None:
    position = {line: offset for offset, line in enumerate(lines_of(recording))}
    keys = parse_order(KEY)
    last: dict = {}
    for line in lines_of(output):
        offset = position[line]
        key = keys.key_of(json.loads(line))
        if key is not None:
            assert last.get(key, -1) < offset, f"offset {offset} came after {last[key]} of its key"
            last[key] = offset
    assert sorted(position[line] for line in lines_of(output)) == list(range(len(position)))


@pytest.mark.parametrize("order", [KEY, "none"])
def test_every_event_is_written_once_and_each_key_in_input_order(tmp_path, broker_flag, order):
    recording = write_events(tmp_path / "in.json", keyed_events(60, seed=3))
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--order", order, "--time-scale", "0.2"]
    with started(args + FAST + broker_flag, tmp_path) as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    assert verify(recording, output, order).returncode == 0
    if order == KEY:
        assert_each_key_in_input_order(recording, output)
    assert verify(recording, output, "total").returncode != 0 or lines_of(output) == lines_of(recording)


@pytest.mark.chaos
@pytest.mark.parametrize("victim", ["run", "worker"])
def test_key_mode_survives_kill_9_of_the_run_or_a_worker_and_resumes_exactly(tmp_path, broker_flag, victim):
    recording = write_events(tmp_path / "in.json", keyed_events(80, seed=9, wait=(0.05, 0.6)))
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--order", KEY, "--max-in-flight", "20"]
    with started(args + FAST + broker_flag, tmp_path) as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 10, timeout=60, message="ten lines written")
        if victim == "run":
            process.kill()
            process.communicate(timeout=10)
        else:
            _, pool = celery_processes(marker)
            kill(pool[0])
            code, stderr = finish(process)
            assert code == 0, stderr
    if victim == "run":
        wait_until(lambda: not processes_with_marker(marker), timeout=15, message="no orphan after kill -9")
        assert 0 < len(lines_of(output)) < 80
        with started(args + ["--resume"] + FAST + broker_flag, tmp_path) as (process, _):
            code, stderr = finish(process)
        assert code == 0, stderr
    checked = verify(recording, output, KEY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert_each_key_in_input_order(recording, output)


def test_one_key_with_a_ten_second_event_holds_back_no_other_key(tmp_path):
    events = [{"id": 0, "wiki": "enwiki", "title": "Slow", "wait": 10}]
    events += [{"id": n, "wiki": "enwiki", "title": f"Fast {n % 5}", "wait": 0.05} for n in range(1, 40)]
    events += [{"id": 40, "wiki": "enwiki", "title": "Slow", "wait": 0}]  # must wait for the slow one
    recording = write_events(tmp_path / "in.json", events)
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--order", KEY]
    with started(args + FAST, tmp_path) as (process, _):
        wait_until(lambda: len(lines_of(output)) >= 39, timeout=60, message="every fast line written")
        written = [json.loads(line)["id"] for line in lines_of(output)]
        slow_still_running = process.poll() is None and 0 not in written
        code, stderr = finish(process)
    assert code == 0, stderr
    assert slow_still_running, "the fast keys' lines were not all written while the slow event ran"
    assert sorted(written) == list(range(1, 40))  # measured on lines written, before the slow one
    final = [json.loads(line)["id"] for line in lines_of(output)]
    assert final.index(0) < final.index(40)  # its key's next event waited for it


def test_streaming_key_mode_resumes_after_kill_9(tmp_path):
    recording = write_events(tmp_path / "in.json", keyed_events(60, seed=5, wait=(0.05, 0.5)))
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--order", KEY, "--max-in-flight", "15"]
    with started(args + FAST, tmp_path, script="run_streaming.py") as (process, marker):
        wait_until(lambda: len(lines_of(output)) >= 10, timeout=60, message="ten lines written")
        process.kill()
        process.communicate(timeout=10)
    wait_until(lambda: not processes_with_marker(marker), timeout=15, message="no orphan after kill -9")
    with started(args + ["--resume"] + FAST, tmp_path, script="run_streaming.py") as (process, _):
        code, stderr = finish(process)
    assert code == 0, stderr
    checked = verify(recording, output, KEY)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[int, bytes]] = []

    def write(self, lines) -> None:
        self.lines.extend(lines)


def test_a_stuck_key_bounds_memory_by_the_window_and_other_keys_keep_moving():
    release = threading.Event()

    def score(event: dict) -> dict:
        if event["title"] == "Stuck":
            release.wait(30)
        return event

    sink = _Lines()
    processor = StreamProcessor(
        LocalExecutor(score, max_workers=4), sink, max_in_flight=20, order=parse_order(KEY)
    ).start()
    submitted = []

    def intake() -> None:
        for offset in range(200):
            title = "Stuck" if offset % 50 == 0 else f"Page {offset % 7}"
            event = {"id": offset, "wiki": "enwiki", "title": title}
            processor.submit(Record(offset, json.dumps(event).encode(), event))
            submitted.append(offset)

    reader = threading.Thread(target=intake, daemon=True)
    reader.start()
    try:
        # The stuck event at offset 0 holds the low watermark: 20 events in the window, no more.
        wait_until(lambda: len(sink.lines) >= 19, timeout=10, message="the other keys' lines")
        time.sleep(0.3)  # not a synchronisation: time in which intake would overrun the window, if it could
        assert len(submitted) <= 21, f"intake ran {len(submitted)} events past a window of 20"
        assert sorted(offset for offset, _ in sink.lines) == list(range(1, 20))
        release.set()
        reader.join(timeout=30)
        assert processor.drain(timeout=30)
    finally:
        release.set()
        processor.close()
    assert sorted(offset for offset, _ in sink.lines) == list(range(200))
