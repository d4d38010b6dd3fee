"""The plain-HTTP endpoints both shells serve beside Socket.IO, as pure decisions:
an `HttpRequest` in, an `HttpResponse` (or, for an event stream, an `EventStream`: its
subscriber and the steps the shell writes out) out.

Every endpoint honours the same rules as Socket.IO: the Host must name this server
(`--allowed-host`; the shells check it before engine.io sees a request, too), the token
when one is set (`Authorization: Bearer TOKEN` or `?token=TOKEN`; protocol/tokens.py, the
dashboard's rule too), and browsers from other origins only when listed (`--cors-origin`);
the shells only translate their environ or scope.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from stream_processor.observe.web import SECURITY_HEADERS, STATUS_PAGE, static_file
from stream_processor.protocol import event_stream as sse
from stream_processor.protocol.event_stream import Resume, parse_positions
from stream_processor.protocol.hosts import host_allowed, host_name
from stream_processor.protocol.tokens import offered_token, request_authorised
from stream_processor.serving import discovery
from stream_processor.serving.access import ANY_ORIGIN, origin_allowed
from stream_processor.serving.core import Refused, ServerSettings, ServingCore
from stream_processor.serving.replay_loop import Step
from stream_processor.serving.sse_request import (
    StreamRequestError,
    is_stream_path,
    parse_stream_path,
    parse_stream_request,
)
from stream_processor.serving.streams import MergedStreams
from stream_processor.serving.subscriber import Subscriber, Waker
from stream_processor.serving.subscription import Subscription

STATUS_PATH = "/status"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # names in lower case
    address: str
    scheme: str = "http"

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


@dataclass(frozen=True)
class EventStream:
    subscriber: Subscriber
    steps: Iterator[Step]
    headers: list[tuple[str, str]]
    end_id: str | None = None  # the `end` event's id, for a comma list of streams (else the default stream's)
    stamps_meta: bool = False  # events with EventStreams' meta get their topic, partition and offset filled


ACCESS_PATH = "/access"
PAGE_HEADERS = [(name.lower(), value) for name, value in SECURITY_HEADERS.items()]


def host_refusal(settings: ServerSettings, request: HttpRequest) -> HttpResponse | None:
    """The answer to a request whose Host does not name this server (DNS rebinding: see
    access.host_allowed), for every endpoint, Socket.IO's too; None for one that does.

    403, as for a refused origin and on the run's dashboard: the request is understood and
    refused. (421 Misdirected Request would invite a client to try another connection,
    which reaches the same server.) A malformed Host, or two, is a 400 (RFC 9112, 3.2)."""
    host = request.headers.get("host")
    if host and host_name(host) is None:
        return error_response(400, f"malformed Host header {host!r:.100}")
    if not host_allowed(host, settings.allowed_hosts):
        return error_response(
            403, f"this server does not answer to host {host!r:.100}; name it with --allowed-host (DNS rebinding)"
        )
    return None


def socketio_refusal(settings: ServerSettings, request: HttpRequest, upgrade: bool) -> HttpResponse | None:
    """What a shell answers to a Socket.IO request before engine.io sees it, if anything: a
    foreign Host (as everywhere), and `transport=websocket` on a request that is not a
    websocket upgrade (`upgrade`: the shell's judgement), which engine.io answers with its
    polling packets as the WSGI body (eventlet then fails: a 500) or with nothing (uvicorn: a 500)."""
    if (refused := host_refusal(settings, request)) is not None:
        return refused
    transport = parse_qs(request.query_string).get("transport", ["polling"])[0]  # as engine.io reads it
    if transport == "websocket" and not upgrade:
        return error_response(400, "transport=websocket needs a websocket upgrade (Connection: Upgrade)")
    return None


def handle(core: ServingCore, request: HttpRequest, new_waker: Callable[[], Waker]) -> HttpResponse | EventStream:
    """Answer a plain-HTTP request (anything but Socket.IO)."""
    settings = core.settings
    if (refused := host_refusal(settings, request)) is not None:
        return refused
    if not origin_allowed(request.origin, request.scheme, request.headers.get("host"), settings.cors_origins):
        return error_response(403, f"origin {request.origin!r:.100} is not allowed (see --cors-origin)")
    cors = cors_headers(request, settings)
    if request.method == "OPTIONS":  # a browser's preflight, for Authorization or Last-Event-ID: no credentials
        return HttpResponse(204, b"", cors + PREFLIGHT_HEADERS)
    # `/?spec` shares its path with the status page, but names the streams served (the
    # operator's recordings): data, so it needs the token as the other data endpoints do.
    wants_spec = request.path == "/" and discovery.SPEC_QUERY in parse_qs(request.query_string, keep_blank_values=True)
    page = static_file(STATUS_PAGE, request.path) if request.method in ("GET", "HEAD") and not wants_spec else None
    if page is not None:  # the pages' files hold no data: no token (their data needs one)
        return HttpResponse(200, page[0], [("content-type", page[1]), *PAGE_HEADERS])
    authorised = request_authorised(settings.token, request.headers.get("authorization"), request.query_string)
    if request.path == ACCESS_PATH:  # whether a token is needed and this one accepted: no data
        return json_response(200, {"token_needed": settings.token is not None, "accepted": authorised}, cors)
    if not authorised:
        return unauthorised()
    if wants_spec:
        return json_response(200, discovery.openapi_spec(core.catalog), cors)
    if is_stream_path(request.path):
        return open_stream(core, request, new_waker, cors)
    if request.path != STATUS_PATH:
        paths = f"/ (the status page), /?spec, {discovery.UI_PATH}, {STATUS_PATH} and {sse.STREAM_PREFIX}{{streams}}"
        return error_response(404, f"no such endpoint: {request.path!r:.100}; this server serves {paths}")
    if request.method not in ("GET", "HEAD"):
        return error_response(405, f"{request.method} is not allowed here; use GET", [("allow", "GET, HEAD")])
    return json_response(200, core.status(), cors)


def open_stream(
    core: ServingCore, request: HttpRequest, new_waker: Callable[[], Waker], cors: list
) -> HttpResponse | EventStream:
    if request.method != "GET":
        return error_response(405, f"{request.method} is not allowed here; use GET", [("allow", "GET")])
    try:
        subscription, merged = _stream_request(core, request)
    except StreamRequestError as exc:
        return error_response(exc.status, str(exc), cors)
    if _nothing_left(core, subscription, merged):
        # Nothing left to send (a client resuming after the last event, or after the latest
        # time): 204 tells an EventSource to stop reconnecting.
        return HttpResponse(204, b"", cors)
    token = offered_token(request.headers.get("authorization"), request.query_string)  # the core checks it again
    try:
        subscriber, steps = core.open_stream(request.address, token, new_waker(), subscription, merged)
    except Refused as exc:
        return error_response(429, str(exc), cors)
    end_id = merged.end_id() if merged is not None else None
    stamps = (merged or core.recording).stamps_meta
    return EventStream(subscriber, steps, [*STREAM_HEADERS, *cors], end_id, stamps)


def _stream_request(core: ServingCore, request: HttpRequest) -> tuple[Subscription, MergedStreams | None]:
    """What a stream request asks for: the subscription, and for anything but the default
    stream alone, the streams merged (each from where its Last-Event-ID position, or the
    query's `since`, starts it)."""
    settings = core.settings
    streams = core.catalog.resolve(parse_stream_path(request.path))
    last_event_id = request.headers.get("last-event-id")
    if streams == [core.catalog.default]:
        return parse_stream_request(request.query_string, last_event_id, settings.realtime, settings.speed), None
    subscription = parse_stream_request(request.query_string, None, settings.realtime, settings.speed)
    named = parse_positions(last_event_id, [stream.name for stream in streams]) if last_event_id else {}
    starts = {stream.name: named.get(stream.name, Resume(since=subscription.since)) for stream in streams}
    return replace(subscription, offset=0, since=None), MergedStreams(streams, starts)


def _nothing_left(core: ServingCore, subscription: Subscription, merged: MergedStreams | None) -> bool:
    if merged is not None:
        return merged.ends_before(0)
    if subscription.since is not None:
        return core.recording.ends_before_time(subscription.since)
    return core.recording.ends_before(subscription.offset)


STREAM_HEADERS = [
    ("content-type", sse.CONTENT_TYPE),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),  # a proxy in front must not hold events back
]


PREFLIGHT_HEADERS = [
    ("access-control-allow-methods", "GET"),
    ("access-control-allow-headers", "Authorization, Last-Event-ID"),
    ("access-control-max-age", "600"),
]


def cors_headers(request: HttpRequest, settings: ServerSettings) -> list[tuple[str, str]]:
    """For an allowed browser from another origin: let it read the answer (any page, with
    `--cors-origin '*'`, as the public EventStreams: never with credentials)."""
    if not request.origin:
        return []
    if ANY_ORIGIN in settings.cors_origins:
        return [("access-control-allow-origin", ANY_ORIGIN)]
    return [("access-control-allow-origin", request.origin), ("vary", "Origin")]


def unauthorised() -> HttpResponse:
    return error_response(
        401,
        "this server needs a token: Authorization: Bearer TOKEN, or ?token=TOKEN; wrong or missing",
        [("www-authenticate", 'Bearer realm="stream_processor"')],
    )


def internal_error() -> HttpResponse:
    """What a shell answers when answering raised (a bug): no traceback, which goes to the log."""
    return error_response(500, "the server failed to answer this request; its log says why")


def error_response(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    return json_response(status, {"error": message}, headers)


def json_response(status: int, document: Any, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = json.dumps(document).encode() + b"\n"
    return HttpResponse(status, body, [("content-type", JSON), ("cache-control", "no-store"), *(headers or [])])
