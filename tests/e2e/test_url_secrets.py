"""Issue 18 item 5: a token given in a URL (`consume --url '...?token=SECRET'`, the documented
form for event streams) or a password in one (`http://user:PW@host/...`) must not leave the
process. Real runs (Socket.IO and the event stream, the embedded broker and RabbitMQ), with
--report, --metrics-port, the dashboard and a replay server that dies mid-run, then every
artifact searched for the secrets: the output directory, stdout, stderr, the metrics and the
dashboard's documents read during the run. And --resume after the token changed."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from stream_processor.cli.main import DASHBOARD_TOKEN_ENV
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.protocol.vocabulary import TOKEN_ENV
from tests.conftest import ROOT, cli_env, marked_temp_dir, paced_recording, processes_with_marker, terminate, wait_until
from tests.e2e.test_misuse import FAST, Background, lines_of

EVENTS = 40
SPEED = "10"  # the replay takes EVENTS / 10 s: long enough to read the run's pages while it goes


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "paced.json"
    paced_recording(path, EVENTS)
    return path


def secret(kind: str) -> str:
    return f"S3CRET-{kind}-{secrets.token_hex(8)}"


class Server:
    """`socket_server.py` with a token (by the environment, as `ps` must not show it), paced;
    it can be killed and started again on the same port."""

    def __init__(self, recording: Path, token: str, port: int = 0) -> None:
        self.recording, self.token = recording, token
        self.marker = uuid.uuid4().hex
        command = [sys.executable, str(ROOT / "socket_server.py"), "--input", str(recording), "--port", str(port)]
        command += ["--realtime", "--speed", SPEED]
        env = {**cli_env(self.marker), TOKEN_ENV: token}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("serving "), line
        self.url = line.split()[1].removesuffix("/rc")
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """As a crash does: no goodbye to the clients."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process.stdout.close()
        wait_until(lambda: not processes_with_marker(self.marker), timeout=10, message="the killed server gone")

    def again(self, token: str | None = None) -> Server:
        return Server(self.recording, token or self.token, self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            terminate(self.process, self.marker, timeout=10)
            self.process.stdout.close()


def with_secrets(server_url: str, transport: str, token: str, password: str) -> str:
    """The server's address with a userinfo password and the token in the query."""
    host = server_url.removeprefix("http://")
    path = STREAM_PATH if transport == "sse" else "/"
    return f"http://reader:{password}@{host}{path}?since=0&token={token}"


def get(url: str, bearer: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def logged_address(stderr: str, prefix: str) -> str | None:
    for line in stderr.splitlines():
        if prefix in line:
            return line.split(prefix, 1)[1].split()[0]
    return None


def files_holding(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` (recursively) whose bytes hold any of `needles`."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {needle}" for needle in needles if needle.encode() in data]
    return found


@pytest.mark.parametrize("transport", ["sse", "socket.io"])
def test_a_token_and_a_password_in_the_url_appear_in_no_artifact_of_a_run(tmp_path, recording, broker_flag, transport):
    token, password, dashboard_token = secret("token"), secret("password"), secret("dashboard")
    needles = [token, password, dashboard_token]
    out = tmp_path / "out"
    out.mkdir()
    server = Server(recording, token)
    url = with_secrets(server.url, transport, token, password)
    if transport == "socket.io":
        url = url.replace("?since=0&", "?")  # Socket.IO has no `since`; the token goes on to engine.io's query
    args = ["--url", url, "--output", str(out / "out.json"), "--report", str(out / "report.json")]
    args += ["--metrics-port", "0", "--dashboard", "0", "-v", *FAST, *broker_flag]
    seen: dict[str, bytes] = {}
    try:
        with Background(args, tmp_path, script="socket_client.py", env={DASHBOARD_TOKEN_ENV: dashboard_token}) as run:
            wait_until(lambda: len(lines_of(out / "out.json")) >= 5, timeout=60, message="five lines written")
            metrics = logged_address(run.stderr, "serving Prometheus metrics at ")
            page = logged_address(run.stderr, "serving the run's dashboard at ")
            assert metrics and page, run.stderr
            seen["metrics"] = get(metrics)
            seen["snapshot"] = get(f"{page.rstrip('/')}/snapshot", bearer=dashboard_token)
            assert b"http://reader:***@127.0.0.1:" in seen["snapshot"], seen["snapshot"][:2000]
            # The server dies mid-run: the client says so, names the server, and tries again
            # (an error path that quotes the URL) until a new one listens on the same port.
            server.kill()
            lost = "lost the connection to" if transport == "socket.io" else "trying again"
            wait_until(lambda: lost in run.stderr, timeout=30, message=f"{lost!r} logged")
            server = server.again()
            code = run.wait(120)
        assert code == 0, run.stderr
        assert "reconnected to http://reader:***@127.0.0.1:" in run.stderr, run.stderr
        assert (out / "out.json").read_bytes() == recording.read_bytes()
        report = (out / "report.json").read_text()
        assert '"url": "http://reader:***@127.0.0.1:' in report and "token=***" in report, report
    finally:
        server.stop()
    leaks = files_holding(out, needles) + files_holding(marked_temp_dir(run.marker), needles)
    leaks += [f"{name}: {needle}" for name, data in seen.items() for needle in needles if needle.encode() in data]
    printed = {"stdout": run.stdout, "stderr": run.stderr}
    leaks += [f"{name}: {needle}" for name, text in printed.items() for needle in needles if needle in text]
    assert not leaks, f"{leaks}\nstderr:\n{run.stderr}"
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["out.json", "out.json.checkpoint", "report.json"] + (["out.json.position"] if transport == "sse" else [])
    )


@pytest.mark.parametrize("transport", ["sse", "socket.io"])
def test_a_refused_or_unreachable_server_is_named_without_the_token(tmp_path, recording, transport):
    token, wrong = secret("token"), secret("wrong")
    server = Server(recording, token)
    try:
        refused_url = with_secrets(server.url, transport, wrong, wrong).replace("?since=0&", "?")
        unreachable_url = refused_url.replace(f":{server.port}", ":1")  # nobody listens on port 1
        for url in (refused_url, unreachable_url):
            args = ["--url", url, "--output", str(tmp_path / "out.json"), "-v"]
            args += ["--workers", "1", "--time-scale", "0.01", "--no-progress"]
            with Background(args, tmp_path, script="socket_client.py") as run:
                code = run.wait(120)
            assert code == 1, run.stderr
            assert wrong not in run.stderr and wrong not in run.stdout, run.stderr
            last = run.stderr.strip().splitlines()[-1]
            assert last.startswith("stream-processor: ") and "reader:***@127.0.0.1:" in last, last
            assert "Traceback" not in run.stderr
    finally:
        server.stop()


def test_resume_after_the_token_changed_continues_the_same_stream(tmp_path, recording):
    first, second = secret("first"), secret("second")
    output = tmp_path / "out.json"
    server = Server(recording, first)
    args = ["--output", str(output), *FAST]
    try:
        url = f"{server.url}{STREAM_PATH}?token="
        with Background(["--url", url + first, *args], tmp_path, script="socket_client.py") as run:
            wait_until(lambda: len(lines_of(output)) >= 5, timeout=60, message="five lines written")
            run.process.send_signal(signal.SIGTERM)
            assert run.wait(30) == 130, run.stderr
        assert len(lines_of(output)) < EVENTS
        server.stop()
        server = server.again(token=second)  # the token is rotated: the old one is refused now
        with Background(["--url", url + second, "--resume", *args], tmp_path, script="socket_client.py") as run:
            code = run.wait(120)
        assert code == 0, run.stderr
        assert "resuming" in run.stderr, run.stderr
    finally:
        server.stop()
    assert output.read_bytes() == recording.read_bytes()
    header = (tmp_path / "out.json.checkpoint").read_text().splitlines()[0]
    assert f'"url": "{server.url}{STREAM_PATH}"' in header, header
    assert not files_holding(tmp_path, [first, second])


def test_the_local_servers_token_is_not_on_its_command_line(tmp_path, recording):
    """`run_streaming.py` hands its own server a random token: by the environment, not argv."""
    output = tmp_path / "out.json"
    args = ["--input", str(recording), "--output", str(output), "--realtime", "--speed", SPEED, *FAST]
    with Background(args, tmp_path, script="run_streaming.py") as run:
        wait_until(lambda: run.pids("stream_processor serve"), timeout=60, message="the replay server")
        (pid,) = run.pids("stream_processor serve")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = dict(
            entry.split(b"=", 1) for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry
        )
        code = run.wait(120)
    assert code == 0, run.stderr
    token = environ[TOKEN_ENV.encode()].decode()
    assert len(token) >= 24 and b"--token" not in argv and not any(token.encode() in part for part in argv)
    assert token not in run.stderr and token not in run.stdout
    assert not files_holding(tmp_path, [token])
    assert os.environ.get(TOKEN_ENV) is None or os.environ[TOKEN_ENV] != token
