"""Where a streaming run's events come from: a Socket.IO replay (`ReplayClient`) or an
event stream (`EventStreamClient`), chosen by the URL's path.

Both have the same interface: `connect()`, `inbox` (`Change`s, then `End`),
`acknowledge(written_up_to, caught_up)`, `close()`, `next_offset`, `reconnects`,
`refusal`, `failure`, `resume_token(offset)`.

Both hold at most a window of events past the last offset acknowledged, so memory stays
flat however slow the run: the Socket.IO server stops sending at its window (counted from
the client's acks), and the event-stream client stops reading its socket at `window`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from stream_processor.client import ReplayClient
from stream_processor.protocol import DEFAULT_WINDOW
from stream_processor.sse_client import EventStreamClient

SOCKETIO, SSE = "socket.io", "sse"
TRANSPORTS = (SOCKETIO, SSE)
SSE_PATH_PREFIX = "/v2/stream/"  # EventStreams' and this project's event streams


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
        )
    return ReplayClient(
        url, start_offset, realtime, speed, ack_every=ack_every, token=token, reconnect_delay_s=reconnect_delay_s
    )
