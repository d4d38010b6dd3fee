"""The eventlet shell: python-socketio's `Server` on eventlet's WSGI server.

It carries out the core's steps with green threads: emit, `eventlet.sleep(0)` for a
turn, an eventlet event to wait on. What both shells share is base_shell.py; everything
it decides comes from `core.py`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

with warnings.catch_warnings():
    # eventlet's import warns that it is in bugfix-only mode.
    warnings.simplefilter("ignore")
    import eventlet
import eventlet.event
import eventlet.greenthread
import eventlet.wsgi
import socketio

from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.serving import http_endpoints
from stream_processor.serving.base_shell import Decision, ShellBase, socketio_options
from stream_processor.serving.core import ServingCore
from stream_processor.serving.delivery import DELIVERY_KEY, Delivery
from stream_processor.serving.http_endpoints import EventStream, HttpRequest, HttpResponse
from stream_processor.serving.replay_loop import Step, Wait
from stream_processor.serving.socketio_internals import count_eventlet_websocket_frames
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


class EventletReplayServer(ShellBase):
    new_waker = GreenWaker

    def __init__(self, core: ServingCore) -> None:
        super().__init__(core, socketio.Server(async_mode="eventlet", **socketio_options(core.settings)))
        self._socketio_app = socketio.WSGIApp(self.sio)
        self._stop_requested = False  # set by request_stop(), even before serve() starts

    # -- Socket.IO ----------------------------------------------------------------------

    def _answering(self, decide: Decision) -> Callable[..., None]:
        def handler(*args: Any) -> None:
            if (reply := decide(*args)) is not None:
                self._emit(*reply)

        return handler

    def _client(self, environ: dict) -> tuple[str, Delivery | None]:
        return environ.get("REMOTE_ADDR", "?"), environ.get(DELIVERY_KEY)

    def _emit(self, sid: str, event: str, args: Any) -> None:
        self._handing(sid, event, args)
        self.sio.emit(event, args, to=sid, namespace=NAMESPACE)

    def _carry_out(self, subscriber: Subscriber, steps: Iterator[Step]) -> None:
        for action in self._replay_actions(subscriber, steps):
            if isinstance(action, Wait):
                _wait(subscriber, action.timeout)
            else:
                self._emit(*action)

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
        answer = self._route(request, _is_upgrade(request))
        if answer is None:  # engine.io's
            return self._socketio(environ, start_response)
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
            for chunk in self._stream_chunks(stream):
                if isinstance(chunk, Wait):
                    _wait(subscriber, chunk.timeout)
                else:
                    yield chunk
        except Exception:  # a bug: the stream just ends (its client resumes), the traceback goes to the log
            log.exception("event stream %s failed", subscriber.id)
        finally:  # ended, or the client left (a write failed)
            self.core.leave(subscriber.id)

    def _socketio(self, environ: dict, start_response) -> Iterable[bytes]:
        """Socket.IO, counting what its transport writes for each session (see delivery.py)."""
        query = environ.get("QUERY_STRING", "")
        delivery = self._sessions.for_request(query)
        if delivery is None:
            return self._socketio_app(environ, start_response)
        environ[DELIVERY_KEY] = delivery
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # Each frame's write blocks this green thread while the client does not read.
            count_eventlet_websocket_frames(environ, lambda: delivery.wrote(1))
            return self._socketio_app(environ, start_response)
        body = self._socketio_app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return body
        payload = b"".join(body)
        self._polled(query, payload, delivery)
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


def _wait(subscriber: Subscriber, timeout: float | None) -> None:
    eventlet.sleep(0) if timeout == 0 else cast(GreenWaker, subscriber.waker).wait(timeout)
