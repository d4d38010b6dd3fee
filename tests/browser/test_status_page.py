"""The replay server's status page (web/status.html, status.js) in a real headless Chromium.

The page is served here by a stand-in for the replay server: the page's files as the server
will serve them (`web.static_file(STATUS_PAGE, ...)` with `web.SECURITY_HEADERS`), `/access`,
and a `/status` document of the server's shape (`serving.core.ServingCore.status()`) that
the test changes while the page watches.
"""

from __future__ import annotations

import copy
import hmac
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from stream_processor.observe.web import SECURITY_HEADERS, STATUS_PAGE, static_file
from tests.conftest import wait_until
from tests.pages import screenshot, text

HOSTILE_WIKI = '<img src=x onerror="window.pwned=1">en.*'
TOKEN = "status-token"


def client(number: int, transport: str = "socket.io", **changes) -> dict:
    """One client as the server's /status lists it."""
    document = {
        "id": f"{number:08x}deadbeef",
        "transport": transport,
        "address": "127.0.0.1",
        "connected_s": 12.5,
        "filter": {"wikis": ["en.*"], "type": ["edit"], "namespace": None, "bot": None, "realtime": True, "speed": 20},
        "offset": 40,
        "acked": 35,
        "window": {"size": 1000, "unacknowledged": 5, "unwritten": 0},
        "sent": 40,
        "pacing_error_ms": {"count": 40, "p50": 0.8, "p99": 3.25, "max": 4.1},
    }
    document.update(changes)
    return document


STATUS = {
    "async_mode": "eventlet",
    "uptime_s": 30.0,
    "recording": {"path": "/data/sampled_rc.json", "events": 620, "loop": False},
    "events_sent": 100,
    "clients": [
        client(1),
        client(2, "sse", acked=None, window={"size": 1000, "unacknowledged": 0, "unwritten": None}),
        client(3, filter={"wikis": [HOSTILE_WIKI], "type": None, "namespace": [0], "bot": [False], "realtime": False,
                          "speed": 1.0}, window={"size": 5, "unacknowledged": 5, "unwritten": 0}),
    ],
}  # fmt: skip


class StandIn:
    """Serves the status page like the replay server will, on 127.0.0.1."""

    def __init__(self, token: str | None = None) -> None:
        self.status = copy.deepcopy(STATUS)
        self.token = token
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                url = urlsplit(self.path)
                stand_in.requests.append(url.path)
                page = static_file(STATUS_PAGE, url.path)
                offered = (parse_qs(url.query).get("token") or [""])[0] or self.headers.get("Authorization", "")[7:]
                accepted = stand_in.token is None or hmac.compare_digest(offered, stand_in.token)
                if page is not None:  # the page's files hold no data: no token needed
                    self.send(200, *page)
                elif url.path == "/access":
                    answer = {"token_needed": stand_in.token is not None, "accepted": accepted}
                    self.send(200, json.dumps(answer).encode(), "application/json")
                elif not accepted:
                    self.send(401, b'{"error": "this server needs a token"}', "application/json")
                elif url.path == "/status":
                    self.send(200, json.dumps(stand_in.status).encode(), "application/json")
                else:
                    self.send(404, b'{"error": "no such endpoint"}', "application/json")

            def send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(HTTPStatus(status))
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in SECURITY_HEADERS.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def stand_in():
    servers: list[StandIn] = []

    def start(token: str | None = None) -> StandIn:
        servers.append(StandIn(token))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def cells(page, row: int) -> list[str]:
    return [cell.strip() for cell in page.locator(f"#clients tbody tr:nth-child({row}) td").all_inner_texts()]


def test_the_status_page_shows_each_client_and_follows_the_server(headless, stand_in, tmp_path):
    server = stand_in()
    with headless.HeadlessChromium() as browser:
        page = browser.page(server.url)
        wait_until(lambda: text(page, "status") == "live", timeout=30, message="the page to go live")
        assert text(page, "clients-count") == "3" and text(page, "transports") == "2 socket.io, 1 sse"
        assert text(page, "events-sent") == "100" and text(page, "recording-events") == "620 events"
        assert text(page, "held") == "1"  # client 3: 5 unacknowledged of a window of 5
        assert text(page, "pacing") == "3.3 ms"
        first = cells(page, 1)
        assert first[:4] == ["00000001", "socket.io", "127.0.0.1", "12.5 s"]
        assert first[4] == "wikis en.*, type edit" and first[5] == "paced × 20"
        assert first[6:10] == ["40", "35", "5 / 1,000", "40"] and first[10] == "0.8 / 3.3 / 4.1 ms"
        assert cells(page, 2)[7] == "–"  # an event stream does not ack
        hostile = cells(page, 3)
        assert hostile[4] == f"wikis {HOSTILE_WIKI}, namespace 0, bot false" and hostile[5] == "as fast as it reads"
        assert page.evaluate("window.pwned") is None and page.locator("#clients img").count() == 0

        # It follows the server: a client leaves, another gets events.
        sent_chart = page.evaluate("document.getElementById('sent-chart').toDataURL()")
        server.status = copy.deepcopy(STATUS)
        server.status["clients"] = [client(1, sent=500, offset=500, acked=480)]
        server.status["events_sent"] = 900
        server.status["live"] = {"source": "https://stream.example/v2/stream/recentchange"}  # a field to come
        wait_until(lambda: text(page, "clients-count") == "1", timeout=10, message="the page to follow /status")
        assert text(page, "events-sent") == "900" and cells(page, 1)[6:8] == ["500", "480"]
        assert "https://stream.example" in page.locator("#more").inner_text()  # unknown fields still show
        wait_until(
            lambda: page.evaluate("document.getElementById('sent-chart').toDataURL()") != sent_chart,
            timeout=10,
            message="the chart to move",
        )
        polls = server.requests.count("/status")
        assert 2 <= polls <= 60, polls  # about once a second, no storm
        screenshot(page, tmp_path / "status-1280x800.png")
        phone = browser.page(server.url, headless.PHONE)
        wait_until(lambda: text(phone, "status") == "live", timeout=30, message="the phone page")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # the table scrolls in its box
        screenshot(phone, tmp_path / "status-390x844.png", full_page=True)
        assert browser.problems == []


def test_the_status_page_asks_for_the_servers_token(headless, stand_in):
    server = stand_in(token=TOKEN)
    with headless.HeadlessChromium() as browser:
        page = browser.page(server.url)
        wait_until(lambda: page.locator("#token-form").is_visible(), timeout=30, message="the token prompt")
        assert not page.locator("#server").is_visible() and "/status" not in server.requests
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        wait_until(lambda: text(page, "status") == "live", timeout=30, message="the page to open")
        assert text(page, "clients-count") == "3"
        assert browser.problems == []
