"""Shared fixtures: small recordings, the RabbitMQ URL, running the CLI as a real process,
and finding any process a run left behind."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from harness.postgres_instance import drop_output_table
from stream_processor.serving import ASYNC_MODE_ENV, ASYNC_MODES
from stream_processor.sources.generate import START_TIMESTAMP, generate_events, generate_file

# A test run started as a background job of a script inherits SIGINT ignored, and so would
# every run the tests start and then interrupt as Ctrl-C does: they must see it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
RABBITMQ_URL = os.environ.get("STREAM_PROCESSOR_TEST_RABBITMQ", "amqp://guest:guest@localhost:5672//")
MARKER_ENV = "STREAM_PROCESSOR_TEST_MARKER"


def rabbitmq_reachable(host: str = "localhost", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


TIERS = ("unit", "integration", "e2e", "chaos", "soak", "cluster", "browser", "bench")
ONE_AT_A_TIME = ("cluster",)  # its tests share the hosts' network namespaces: one xdist worker runs them all


def pytest_collection_modifyitems(config, items) -> None:
    """Each test is marked with its tier, the directory it lives in, and `rabbitmq` when it
    runs on RabbitMQ (it uses `rabbitmq_url`, or a parameter named for RabbitMQ), so that
    `-m` can choose tiers and brokers; a tier whose tests must not overlap runs on one
    xdist worker (`--dist loadgroup`)."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier in ONE_AT_A_TIME:
            item.add_marker(pytest.mark.xdist_group(tier))
        elif item.get_closest_marker("heavy"):
            item.add_marker(pytest.mark.xdist_group("heavy"))
        callspec = getattr(item, "callspec", None)
        if "rabbitmq_url" in item.fixturenames or (callspec is not None and "rabbitmq" in callspec.id):
            item.add_marker(pytest.mark.rabbitmq)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    if rabbitmq_reachable():
        return RABBITMQ_URL
    if os.environ.get("STREAM_PROCESSOR_REQUIRE_RABBITMQ") == "1":
        pytest.fail("RabbitMQ is required (STREAM_PROCESSOR_REQUIRE_RABBITMQ=1) but localhost:5672 is not reachable")
    pytest.skip("RabbitMQ not reachable at localhost:5672 (start it with `rabbitmq-server -detached`)")


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Network namespaces can be made here (root, `ip netns`) and RabbitMQ is installed; else
    skip, saying why (or fail where STREAM_PROCESSOR_REQUIRE_NETNS=1, as in CI)."""
    from harness.netns import why_unavailable
    from harness.rabbitmq_node import RABBITMQ_BIN

    why = why_unavailable()
    if why is None and not (RABBITMQ_BIN / "rabbitmq-server").exists():
        why = f"RabbitMQ is not installed ({RABBITMQ_BIN}/rabbitmq-server)"
    if why is None:
        return
    if os.environ.get("STREAM_PROCESSOR_REQUIRE_NETNS") == "1":
        pytest.fail(f"the cluster tests are required (STREAM_PROCESSOR_REQUIRE_NETNS=1), but {why}")
    pytest.skip(f"cluster tests skipped: {why}")


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_flag(request) -> list[str]:
    """Run a test once on the embedded broker and once on RabbitMQ."""
    if request.param == "embedded":
        return []
    return ["--broker", request.getfixturevalue("rabbitmq_url")]


@pytest.fixture(params=ASYNC_MODES)
def async_mode(request, monkeypatch) -> str:
    """Run a test once per async mode of the server: every server it starts (replay_server,
    run_streaming's own) serves in this mode, by the environment the CLI reads its default from."""
    monkeypatch.setenv(ASYNC_MODE_ENV, request.param)
    return request.param


in_each_async_mode = pytest.mark.usefixtures("async_mode")


@pytest.fixture(scope="session")
def headless():
    """harness/browser.py (the one way this project starts a headless Chromium), once a
    Chromium is known to be installed; else the test skips, saying so (or fails where
    STREAM_PROCESSOR_REQUIRE_CHROMIUM=1, as in CI)."""
    browser = importlib.import_module("harness.browser")
    if browser.find_chromium() is None:
        if os.environ.get("STREAM_PROCESSOR_REQUIRE_CHROMIUM") == "1":
            pytest.fail("Chromium is required (STREAM_PROCESSOR_REQUIRE_CHROMIUM=1) but is not installed")
        pytest.skip("Chromium is not installed (apt-get install chromium): the pages' browser tests need it")
    return browser


@pytest.fixture(scope="session")
def small_recording(tmp_path_factory) -> Path:
    """About 60 events with the generator's real shape (waits 0.01..10 s)."""
    path = tmp_path_factory.mktemp("recordings") / "small.json"
    generate_file(path, minutes=0.5, rate=2.0, seed=11)
    return path


def processes_with_marker(marker: str) -> list[str]:
    """Every live process whose environment or command line carries `marker`: what a run left behind.

    redis-server rewrites its process title over its environment, but its command line
    names its socket, which lies under the run's TMPDIR (see cli_env), named for the marker.
    """
    found = []
    needle = f"{MARKER_ENV}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            if needle in (entry / "environ").read_bytes() or marker.encode() in command:
                printable = command.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {printable}")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def terminate(process: subprocess.Popen, marker: str, timeout: float = 20) -> None:
    """SIGTERM must stop it within `timeout` (else SIGKILL, and the test fails); then
    nothing carrying `marker` may be left."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args!r:.120} ignored SIGTERM for {timeout} s") from None
    finally:
        wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")


def marked_temp_dir(marker: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"stream-processor-test-{marker}"
    path.mkdir(exist_ok=True)
    return path


def cli_env(marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env[MARKER_ENV] = marker
    env["TMPDIR"] = str(marked_temp_dir(marker))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.pop("STREAM_PROCESSOR_BROKER", None)
    return env


def start_cli(
    args: list[str], cwd: Path, marker: str, script: str = "run.py", env: dict[str, str] | None = None, **kwargs
) -> subprocess.Popen:
    """`python SCRIPT ARGS` (a root script), its environment marked for finding leftovers."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env={**cli_env(marker), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture
def run_cli(tmp_path):
    """Run `python run.py ARGS` as a real process; afterwards, assert it left nothing behind."""

    def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return run_script("run.py", args, tmp_path, timeout)

    return run


def run_script(script: str, args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` (a root script) to the end; afterwards nothing it started may be left."""
    marker = uuid.uuid4().hex
    process = start_cli(args, cwd, marker, script=script)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"{script} timed out; stderr:\n{stderr}") from None
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@contextmanager
def replay_server(recording: Path, *flags: str, port: int = 0):
    """`python socket_server.py` on its own; yields (url, process). It must still be up at
    the end, and SIGTERM must stop it."""
    marker = uuid.uuid4().hex
    command = [sys.executable, str(ROOT / "socket_server.py"), "--input", str(recording), "--port", str(port), *flags]
    process = subprocess.Popen(command, env=cli_env(marker), stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving "), line
        yield line.split()[1].removesuffix("/rc"), process
    finally:
        alive = process.poll() is None
        terminate(process, marker, timeout=10)
        process.stdout.close()
        assert alive, f"the server died (exit {process.returncode})"


@dataclass(frozen=True)
class RawAnswer:
    status: int | None  # None: no status line (the connection closed first, or an HTTP/0.9-style answer)
    head: bytes
    body: bytes


def raw_http(port: int, request: bytes, until: Callable[[bytes], bool] | None = None, timeout: float = 10) -> RawAnswer:
    """Send `request` as bytes on a fresh connection to 127.0.0.1 (http.client refuses odd
    header values) and read until the server closes it (send `Connection: close`) or, with
    `until`, until what came satisfies it. A reset connection ends what came."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(request)
            while not (until and until(received)) and (chunk := connection.recv(65536)):
                received += chunk
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    status = re.match(rb"HTTP/1\.[01] ([0-9]{3}) ", head)
    return RawAnswer(int(status[1]) if status else None, head, body)


def write_recording(path: Path, lines: list[bytes], trailing_newline: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline and lines else b""))
    return path


def paced_recording(path: Path, count: int, gap_s: int = 1, seed: int = 3) -> list[bytes]:
    """`count` generated events, their timestamps `gap_s` apart (paced replays take count * gap_s / speed)."""
    events = generate_events(minutes=60, rate=1.0, seed=seed)
    lines = [json.dumps({**next(events), "timestamp": START_TIMESTAMP + i * gap_s}).encode() for i in range(count)]
    write_recording(path, lines)
    return lines


@pytest.fixture(scope="module")
def good(small_recording) -> list[bytes]:
    """Lines of a generated recording: their waits are 0.01-10 s, 0.1 ms-0.1 s at FAST's time scale."""
    return small_recording.read_bytes().splitlines()


TEN_MB = 10_000_000


def ten_megabyte_lines() -> tuple[bytes, bytes]:
    """A 10 MB event (`wait` 0) and a 10 MB line that is not JSON (its object is never closed)."""
    blob = b"0123456789abcdef" * (TEN_MB // 16)
    valid = b'{"id": 424242, "title": "Caf\\u00e9", "wait": 0, "blob": "' + blob + b'"}'
    invalid = b'{"id": 434343, "wait": 0, "blob": "' + blob + b'"'
    return valid, invalid


WIKIS = [
    ("en.wikipedia.org", "enwiki"),
    ("de.wikipedia.org", "dewiki"),
    ("en.wiktionary.org", "enwiktionary"),
    ("commons.wikimedia.org", "commonswiki"),
    ("www.wikidata.org", "wikidatawiki"),
]
TYPES = ["edit", "new", "log", "categorize"]


def mixed_recording(path: Path, count: int = 200) -> list[dict]:
    """Generated edits spread over five wikis and four types (namespaces and bots as generated)."""
    events = []
    for i, event in zip(range(count), generate_events(minutes=60, rate=2.0, seed=17), strict=False):
        server_name, wiki = WIKIS[i % len(WIKIS)]
        events.append({**event, "server_name": server_name, "wiki": wiki, "type": TYPES[(i // 3) % len(TYPES)]})
    write_recording(path, [json.dumps(event).encode() for event in events])
    return events


def expected_offsets(events: list[dict], subscription) -> list[int]:
    """The offsets README's filter rules select (fnmatch on server_name or wiki; every filter must pass)."""
    fields = subscription if isinstance(subscription, dict) else {"wikis": subscription}

    def as_list(value):
        return value if isinstance(value, list) else [value]

    def wanted(event: dict) -> bool:
        wikis = as_list(fields.get("wikis", "*"))
        if "*" not in wikis and not any(fnmatchcase(event[k], w) for w in wikis for k in ("server_name", "wiki")):
            return False
        return all(event[key] in as_list(fields[key]) for key in ("type", "namespace", "bot") if key in fields)

    return [offset for offset, event in enumerate(events) if wanted(event)]


@pytest.fixture(scope="session")
def js_clients(tmp_path_factory) -> tuple[Path, str]:
    """tests/js with its npm packages installed in a temporary directory, and node; skips
    only when node or npm is missing (fails instead where STREAM_PROCESSOR_REQUIRE_NODE=1)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        if os.environ.get("STREAM_PROCESSOR_REQUIRE_NODE") == "1":
            pytest.fail("node and npm are required (STREAM_PROCESSOR_REQUIRE_NODE=1) but are not on PATH")
        pytest.skip("node and npm are needed for the JavaScript client tests")
    work = tmp_path_factory.mktemp("js") / "js"
    shutil.copytree(TESTS / "js", work, ignore=shutil.ignore_patterns("node_modules"))
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert install.returncode == 0, install.stderr
    return work, node


class FakeClock:
    """A clock that moves only when a test sets `now`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- PostgreSQL ---------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get("STREAM_PROCESSOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
POSTGRES_FIXTURES = ("postgres_url", "pg_table", "private_pg")


@pytest.hookimpl(specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_postgres(config, items) -> None:
    """Beside the tiers' marks (pytest_collection_modifyitems above): `postgres` on each test
    that uses a PostgreSQL server (the shared one's fixtures, or a private one), as
    `rabbitmq` is set from the fixtures a test uses, so that `-m` can choose them."""
    for item in items:
        if any(name in item.fixturenames for name in POSTGRES_FIXTURES):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The shared PostgreSQL server (127.0.0.1:5432, trust auth, user postgres), once it
    answers; else the test skips, saying why (or fails where STREAM_PROCESSOR_REQUIRE_POSTGRES=1)."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if os.environ.get("STREAM_PROCESSOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (STREAM_PROCESSOR_REQUIRE_POSTGRES=1) but unreachable: {reason}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL} ({reason})")
    return POSTGRES_URL


@pytest.fixture
def pg_table(postgres_url):
    """A table name no other test uses (`t_<uuid hex>`); afterwards the table and its
    checkpoint row are dropped."""
    name = f"t_{uuid.uuid4().hex}"
    yield name
    drop_output_table(postgres_url, name)


@pytest.fixture
def private_pg(request):
    """A private PostgreSQL server of this test's own (harness/postgres_instance.py), for
    tests that stop and restart their database; stopped and removed afterwards. Trust
    authentication, or a password (parametrize `private_pg` indirectly with it). Skips when
    it cannot be started here (fails where STREAM_PROCESSOR_REQUIRE_POSTGRES=1)."""
    from harness.postgres_instance import private_postgres, why_unavailable

    why = why_unavailable()
    if why is not None:
        if os.environ.get("STREAM_PROCESSOR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"a private PostgreSQL is required (STREAM_PROCESSOR_REQUIRE_POSTGRES=1), but {why}")
        pytest.skip(f"no private PostgreSQL: {why}")
    with private_postgres(password=getattr(request, "param", None)) as instance:
        yield instance
