"""Issue 9: nothing a user types or a stream carries may destroy data or hang a run.

Every test runs the real command lines (`run.py`, `run_streaming.py`, `socket_client.py`,
`stream-processor ...`) as processes, with real Celery workers on the embedded Redis and,
where a broker is involved, on RabbitMQ too, and checks what a user would see: the exit
code, one clear line on stderr (no traceback), the input untouched, the output
byte-identical (or an error record in place), and nothing left running.

"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Queue

from stream_processor.core.records import recording_identity
from stream_processor.engine.celery_executor import delete_queue
from stream_processor.redaction import safe_url
from stream_processor.sources.generate import generate_file
from tests.conftest import (
    ROOT,
    cli_env,
    processes_with_marker,
    rabbitmq_reachable,
    replay_server,
    run_script,
    start_cli,
    terminate,
    wait_until,
)

FAST = ["--workers", "2", "--time-scale", "0.01", "--no-progress"]
SCRIPTS = ["run.py", "run_streaming.py"]
OUR_LINE = re.compile(r"^(stream-processor: |(INFO|WARNING|ERROR|CRITICAL) stream_processor[\w.]*: )")
EXTERNAL_REDIS_URL = os.environ.get("STREAM_PROCESSOR_TEST_REDIS", "redis://localhost:6379/0")


# -- helpers ---------------------------------------------------------------------------------


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def one_line(stderr: str) -> str:
    """The single line a usage or run error must be: no traceback, nothing else."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


def not_ours(stderr: str) -> list[str]:
    """Lines on stderr that this project did not write (Celery's, kombu's, warnings...)."""
    return [line for line in stderr.splitlines() if line.strip() and not OUR_LINE.match(line)]


def verify(recording: Path, output: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stream_processor", "verify", str(recording), str(output)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def broker_args(request, broker: str) -> list[str]:
    return [] if broker == "embedded" else ["--broker", request.getfixturevalue("rabbitmq_url")]


class Background:
    """`python SCRIPT ARGS` in the background, its stdout and stderr read as they come.
    On leaving the `with`, it is killed if still running, and nothing it started may be left."""

    def __init__(self, args: list[str], cwd: Path, script: str = "run.py", env: dict[str, str] | None = None):
        self.marker = uuid.uuid4().hex
        self.process = start_cli(args, cwd, self.marker, script=script, env=env, start_new_session=True)
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(stream, into), daemon=True)
            for stream, into in ((self.process.stdout, self._out), (self.process.stderr, self._err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; stderr:\n{self.stderr}") from None
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def pids(self, needle: str) -> list[int]:
        return [int(entry.split(":")[0]) for entry in processes_with_marker(self.marker) if needle in entry]

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        wait_until(lambda: not processes_with_marker(self.marker), timeout=15, message="no process left behind")


def run_together(runs: list[tuple[str, list[str]]], cwd: Path, timeout: float = 120) -> list[Background]:
    """Start every (script, args) at once; wait for them all (two cores: they overlap)."""
    started = [Background(args, cwd, script) for script, args in runs]
    for run in started:
        with run:
            run.wait(timeout)
    return started


def kill(pid: int) -> None:
    with suppress(ProcessLookupError):  # it died already
        os.kill(pid, signal.SIGKILL)


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted at `where` for the test (root only), always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def events_12(tmp_path_factory) -> Path:
    """Twelve short events of the reference task's shape."""
    path = tmp_path_factory.mktemp("misuse") / "twelve.json"
    return write_events(path, [{"id": n, "title": f"page {n}", "wait": 0.5} for n in range(12)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, events_12) -> tuple[Path, bytes, bytes]:
    """A finished run of `events_12`: (the recording, its output, its checkpoint)."""
    where = tmp_path_factory.mktemp("finished")
    output = where / "out.json"
    run = run_script("run.py", ["--input", str(events_12), "--output", str(output)] + FAST, where)
    assert run.returncode == 0, run.stderr
    return events_12, output.read_bytes(), (where / "out.json.checkpoint").read_bytes()


def place_finished_output(finished, where: Path) -> tuple[Path, Path, Path]:
    """A copy of the finished run's recording, output and checkpoint under `where`."""
    recording, output_bytes, checkpoint_bytes = finished
    copy = where / "in.json"
    copy.write_bytes(recording.read_bytes())
    output = where / "out.json"
    output.write_bytes(output_bytes)
    (where / "out.json.checkpoint").write_bytes(checkpoint_bytes)
    return copy, output, where / "out.json.checkpoint"


# -- 1. an output or report that is the input ------------------------------------------------


# case: the two flags the message must name
SAME_FILE_CASES = {
    "output is the input": ("--output", "--input"),
    "output is a symlink to the input": ("--output", "--input"),
    "output is a hard link to the input": ("--output", "--input"),
    "report is the input": ("--report", "--input"),
    "report is the output": ("--report", "--output"),
    "report is a hard link to the output": ("--report", "--output"),
    "plot is the output": ("--plot", "--output"),
}


def same_file_args(case: str, recording: Path, output: Path) -> list[str]:
    """The flags that make `case` happen (links made beside the output)."""
    link = output.with_name("link.json")
    if case == "output is the input":
        return ["--output", str(recording)]
    if case == "output is a symlink to the input":
        link.symlink_to(recording)
        return ["--output", str(link)]
    if case == "output is a hard link to the input":
        link.hardlink_to(recording)
        return ["--output", str(link)]
    if case == "report is a hard link to the output":
        link.hardlink_to(output)
        return ["--output", str(output), "--report", str(link)]
    flag = {"report is the input": "--report", "report is the output": "--report", "plot is the output": "--plot"}
    return ["--output", str(output), flag[case], str(recording if case.endswith("input") else output)]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", list(SAME_FILE_CASES))
def test_a_path_that_is_the_input_or_the_output_is_refused_and_nothing_is_touched(tmp_path, case, script):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(5)])
    output = tmp_path / "out.json"
    output.write_bytes(b'{"a previous result": 1}\n')  # an earlier run's output: it must survive too
    before = {path: path.read_bytes() for path in (recording, output)}
    flags = SAME_FILE_CASES[case]
    args = ["--input", str(recording), *same_file_args(case, recording, output)] + FAST

    started = time.monotonic()
    run = run_script(script, args, tmp_path, timeout=60)

    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert all(flag in line for flag in flags), line
    assert "same file" in line, line
    assert time.monotonic() - started < 15  # refused before anything starts
    assert {path: path.read_bytes() for path in before} == before
    assert not (tmp_path / "in.json.checkpoint").exists()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("target", ["an existing directory", "/dev/full"])
def test_an_output_that_is_not_a_regular_file_is_refused(tmp_path, target, script):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0} for n in range(5)])
    if target == "an existing directory":
        output = tmp_path / "a-directory"
        output.mkdir()
    else:
        output = Path(target)
    run = run_script(script, ["--input", str(recording), "--output", str(output)] + FAST, tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert str(output) in line and "not a regular file" in line, line
    assert not Path(f"{output}.checkpoint").exists()  # nothing created beside it (not even in /dev)


# -- 2. kombu's JSON type hooks in events ----------------------------------------------------

# kombu's JSON decoder turns {"__type__": "datetime", "__value__": ...} into a datetime (and
# decimal, bytes, uuid...): events that look like that must come back exactly as they were.
HOOKED_LINES = [
    '{"id": 0, "wait": 0, "x": {"__type__": "datetime", "__value__": "2020-01-01T00:00:00"}}',
    '{"__type__": "decimal", "__value__": "1.5", "id": 1, "wait": 0}',
    '{"id": 2, "wait": 0, "a": [{"b": {"__type__": "bytes", "__value__": "aGk=", "__bytes__": true}}]}',
    '{"id": 3, "wait": 0, "__type__": "no such type", "__value__": 5}',
    '{"id": 4, "wait": 0, "__bytes__": "aGk="}',
    '{"id":5,"wait":0.05,"deep":[[{"k":[{"__type__":"uuid","__value__":"not a uuid"}]}]]}',
    '{"id": 6, "wait": 0, "x": {"__type__": "date", "__value__": "not a date"}}',
    '{"id": 7, "wait": 0, "x": {"__type__": "time", "__value__": "12:00:00"}, "y": {"__class__": "set"}}',
    '{"id": 8, "wait": 0, "x": {"__type__": "decimal", "__value__": "NaN"}}',
    '{"id": 9, "wait": 0, "x": {"__type__": "bytes", "__value__": "not base64!"}}',
    '{"id": 10, "wait": 0, "x": {"__type__": "datetime"}, "y": {"__value__": "2020-01-01T00:00:00"}}',
    '{"id": 11, "wait": 0, "x": {"__type__": 17, "__value__": null, "__bytes__": [1, 2]}}',
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_events_shaped_like_kombu_type_hooks_come_back_byte_identical(tmp_path, broker_flag, script):
    recording = write_lines(tmp_path / "in.json", HOOKED_LINES)
    output = tmp_path / "out.json"
    run = run_script(script, ["--input", str(recording), "--output", str(output)] + FAST + broker_flag, tmp_path, 90)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == recording.read_bytes()


HOOK_KEYS = ["__type__", "__value__", "__bytes__", "__class__"]
KOMBU_TYPES = ["datetime", "date", "time", "decimal", "bytes", "uuid", "set", "no such type"]
keys = st.sampled_from(HOOK_KEYS + KOMBU_TYPES + ["id", "wait"]) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=10)  # lone surrogates too
    | st.sampled_from(KOMBU_TYPES + ["2020-01-01T00:00:00", "1.5", "aGk="])
)


def hooked(values):
    return st.fixed_dictionaries(
        {"__type__": st.sampled_from(KOMBU_TYPES) | values, "__value__": values},
        optional={"__bytes__": values, "__class__": values},
    )


json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4) | hooked(inner)
)
json_events = (st.dictionaries(keys, json_values, max_size=5) | hooked(json_values)).map(
    lambda event: {**event, "wait": 0}
)


@pytest.mark.parametrize("broker", ["embedded", "rabbitmq"])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(json_events, min_size=1, max_size=40), compact=st.booleans())
def test_any_json_events_come_back_byte_identical_and_echoed_exactly(request, broker, events, compact):
    """One recording per example: through the reference task (byte-identical output) and
    through a task that returns {"echo": event} (each line parses to exactly that)."""
    separators = (",", ":") if compact else (", ", ": ")
    with tempfile.TemporaryDirectory() as directory:
        where = Path(directory)
        recording = where / "in.json"
        recording.write_text("".join(json.dumps(event, separators=separators) + "\n" for event in events))
        same, echoed = where / "same.json", where / "echo.json"
        common = ["--input", str(recording)] + FAST + broker_args(request, broker)
        reference, echo = run_together(
            [
                ("run.py", common + ["--output", str(same)]),
                ("run.py", common + ["--output", str(echoed), "--task", "tasks_for_tests:echo_event"]),
            ],
            where,
        )
        assert reference.process.returncode == 0, reference.stderr
        assert same.read_bytes() == recording.read_bytes()
        assert echo.process.returncode == 0, echo.stderr
        canonical = lambda value: json.dumps(value, sort_keys=True)  # noqa: E731 - tells 1 from 1.0, -0.0 from 0.0
        originals = [json.loads(line) for line in lines_of(recording)]
        assert [canonical(json.loads(line)) for line in lines_of(echoed)] == [
            canonical({"echo": event}) for event in originals
        ]


# -- 3. two runs on one --output -------------------------------------------------------------


def test_a_second_run_on_the_same_output_stops_at_once_and_the_first_finishes_intact(tmp_path, broker_flag):
    # The first run takes about 18 s: long enough for two more runs to start and stop beside
    # it, even on a machine busy with other tests.
    recording = write_events(tmp_path / "in.json", [{"id": n, "title": f"page {n}", "wait": 6} for n in range(30)])
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--time-scale", "0.2"]
    args += ["--no-progress"] + broker_flag
    with Background(args, tmp_path) as first:
        wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="the first run's first line")
        for extra in ([], ["--resume"]):
            started = time.monotonic()
            second = run_script("run.py", args + extra, tmp_path, timeout=30)
            assert second.returncode == 2, second.stderr
            line = one_line(second.stderr)
            assert str(output) in line and "being written by another run" in line, line
            assert time.monotonic() - started < 10
            assert first.alive(), "the first run ended before the second started: nothing was tested"
        code = first.wait(120)
    assert code == 0, first.stderr
    assert output.read_bytes() == recording.read_bytes()
    assert verify(recording, output).returncode == 0


# Another name for the file `output` (in `where`), as a second run would give it: (name, cwd).
OTHER_NAMES = {
    "a symlink": lambda output: _linked(output, "link.json", Path.symlink_to),
    "a hard link": lambda output: _linked(output, "hard-link.json", Path.hardlink_to),
    "a path with ..": lambda output: (_made(output.parent / "sub") / ".." / output.name, output.parent),
    "a relative path": lambda output: (Path(output.name), output.parent),
}


def _linked(output: Path, name: str, link) -> tuple[Path, Path]:
    link(output.with_name(name), output)
    return output.with_name(name), output.parent


def _made(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    return directory


def held_back_recording(path: Path) -> Path:
    """Its first line comes back at once; the second takes 10 s, so in total order the
    output holds exactly one line (and neither file changes) for about 10 s."""
    events = [{"id": 0, "title": "page 0", "wait": 0}, {"id": 1, "title": "page 1", "wait": 10}]
    return write_events(path, events + [{"id": n, "title": f"page {n}", "wait": 0.05} for n in range(2, 20)])


@pytest.mark.parametrize(
    "script, how",
    [("run.py", how) for how in OTHER_NAMES] + [("run_streaming.py", "a symlink"), ("run_streaming.py", "a hard link")],
)
def test_a_second_run_naming_the_output_by_another_name_stops_at_once_and_touches_nothing(
    tmp_path, broker_flag, script, how
):
    recording = held_back_recording(tmp_path / "in.json")
    output = tmp_path / "out.json"
    flags = ["--workers", "2", "--batch-max", "1", "--no-progress"] + broker_flag
    with Background(["--input", str(recording), "--output", str(output)] + flags, tmp_path, script) as first:
        wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="the first run's first line")
        name, cwd = OTHER_NAMES[how](output)
        listing = sorted(path.name for path in tmp_path.iterdir())
        files = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (output, checkpoint_of(output))}

        started = time.monotonic()
        second = run_script(script, ["--input", str(recording), "--output", str(name)] + flags, cwd, timeout=60)

        assert second.returncode == 2, second.stderr
        line = one_line(second.stderr)
        assert f"{name} is being written by another run" in line, line
        assert time.monotonic() - started < 15
        assert first.alive(), "the first run ended before the second stopped: nothing was tested"
        assert len(lines_of(output)) == 1, "the first run's held-back line came early: the check below means nothing"
        assert sorted(path.name for path in tmp_path.iterdir()) == listing  # no checkpoint, position, report
        assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files} == files
        code = first.wait(120)
    assert code == 0, first.stderr
    assert output.read_bytes() == recording.read_bytes()
    assert verify(recording, output).returncode == 0
    assert verify(recording, cwd / name).returncode == 0  # through the other name too


def checkpoint_of(output: Path) -> Path:
    return output.with_name(output.name + ".checkpoint")


def test_a_run_and_its_resume_through_a_symlink_use_one_checkpoint_beside_the_file(tmp_path, events_12):
    output = tmp_path / "out.json"
    link = tmp_path / "link.json"
    link.symlink_to(output)
    args = ["--input", str(events_12), "--output", str(link)] + FAST
    run = run_script("run.py", args, tmp_path)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == events_12.read_bytes()
    assert checkpoint_of(output).exists() and not checkpoint_of(link).exists()
    resumed = run_script("run.py", ["--input", str(events_12), "--output", str(output), "--resume"] + FAST, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert output.read_bytes() == events_12.read_bytes()
    checked = subprocess.run(
        [sys.executable, "-m", "stream_processor", "verify", "--order", "none", str(events_12), str(link)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr  # --order none reads the checkpoint: found through the link


def test_a_recording_that_grows_during_a_run_is_read_as_it_was_and_its_checkpoint_says_so(tmp_path, broker_flag):
    events = [{"id": n, "title": f"page {n}", "wait": 0.3} for n in range(16)]
    recording = write_events(tmp_path / "in.json", events)
    original = recording.read_bytes()
    as_it_was = tmp_path / "as-it-was.json"
    as_it_was.write_bytes(original)
    appended = "".join(json.dumps({"id": 100 + n, "title": "late", "wait": 0}) + "\n" for n in range(5))
    output = tmp_path / "out.json"
    # A window of 2: the run is still reading the recording when the lines are appended.
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--max-in-flight", "2"]
    args += ["--batch-max", "1", "--no-progress"] + broker_flag
    with Background(args, tmp_path) as run:
        wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="the run's first line")
        with recording.open("a") as stream:
            stream.write(appended)
        assert run.alive() and len(lines_of(output)) < len(events), "the run read everything before the append"
        code = run.wait(120)

    assert code == 0, run.stderr
    line = one_line(run.stderr)
    assert str(recording) in line and "changed during the run" in line and "16 events" in line, line
    assert output.read_bytes() == original  # exactly the recording as it was when the run started
    header = json.loads(checkpoint_of(output).read_bytes().split(b"\n", 1)[0])
    assert header["input"] == recording_identity(as_it_was)
    assert verify(as_it_was, output).returncode == 0
    grown = verify(recording, output)
    assert grown.returncode == 1 and "input 21 events" in grown.stderr, grown.stderr
    before = (output.read_bytes(), checkpoint_of(output).read_bytes())
    resumed = run_script("run.py", ["--input", str(recording), "--output", str(output), "--resume"] + FAST, tmp_path)
    assert resumed.returncode == 2, resumed.stderr  # the grown file is another recording: not mixed in
    assert "--resume refuses" in one_line(resumed.stderr) and "input: it was" in resumed.stderr
    assert (output.read_bytes(), checkpoint_of(output).read_bytes()) == before
    again = run_script("run.py", ["--input", str(as_it_was), "--output", str(output), "--resume"] + FAST, tmp_path)
    assert again.returncode == 0, again.stderr  # the recording it was made from: done, nothing to add
    assert (output.read_bytes(), checkpoint_of(output).read_bytes()) == before


# -- 4. --resume of an output that cannot belong to the input ---------------------------------


RESUME_MISMATCHES = {
    "another recording": (lambda recording: _other_recording(recording), [], "input"),
    "another task": (lambda recording: recording, ["--task", "tasks_for_tests:echo_event"], "task"),
    "another order": (lambda recording: recording, ["--order", "none"], "order"),
}


def _other_recording(recording: Path) -> Path:
    other = recording.with_name("other.json")
    other.write_bytes(recording.read_bytes().replace(b'"page 3"', b'"page three"'))
    return other


@pytest.mark.parametrize("mismatch", list(RESUME_MISMATCHES))
def test_resume_refuses_an_output_made_by_another_run_and_touches_nothing(tmp_path, finished, mismatch):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    output.write_bytes(b"".join(line + b"\n" for line in lines_of(output)[:5]))  # as if interrupted
    checkpoint.write_bytes(checkpoint.read_bytes().split(b"\n", 1)[0] + b"\n0-4\n")
    before = (output.read_bytes(), checkpoint.read_bytes())
    input_of, extra, named = RESUME_MISMATCHES[mismatch]
    run = run_script(
        "run.py", ["--input", str(input_of(recording)), "--output", str(output), "--resume"] + FAST + extra, tmp_path
    )
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert "--resume refuses" in line and f"{named}: it was" in line, line
    assert (output.read_bytes(), checkpoint.read_bytes()) == before


def test_resume_refuses_an_output_without_a_checkpoint_and_creates_none(tmp_path, finished):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    checkpoint.unlink()
    before = output.read_bytes()
    run = run_script("run.py", ["--input", str(recording), "--output", str(output), "--resume"] + FAST, tmp_path)
    assert run.returncode == 2, run.stderr
    assert "no checkpoint" in one_line(run.stderr)
    assert output.read_bytes() == before
    assert not checkpoint.exists()


def _twice(text: bytes) -> bytes:
    return text + text


# How an output with more lines than its input may look: (output, checkpoint) from the
# finished run's (output, checkpoint).
MORE_LINES_THAN_THE_INPUT = {
    "the checkpoint's header only": lambda out, ckpt: (_twice(out), ckpt.split(b"\n", 1)[0] + b"\n"),
    "the real checkpoint": lambda out, ckpt: (_twice(out), ckpt),
    "the checkpoint's entries twice": lambda out, ckpt: (_twice(out), ckpt + ckpt.split(b"\n", 1)[1]),
    "a checkpoint listing offsets beyond the input": lambda out, ckpt: (
        _twice(out),
        ckpt.split(b"\n", 1)[0] + b"\n0-23\n",
    ),
}


@pytest.mark.parametrize(
    "shape",
    [pytest.param(name) for name in MORE_LINES_THAN_THE_INPUT],
)
def test_resume_never_exits_0_leaving_an_output_that_verify_rejects(tmp_path, finished, shape):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    doubled, entries = MORE_LINES_THAN_THE_INPUT[shape](output.read_bytes(), checkpoint.read_bytes())
    output.write_bytes(doubled)
    checkpoint.write_bytes(entries)
    run = run_script("run.py", ["--input", str(recording), "--output", str(output), "--resume"] + FAST, tmp_path)
    assert run.returncode in (0, 2), run.stderr
    if run.returncode == 2:  # refused: then it must say so, and leave the output as it was
        one_line(run.stderr)
        assert output.read_bytes() == doubled
    else:
        checked = verify(recording, output)
        assert checked.returncode == 0, f"resume exited 0, but verify says: {checked.stderr}"
        assert output.read_bytes() == recording.read_bytes()


@pytest.mark.chaos
def test_a_run_killed_mid_way_resumes_to_a_byte_identical_output_that_verifies(tmp_path, broker_flag):
    recording = write_events(tmp_path / "in.json", [{"id": n, "title": f"page {n}", "wait": 1} for n in range(30)])
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--time-scale", "0.2"]
    args += ["--no-progress"] + broker_flag
    with Background(args, tmp_path) as run:
        wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
        run.process.kill()
    assert 5 <= len(lines_of(output)) < 30
    resumed = run_script("run.py", args + ["--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert output.read_bytes() == recording.read_bytes()
    checked = verify(recording, output)
    assert checked.returncode == 0, checked.stderr


# -- 5. a task that kills its own process (a poison message) -----------------------------------


# At most: Celery's prefork pool may run an attempt again if its process died at once (below).
PREFORK_RUNS_PER_ATTEMPT = 2
POISONS = {2: "exit", 5: "segfault", 8: "systemexit", 11: "keyboardinterrupt", 14: "sigkill"}


def poisoned_recording(path: Path, poisons: dict[int, str], count: int = 16) -> Path:
    events = [{"id": n, "title": f"page {n}", "wait": 0} for n in range(count)]
    for offset, how in poisons.items():
        events[offset]["poison"] = how
    return write_events(path, events)


def assert_poison_records(recording: Path, output: Path, poisons: dict[int, str]) -> None:
    written, source = lines_of(output), lines_of(recording)
    assert len(written) == len(source)
    for offset, line in enumerate(written):
        if offset not in poisons:
            assert line == source[offset], f"line {offset + 1} changed"
            continue
        record = json.loads(line)
        assert set(record) == {"error", "offset", "id"}, record
        assert record["offset"] == offset and record["id"] == offset, record
        assert record["error"].startswith("the worker process died while running it, 3 times ("), record


@pytest.mark.chaos
def test_events_that_kill_their_worker_process_end_as_error_records_after_exactly_three_runs(tmp_path, broker_flag):
    recording = poisoned_recording(tmp_path / "in.json", POISONS)
    runs = tmp_path / "runs"
    runs.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--task", "tasks_for_tests:die_on_poison"]
    args += ["--retries", "2", "--retry-backoff", "0.05", "--batch-max", "1"] + FAST + broker_flag
    with Background(args, tmp_path, env={"POISON_DIR": str(runs)}) as run:
        code = run.wait(120)
    assert code == 3, run.stderr
    assert_poison_records(recording, output, POISONS)
    runs_of = {path.name: path.read_text() for path in runs.iterdir()}
    assert set(runs_of) == {f"{n}.runs" for n in POISONS}
    # Three counted attempts each. Celery's prefork pool sends a job whose process died
    # before the pool read that it had started to another process (asynpool's
    # on_partial_read): an event that kills its process at once can run twice for one
    # attempt, a run the client never sees (README: failure semantics).
    assert all(3 <= len(text) <= 3 * PREFORK_RUNS_PER_ATTEMPT for text in runs_of.values()), runs_of
    assert "Traceback" not in run.stderr


@pytest.mark.chaos
def test_a_poison_event_inside_a_batch_still_gets_its_three_counted_attempts(tmp_path):
    # Batched (the default), a lost batch's events run again alone, uncounted; then the
    # culprit gets its --retries: one uncounted run in the batch, at most, plus three.
    poisons = {3: "exit", 9: "segfault"}
    recording = poisoned_recording(tmp_path / "in.json", poisons, count=40)
    runs = tmp_path / "runs"
    runs.mkdir()
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--task", "tasks_for_tests:die_on_poison"]
    args += ["--retries", "2", "--retry-backoff", "0.05"] + FAST
    with Background(args, tmp_path, env={"POISON_DIR": str(runs)}) as run:
        code = run.wait(120)
    assert code == 3, run.stderr
    assert_poison_records(recording, output, poisons)
    assert {path.name for path in runs.iterdir()} == {f"{n}.runs" for n in poisons}
    assert all(3 <= len(path.read_text()) <= 1 + 3 * PREFORK_RUNS_PER_ATTEMPT for path in runs.iterdir())


# -- 6. the replay server dies -----------------------------------------------------------------


@pytest.fixture(scope="module")
def paced_recording(tmp_path_factory) -> Path:
    """About 60 events with timestamps over 30 s: a paced replay that is still going."""
    path = tmp_path_factory.mktemp("paced") / "paced.json"
    generate_file(path, minutes=0.5, rate=2.0, seed=5)
    return path


@pytest.mark.chaos
def test_run_streaming_brings_its_killed_replay_server_back_and_the_output_is_complete(
    tmp_path, broker_flag, paced_recording
):
    output = tmp_path / "out.json"
    args = ["--input", str(paced_recording), "--output", str(output), "--realtime", "--speed", "8"] + FAST
    with Background(args + broker_flag, tmp_path, script="run_streaming.py") as run:
        wait_until(lambda: len(lines_of(output)) >= 3, timeout=60, message="three lines written")
        servers = run.pids("stream_processor serve")
        assert len(servers) == 1, processes_with_marker(run.marker)
        kill(servers[0])
        code = run.wait(120)
    assert code == 0, run.stderr
    assert output.read_bytes() == paced_recording.read_bytes()
    assert "replay server exited unexpectedly" in run.stderr and "reconnected to" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.chaos
def test_a_replay_server_that_keeps_dying_ends_the_run_with_exit_1_and_one_clear_line(tmp_path, paced_recording):
    output = tmp_path / "out.json"
    args = ["--input", str(paced_recording), "--output", str(output), "--realtime", "--speed", "1"] + FAST
    started = time.monotonic()
    killed: set[int] = set()
    with Background(args, tmp_path, script="run_streaming.py") as run:
        wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="a first line")
        while run.alive() and time.monotonic() - started < 90:
            servers = [pid for pid in run.pids("stream_processor serve") if pid not in killed]
            # Kill each server once the client is back on it, as a crash while serving would.
            if servers and run.stderr.count("reconnected to") >= len(killed):
                kill(servers[0])
                killed.add(servers[0])
            time.sleep(0.05)
        code = run.wait(30)
    assert code == 1, run.stderr
    assert len(killed) >= 6  # five restarts a minute, then it gives up
    assert time.monotonic() - started < 90
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("stream-processor: ") and "replay server" in last and "keeps dying" in last, last
    assert "Traceback" not in run.stderr


@pytest.mark.chaos
def test_consume_gives_up_with_exit_1_when_its_server_stays_gone_past_the_reconnect_timeout(tmp_path, paced_recording):
    marker = uuid.uuid4().hex
    command = [sys.executable, str(ROOT / "socket_server.py"), "--input", str(paced_recording), "--port", "0"]
    server = subprocess.Popen(command + ["--realtime"], env=cli_env(marker), stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving "), line
        url = line.split()[1].removesuffix("/rc")
        output = tmp_path / "out.json"
        args = ["--url", url, "--output", str(output), "--reconnect-timeout", "5"] + FAST
        with Background(args, tmp_path, script="socket_client.py") as run:
            wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="a first line")
            server.kill()
            server.wait()
            gone = time.monotonic()
            code = run.wait(30)
            waited = time.monotonic() - gone
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()
        wait_until(lambda: not processes_with_marker(marker), timeout=10, message="the server gone")
    assert code == 1, run.stderr
    assert 4 <= waited <= 20, waited
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("stream-processor: ") and "lost the connection" in last, last
    assert "Traceback" not in run.stderr
    written = lines_of(output)
    assert written == lines_of(paced_recording)[: len(written)]  # an ordered prefix --resume continues


# (a query after the server's URL, transport, what the one line must say)
BAD_URLS = {
    "sse, a parameter given twice": ("/v2/stream/recentchange?since=2020-01-01T00:00:00Z&since=2021", "sse",
                                     "since may be given once"),
    "sse, an unknown stream": ("/v2/stream/recentchangez", "sse", "no such stream"),
    "socket.io, a parameter given twice": ("/rc?token=a&token=b", "socket.io", "token may be given once"),
    "socket.io, a parameter it would ignore": ("?since=1&since=2", "socket.io", "takes no query parameters"),
    "socket.io, no scheme": (None, "socket.io", "not a URL"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_a_usage_error_in_the_url_is_exit_2_and_one_line_and_the_output_untouched(tmp_path, finished, case):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    before = (output.read_bytes(), checkpoint.read_bytes())
    query, transport, says = BAD_URLS[case]
    with replay_server(recording) as (server, _):
        url = server.removeprefix("http://") if query is None else server + query
        args = ["--url", url, "--transport", transport, "--output", str(output)] + FAST
        run = run_script("socket_client.py", args, tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert line.startswith(f"stream-processor: --url {safe_url(url)}: ") and says in line, line  # no token shown
    assert (output.read_bytes(), checkpoint.read_bytes()) == before


@pytest.mark.parametrize("transport", ["sse", "socket.io"])
def test_an_unreachable_server_stays_exit_1_and_leaves_the_output_as_it_was(tmp_path, finished, transport):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    before = (output.read_bytes(), checkpoint.read_bytes())
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}" + ("/v2/stream/recentchange" if transport == "sse" else "")
    args = ["--url", url, "--transport", transport, "--output", str(output), "--reconnect-timeout", "2"] + FAST
    run = run_script("socket_client.py", args, tmp_path, timeout=90)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and f"127.0.0.1:{port}" in run.stderr.strip().splitlines()[-1]
    assert (output.read_bytes(), checkpoint.read_bytes()) == before  # not replaced by a run that never began


# -- 7. deeply nested JSON ---------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_deeply_nested_lines_get_error_records_in_place_and_nothing_hangs(tmp_path, broker_flag, script):
    lines = [
        '{"id": 0, "wait": 0}',
        "[" * 3000,
        '{"id": 2, "wait": 0}',
        '{"a":' * 3000,
        '{"id": 4, "wait": 0, "deep": ' + "[" * 500 + "]" * 500 + "}",  # deep, but fine
        "[" * 100_000 + "]" * 100_000,
        '{"id": 6, "wait": 0}',
    ]
    recording = write_lines(tmp_path / "in.json", lines)
    output = tmp_path / "out.json"
    run = run_script(script, ["--input", str(recording), "--output", str(output)] + FAST + broker_flag, tmp_path, 90)
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    written, source = lines_of(output), lines_of(recording)
    assert len(written) == len(source)
    for offset, line in enumerate(written):
        if offset in (1, 3, 5):
            record = json.loads(line)
            assert record == {"error": record["error"], "offset": offset}
            assert "nested too deeply" in record["error"]
            assert f"{recording}:{offset + 1}: nested too deeply" in run.stderr
        else:
            assert line == source[offset]


def test_a_line_the_client_accepts_is_not_refused_by_the_worker_for_its_depth(tmp_path):
    depth = 970
    lines = ['{"id": 0, "wait": 0}', '{"id": 1, "wait": 0, "deep": ' + "[" * depth + "]" * depth + "}"]
    recording = write_lines(tmp_path / "in.json", lines)
    output = tmp_path / "out.json"
    run = run_script("run.py", ["--input", str(recording), "--output", str(output)] + FAST, tmp_path)
    # Either it goes through unchanged, or the client refuses it itself, naming FILE:LINE.
    assert output.read_bytes() == recording.read_bytes() or f"{recording}:2:" in run.stderr, run.stderr


# -- 8. --workers 0 with no worker on the queue ---------------------------------------------------


@pytest.fixture(params=["rabbitmq", "redis"])
def shared_broker(request) -> tuple[str, str]:
    """(URL, what the run says while nobody consumes, with {queue} in it) of a broker running elsewhere."""
    if request.param == "rabbitmq":
        return request.getfixturevalue("rabbitmq_url"), "nothing is consuming queue {queue} on amqp://"
    if not rabbitmq_reachable("localhost", 6379):  # (it only tries a TCP connect)
        pytest.skip("no Redis at localhost:6379")
    return EXTERNAL_REDIS_URL, "wait in queue {queue} on redis://"


def test_workers_0_says_nothing_consumes_its_queue_keeps_waiting_and_finishes_once_a_worker_comes(
    tmp_path, events_12, shared_broker
):
    url, saying = shared_broker
    queue = f"stream_processor.test.misuse.{uuid.uuid4().hex[:8]}"
    output = tmp_path / "out.json"
    args = ["--input", str(events_12), "--output", str(output), "--workers", "0", "--broker", url]
    args += ["--queue", queue, "--time-scale", "0.01", "--no-progress", "--stall-warning", "5"]
    worker_marker = uuid.uuid4().hex
    worker = None
    try:
        with Background(args, tmp_path) as run:
            wait_until(lambda: saying.format(queue=queue) in run.stderr, timeout=25, message="a plain warning")
            assert run.alive(), run.stderr  # it keeps waiting: workers may come
            assert "Traceback" not in run.stderr
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream_processor", "worker", "--broker", url, "--queue", queue]
                + ["--concurrency", "2", "--loglevel", "WARNING"],
                env=cli_env(worker_marker),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            code = run.wait(90)
    finally:
        if worker is not None:
            terminate(worker, worker_marker)
        delete_queue(url, Queue(queue))
        if url.startswith("redis://"):  # kombu's exchange bindings outlive the queue there
            with redis.Redis.from_url(url) as client:
                client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    assert code == 0, run.stderr
    assert output.read_bytes() == events_12.read_bytes()


# -- 10. clear errors ------------------------------------------------------------------------------


def test_a_missing_output_directory_is_one_line_naming_it_and_exit_2(tmp_path, events_12):
    output = tmp_path / "no-such-dir" / "out.json"
    run = run_script("run.py", ["--input", str(events_12), "--output", str(output)] + FAST, tmp_path)
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert str(tmp_path / "no-such-dir") in line and "does not exist" in line, line


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_read_only_file_system_is_one_line_and_exit_2_and_the_output_untouched(tmp_path, finished, resume):
    recording = finished[0]
    with tmpfs(tmp_path / "ro", "size=1m") as where:
        place_finished_output(finished, where)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
        before = {path.name: path.read_bytes() for path in where.iterdir()}
        args = (
            ["--input", str(recording), "--output", str(where / "out.json")] + FAST + (["--resume"] if resume else [])
        )
        run = run_script("run.py", args, tmp_path)
        assert run.returncode == 2, run.stderr
        line = one_line(run.stderr)
        assert str(where) in line and "read-only" in line, line
        assert {path.name: path.read_bytes() for path in where.iterdir()} == before


@pytest.fixture
def full_disk_run(tmp_path) -> Iterator[tuple[Path, Path, subprocess.CompletedProcess]]:
    """A run whose output (about 300 KB) does not fit on its 64 KB file system:
    yields (the recording, the output, the run), the output still on that file system.
    One event per task, so the sink writes few lines at a time: they sit in its buffer
    when the disk fills (with batches of 100, a big write fails whole, only sometimes)."""
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 0, "pad": "x" * 1000} for n in range(300)])
    with tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        output = tiny / "out.json"
        args = ["--input", str(recording), "--output", str(output), "--batch-max", "1"] + FAST
        run = run_script("run.py", args, tmp_path)
        yield recording, output, run


def test_a_disk_that_fills_mid_run_is_exit_1_and_resume_finishes_once_there_is_room(tmp_path, full_disk_run):
    recording, output, run = full_disk_run
    assert run.returncode == 1, run.stderr
    assert "No space left on device" in run.stderr
    assert 0 < len(lines_of(output)) < 300
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    for path in (output, Path(f"{output}.checkpoint")):
        shutil.copy(path, roomy / path.name)
    args = ["--input", str(recording), "--output", str(roomy / "out.json"), "--resume"] + FAST
    resumed = run_script("run.py", args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (roomy / "out.json").read_bytes() == recording.read_bytes()
    assert verify(recording, roomy / "out.json").returncode == 0


def test_a_disk_that_fills_mid_run_is_one_sentence_naming_the_file(full_disk_run):
    _, output, run = full_disk_run
    line = one_line(run.stderr)
    assert "No space left on device" in line and str(output) in line, line


@pytest.mark.parametrize("flag", ["--metrics-port", "--dashboard"])
def test_a_port_already_in_use_is_one_line_naming_it_and_exit_2_before_the_run(tmp_path, events_12, flag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output = tmp_path / "out.json"
        run = run_script(
            "run.py", ["--input", str(events_12), "--output", str(output), flag, str(port)] + FAST, tmp_path
        )
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert f"{flag} {port}" in line and "in use" in line, line
    assert not output.exists()


@pytest.mark.parametrize(
    ("script", "flag"), [("run.py", "--metrics-port"), ("run.py", "--dashboard"), ("socket_server.py", "--port")]
)
def test_a_port_out_of_range_is_a_usage_error(tmp_path, events_12, script, flag):
    args = ["--input", str(events_12), flag, "70000"]
    if script == "run.py":
        args += ["--output", str(tmp_path / "out.json")] + FAST
    run = run_script(script, args, tmp_path, timeout=30)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    # argparse's own form: its usage, then one line naming the flag and what is wrong.
    last = run.stderr.strip().splitlines()[-1]
    assert flag in last and "70000" in last and "port" in last, run.stderr


def test_a_report_in_a_missing_directory_is_refused_before_the_run_starts(tmp_path, events_12):
    output = tmp_path / "out.json"
    started = time.monotonic()
    run = run_script(
        "run.py", ["--input", str(events_12), "--output", str(output), "--report", "nodir/r.json"] + FAST, tmp_path
    )
    assert run.returncode == 2, run.stderr
    line = one_line(run.stderr)
    assert "--report nodir/r.json" in line and "does not exist" in line, line
    assert time.monotonic() - started < 5
    assert not output.exists() and not Path(f"{output}.checkpoint").exists()


@pytest.mark.parametrize(
    "url", ["amqp://guest:s3cret-pw@localhost:5699//", "redis://:s3cret-pw@localhost:6399/0"], ids=["amqp", "redis"]
)
def test_an_unreachable_broker_is_one_line_naming_it_without_its_password_and_exit_2(tmp_path, events_12, url):
    started = time.monotonic()
    run = run_script(
        "run.py", ["--input", str(events_12), "--output", str(tmp_path / "out.json"), "--broker", url] + FAST, tmp_path
    )
    assert run.returncode == 2, run.stderr
    assert time.monotonic() - started < 15
    line = one_line(run.stderr)
    host = url.rsplit("@", 1)[1]
    assert "cannot reach the broker" in line and host in line, line
    assert "s3cret-pw" not in run.stderr + run.stdout


def test_an_unreachable_broker_leaves_an_existing_output_untouched(tmp_path, finished):
    recording, output, checkpoint = place_finished_output(finished, tmp_path)
    before = (output.read_bytes(), checkpoint.read_bytes())
    args = ["--input", str(recording), "--output", str(output), "--broker", "amqp://guest:guest@localhost:5699//"]
    run = run_script("run.py", args + FAST, tmp_path)
    assert run.returncode == 2, run.stderr
    assert (output.read_bytes(), checkpoint.read_bytes()) == before


def test_a_huge_task_timeout_is_no_limit_rather_than_an_error_for_every_event(tmp_path, events_12):
    output = tmp_path / "out.json"
    args = ["--input", str(events_12), "--output", str(output), "--task-timeout", "1e10", "--retry-backoff", "0"]
    run = run_script("run.py", args + FAST, tmp_path)
    assert run.returncode in (0, 2), run.stderr  # done, or refused as a usage error: not 12 error records
    if run.returncode == 0:
        assert output.read_bytes() == events_12.read_bytes()


# -- 11. wrong figures -------------------------------------------------------------------------------


def test_events_that_time_out_do_not_inflate_the_efficiency(tmp_path):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 5} for n in range(6)])
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--report", str(report_path)]
    args += ["--task-timeout", "1", "--time-scale", "1", "--workers", "2", "--no-progress"]
    run = run_script("run.py", args, tmp_path)
    assert run.returncode == 3, run.stderr
    assert all(json.loads(line)["error"].startswith("timed out") for line in lines_of(output))
    report = json.loads(report_path.read_text())
    assert report["ideal_span_s"] == pytest.approx(3.0, abs=0.01)  # 3 rounds of 1 s (the limit), not of 5 s
    assert 0 < report["efficiency"] <= 1.05, report


def test_an_absurd_time_scale_gives_error_records_and_a_report_that_is_valid_json(tmp_path):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": n % 2} for n in range(6)])
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--report", str(report_path)]
    run = run_script("run.py", args + ["--time-scale", "1e308", "--workers", "2", "--no-progress"], tmp_path)
    assert run.returncode == 3, run.stderr

    def not_json(name):
        raise AssertionError(f"the report holds {name}, which is not JSON")

    report = json.loads(report_path.read_text(), parse_constant=not_json)
    assert report["events"] == 6 and report["errors"] == 3
    for offset, line in enumerate(lines_of(output)):
        if offset % 2:
            assert "beyond the 86400 s limit" in json.loads(line)["error"]
        else:
            assert line == lines_of(recording)[offset]
    assert "Traceback" not in run.stderr


# -- 12. what a newcomer sees -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "broker"), [("run.py", "embedded"), ("run.py", "rabbitmq"), ("run_streaming.py", "embedded")]
)
def test_a_normal_run_shows_nothing_from_celery_on_stderr(request, tmp_path, events_12, script, broker):
    output = tmp_path / "out.json"
    args = ["--input", str(events_12), "--output", str(output)] + FAST + broker_args(request, broker)
    run = run_script(script, args, tmp_path)
    assert run.returncode == 0, run.stderr
    for chatter in ("SecurityWarning", "Warm shutdown", "Traceback", "celery", "kombu"):
        assert chatter not in run.stderr, run.stderr
    assert not_ours(run.stderr) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_says_interrupted_once_and_nothing_from_celery(tmp_path, script):
    recording = write_events(tmp_path / "in.json", [{"id": n, "wait": 1} for n in range(30)])
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--workers", "2", "--time-scale", "0.2"]
    with Background(args + ["--no-progress"], tmp_path, script=script) as run:
        wait_until(lambda: len(lines_of(output)) >= 1, timeout=60, message="a first line")
        os.killpg(run.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the foreground group
        code = run.wait(30)
    assert code == 130, run.stderr
    assert run.stderr.count("interrupted") == 1, run.stderr
    for chatter in ("Hitting Ctrl+C again", "exitcode 70", "Cold shutdown", "Warm shutdown", "Traceback"):
        assert chatter not in run.stderr, run.stderr
    assert not_ours(run.stderr) == []


def test_verbose_shows_the_workers_own_log(tmp_path, events_12):
    run = run_script(
        "run.py", ["--input", str(events_12), "--output", str(tmp_path / "out.json"), "-v"] + FAST, tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "Warm shutdown" in run.stderr, run.stderr  # the Celery worker's own words


# -- 13. --help ----------------------------------------------------------------------------------


def test_help_describes_the_tool_for_users():
    commands = [[sys.executable, "-m", "stream_processor", "--help"]]
    installed = Path(sys.executable).with_name("stream-processor")
    if installed.exists():
        commands.append([str(installed), "--help"])
    for command in commands:
        shown = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout
        assert "Argument parsing only" not in text
        assert "Celery" in text and "in the order" in text  # what it does
        assert "examples:" in text and "stream-processor process --input" in text
        exit_codes = text.partition("exit codes:")[2]
        assert all(re.search(rf"\b{code} [a-z]", exit_codes) for code in (0, 1, 2, 3, 130)), text


# -- 14. a byte order mark and blank lines ---------------------------------------------------------


BOM = b"\xef\xbb\xbf"
GOOD_WITH_BLANKS = [BOM + b'{"id": 0, "wait": 0}', b'{"id": 1, "wait": 0}', b"", b"   \t", b'{"id": 2, "wait": 0}', b""]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bom_and_blank_lines_are_skipped_and_the_output_verifies(tmp_path, script):
    recording = write_lines(tmp_path / "in.json", GOOD_WITH_BLANKS)
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--report", str(report_path)]
    run = run_script(script, args + FAST, tmp_path)
    assert run.returncode == 0, run.stderr
    assert lines_of(output) == [b'{"id": 0, "wait": 0}', b'{"id": 1, "wait": 0}', b'{"id": 2, "wait": 0}']
    assert json.loads(report_path.read_text())["events"] == 3
    checked = verify(recording, output)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    "script",
    [
        "run.py",
        "run_streaming.py",
    ],
)
def test_blank_lines_skipped_are_counted_in_the_report_and_said(tmp_path, script):
    recording = write_lines(tmp_path / "in.json", GOOD_WITH_BLANKS)
    report_path = tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(tmp_path / "out.json"), "--report", str(report_path)]
    run = run_script(script, args + FAST, tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(report_path.read_text()).get("blank_lines_skipped") == 3
    assert "skipped 3 blank lines" in run.stderr, run.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_line_after_blank_lines_is_named_by_its_true_line_number(tmp_path, script):
    lines = GOOD_WITH_BLANKS[:-1] + [b"{not json", b"", b'{"id": 4, "wait": 0}']
    recording = write_lines(tmp_path / "in.json", lines)
    output = tmp_path / "out.json"
    run = run_script(script, ["--input", str(recording), "--output", str(output)] + FAST, tmp_path)
    assert run.returncode == 3, run.stderr
    assert f"{recording}:6: not valid JSON" in run.stderr, run.stderr  # line 6 of the file, event 3
    written = lines_of(output)
    assert len(written) == 5
    assert json.loads(written[3])["offset"] == 3
    assert verify(recording, output).returncode == 0


def test_canary_every_without_the_eventstreams_format_is_a_usage_error_and_writes_nothing(tmp_path):
    # A flag that would do nothing is refused, not ignored: RCStream's changes have no canaries.
    output = tmp_path / "rc.json"
    command = [sys.executable, "-m", "stream_processor", "generate", "--canary-every", "3", "--output", str(output)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--format eventstreams" in refused.stderr, refused.stderr
    assert not output.exists()
