"""The run's live page (`--dashboard PORT`): what the run is doing, in a browser.

It serves, on 127.0.0.1 only:
- `/`: the page (plain HTML, CSS and JavaScript shipped in the package, charts drawn on
  canvas: no CDN, no internet);
- `/access`: whether a token is needed, and whether the one offered is right (no data:
  the page asks here first, so a wrong token is a prompt, not a failed request);
- `/events`: Server-Sent Events: `settings` (again whenever they change), a `snapshot`
  every second (the counts, the window, the head of the line and what holds it, the
  workers, and the rate samples and latency points added since the last one, at most a
  few hundred of those however fast lines are written), `final`
  with the run's report once it is over, and `end` when the stream stops for good (the
  page then stops reconnecting);
- `/snapshot`: the same as one JSON document (for scripts and tests).

It reads the run's observations (`observations.RunObservations`) and keeps no counts of
its own: the cursors of a stream only say what that page has been sent. With a token,
every data endpoint needs it (`?token=` or `Authorization: Bearer`); the page itself
holds no data and asks for it. A request naming another host is refused, so a web page
elsewhere cannot reach it through DNS rebinding.

When the run ends, `close()` wakes every open stream, which sends the final summary and
`end`, and waits (briefly) for them before the server stops: the page shows how the run
ended even though the process exits right after.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stream_processor.observe.web import RUN_PAGE, SECURITY_HEADERS, static_file
from stream_processor.protocol.hosts import host_allowed
from stream_processor.protocol.tokens import request_authorised
from stream_processor.redaction import redact_text

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_S = 1.0
HEAD_THRESHOLD_S = 2.0  # the page flags the head of the line once the line has not moved for this long
RECONNECT_MS = 2000  # an EventSource whose stream broke tries again after this long
CLOSE_GRACE_S = 3.0  # how long close() waits for open pages to get the final summary
DATA_PATHS = ("/snapshot", "/events")
ALL = -1  # the latency series' cursor: from its first point
MOST_POINTS_SENT = 400  # latency points of a series in one snapshot, at most: a page's chart needs no more


class Dashboard:
    """Serves the run's page from a thread of its own; `close()` stops it."""

    def __init__(
        self,
        observations,
        token: str | None = None,
        snapshot_every_s: float = SNAPSHOT_EVERY_S,
        head_threshold_s: float = HEAD_THRESHOLD_S,
    ) -> None:
        self.observations = observations
        self.token = token
        self.snapshot_every_s = snapshot_every_s
        self.head_threshold_s = head_threshold_s
        self.closing = threading.Event()
        self._streams = 0  # pages connected to /events now (not a figure of the run: for close())
        self._streams_changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        self._server = _Server((host, port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        return self.port

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the dashboard is not serving: call serve() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Wake every open stream (each sends what is left, the final summary if there is
        one, and `end`), wait up to `grace_s` for them, then stop serving."""
        self.closing.set()
        with self._streams_changed:
            self._streams_changed.wait_for(lambda: self._streams == 0, timeout=grace_s)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def authorised(self, query_string: str, authorization: str | None) -> bool:
        """The replay server's token rule (protocol/tokens.py): `Authorization: Bearer` (any case) or `?token=`."""
        return request_authorised(self.token, authorization, query_string)

    def settings(self) -> dict[str, Any]:
        """The run's settings, and the page's own (how it flags the head of the line)."""
        return {
            "run": dict(self.observations.settings),
            "page": {"head_threshold_s": self.head_threshold_s, "snapshot_every_s": self.snapshot_every_s},
        }

    def document(self) -> dict[str, Any]:
        """Everything the page shows, as plain values (`/snapshot`)."""
        seen = self.observations
        points, _ = _latency_points(seen, ALL)
        return {**self.settings(), "live": seen.snapshot(), "latency": points, "final": seen.final}

    def _stream_opened(self) -> None:
        with self._streams_changed:
            self._streams += 1

    def _stream_closed(self) -> None:
        with self._streams_changed:
            self._streams -= 1
            self._streams_changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a page left open does not keep the run from exiting
    allow_reuse_address = True


def _handler_for(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "stream-processor"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("dashboard: %s", redact_text(format % args))  # a request line may hold ?token=

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802 - the base class's name
            self._answer(body=False)

        def __getattr__(self, name: str) -> Any:
            # Any other method (OPTIONS, POST, FROB): 405 as the replay server says, not the
            # standard library's 501, which claims the server failed.
            if name.startswith("do_"):
                return self._refuse_method
            raise AttributeError(name)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # The standard library's parser says 505 to HTTP/2.0 or 9.9 in a request line: a
            # bad request, not a failure of ours (no request gets a 5xx).
            if code >= 500:
                code, message = HTTPStatus.BAD_REQUEST, message or "Bad request"
            super().send_error(code, message, explain)

        def _refuse_method(self) -> None:
            refusal = b'{"error": "only GET and HEAD are answered here"}'
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, refusal, "application/json", True, {"Allow": "GET, HEAD"})

        def _answer(self, body: bool) -> None:
            url = urlsplit(self.path)
            authorised = dashboard.authorised(url.query, self.headers.get("Authorization"))
            if not self._host_is_ours():
                self._send(HTTPStatus.FORBIDDEN, b"wrong host\n", "text/plain; charset=utf-8", body)
            elif (page := static_file(RUN_PAGE, url.path)) is not None:
                self._send(HTTPStatus.OK, *page, body)
            elif url.path == "/access":
                needed = dashboard.token is not None
                answer = {"token_needed": needed, "accepted": authorised}
                self._send(HTTPStatus.OK, _json(answer), "application/json", body)
            elif url.path in DATA_PATHS and not authorised:
                refusal = b'{"error": "this dashboard needs its token: ?token= or Authorization: Bearer"}'
                self._send(HTTPStatus.UNAUTHORIZED, refusal, "application/json", body, {"WWW-Authenticate": "Bearer"})
            elif url.path == "/snapshot":
                self._send(HTTPStatus.OK, _json(dashboard.document()), "application/json", body)
            elif url.path == "/events":
                self._stream(body)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", body)

        def _host_is_ours(self) -> bool:
            # The replay server's rule (protocol/hosts.py), with nothing beyond loopback allowed; two
            # Host headers arrive joined, and are refused.
            return host_allowed(",".join(self.headers.get_all("Host") or []))

        def _send(self, status: HTTPStatus, payload: bytes, kind: str, body: bool, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def _stream(self, body: bool) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if not body:
                return
            dashboard._stream_opened()
            try:
                self._send_stream()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page was closed
            finally:
                dashboard._stream_closed()

        def _send_stream(self) -> None:
            """Settings (when they change), a snapshot each second with what is new since
            the last one, the final summary once there is one, and `end`."""
            seen = dashboard.observations
            self.wfile.write(f"retry: {RECONNECT_MS}\n\n".encode())
            settings_sent: dict[str, Any] | None = None
            latency_cursor, rates_after = ALL, None
            while True:
                closing = dashboard.closing.is_set()  # first: a last round after it sends everything
                settings = dashboard.settings()
                if settings != settings_sent:
                    self._event("settings", settings)
                    settings_sent = settings
                live = seen.snapshot()
                rates = [sample for sample in live.pop("rates") if rates_after is None or sample[0] > rates_after]
                if rates:
                    rates_after = rates[-1][0]
                points, latency_cursor = _latency_points(seen, latency_cursor)
                self._event("snapshot", {"live": live, "rates": rates, "latency": points})
                final = seen.final
                if final is not None:
                    self._event("final", final)
                if final is not None or closing:
                    self._event("end", {"final": final is not None})
                    return
                dashboard.closing.wait(dashboard.snapshot_every_s)

        def _event(self, kind: str, data: Any) -> None:
            self.wfile.write(b"event: " + kind.encode() + b"\ndata: " + _json(data) + b"\n\n")
            self.wfile.flush()

    return Handler


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str, allow_nan=False).encode()


def _latency_points(observations, after: int) -> tuple[list[list[float | int | None]], int]:
    """[written at s, offset, latency s, ideal latency s or None]: the plot's series, each event
    beside its ideal once both are known; the points added after the `after`-th (-1: all), at
    most about MOST_POINTS_SENT of them, and the cursor for the next call."""
    trace = observations.trace
    if trace is None:
        return [], after
    points, cursor = trace.latencies.samples_after(after)
    return [
        [_s(p.at_s), p.offset, _s(p.latency_s), None if p.ideal_latency_s is None else _s(p.ideal_latency_s)]
        for p in _thin(points)
    ], cursor


def _thin(points: list, most: int = MOST_POINTS_SENT) -> list:
    """At most about `most` points: cut into chunks, each keeps its lowest and highest
    latency (in their order), so a spike survives however fast lines are written."""
    if len(points) <= most:
        return points
    size = -(-len(points) // (most // 2))  # ceiling
    kept = []
    for start in range(0, len(points), size):
        chunk = points[start : start + size]
        low = min(chunk, key=lambda point: point.latency_s)
        high = max(chunk, key=lambda point: point.latency_s)
        kept += sorted({id(low): low, id(high): high}.values(), key=chunk.index)
    return kept


def _s(seconds: float) -> float:
    return round(seconds, 4)
