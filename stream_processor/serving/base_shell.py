"""What the two shells share: the Socket.IO handlers, a replay's and an event stream's steps
as things to emit, write or wait for, routing a request, and counting what engine.io writes.

python-socketio's own split: its `base_server.py` holds the logic, `server.py` and
`async_server.py` differ only in how they wait. So here: everything is a plain call, and
a shell adds only what differs, how it waits (eventlet's green threads, asyncio's
coroutines) and the interface it speaks (WSGI, ASGI). The decisions are the core's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import socketio

from stream_processor.protocol import event_stream as sse
from stream_processor.protocol.tokens import offered_token
from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.serving import http_endpoints, socketio_json
from stream_processor.serving.access import ANY_ORIGIN
from stream_processor.serving.core import Refused, ServerSettings, ServingCore
from stream_processor.serving.delivery import Delivery, DeliverySessions
from stream_processor.serving.http_endpoints import EventStream, HttpRequest, HttpResponse
from stream_processor.serving.replay_loop import Finish, Heartbeat, Send, Step, Wait
from stream_processor.serving.socketio_internals import connect_environ, is_connected, polling_packets, session_id
from stream_processor.serving.socketio_messages import end_message, error_message, messages_for, packets_in
from stream_processor.serving.subscriber import Subscriber, Waker

log = logging.getLogger(__name__)

SOCKETIO_PATH = "/socket.io/"
TURN = Wait(0)  # let the other clients have a turn
Reply = tuple[str, str, Any]  # (sid, event, args): an emit a handler answers its client with
Decision = Callable[..., Reply | None]  # a handler's logic: the reply, if any


def socketio_options(settings: ServerSettings) -> dict[str, Any]:
    """python-socketio's server options both shells use."""
    any_origin = ANY_ORIGIN in settings.cors_origins
    return {
        # None = same origin only; engine.io takes [] as "no CORS checks at all", and "*" as any.
        "cors_allowed_origins": ANY_ORIGIN if any_origin else (list(settings.cors_origins) or None),
        "cors_credentials": not any_origin,  # any origin: no credentials (there is no token then either)
        "max_http_buffer_size": settings.max_payload,
        "http_compression": False,  # polling payloads stay countable (see delivery.py)
        "json": socketio_json,  # recorded lines go out as they are
        "logger": False,
        "engineio_logger": False,
    }


class ShellBase:
    """A shell's logic. A shell sets `new_waker` and defines `_answering` (a handler around a
    decision), `_emit`, `_carry_out` (a replay's actions) and `_client` (from the connect's environ)."""

    new_waker: Callable[[], Waker]  # the event a replay waits on: the shell's kind

    def __init__(self, core: ServingCore, sio: socketio.Server | socketio.AsyncServer) -> None:
        self.core = core
        self.sio = sio
        self._sessions = DeliverySessions()
        for event, decide in (
            ("connect", self._connect),
            ("disconnect", self._disconnect),
            ("subscribe", self._subscribe),
            ("ack", self._ack),
            ("*", self._unknown),
        ):
            sio.on(event, self._answering(decide), namespace=NAMESPACE)

    def _answering(self, decide: Decision) -> Callable[..., Any]:
        """The handler python-socketio calls: `decide`, then the reply emitted (sync or async)."""
        raise NotImplementedError

    def _client(self, environ: dict) -> tuple[str, Delivery | None]:
        """A connecting client's address and its transport's Delivery, from the connect's environ."""
        raise NotImplementedError

    def _emit(self, sid: str, event: str, args: Any) -> Any:
        """Emit to one client, after `_handing` (sync or async)."""
        raise NotImplementedError

    def _carry_out(self, subscriber: Subscriber, steps: Iterator[Step]) -> Any:
        """Carry out a Socket.IO replay's `_replay_actions` (a background task; sync or async)."""
        raise NotImplementedError

    # -- Socket.IO handlers -------------------------------------------------------------

    def _connect(self, sid: str, environ: Any = None, auth: Any = None) -> Reply | None:
        environ = connect_environ(environ)
        token = offered_token(environ.get("HTTP_AUTHORIZATION"), environ.get("QUERY_STRING", ""), auth)
        address, delivery = self._client(environ)
        try:
            error = self.core.connect(sid, address, token, self.new_waker(), delivery)
        except Refused as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        return _error(sid, error) if error else None

    def _disconnect(self, sid: str, *reason: Any) -> Reply | None:
        if is_connected(self.sio, sid, NAMESPACE):
            # An *event* named "disconnect" (a real disconnect is no longer "connected" here).
            return _error(sid, "disconnect is not an event a client may emit")
        self.core.leave(sid)
        return None

    def _subscribe(self, sid: str, *args: Any) -> Reply | None:
        outcome = self.core.subscribe(sid, args)
        if isinstance(outcome, str):
            return _error(sid, outcome)
        if outcome is not None:
            self.sio.start_background_task(self._carry_out, self.core.subscribers[sid], outcome)
        return None

    def _ack(self, sid: str, *args: Any) -> Reply | None:
        error = self.core.ack(sid, args)
        return _error(sid, error) if error else None

    def _unknown(self, event: str, sid: str, *args: Any) -> Reply:
        return _error(sid, f"unknown event {event!r:.60}; this server knows subscribe and ack")

    def _handing(self, sid: str, event: str, args: Any) -> None:
        """Before an emit: count its packets as handed to the transport, log an error."""
        subscriber = self.core.subscribers.get(sid)
        if subscriber is not None and subscriber.delivery is not None:
            subscriber.delivery.hand(packets_in(args))
        if event == "error":
            log.info("client %s: %s", sid, args["message"])

    # -- a replay's and an event stream's steps ----------------------------------------------

    def _replay_actions(self, subscriber: Subscriber, steps: Iterator[Step]) -> Iterator[Reply | Wait]:
        """A Socket.IO replay's steps as what its shell does: emit a Reply, or wait (TURN: a turn).
        Lazy, so a replay superseded while sending stops before its next message."""
        for step in steps:
            if isinstance(step, Send):
                assert subscriber.subscription is not None, "a replay's steps come after its subscribe"
                for event, args in messages_for(step.records, subscriber.subscription):
                    if subscriber.generation != step.generation:
                        return  # superseded while sending
                    yield subscriber.id, event, args
                yield TURN
            elif isinstance(step, Wait):
                yield step
            elif isinstance(step, Finish):
                yield (subscriber.id, *end_message(step.count, step.offset))
                log.info(
                    "replay to %s ended after %d events; %s",
                    subscriber.id,
                    step.count,
                    self.core.pacing_summary(subscriber),
                )
            elif isinstance(step, Heartbeat):
                pass  # engine.io pings keep a Socket.IO connection alive

    def _stream_chunks(self, stream: EventStream) -> Iterator[bytes | Wait]:
        """An event stream's steps as what its shell does: write a chunk, or wait (TURN: a turn).

        The stream closes after `--max-connection-s` (the client resumes with its
        Last-Event-ID, as from the public service, which closes long connections too). A
        failure while streaming goes to the client as `event: error`, and the stream closes."""
        yield sse.OPENING
        lifetime = self.core.settings.max_connection_s
        closes_at = None if lifetime is None else self.core.clock() + lifetime
        try:
            for step in stream.steps:
                if closes_at is not None and self.core.clock() >= closes_at:
                    log.info("closing event stream %s after --max-connection-s %g", stream.subscriber.id, lifetime)
                    return
                if isinstance(step, Send):
                    yield sse.encode(step.records, stream.stamps_meta)
                    yield TURN
                elif isinstance(step, Wait):
                    yield _no_later_than(step, closes_at, self.core.clock())
                elif isinstance(step, Heartbeat):
                    yield sse.HEARTBEAT
                elif isinstance(step, Finish):
                    yield sse.end_event(step.count, step.offset, stream.end_id)
        except Exception as exc:  # the recording became unreadable, a followed output failed...
            log.exception("event stream %s failed", stream.subscriber.id)
            yield sse.failure_event(f"the server cannot go on with this stream: {type(exc).__name__}")

    # -- HTTP ---------------------------------------------------------------------------

    def _route(self, request: HttpRequest, upgrade: bool) -> HttpResponse | EventStream | None:
        """A request's answer; None: a Socket.IO request engine.io answers. `upgrade`: whether
        the shell takes it for a websocket upgrade."""
        if is_socketio(request):
            return http_endpoints.socketio_refusal(self.core.settings, request, upgrade)
        return http_endpoints.handle(self.core, request, self.new_waker)

    def _polled(self, query_string: str, body: bytes, delivery: Delivery) -> None:
        """A long-polling GET's body went out: a handshake's names the session, a later one's holds packets."""
        if session_id(query_string) is None:
            self._sessions.learn_session(body, delivery)
        else:
            delivery.wrote(polling_packets(body))


def _no_later_than(wait: Wait, closes_at: float | None, now: float) -> Wait:
    """A wait that ends by the stream's closing time, if it has one."""
    if closes_at is None or wait.timeout == 0:
        return wait
    left = max(0.0, closes_at - now)
    return Wait(left if wait.timeout is None else min(wait.timeout, left))


def is_socketio(request: HttpRequest) -> bool:
    return request.path.startswith(SOCKETIO_PATH)


def _error(sid: str, message: str) -> Reply:
    return (sid, *error_message(message))
