"""Every use of python-socketio's and python-engineio's internals or undocumented behaviour.

The server relies on a few things neither library promises; they are all here, and
tests/unit/test_socketio_internals.py pins each against the installed libraries, so an
upgrade that changes one fails there rather than in a replay:

- engine.io's wire format, read from outside at the HTTP interface (delivery.py): the
  handshake body `0{"sid": ...}`, the `sid` query parameter of later requests, the v4
  long-polling separator \\x1e, and one websocket frame (or ASGI message) per packet;
- engine.io's eventlet driver writing websocket frames through the socket that
  `environ["eventlet.input"].get_socket()` gives it (so the eventlet shell can count them);
- engine.io's ASGI driver handing the ASGI scope to the connect handler as `environ["asgi.scope"]`;
- engine.io's JSON module (it refuses integers of over 100 digits), and python-socketio
  calling a `json=` module's `dumps` on a packet's whole [event, *args] list (socketio_json.py);
- python-socketio routing an *event* named `connect` or `disconnect` to those handlers (its
  data in environ's place), and its manager's `is_connected`, false while a client connects
  or disconnects, which tells such an event from the real thing;
- what `DirectEmitManager` uses: `AsyncManager.emit`'s signature, `eio_sid_from_sid`, the
  server's `packet_class` and `eio.send`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import socketio
from engineio import json as engineio_json
from socketio import packet

__all__ = [
    "DirectEmitManager",
    "asgi_scope",
    "connect_environ",
    "count_eventlet_websocket_frames",
    "engineio_json",
    "handshake_session_id",
    "is_connected",
    "is_data_frame",
    "polling_packets",
    "session_id",
]

PACKET_SEPARATOR = b"\x1e"  # engine.io v4 long-polling payloads
TEXT_FRAME, BINARY_FRAME = 0x1, 0x2  # websocket opcodes (RFC 6455)


# -- engine.io's wire format ------------------------------------------------------------


def session_id(query_string: str) -> str | None:
    """The engine.io session a request names (`?sid=`), as engine.io reads it; None for a handshake."""
    return parse_qs(query_string).get("sid", [None])[0]


def handshake_session_id(body: bytes) -> str | None:
    """The session id in engine.io's handshake response (`0{"sid": ...}`), if it is one."""
    if not body.startswith(b"0{"):
        return None
    try:
        sid = json.loads(body[1:]).get("sid")
    except (ValueError, AttributeError):
        return None
    return sid if isinstance(sid, str) else None


def polling_packets(body: bytes) -> int:
    """Packets in an engine.io v4 long-polling payload."""
    return body.count(PACKET_SEPARATOR) + 1 if body else 0


def is_data_frame(frame: bytes) -> bool:
    """Whether bytes written to a websocket are a text or binary frame (not a ping, a close,
    a continuation or the HTTP handshake)."""
    return bool(frame) and frame[0] & 0x0F in (TEXT_FRAME, BINARY_FRAME) and not frame.startswith(b"HTTP/")


# -- what engine.io's drivers do with a request --------------------------------------------


def count_eventlet_websocket_frames(environ: dict, on_data_frame: Callable[[], None]) -> None:
    """Have `on_data_frame()` called after each data frame engine.io's eventlet driver writes
    to this websocket request's socket; the write blocks while the client does not read."""
    environ["eventlet.input"] = _CountingInput(environ["eventlet.input"], on_data_frame)


class _CountingInput:
    """eventlet's request input, whose socket counts the websocket frames written to it."""

    def __init__(self, wrapped: Any, on_data_frame: Callable[[], None]) -> None:
        self._wrapped = wrapped
        self._on_data_frame = on_data_frame

    def get_socket(self) -> _CountingSocket:
        return _CountingSocket(self._wrapped.get_socket(), self._on_data_frame)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _CountingSocket:
    def __init__(self, sock: Any, on_data_frame: Callable[[], None]) -> None:
        self._sock = sock
        self._on_data_frame = on_data_frame

    def sendall(self, data: bytes, *args: Any) -> None:
        self._sock.sendall(data, *args)
        if is_data_frame(data):
            self._on_data_frame()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def asgi_scope(environ: dict) -> dict:
    """The ASGI scope behind the environ engine.io's ASGI driver gives the connect handler."""
    scope = environ.get("asgi.scope")
    return scope if isinstance(scope, dict) else {}


# -- python-socketio's handlers and manager -------------------------------------------------


def connect_environ(environ: Any) -> dict:
    """The connect handler's environ; an *event* named `connect` (python-socketio routes it
    to the connect handler) brings its data in environ's place: no environ then."""
    return environ if isinstance(environ, dict) else {}


def is_connected(sio: socketio.Server | socketio.AsyncServer, sid: str, namespace: str) -> bool:
    """Whether `sid` is connected: false in the connect and disconnect handlers proper, true
    when a connected client emits an event named `connect` or `disconnect`."""
    return sio.manager.is_connected(sid, namespace)


class DirectEmitManager(socketio.AsyncManager):
    """A client manager for the asyncio shell that sends a packet meant for one client in
    the task that emits it.

    python-socketio's `AsyncManager.emit` is built for rooms: it starts a task per recipient
    and waits for them all, which for a replay's one recipient costs a task and a turn of the
    event loop per event. A replay emits to exactly one client, in order, so this sends its
    packet straight to engine.io (`AsyncServer.send`) and keeps python-socketio's own path for
    everything else (rooms, callbacks, several recipients). Custom managers are
    python-socketio's documented extension point (`client_manager=`); what this one reads of
    the server is not.
    """

    async def emit(
        self, event: str, data: Any, namespace: str, room=None, skip_sid=None, callback=None, to=None, **kwargs: Any
    ) -> None:
        recipient = to or room
        eio_sid = self.eio_sid_from_sid(recipient, namespace) if isinstance(recipient, str) else None
        if eio_sid is None or callback is not None or skip_sid is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        arguments = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *arguments]).encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:  # a list when it carries bytes
            await self.server.eio.send(eio_sid, part)
