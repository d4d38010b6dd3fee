"""Where a streaming run's events come from: a Socket.IO replay (`ReplayClient`) or an
event stream (`EventStreamClient`), chosen by the URL's path.

Both have the same interface: `connect()`, `inbox` (`Change`s, then `End`),
`acknowledge(written_up_to, caught_up)`, `close()`, `next_offset`, `reconnects`,
`refusal`, `failure`, `resume_token(offset)`.

Both hold at most a window of events past the last offset acknowledged, so memory stays
flat however slow the run: the Socket.IO client subscribes with its `window`, and the server
stops sending at the smaller of its own window and that one (counted from the client's
acks); the event-stream client stops reading its socket at `window`.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from stream_processor.protocol.vocabulary import DEFAULT_WINDOW
from stream_processor.redaction import safe_url
from stream_processor.sources.socketio_client import ReplayClient
from stream_processor.sources.sse_client import EventStreamClient, SourceRequestError

SOCKETIO, SSE = "socket.io", "sse"
TRANSPORTS = (SOCKETIO, SSE)
SSE_PATH_PREFIX = "/v2/stream/"  # EventStreams' and this project's event streams
SCHEMES = {SOCKETIO: ("http", "https", "ws", "wss"), SSE: ("http", "https")}

__all__ = ["SOCKETIO", "SSE", "TRANSPORTS", "SourceRequestError", "check_url", "open_source", "transport_for"]


def check_url(url: str, transport: str | None = None) -> None:
    """Raise SourceRequestError (a usage error: exit 2) for a `--url` that cannot work as
    written, before anything starts. What an event stream's query means is its server's to
    say (ours answers 400, which `connect()` turns into the same error); a Socket.IO replay
    takes its subscription after connecting, so any query parameter but one `token` would be
    ignored silently: refused here instead."""
    transport = transport or transport_for(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number, or out of range
    except ValueError as exc:
        raise SourceRequestError(f"--url {safe_url(url)}: {exc}") from None
    schemes = SCHEMES[transport]
    if parts.scheme not in schemes or not parts.hostname:
        starts = " or ".join(scheme + "://" for scheme in schemes)
        raise SourceRequestError(
            f"--url {safe_url(url)}: not a URL a {transport} client can open (it starts {starts} and names a host)"
        )
    if transport != SOCKETIO:
        return
    query = parse_qs(parts.query, keep_blank_values=True)
    ignored = sorted(set(query) - {"token"})
    if ignored:
        raise SourceRequestError(
            f"--url {safe_url(url)}: a Socket.IO replay takes no query parameters but token (its subscription is sent "
            f"after connecting), not {', '.join(ignored)}; for an event stream use {SSE_PATH_PREFIX}recentchange?..."
        )
    if len(query.get("token", [])) > 1:
        raise SourceRequestError(f"--url {safe_url(url)}: token may be given once")


def transport_for(url: str) -> str:
    """`sse` for an event stream's URL (`.../v2/stream/NAME`), else `socket.io`."""
    return SSE if urlsplit(url).path.startswith(SSE_PATH_PREFIX) else SOCKETIO


def open_source(
    url: str,
    start_offset: int = 0,
    realtime: bool | None = None,
    speed: float | None = None,
    ack_every: int = 100,
    token: str | None = None,
    resume_token: str | None = None,
    transport: str | None = None,
    reconnect_delay_s: float = 0.2,
    window: int = DEFAULT_WINDOW,
    keep_canaries: bool = False,
) -> ReplayClient | EventStreamClient:
    """A source for `url` (not yet connected); `transport` forces one."""
    if (transport or transport_for(url)) == SSE:
        return EventStreamClient(
            url,
            start_offset,
            realtime,
            speed,
            token=token,
            resume_token=resume_token,
            reconnect_delay_s=reconnect_delay_s,
            window=window,
            keep_canaries=keep_canaries,
        )
    return ReplayClient(
        url,
        start_offset,
        realtime,
        speed,
        ack_every=ack_every,
        token=token,
        reconnect_delay_s=reconnect_delay_s,
        window=window,
    )
