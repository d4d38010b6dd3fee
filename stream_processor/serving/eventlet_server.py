"""The eventlet shell: python-socketio's `Server` on eventlet's WSGI server.

It carries out the core's steps with green threads: emit, `eventlet.sleep(0)` for a
turn, an eventlet event to wait on. Everything it decides comes from `core.py`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

with warnings.catch_warnings():
    # eventlet's import warns that it is in bugfix-only mode.
    warnings.simplefilter("ignore")
    import eventlet
import eventlet.event
import eventlet.greenthread
import eventlet.wsgi
import socketio

from stream_processor.protocol import event_stream as sse
from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.serving import http_endpoints, socketio_json
from stream_processor.serving.access import offered_token
from stream_processor.serving.core import Refused, ServingCore
from stream_processor.serving.delivery import DELIVERY_KEY, Delivery, DeliverySessions, is_data_frame, polling_packets
from stream_processor.serving.http_endpoints import EventStream, HttpRequest, HttpResponse
from stream_processor.serving.replay_loop import Finish, Heartbeat, Send, Step, Wait
from stream_processor.serving.socketio_messages import end_message, error_message, messages_for, packets_in
from stream_processor.serving.subscriber import Subscriber

log = logging.getLogger(__name__)

STOP_POLL_S = 0.1  # how soon a stop request is acted on
STOP_GRACE_S = 2.0  # how long a stopping server waits for open connections to close


class GreenWaker:
    """The event a green thread's replay waits on; the core sets it."""

    def __init__(self) -> None:
        self._event = eventlet.event.Event()

    def set(self) -> None:
        if not self._event.ready():
            self._event.send()

    def wait(self, timeout: float | None) -> None:
        # A fresh event each time: nothing runs between the core's check and this wait, so no wake is lost.
        self._event = eventlet.event.Event()
        self._event.wait(timeout)


class EventletReplayServer:
    def __init__(self, core: ServingCore) -> None:
        self.core = core
        settings = core.settings
        self.sio = socketio.Server(
            async_mode="eventlet",
            # None = same origin only; engine.io takes [] as "no CORS checks at all".
            cors_allowed_origins=list(settings.cors_origins) or None,
            max_http_buffer_size=settings.max_payload,
            http_compression=False,  # polling payloads stay countable (see delivery.py)
            json=socketio_json,  # recorded lines go out as they are
            logger=False,
            engineio_logger=False,
        )
        self._socketio_app = socketio.WSGIApp(self.sio)
        self._sessions = DeliverySessions()
        self._stop_requested = False  # set by request_stop(), even before serve() starts
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("subscribe", self._on_subscribe, namespace=NAMESPACE)
        self.sio.on("ack", self._on_ack, namespace=NAMESPACE)
        self.sio.on("*", self._on_unknown, namespace=NAMESPACE)

    # -- Socket.IO handlers -------------------------------------------------------------

    def _on_connect(self, sid: str, environ: Any = None, auth: Any = None) -> None:
        if not isinstance(environ, dict):  # an *event* named "connect": its data came in environ's place
            environ = {}
        token = offered_token(environ.get("HTTP_AUTHORIZATION"), environ.get("QUERY_STRING", ""), auth)
        address = environ.get("REMOTE_ADDR", "?")
        try:
            error = self.core.connect(sid, address, token, GreenWaker(), environ.get(DELIVERY_KEY))
        except Refused as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        if error:
            self._emit(sid, *error_message(error))

    def _on_disconnect(self, sid: str, *reason: Any) -> None:
        if self.sio.manager.is_connected(sid, NAMESPACE):
            # An *event* named "disconnect" (a real disconnect is no longer "connected" here).
            self._emit(sid, *error_message("disconnect is not an event a client may emit"))
            return
        self.core.leave(sid)

    def _on_subscribe(self, sid: str, *args: Any) -> None:
        outcome = self.core.subscribe(sid, args)
        if isinstance(outcome, str):
            self._emit(sid, *error_message(outcome))
        elif outcome is not None:
            self.sio.start_background_task(self._carry_out, self.core.subscribers[sid], outcome)

    def _on_ack(self, sid: str, *args: Any) -> None:
        if error := self.core.ack(sid, args):
            self._emit(sid, *error_message(error))

    def _on_unknown(self, event: str, sid: str, *args: Any) -> None:
        self._emit(sid, *error_message(f"unknown event {event!r:.60}; this server knows subscribe and ack"))

    def _emit(self, sid: str, event: str, args: Any) -> None:
        subscriber = self.core.subscribers.get(sid)
        if subscriber is not None and subscriber.delivery is not None:
            subscriber.delivery.hand(packets_in(args))
        if event == "error":
            log.info("client %s: %s", sid, args["message"])
        self.sio.emit(event, args, to=sid, namespace=NAMESPACE)

    # -- a replay's steps ---------------------------------------------------------------

    def _carry_out(self, subscriber: Subscriber, steps: Iterator[Step]) -> None:
        for step in steps:
            if isinstance(step, Send):
                for event, args in messages_for(step.records, subscriber.subscription):
                    if subscriber.generation != step.generation:
                        return  # superseded while sending
                    self._emit(subscriber.id, event, args)
                eventlet.sleep(0)
            elif isinstance(step, Wait):
                eventlet.sleep(0) if step.timeout == 0 else subscriber.waker.wait(step.timeout)
            elif isinstance(step, Finish):
                self._emit(subscriber.id, *end_message(step.count, step.offset))
                log.info(
                    "replay to %s ended after %d events; %s",
                    subscriber.id,
                    step.count,
                    self.core.pacing_summary(subscriber),
                )
            elif isinstance(step, Heartbeat):
                pass  # engine.io pings keep a Socket.IO connection alive

    # -- HTTP ---------------------------------------------------------------------------

    def wsgi_app(self, environ: dict, start_response) -> Iterable[bytes]:
        """Every request. One that raises (a bug) is logged here and answered with a plain
        JSON error: no traceback reaches a client (and eventlet's `debug` is off besides)."""
        try:
            return self._answer(environ, start_response)
        except Exception:
            log.exception("answering %s %.200r failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                # The handshake may have been written already: close the connection, write nothing.
                eventlet.wsgi.WSGI_LOCAL.already_handled = True
                return []
            return _respond(environ, start_response, http_endpoints.internal_error(), sys.exc_info())

    def _answer(self, environ: dict, start_response) -> Iterable[bytes]:
        request = _http_request(environ)
        if request.path.startswith("/socket.io/"):
            refused = http_endpoints.socketio_refusal(self.core.settings, request, _is_upgrade(request))
            if refused is not None:  # engine.io never sees it
                return _respond(environ, start_response, refused)
            return self._socketio(environ, start_response)
        answer = http_endpoints.handle(self.core, request, GreenWaker)
        if isinstance(answer, EventStream):
            environ["eventlet.minimum_write_chunk_size"] = 0  # each event goes out as it is yielded
            start_response("200 OK", answer.headers)
            return self._stream_body(answer)
        return _respond(environ, start_response, answer)

    def _stream_body(self, stream: EventStream) -> Iterator[bytes]:
        """An event stream's chunks: eventlet writes each as it is yielded, blocking this
        green thread while the client does not read, so a slow reader holds its replay back."""
        subscriber = stream.subscriber
        try:
            yield sse.OPENING
            for step in stream.steps:
                if isinstance(step, Send):
                    yield sse.encode(step.records)
                    eventlet.sleep(0)
                elif isinstance(step, Wait):
                    eventlet.sleep(0) if step.timeout == 0 else subscriber.waker.wait(step.timeout)
                elif isinstance(step, Heartbeat):
                    yield sse.HEARTBEAT
                elif isinstance(step, Finish):
                    yield sse.end_event(step.count, step.offset)
        except Exception:  # a bug: the stream just ends (its client resumes), the traceback goes to the log
            log.exception("event stream %s failed", subscriber.id)
        finally:  # ended, or the client left (a write failed)
            self.core.leave(subscriber.id)

    def _socketio(self, environ: dict, start_response) -> Iterable[bytes]:
        """Socket.IO, counting what its transport writes for each session (see delivery.py)."""
        delivery = self._sessions.for_request(environ.get("QUERY_STRING", ""))
        if delivery is None:
            return self._socketio_app(environ, start_response)
        environ[DELIVERY_KEY] = delivery
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            environ["eventlet.input"] = _CountingInput(environ["eventlet.input"], delivery)
            return self._socketio_app(environ, start_response)
        body = self._socketio_app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return body
        payload = b"".join(body)
        if "sid=" not in environ.get("QUERY_STRING", ""):
            self._sessions.learn_session(payload, delivery)
        else:
            delivery.wrote(polling_packets(payload))
        return [payload]

    # -- serving ------------------------------------------------------------------------

    def request_stop(self, *_signal_args: Any) -> None:
        """Stop `serve()`; meant for a signal handler, so it only sets a flag: a signal lands
        between any two bytecodes of whichever green thread runs, maybe in the middle of the
        hub's own bookkeeping, where scheduling anything could be lost."""
        self._stop_requested = True

    def serve(self, host: str = "127.0.0.1", port: int = 5000, on_listening=None) -> None:
        """Serve until `request_stop()` (a signal handler) or KeyboardInterrupt; `on_listening(url)`
        is told the address once bound."""
        listener = eventlet.listen((host, port))
        bound_host, bound_port = listener.getsockname()[:2]
        if on_listening:
            on_listening(f"http://{bound_host}:{bound_port}")
        eventlet.spawn(self._stop_when_requested, eventlet.greenthread.getcurrent())
        eventlet.wsgi.server(
            listener,
            self.wsgi_app,
            log_output=False,
            custom_pool=_ConnectionPool(),
            protocol=_HttpProtocol,
            debug=False,  # True (its default) writes a traceback into a 500's body
        )

    def _stop_when_requested(self, serving: Any) -> None:
        while not self._stop_requested:
            eventlet.sleep(STOP_POLL_S)
        self.core.stop_all()  # every replay ends at its next step
        serving.throw(KeyboardInterrupt)  # the WSGI server stops accepting and returns


class _HttpProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP, but a request line naming HTTP/2 or later is a 400, as uvicorn has it,
    not the standard library's 505: a 5xx says the server failed, and it did not."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        super().send_error(400 if code == 505 else code, message, explain)


class _ConnectionPool(eventlet.GreenPool):
    """eventlet's WSGI server waits for every open connection when it stops; an open
    websocket would keep it waiting until its client leaves. This waits a little, no more."""

    def waitall(self) -> None:
        with eventlet.Timeout(STOP_GRACE_S, False):
            super().waitall()


def _respond(environ: dict, start_response, answer: HttpResponse, exc_info: Any = None) -> list[bytes]:
    start_response(answer.status_line, [*answer.headers, ("content-length", str(len(answer.body)))], exc_info)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]


def _is_upgrade(request: HttpRequest) -> bool:
    """A websocket upgrade, as eventlet's websocket handler tells one."""
    connection = [token.strip() for token in request.headers.get("connection", "").lower().split(",")]
    return "upgrade" in connection and request.headers.get("upgrade", "").lower() == "websocket"


def _http_request(environ: dict) -> HttpRequest:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    return HttpRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        path=environ.get("PATH_INFO", ""),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        address=environ.get("REMOTE_ADDR", "?"),
        scheme=environ.get("wsgi.url_scheme", "http"),
    )


class _CountingInput:
    """eventlet's request input, whose socket counts the websocket frames written to it."""

    def __init__(self, wrapped: Any, delivery: Delivery) -> None:
        self._wrapped = wrapped
        self._delivery = delivery

    def get_socket(self) -> _CountingSocket:
        return _CountingSocket(self._wrapped.get_socket(), self._delivery)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _CountingSocket:
    def __init__(self, sock: Any, delivery: Delivery) -> None:
        self._sock = sock
        self._delivery = delivery

    def sendall(self, data: bytes, *args: Any) -> None:
        self._sock.sendall(data, *args)  # blocks this green thread while the client does not read
        if is_data_frame(data):
            self._delivery.wrote(1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
