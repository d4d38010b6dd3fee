"""Streaming mode end to end: a real replay server (in each async mode), real Socket.IO
clients, a real Celery worker on the embedded broker and on RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import socketio

from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.sources.generate import generate_file
from tests.conftest import (
    ROOT,
    cli_env,
    in_each_async_mode,
    processes_with_marker,
    replay_server,
    run_script,
    wait_until,
)

FAST = ["--workers", "4", "--time-scale", "0.01", "--no-progress"]


def test_run_streaming_writes_output_identical_to_the_recording(small_recording, broker_flag, tmp_path):
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    run = run_script(
        "run_streaming.py",
        ["--input", str(small_recording), "--output", str(output), "--report", str(report_path)] + FAST + broker_flag,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == small_recording.read_bytes()
    report = json.loads(report_path.read_text())
    assert report["events"] == len(small_recording.read_bytes().splitlines()) and report["errors"] == 0
    assert 0 < report["span_s"] <= report["wall_s"]


@in_each_async_mode
@pytest.mark.parametrize("transport", ["socket.io", "sse"])
def test_bad_lines_in_a_replayed_recording_get_error_records_in_place(small_recording, tmp_path, transport):
    lines = small_recording.read_bytes().splitlines()[:10]
    lines[3] = b"{broken"
    lines[6] = b'{"id": 7, "title": "Caf\xe9", "wait": 0}'  # not UTF-8
    recording = tmp_path / "mixed.json"
    recording.write_bytes(b"\n".join(lines) + b"\n")
    output, report_path = tmp_path / "out.json", tmp_path / "report.json"
    args = ["--input", str(recording), "--output", str(output), "--transport", transport, "--report", str(report_path)]
    run = run_script("run_streaming.py", args + FAST, tmp_path)
    assert run.returncode == 3, run.stderr
    written = output.read_bytes().splitlines()
    report = json.loads(report_path.read_text())
    assert report["url"].endswith("/v2/stream/recentchange") == (transport == "sse")  # the transport asked for
    assert json.loads(written[3])["offset"] == 3 and "not valid JSON" in json.loads(written[3])["error"]
    assert json.loads(written[6])["offset"] == 6 and "not valid UTF-8" in json.loads(written[6])["error"]
    assert written[:3] + written[4:6] + written[7:] == lines[:3] + lines[4:6] + lines[7:]


@in_each_async_mode
@pytest.mark.parametrize("path", ["", "/v2/stream/recentchange"], ids=["socket.io", "sse"])
def test_a_standalone_server_serves_the_python_client(small_recording, tmp_path, path):
    output = tmp_path / "out.json"
    with replay_server(small_recording) as (url, _):
        run = run_script("socket_client.py", ["--url", url + path, "--output", str(output)] + FAST, tmp_path)
    assert run.returncode == 0, run.stderr
    assert output.read_bytes() == small_recording.read_bytes()


def collect_replay(url: str, subscription, timeout: float = 60) -> tuple[list, dict]:
    """Subscribe with a plain python-socketio client; return the change args, in the
    recording's order, and the end payload.

    python-socketio's client hands each message to a thread of its own, so `end` or a
    change can overtake an earlier change: this waits for every change `end` counts and
    puts them in order (by offset, or by the events' increasing ids); the order on the
    wire is what the official JavaScript client's test checks."""
    changes, ended = [], threading.Event()
    end_payload: dict = {}
    client = socketio.Client()
    client.on("change", lambda *args: changes.append(args), namespace=NAMESPACE)
    client.on("end", lambda data: (end_payload.update(data), ended.set()), namespace=NAMESPACE)
    client.connect(url, namespaces=[NAMESPACE], transports=["websocket"])
    try:
        client.emit("subscribe", subscription, namespace=NAMESPACE)
        assert ended.wait(timeout), "no end event"
        wait_until(lambda: len(changes) >= end_payload["count"], timeout=10, message="every change end counts")
    finally:
        client.disconnect()
    return sorted(changes, key=lambda args: args[1] if len(args) > 1 else args[0]["id"]), end_payload


@in_each_async_mode
def test_rcstream_style_subscribers_get_each_event_as_recorded_and_an_end(small_recording):
    events = [json.loads(line) for line in small_recording.read_bytes().splitlines()]
    with replay_server(small_recording) as (url, _):
        changes, end = collect_replay(url, "en.wikipedia.org")
        with_offsets, _ = collect_replay(url, {"wikis": ["en.wikipedia.org"], "offset": 5, "with_offsets": True})
        other_wiki, end_other = collect_replay(url, "de.wikipedia.org")
    assert [args[0] for args in changes] == events and all(len(args) == 1 for args in changes)
    assert end == {"count": len(events), "offset": len(events)}
    assert with_offsets == [(event, offset) for offset, event in enumerate(events) if offset >= 5]
    assert other_wiki == [] and end_other == {"count": 0, "offset": len(events)}


@in_each_async_mode
@pytest.mark.heavy
def test_fifty_clients_at_once_each_get_a_complete_ordered_replay(small_recording):
    expected = [(json.loads(line), offset) for offset, line in enumerate(small_recording.read_bytes().splitlines())]
    results: list = [None] * 50
    with replay_server(small_recording) as (url, _):

        def one(i: int) -> None:
            results[i] = collect_replay(url, {"wikis": "*", "with_offsets": True})[0]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert all(result == expected for result in results)


@in_each_async_mode
def test_bad_subscribe_payloads_get_an_error_and_the_server_stays_up(small_recording):
    errors, ended = [], threading.Event()
    with replay_server(small_recording) as (url, _):
        client = socketio.Client()
        client.on("error", lambda data: errors.append(data["message"]), namespace=NAMESPACE)
        client.on("end", lambda data: ended.set(), namespace=NAMESPACE)
        client.connect(url, namespaces=[NAMESPACE], transports=["websocket"])
        try:
            for bad in [42, {"offset": -1}, {"speed": 0}, {"wikis": []}, {"bogus": 1}]:
                client.emit("subscribe", bad, namespace=NAMESPACE)
            client.emit("no_such_event", {}, namespace=NAMESPACE)
            wait_until(lambda: len(errors) == 6, timeout=10, message="six error events")
            client.emit("subscribe", "*", namespace=NAMESPACE)  # still serving
            assert ended.wait(30)
        finally:
            client.disconnect()
    assert any("offset" in e for e in errors) and any("unknown event" in e for e in errors)


@in_each_async_mode
def test_realtime_pacing_sends_events_on_schedule(tmp_path):
    recording = tmp_path / "paced.json"
    generate_file(recording, minutes=1, rate=2.0, seed=5)  # 60 s of edits, 3 s at speed 20
    events = [json.loads(line) for line in recording.read_bytes().splitlines()]
    arrivals, ended = [], threading.Event()
    with replay_server(recording) as (url, _):
        client = socketio.Client()
        client.on("change", lambda event: arrivals.append(time.monotonic()), namespace=NAMESPACE)
        client.on("end", lambda data: ended.set(), namespace=NAMESPACE)
        client.connect(url, namespaces=[NAMESPACE], transports=["websocket"])
        try:
            client.emit("subscribe", {"wikis": "*", "realtime": True, "speed": 20}, namespace=NAMESPACE)
            assert ended.wait(60)
        finally:
            client.disconnect()
    assert len(arrivals) == len(events)
    first_ts = events[0]["timestamp"]
    # Relative to the first arrival, each event lands at (ts - first_ts) / 20, give or take.
    errors = sorted(
        abs((a - arrivals[0]) - (e["timestamp"] - first_ts) / 20) for a, e in zip(arrivals, events, strict=True)
    )
    p99 = errors[int(0.99 * (len(errors) - 1))]
    print(f"pacing error seen by the client: p50 {errors[len(errors) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.05  # the target is 20 ms on the server; loose here, for loaded CI machines


@in_each_async_mode
def test_the_client_resumes_after_the_server_restarts_mid_stream(small_recording, tmp_path):
    output = tmp_path / "out.json"
    marker = uuid.uuid4().hex
    with replay_server(small_recording, "--realtime", "--speed", "10") as (url, _):
        port = url.rsplit(":", 1)[1]
        client = subprocess.Popen(
            [sys.executable, str(ROOT / "socket_client.py"), "--url", url, "--output", str(output)] + FAST,
            cwd=tmp_path,
            env=cli_env(marker),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: output.exists() and len(output.read_bytes().splitlines()) >= 5, timeout=60, message="5 lines"
        )
    # The server is gone; start it again on the same port.
    with replay_server(small_recording, "--realtime", "--speed", "10", port=int(port)):
        _, stderr = client.communicate(timeout=120)
    assert client.returncode == 0, stderr
    assert "reconnected" in stderr
    assert output.read_bytes() == small_recording.read_bytes()
    wait_until(lambda: not processes_with_marker(marker), timeout=10, message="no process left behind")


@in_each_async_mode
def test_the_official_javascript_client_receives_in_order_and_resumes_from_an_offset(small_recording, js_clients):
    work, node = js_clients
    ids = [json.loads(line)["id"] for line in small_recording.read_bytes().splitlines()]
    with replay_server(small_recording) as (url, _):
        run = subprocess.run(
            [node, "replay_client.mjs", url, "10"], cwd=work, capture_output=True, text=True, timeout=90
        )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    changes = [line for line in lines if "offset" in line]
    # In order, every offset once, across the disconnect and the resubscribe from offset 10.
    assert [c["offset"] for c in changes] == list(range(len(ids)))
    assert [c["id"] for c in changes] == ids
    assert lines[-1] == {"end": len(ids) - 10}


@in_each_async_mode
def test_the_server_holds_at_most_window_unacknowledged_events_per_client(small_recording):
    changes, errors = [], []
    with replay_server(small_recording, "--window", "5") as (url, _):
        client = socketio.Client()
        client.on("change", lambda line, offset, *_line_number: changes.append(offset), namespace=NAMESPACE)
        client.on("error", lambda data: errors.append(data["message"]), namespace=NAMESPACE)
        client.connect(url, namespaces=[NAMESPACE], transports=["websocket"])
        try:
            client.emit("subscribe", {"wikis": "*", "with_offsets": True, "raw": True}, namespace=NAMESPACE)
            wait_until(lambda: len(changes) >= 5, timeout=10, message="the first window")
            # A round trip through the server (a refused ack) while the replay, unpaced, had
            # every chance to send more: it must still hold at the window.
            client.emit("ack", -1, namespace=NAMESPACE)
            wait_until(lambda: errors, timeout=10, message="the refused ack's error")
            assert changes == [0, 1, 2, 3, 4]
            client.emit("ack", 3, namespace=NAMESPACE)  # offsets 0..2 done: three more may go
            wait_until(lambda: len(changes) >= 8, timeout=10, message="three more events")
            client.emit("ack", -1, namespace=NAMESPACE)
            wait_until(lambda: len(errors) >= 2, timeout=10, message="a second round trip")
            assert changes == list(range(8))
        finally:
            client.disconnect()
