"""The asyncio shell: python-socketio's `AsyncServer` as an ASGI app on uvicorn.

It carries out the core's steps with coroutines: await the emit, `asyncio.sleep(0)` for
a turn, an asyncio event to wait on. What both shells share is base_shell.py; everything
it decides comes from `core.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import socketio
import uvicorn

from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.serving import http_endpoints
from stream_processor.serving.base_shell import Decision, ShellBase, is_socketio, socketio_options
from stream_processor.serving.core import ServingCore
from stream_processor.serving.delivery import DELIVERY_KEY, Delivery
from stream_processor.serving.http_endpoints import EventStream, HttpRequest, HttpResponse
from stream_processor.serving.replay_loop import Step, Wait
from stream_processor.serving.socketio_internals import DirectEmitManager, asgi_scope
from stream_processor.serving.subscriber import Subscriber

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send_ = Callable[[dict[str, Any]], Awaitable[None]]
STOP_POLL_S = 0.1  # as often as uvicorn itself looks whether it should exit
GRACEFUL_SHUTDOWN_S = 3  # seconds; then uvicorn cancels what is left


class AsyncWaker:
    """The event a coroutine's replay waits on; the core sets it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        # A fresh event each time: nothing runs between the core's check and this wait, so no wake is lost.
        self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class AsyncioReplayServer(ShellBase):
    new_waker = AsyncWaker

    def __init__(self, core: ServingCore) -> None:
        sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=DirectEmitManager(),  # a replay's packets without a task each
            **socketio_options(core.settings),
        )
        super().__init__(core, sio)
        self._socketio_app = socketio.ASGIApp(self.sio)

    # -- Socket.IO ----------------------------------------------------------------------

    def _answering(self, decide: Decision) -> Callable[..., Awaitable[None]]:
        async def handler(*args: Any) -> None:
            if (reply := decide(*args)) is not None:
                await self._emit(*reply)

        return handler

    def _client(self, environ: dict) -> tuple[str, Delivery | None]:
        scope = asgi_scope(environ)
        return (scope.get("client") or ("?",))[0], scope.get(DELIVERY_KEY)

    async def _emit(self, sid: str, event: str, args: Any) -> None:
        self._handing(sid, event, args)
        await self.sio.emit(event, args, to=sid, namespace=NAMESPACE)

    async def _carry_out(self, subscriber: Subscriber, steps: Iterator[Step]) -> None:
        for action in self._replay_actions(subscriber, steps):
            if isinstance(action, Wait):
                await _wait(subscriber, action.timeout)
            else:
                await self._emit(*action)

    # -- HTTP ---------------------------------------------------------------------------

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send_) -> None:
        """Every request. One that raises (a bug) is logged here and answered with a plain
        JSON error, or closed if its answer had begun: no traceback reaches a client."""
        try:
            await self._answer(scope, receive, send)
        except Exception:
            log.exception("answering %s %.200r failed", scope.get("method", scope["type"]), scope.get("path"))
            # uvicorn refuses a second start (RuntimeError) once an answer has begun, then closes the connection
            with contextlib.suppress(Exception):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1011})
                elif scope["type"] == "http":
                    await _respond(send, http_endpoints.internal_error())

    async def _answer(self, scope: Scope, receive: Receive, send: Send_) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # lifespan is off; nothing else is expected
        request = _http_request(scope)
        websocket = scope["type"] == "websocket"  # uvicorn makes a websocket scope of a valid upgrade only
        if websocket and not is_socketio(request):
            await send({"type": "websocket.close", "code": 1008})  # no websocket here but Socket.IO's
            return
        answer = self._route(request, websocket)
        if answer is None:  # engine.io's
            await self._socketio(scope, receive, send)
        elif websocket:
            await send({"type": "websocket.close", "code": 1008})  # uvicorn answers the upgrade 403
        elif isinstance(answer, EventStream):
            await self._event_stream(answer, receive, send)
        else:
            await _respond(send, answer, head=request.method == "HEAD")

    async def _socketio(self, scope: Scope, receive: Receive, send: Send_) -> None:
        """Socket.IO, counting what its transport writes for each session (see delivery.py)."""
        query = scope.get("query_string", b"").decode("latin-1")
        delivery = self._sessions.for_request(query)
        if delivery is None:
            await self._socketio_app(scope, receive, send)
            return
        scope = {**scope, DELIVERY_KEY: delivery}
        counting = scope["type"] == "websocket" or scope.get("method") == "GET"

        async def counting_send(message: dict[str, Any]) -> None:
            await send(message)  # waits while the client does not read (uvicorn's flow control)
            if message["type"] == "websocket.send":
                delivery.wrote(1)
            elif message["type"] == "http.response.body" and counting:
                self._polled(query, message.get("body", b""), delivery)

        await self._socketio_app(scope, receive, counting_send)

    async def _event_stream(self, stream: EventStream, receive: Receive, send: Send_) -> None:
        """An event stream: each chunk waits in `send` while the client does not read
        (uvicorn's flow control), so a slow reader holds its replay back."""
        subscriber = stream.subscriber
        watcher = asyncio.ensure_future(_supersede_on_disconnect(receive, subscriber))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _encoded(stream.headers)})
            for chunk in self._stream_chunks(stream):
                if isinstance(chunk, Wait):
                    await _wait(subscriber, chunk.timeout)
                else:
                    await _send_chunk(send, chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            self.core.leave(subscriber.id)

    # -- serving ------------------------------------------------------------------------

    def request_stop(self, *_signal_args: Any) -> None:
        """A signal outside uvicorn's own handling (before it starts, or re-raised after it stops)."""
        raise KeyboardInterrupt

    def serve(self, host: str = "127.0.0.1", port: int = 5000, on_listening=None) -> None:
        """Serve until SIGINT or SIGTERM; `on_listening(url)` is told the address once bound."""
        listener = socket.create_server((host, port))
        bound_host, bound_port = listener.getsockname()[:2]
        config = uvicorn.Config(
            self.asgi_app,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,
        )
        server = uvicorn.Server(config)
        if on_listening:
            on_listening(f"http://{bound_host}:{bound_port}")
        asyncio.run(self._serve(server, listener))

    async def _serve(self, server: uvicorn.Server, listener: socket.socket) -> None:
        watcher = asyncio.ensure_future(self._stop_replays_on_exit(server))
        try:
            await server.serve(sockets=[listener])  # uvicorn handles SIGINT/SIGTERM while it serves
        finally:
            watcher.cancel()

    async def _stop_replays_on_exit(self, server: uvicorn.Server) -> None:
        """Once uvicorn is told to exit, end every replay, so open streams finish at once."""
        while not server.should_exit:
            await asyncio.sleep(STOP_POLL_S)
        self.core.stop_all()


async def _supersede_on_disconnect(receive: Receive, subscriber: Subscriber) -> None:
    """uvicorn drops what is sent after a client leaves; this ends the replay instead."""
    while (await receive())["type"] != "http.disconnect":
        pass
    subscriber.supersede()


async def _send_chunk(send: Send_, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _http_request(scope: Scope) -> HttpRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        # A header sent twice is one, its values joined, as WSGI has it: two Hosts are malformed.
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return HttpRequest(
        method=scope.get("method", "GET"),  # a websocket scope has none
        path=scope["path"],
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        address=(scope.get("client") or ("?",))[0],
        scheme=scope.get("scheme", "http"),
    )


async def _respond(send: Send_, response: HttpResponse, head: bool = False) -> None:
    headers = [*response.headers, ("content-length", str(len(response.body)))]
    await send({"type": "http.response.start", "status": response.status, "headers": _encoded(headers)})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _wait(subscriber: Subscriber, timeout: float | None) -> None:
    await (asyncio.sleep(0) if timeout == 0 else cast(AsyncWaker, subscriber.waker).wait(timeout))
