"""Clients nobody here wrote, against the event stream of a real server in each async mode:
the npm `eventsource` package (Node), `curl -N`, and httpx-sse (PyPI). Each gets every
event exactly once, in order, byte for byte, and resumes with Last-Event-ID. (The
official Socket.IO JavaScript client is in test_streaming.py, in each mode too.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import httpx
import pytest
from httpx_sse import connect_sse

from stream_processor.protocol.event_stream import STREAM_PATH, TOPIC, event_id
from tests.conftest import (
    cli_env,
    in_each_async_mode,
    paced_recording,
    processes_with_marker,
    replay_server,
    wait_until,
)

pytestmark = in_each_async_mode


def test_the_npm_eventsource_client_reconnects_by_itself_with_last_event_id_and_misses_nothing(tmp_path, js_clients):
    work, node = js_clients
    lines = paced_recording(tmp_path / "paced.json", count=40)  # 4 s at speed 10
    marker = uuid.uuid4().hex
    with replay_server(tmp_path / "paced.json") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        client = subprocess.Popen(
            [node, "eventsource_client.mjs", f"{url}{STREAM_PATH}?realtime=true&speed=10"],
            cwd=work,
            env=cli_env(marker),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Eight events, then the server goes (the script times itself out, so this cannot hang).
        received = [client.stdout.readline() for _ in range(8)]
    # The server is gone mid-stream: EventSource keeps trying until it is back on the same port.
    with replay_server(tmp_path / "paced.json", port=port):
        rest, stderr = client.communicate(timeout=90)
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")
    assert client.returncode == 0, stderr
    assert "reconnecting" in stderr  # it did lose the connection
    printed = [json.loads(line) for line in received + rest.splitlines() if line.strip()]
    messages, end = printed[:-1], printed[-1]
    assert [m["data"].encode() for m in messages] == lines  # every event once, in order, byte for byte
    assert [json.loads(m["id"])[0]["offset"] for m in messages] == list(range(1, len(lines) + 1))  # the next
    assert end["end"]["offset"] == len(lines)


def test_curl_reads_the_stream_and_resumes_with_a_last_event_id_header(small_recording):
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl is needed for this test")
    lines = small_recording.read_bytes().splitlines()
    with replay_server(small_recording) as (url, _):
        whole = subprocess.run([curl, "-sN", f"{url}{STREAM_PATH}"], capture_output=True, timeout=60, check=True)
        resumed = subprocess.run(
            [curl, "-sN", "-H", f"Last-Event-ID: {event_id(9)}", f"{url}{STREAM_PATH}"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    for output, first in ((whole.stdout, 0), (resumed.stdout, 10)):
        fields = [line for line in output.split(b"\n") if line and not line.startswith(b":")]
        data = [line.removeprefix(b"data: ") for line in fields if line.startswith(b"data: ")]
        ids = [json.loads(line.removeprefix(b"id: ")) for line in fields if line.startswith(b"id: ")]
        assert data[:-1] == lines[first:]  # the recorded lines, byte for byte, then end's data
        # Each event's id (the next position, as KafkaSSE's), then the end's: past the last line,
        # so a reconnect after it is told 204.
        offsets = [*range(first + 1, len(lines) + 1), len(lines)]
        assert ids == [[{"topic": TOPIC, "partition": 0, "offset": o}] for o in offsets]
        assert json.loads(data[-1]) == {"count": len(lines) - first, "offset": len(lines)}


def ten_more(client: httpx.Client, url: str, last_id: str | None) -> tuple[list, bool]:
    """Up to ten events on a new connection resuming after `last_id`; True once nothing is left."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events = []
    with connect_sse(client, "GET", f"{url}{STREAM_PATH}", headers=headers) as source:
        if source.response.status_code == 204:
            return events, True
        for event in source.iter_sse():
            if event.event == "end":
                return events, True
            events.append(event)
            if len(events) == 10:
                return events, False
    return events, True


def test_httpx_sse_reads_everything_once_across_resumes_at_every_tenth_event(small_recording):
    lines = small_recording.read_bytes().splitlines()
    received, last_id, done = [], None, False
    with replay_server(small_recording) as (url, _), httpx.Client(timeout=30) as client:
        while not done:
            events, done = ten_more(client, url, last_id)
            received += [event.data.encode() for event in events]
            last_id = events[-1].id if events else last_id
    assert received == lines
