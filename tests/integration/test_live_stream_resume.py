"""A live event stream (EventStreams-style ids, not this project's server) through `consume`,
killed with -9 mid-stream and resumed: the stream's position, kept beside the output,
brings the run back exactly where it was, every event once."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.chaos.test_failures import finish, lines_of, started, wait_until
from tests.conftest import processes_with_marker

EVENTS = 200
FIRST_TIMESTAMP = 1_700_000_000_000


def live_id(index: int) -> str:
    """An id shaped like Wikimedia's: a partition and a timestamp, nothing of ours."""
    return json.dumps([{"topic": "eqiad.mediawiki.recentchange", "partition": 0, "timestamp": FIRST_TIMESTAMP + index}])


class LiveLikeStream(BaseHTTPRequestHandler):
    """Events a few ms apart, resumed after the Last-Event-ID's timestamp, then `end`
    (a real live stream never ends; this one does, so that a run can)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        start = 0
        last = self.headers.get("Last-Event-ID")
        if last:
            start = json.loads(last)[0]["timestamp"] - FIRST_TIMESTAMP + 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for index in range(start, EVENTS):
                event = {"id": index, "title": "t" * (index % 9), "meta": {"domain": "en.wikipedia.org"}}
                self.wfile.write(f"event: message\nid: {live_id(index)}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(f'event: end\ndata: {{"count": {EVENTS - start}}}\n\n'.encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_live_stream_killed_mid_way_resumes_from_its_saved_position_with_every_event_once(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), LiveLikeStream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/stream/recentchange"
    output = tmp_path / "out.json"
    args = ["--url", url, "--output", str(output), "--task", "tasks_for_tests:title_length"]
    args += ["--workers", "2", "--no-progress"]
    try:
        with started(args, tmp_path, script="socket_client.py") as (process, marker):
            wait_until(lambda: len(lines_of(output)) >= 60, timeout=60, message="sixty lines written")
            process.kill()
            process.communicate(timeout=10)
        wait_until(lambda: not processes_with_marker(marker), timeout=15, message="no orphan after kill -9")
        position = json.loads((tmp_path / "out.json.position").read_text())
        assert position["id"] == live_id(position["offset"])  # the live stream numbers from 0, in arrival order
        with started(args + ["--resume"], tmp_path, script="socket_client.py") as (process, _):
            code, stderr = finish(process)
        assert code == 0, stderr
    finally:
        server.shutdown()
        server.server_close()
    ids = [json.loads(line)["id"] for line in lines_of(output)]
    assert sorted(ids) == list(range(EVENTS)), "an event lost or written twice across the resume"
    assert ids == list(range(EVENTS))  # total order: as they came


def test_a_resume_from_a_position_saved_further_back_than_the_window_does_not_wait_forever(tmp_path):
    """The position is saved at most once a second, so it may lag the output by more than a
    small window: what comes again is dropped, and must not fill the window on its way."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), LiveLikeStream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/stream/recentchange"
    output = tmp_path / "out.json"
    args = ["--url", url, "--output", str(output), "--task", "tasks_for_tests:title_length"]
    args += ["--workers", "1", "--max-in-flight", "5", "--no-progress"]
    try:
        with started(args, tmp_path, script="socket_client.py") as (process, _):
            wait_until(lambda: len(lines_of(output)) >= 60, timeout=60, message="sixty lines written")
            process.kill()
            process.communicate(timeout=10)
        # As if saved a while before the kill: 40+ events back, eight windows' worth.
        (tmp_path / "out.json.position").write_text(json.dumps({"offset": 10, "id": live_id(10)}) + "\n")
        with started(args + ["--resume"], tmp_path, script="socket_client.py") as (process, _):
            code, stderr = finish(process, timeout=60)
        assert code == 0, stderr
    finally:
        server.shutdown()
        server.server_close()
    assert [json.loads(line)["id"] for line in lines_of(output)] == list(range(EVENTS))
