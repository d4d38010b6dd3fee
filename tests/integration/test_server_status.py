"""GET /status against a real server in each async mode: who is connected and how each
one's replay goes; the token and the origin rules hold there as on Socket.IO."""

from __future__ import annotations

import http.client
import json

from tests.conftest import in_each_async_mode, paced_recording, replay_server, wait_until
from tests.listener import Listener

pytestmark = in_each_async_mode


def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return answer


def status(url: str, path: str = "/status", **headers: str) -> dict:
    code, _, body = get(url, path, headers)
    assert code == 200, body
    return json.loads(body)


def test_the_status_page_shows_each_client_its_filter_offset_window_and_pacing(tmp_path):
    lines = paced_recording(tmp_path / "paced.json", count=40)  # 2 s at speed 20
    with replay_server(tmp_path / "paced.json", "--window", "5") as (url, _):
        empty = status(url)
        assert empty["clients"] == [] and empty["events_sent"] == 0 and empty["uptime_s"] > 0
        with Listener(url) as held, Listener(url) as paced:
            held.emit("subscribe", {"wikis": "en.*", "type": "edit", "with_offsets": True})  # held at its window
            paced.emit("subscribe", {"wikis": "*", "realtime": True, "speed": 20})
            wait_until(lambda: held.inbox.qsize() >= 5 and paced.inbox.qsize() >= 3, timeout=10, message="changes")
            held.emit("ack", 2)
            wait_until(lambda: held.inbox.qsize() >= 7, timeout=10, message="two more changes")
            page = status(url)
            paced.until_end()
            done = status(url)
        wait_until(lambda: not status(url)["clients"], timeout=10, message="the server to see both leave")
        after = status(url)
    by_filter = {json.dumps(client["filter"]["wikis"]): client for client in page["clients"]}
    window, pacing = by_filter['["en.*"]'], by_filter['"*"']
    assert window["transport"] == "socket.io" and window["address"] == "127.0.0.1"
    assert window["filter"]["type"] == ["edit"] and window["acked"] == 2
    assert window["window"] == {"size": 5, "unacknowledged": 5, "unwritten": 0}
    assert window["offset"] >= 7 and window["sent"] == 7
    assert pacing["acked"] is None and pacing["filter"]["realtime"] and pacing["sent"] >= 3
    paced_client = next(c for c in done["clients"] if c["filter"]["realtime"])
    assert paced_client["sent"] == len(lines) and paced_client["pacing_error_ms"]["count"] == len(lines)
    assert 0 <= paced_client["pacing_error_ms"]["p50"] <= paced_client["pacing_error_ms"]["p99"] < 1000
    assert after["clients"] == [] and after["events_sent"] == 7 + len(lines)
    assert after["pacing_error_ms"]["count"] == len(lines)


def test_with_a_token_the_status_page_needs_it_too(tmp_path):
    paced_recording(tmp_path / "rec.json", count=5)
    with replay_server(tmp_path / "rec.json", "--token", "s3cret") as (url, _):
        refused = [
            get(url, "/status"),
            get(url, "/status?token=wrong"),
            get(url, "/status", {"Authorization": "Bearer x"}),
        ]
        by_header = status(url, Authorization="Bearer s3cret")
        by_query = status(url, "/status?token=s3cret")
        unknown_path = get(url, "/nowhere")
    for code, headers, body in refused:
        assert code == 401 and headers["www-authenticate"].startswith("Bearer"), (code, body)
        assert b"s3cret" not in body and "token" in json.loads(body)["error"]
    assert by_header["clients"] == [] and by_query["clients"] == []
    assert unknown_path[0] == 401  # no endpoint says anything without the token


def test_browsers_from_other_origins_may_read_the_status_page_only_when_allowed(tmp_path):
    paced_recording(tmp_path / "rec.json", count=5)
    with replay_server(tmp_path / "rec.json", "--cors-origin", "https://dash.example") as (url, _):
        same_origin = get(url, "/status", {"Origin": url})
        allowed = get(url, "/status", {"Origin": "https://dash.example"})
        refused = get(url, "/status", {"Origin": "https://evil.example"})
        unknown = get(url, "/nowhere")
    assert same_origin[0] == 200
    assert allowed[0] == 200 and allowed[1]["access-control-allow-origin"] == "https://dash.example"
    assert refused[0] == 403 and "access-control-allow-origin" not in refused[1]
    assert unknown[0] == 404 and "error" in json.loads(unknown[2])
