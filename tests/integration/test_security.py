"""Secure defaults, checked against real servers, workers and brokers: no pickle either
way, a token when asked for, no cross-origin browsers, localhost unless told otherwise,
and code chosen only by whoever starts the worker."""

from __future__ import annotations

import http.client
import json
import os
import pickle
import queue
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import socketio
from kombu import Connection, Exchange, Producer

from stream_processor.core.outcomes import DONE, INVALID
from stream_processor.engine.broker import EmbeddedRedis
from stream_processor.engine.celery_executor import CeleryExecutor
from stream_processor.engine.executor import Batch, EventTask
from stream_processor.engine.tasks import DEFAULT_TASK, TASK_NAME, task_queue
from stream_processor.engine.workers import LocalWorkers
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.protocol.vocabulary import NAMESPACE, TOKEN_ENV
from stream_processor.sources.generate import generate_file
from tests.conftest import ROOT, cli_env, in_each_async_mode, raw_http, terminate


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("security") / "recording.json"
    generate_file(path, minutes=0.1, rate=2.0, seed=5)
    return path


class ServerProcess:
    def __init__(self, recording: Path, *flags: str, env: dict[str, str] | None = None):
        self.marker = uuid.uuid4().hex
        command = [sys.executable, str(ROOT / "socket_server.py"), "--input", str(recording), "--port", "0", *flags]
        environment = {**cli_env(self.marker), **(env or {})}
        self.process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("serving "), line
        self.url = line.split()[1].removesuffix("/rc")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def close(self) -> None:
        terminate(self.process, self.marker, timeout=10)
        self.process.stdout.close()


@pytest.fixture
def serve(recording):
    servers: list[ServerProcess] = []

    def start(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        servers.append(ServerProcess(recording, *flags, env=env))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def connect(url: str, auth=None) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(url, namespaces=[NAMESPACE], transports=["websocket"], auth=auth, wait_timeout=10)
    return client


def first_change(client: socketio.Client) -> object:
    changes: queue.Queue = queue.Queue()
    client.on("change", lambda event: changes.put(event), namespace=NAMESPACE)
    client.emit("subscribe", "*", namespace=NAMESPACE)
    return changes.get(timeout=10)


# -- the server ---------------------------------------------------------------------------


@in_each_async_mode
def test_with_a_token_the_server_refuses_clients_without_it(serve):
    server = serve(env={TOKEN_ENV: "s3cret-token"})
    for auth in (None, {"token": "wrong"}, {"token": 42}, "s3cret-token"):
        with pytest.raises(socketio.exceptions.ConnectionError):
            connect(server.url, auth=auth)
    client = connect(server.url, auth={"token": "s3cret-token"})
    try:
        assert isinstance(first_change(client), dict)
    finally:
        client.disconnect()


@in_each_async_mode
def test_the_consume_command_sends_the_token_and_says_clearly_when_refused(serve, recording, tmp_path):
    server = serve("--token", "s3cret-token")
    base = [sys.executable, str(ROOT / "socket_client.py"), "--url", server.url, "--workers", "2"]
    base += ["--time-scale", "0.01", "--no-progress", "--output", str(tmp_path / "out.json")]
    marker = uuid.uuid4().hex
    refused = subprocess.run(base, env=cli_env(marker), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "refused" in refused.stderr or "token" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    env = {**cli_env(marker), TOKEN_ENV: "s3cret-token"}
    accepted = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "out.json").read_bytes() == recording.read_bytes()


def polling_handshake(port: int, origin: str | None) -> int:
    """The HTTP status engine.io gives a browser-style handshake from `origin`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Origin": origin} if origin else {}
    connection.request("GET", "/socket.io/?EIO=4&transport=polling", headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


@in_each_async_mode
def test_cross_origin_browsers_are_refused_unless_their_origin_is_allowed(serve):
    default = serve()
    assert polling_handshake(default.port, None) == 200
    assert polling_handshake(default.port, f"http://127.0.0.1:{default.port}") == 200  # same origin
    assert polling_handshake(default.port, "https://evil.example") == 400
    allowing = serve("--cors-origin", "https://dashboard.example")
    assert polling_handshake(allowing.port, "https://dashboard.example") == 200
    assert polling_handshake(allowing.port, "https://evil.example") == 400


def request_with_host(path: str, host: str, *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", f"Host: {host}", *extra, "Connection: close", "", ""]).encode()


WEBSOCKET_UPGRADE = ("Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13")
HOST_CHECKED = ["/", "/status", "/access", STREAM_PATH, "/socket.io/?EIO=4&transport=polling"]


def status_line_read(received: bytes) -> bool:
    return b"\r\n\r\n" in received  # an upgraded websocket stays open: its head is the answer


def websocket_upgrade(port: int, host: str) -> int | None:
    request = request_with_host("/socket.io/?EIO=4&transport=websocket", host, *WEBSOCKET_UPGRADE)
    return raw_http(port, request.replace(b"Connection: close", b"Connection: Upgrade"), until=status_line_read).status


@in_each_async_mode
def test_a_foreign_host_is_refused_on_every_endpoint_and_the_socketio_handshake_and_upgrade(serve):
    port = serve().port
    # A page at http://evil.com whose name was rebound to 127.0.0.1: same origin to its browser.
    for path in HOST_CHECKED:
        answer = raw_http(port, request_with_host(path, f"evil.com:{port}", f"Origin: http://evil.com:{port}"))
        assert answer.status == 403, (path, answer)
        assert b"access-control-allow-origin" not in answer.head.lower(), path
        assert json.loads(answer.body)["error"].startswith("this server does not answer to host 'evil.com:"), path
    assert websocket_upgrade(port, "evil.com") == 403
    for path in HOST_CHECKED:  # two Hosts: malformed
        answer = raw_http(port, request_with_host(path, f"127.0.0.1:{port}", "Host: evil.com"))
        assert answer.status == 400 and b"malformed Host" in answer.body, (path, answer)


@in_each_async_mode
def test_loopback_hosts_pass_everywhere_and_allowed_hosts_are_let_in(serve):
    default, allowing = serve(), serve("--allowed-host", "example.org", "--allowed-host", "Other.Example")
    for server in (default, allowing):
        port = server.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            for path in HOST_CHECKED:
                assert raw_http(port, request_with_host(path, host)).status == 200, (host, path)
            assert websocket_upgrade(port, host) == 101, host
    port = allowing.port
    for host in ("example.org", f"example.org:{port}", "other.example", "EXAMPLE.ORG."):
        for path in HOST_CHECKED:
            assert raw_http(port, request_with_host(path, host)).status == 200, (host, path)
        assert websocket_upgrade(port, host) == 101, host
    for host in ("www.example.org", "evil.com"):
        assert raw_http(port, request_with_host("/status", host)).status == 403
    assert raw_http(default.port, request_with_host("/status", "example.org")).status == 403


def other_local_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@in_each_async_mode
def test_the_server_listens_on_localhost_only_by_default(serve):
    server = serve()
    assert server.url.startswith("http://127.0.0.1:")
    address = other_local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, server.port), timeout=2).close()


# -- the broker: JSON only, both ways ---------------------------------------------------------


class Mkdir:
    """Unpickling this creates a directory: the proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def embedded_broker():
    with EmbeddedRedis() as broker:
        yield broker.url


def test_a_worker_refuses_a_pickled_task_and_runs_the_json_one_behind_it(embedded_broker, tmp_path):
    proof = tmp_path / "unpickled"
    queue_name = f"stream_processor.run.{uuid.uuid4().hex[:8]}"
    completions: queue.Queue = queue.Queue()
    executor = CeleryExecutor(embedded_broker, DEFAULT_TASK, 0.0, queue_name)
    with LocalWorkers(embedded_broker, 1, DEFAULT_TASK, queue_name):
        executor.start(completions.put)
        try:
            with Connection(embedded_broker) as connection:
                Producer(connection).publish(
                    pickle.dumps(((Mkdir(proof),), {}, {})),
                    content_type="application/x-python-serialize",
                    content_encoding="binary",
                    exchange=Exchange(queue_name, type="direct"),
                    routing_key=queue_name,
                    headers={"id": f"{executor.run_id}.pickled", "task": TASK_NAME, "lang": "py"},
                    reply_to=executor.reply_queue.name,
                    correlation_id=f"{executor.run_id}.pickled",
                    declare=[task_queue(queue_name)],
                )
            executor.submit(Batch(0, [EventTask(1, json.dumps({"id": 1, "wait": 0}))]))
            (completion,) = completions.get(timeout=30).completions
            assert (completion.offset, completion.kind, completion.value) == (1, DONE, None)  # unchanged
        finally:
            executor.close()
    assert not proof.exists(), "the worker unpickled a message"
    assert completions.empty()  # the pickled task never ran, so it never replied


def test_the_client_ignores_a_pickled_reply(embedded_broker, tmp_path):
    proof = tmp_path / "unpickled"
    completions: queue.Queue = queue.Queue()
    # No worker consumes this queue: the batch stays in flight, waiting for a reply.
    executor = CeleryExecutor(embedded_broker, DEFAULT_TASK, 0.0, f"stream_processor.run.{uuid.uuid4().hex[:8]}")
    executor.start(completions.put)
    try:
        executor.submit(Batch(0, [EventTask(7, json.dumps({"id": 7, "wait": 0}))]))
        with Connection(embedded_broker) as connection:
            producer = Producer(connection)
            reply = {"status": "SUCCESS", "task_id": f"{executor.run_id}.0"}
            producer.publish(
                pickle.dumps({**reply, "result": Mkdir(proof)}),
                content_type="application/x-python-serialize",
                content_encoding="binary",
                routing_key=executor.reply_queue.name,
            )
            producer.publish(
                {**reply, "result": {"worker": "elsewhere:1", "outcomes": [["done", '{"ok": 1}', 0.0]]}},
                serializer="json",
                routing_key=executor.reply_queue.name,
            )
        (completion,) = completions.get(timeout=30).completions
        assert (completion.offset, completion.kind, completion.value) == (7, DONE, '{"ok": 1}')
    finally:
        executor.close()
    assert not proof.exists(), "the client unpickled a reply"
    assert completions.empty()


def test_a_message_cannot_choose_the_code_a_worker_runs(embedded_broker, tmp_path):
    queue_name = f"stream_processor.run.{uuid.uuid4().hex[:8]}"
    completions: queue.Queue = queue.Queue()
    executor = CeleryExecutor(embedded_broker, "os:system", 0.0, queue_name)  # what a message may *ask* for
    with LocalWorkers(embedded_broker, 1, DEFAULT_TASK, queue_name):
        executor.start(completions.put)
        try:
            command = json.dumps({"id": 0, "wait": 0, "command": f"touch {tmp_path / 'ran'}"})
            executor.submit(Batch(0, [EventTask(0, command)]))
            (completion,) = completions.get(timeout=30).completions
        finally:
            executor.close()
    assert (completion.offset, completion.kind) == (0, INVALID)
    assert "this worker runs stream_processor.tasks:wait_and_return, the client expects os:system" in completion.value
    assert not (tmp_path / "ran").exists()
