"""The contract with python-socketio and python-engineio: every internal or undocumented
behaviour the server uses (serving/socketio_internals.py), checked against the installed
libraries with real servers driven in process (WSGI and ASGI calls, a socket pair), no
mocks. An upgrade that changes any of them fails here."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import socket
import warnings

import engineio
import pytest
import socketio
from socketio import packet

from stream_processor.protocol.vocabulary import NAMESPACE
from stream_processor.serving import socketio_json
from stream_processor.serving.socketio_internals import (
    DirectEmitManager,
    asgi_scope,
    connect_environ,
    count_eventlet_websocket_frames,
    engineio_json,
    handshake_session_id,
    is_connected,
    is_data_frame,
    polling_packets,
    session_id,
)
from stream_processor.serving.socketio_json import EncodedJson
from stream_processor.serving.socketio_messages import packets_in

LINE = '{"wiki": "enwiki",  "title": "Spaces stay"}'  # a recorded line: its own spacing goes out as it is
POLLING = "EIO=4&transport=polling"


@pytest.fixture(autouse=True)
def packets_keep_their_json():
    """A server's `json=` is set on the libraries' packet classes, for the whole process: put them back."""
    saved = socketio.packet.Packet.json, engineio.packet.Packet.json
    yield
    socketio.packet.Packet.json, engineio.packet.Packet.json = saved


# -- a sync server over WSGI long-polling ---------------------------------------------------


def wsgi(app, method: str, query: str, body: bytes = b"") -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/socket.io/",
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "CONTENT_TYPE": "text/plain;charset=UTF-8",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    statuses: list[str] = []
    answer = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return statuses[0], answer


@pytest.fixture
def sync_server():
    sio = socketio.Server(async_mode="threading", async_handlers=False, json=socketio_json, logger=False)
    yield sio, socketio.WSGIApp(sio)
    sio.shutdown()


def open_session(app) -> str:
    status, body = wsgi(app, "GET", POLLING)
    assert status.startswith("200"), status
    sid = handshake_session_id(body)
    assert isinstance(sid, str) and sid, body
    return sid


def test_the_handshake_body_names_the_session_that_later_requests_carry(sync_server):
    sio, app = sync_server
    sid = open_session(app)
    query = f"{POLLING}&sid={sid}"
    assert session_id(POLLING) is None and session_id(query) == sid
    status, body = wsgi(app, "POST", query, b"40" + NAMESPACE.encode() + b",")
    assert status.startswith("200") and body == b"OK"
    status, _ = wsgi(app, "POST", f"{POLLING}&sid=not-a-session", b"1")
    assert status.startswith("400")


def test_a_polling_payload_holds_one_packet_per_emit_and_a_recorded_line_goes_in_as_it_is(sync_server):
    sio, app = sync_server
    connected: list[str] = []
    sio.on("connect", lambda sid, environ, auth=None: connected.append(sid), namespace=NAMESPACE)
    eio_sid = open_session(app)
    query = f"{POLLING}&sid={eio_sid}"
    wsgi(app, "POST", query, b"40" + NAMESPACE.encode() + b",")
    emits = [("change", EncodedJson(LINE)), ("change", (EncodedJson(LINE), 7)), ("end", {"count": 2, "offset": 9})]
    for event, args in emits:
        sio.emit(event, args, to=connected[0], namespace=NAMESPACE)
    _, body = wsgi(app, "GET", query)
    assert body.split(b"\x1e") == [
        b"40/rc," + json.dumps({"sid": connected[0]}, separators=(",", ":")).encode(),
        b'42/rc,["change",' + LINE.encode() + b"]",
        b'42/rc,["change",' + LINE.encode() + b",7]",
        b'42/rc,["end",{"count":2,"offset":9}]',
    ]
    assert polling_packets(body) == 1 + sum(packets_in(args) for _, args in emits)


def test_is_connected_tells_events_named_connect_and_disconnect_from_the_real_ones(sync_server):
    sio, app = sync_server
    seen: list[tuple] = []

    def on_connect(sid, environ, auth=None):
        seen.append(("connect", is_connected(sio, sid, NAMESPACE), connect_environ(environ).get("REMOTE_ADDR"), auth))

    def on_disconnect(sid, *args):
        seen.append(("disconnect", is_connected(sio, sid, NAMESPACE), args))

    def on_any(event, sid, *args):
        seen.append(("*", event, args))

    sio.on("connect", on_connect, namespace=NAMESPACE)
    sio.on("disconnect", on_disconnect, namespace=NAMESPACE)
    sio.on("*", on_any, namespace=NAMESPACE)
    query = f"{POLLING}&sid={open_session(app)}"
    for payload in ('40/rc,{"token":"s3cret"}', '42/rc,["connect","data"]', '42/rc,["disconnect",1]'):
        wsgi(app, "POST", query, payload.encode())
    wsgi(app, "POST", query, b'42/rc,["frob",1,2]')
    wsgi(app, "POST", query, b"41/rc,")
    assert seen == [
        ("connect", False, "127.0.0.1", {"token": "s3cret"}),  # connecting: not yet connected
        ("connect", True, None, None),  # an event named connect: its data in environ's place
        ("disconnect", True, (1,)),
        ("*", "frob", (1, 2)),
        ("disconnect", False, (sio.reason.CLIENT_DISCONNECT,)),  # disconnecting: no longer connected
    ]


def test_engineio_json_refuses_huge_integers_and_socketio_hands_it_our_json_module():
    with pytest.raises(ValueError):
        socketio_json.loads("1" * 101)
    assert engineio_json.loads("[1, 2.5]") == [1, 2.5]
    sio = socketio.Server(async_mode="threading", json=socketio_json)
    assert sio.packet_class.json is socketio_json
    encoded = sio.packet_class(packet.EVENT, namespace=NAMESPACE, data=["change", EncodedJson(LINE), 7]).encode()
    assert encoded == f'2/rc,["change",{LINE},7]'


# -- the asyncio server over ASGI: its scope and DirectEmitManager -----------------------------


async def asgi(app, method: str, query: str, body: bytes = b"", **scope_extra) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/socket.io/",
        "raw_path": b"/socket.io/",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"text/plain;charset=UTF-8"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("192.0.2.7", 4321),
        "server": ("127.0.0.1", 80),
        **scope_extra,
    }
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return requests.pop(0) if requests else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    return status, b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


async def emitted_packets(manager: socketio.AsyncManager | None) -> tuple[list[bytes], dict]:
    """The polling payload a client gets for a connect and four emits (one carries bytes),
    through `manager`, and the scope its connect handler saw."""
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, async_handlers=False, json=socketio_json, logger=False
    )
    app = socketio.ASGIApp(sio)
    connected: dict = {}

    async def on_connect(sid, environ, auth=None):
        connected.update(sid=sid, scope=asgi_scope(environ))

    sio.on("connect", on_connect, namespace=NAMESPACE)
    try:
        _, body = await asgi(app, "GET", POLLING, **{"stream_processor.delivery": "marker"})
        query = f"{POLLING}&sid={handshake_session_id(body)}"
        await asgi(app, "POST", query, b"40/rc,")
        emits = [
            ("change", EncodedJson(LINE)),
            ("change", (b"\xff not utf-8", 3, 4)),
            ("changes", [["a line", 5, 6]]),
            ("error", {"message": "x"}),
        ]
        for event, args in emits:
            await sio.emit(event, args, to=connected["sid"], namespace=NAMESPACE)
        _, body = await asgi(app, "GET", query)
        assert polling_packets(body) == 1 + sum(packets_in(args) for _, args in emits)
        return body.split(b"\x1e")[1:], connected
    finally:
        await sio.shutdown()


def test_direct_emit_writes_the_packets_python_socketios_own_manager_writes():
    direct, connected = asyncio.run(emitted_packets(DirectEmitManager()))
    stock, _ = asyncio.run(emitted_packets(None))
    assert direct == stock
    assert direct[0] == b'42/rc,["change",' + LINE.encode() + b"]"
    assert direct[1].startswith(b'451-/rc,["change",{"_placeholder":true,"num":0},3,4]')
    assert direct[2] == b"b" + base64.b64encode(b"\xff not utf-8")  # the attachment: its own packet
    # engine.io's ASGI driver hands the connect handler the handshake's scope, keys of ours and all
    assert connected["scope"]["stream_processor.delivery"] == "marker"
    assert connected["scope"]["client"] == ("192.0.2.7", 4321)


async def websocket_messages(emits: list[tuple[str, object]]) -> list[dict]:
    """What engine.io's ASGI driver sends over a websocket for `emits`, after connecting."""
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=DirectEmitManager(), async_handlers=False, json=socketio_json, logger=False
    )
    connected: list[str] = []
    ready = asyncio.Event()

    async def on_connect(sid, environ, auth=None):
        connected.append(sid)
        ready.set()

    sio.on("connect", on_connect, namespace=NAMESPACE)
    incoming: asyncio.Queue[dict] = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "40/rc,"}):
        incoming.put_nowait(message)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/socket.io/",
        "raw_path": b"/socket.io/",
        "query_string": b"EIO=4&transport=websocket",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
        "client": ("192.0.2.7", 4321),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }
    serving = asyncio.ensure_future(socketio.ASGIApp(sio)(scope, incoming.get, send))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        before = len(sent)
        for event, args in emits:
            await sio.emit(event, args, to=connected[0], namespace=NAMESPACE)
        for _ in range(100):  # engine.io's writer task sends them
            if len(sent) - before >= sum(packets_in(args) for _, args in emits):
                break
            await asyncio.sleep(0.01)
        return sent[before:]
    finally:
        incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(serving, 10)
        await sio.shutdown()


def test_each_packet_goes_out_as_one_asgi_websocket_message():
    emits = [("change", EncodedJson(LINE)), ("change", (b"\xff not utf-8", 3, 4)), ("end", {"count": 2, "offset": 9})]
    sent = asyncio.run(websocket_messages(emits))
    assert [message["type"] for message in sent] == ["websocket.send"] * sum(packets_in(args) for _, args in emits)
    assert [message.get("text") or message.get("bytes") for message in sent] == [
        '42/rc,["change",' + LINE + "]",
        '451-/rc,["change",{"_placeholder":true,"num":0},3,4]',
        b"\xff not utf-8",
        '42/rc,["end",{"count":2,"offset":9}]',
    ]


def test_direct_emit_overrides_what_python_socketio_has_and_calls():
    assert list(inspect.signature(DirectEmitManager.emit).parameters) == list(
        inspect.signature(socketio.AsyncManager.emit).parameters
    )
    assert list(inspect.signature(socketio.AsyncManager.eio_sid_from_sid).parameters) == ["self", "sid", "namespace"]
    server = socketio.AsyncServer(async_mode="asgi", client_manager=DirectEmitManager())
    assert server.manager.server is server
    assert inspect.iscoroutinefunction(server.eio.send)
    assert list(inspect.signature(server.eio.send).parameters) == ["sid", "data"]
    assert server.packet_class is packet.Packet


def test_asgi_scope_and_connect_environ_take_only_a_dict():
    assert asgi_scope({"asgi.scope": {"client": ("x", 1)}}) == {"client": ("x", 1)}
    assert asgi_scope({"asgi.scope": ["not", "a", "scope"]}) == {} and asgi_scope({}) == {}
    assert connect_environ({"REMOTE_ADDR": "x"}) == {"REMOTE_ADDR": "x"}
    assert connect_environ("an event's data") == {} and connect_environ(None) == {}


# -- the eventlet driver's websocket ----------------------------------------------------------


def test_the_eventlet_driver_writes_each_message_as_one_frame_through_eventlet_input():
    """engine.io's eventlet websocket takes its socket from `environ["eventlet.input"]`, and
    writes a message as one frame: the counting wrapper sees the data frames and no other."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's import warns that it is in bugfix-only mode
        import eventlet.websocket
        import eventlet.wsgi
    websocket_class = socketio.Server(async_mode="eventlet").eio._async["websocket"]
    assert issubclass(websocket_class, eventlet.websocket.WebSocketWSGI)
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/socket.io/",
            "QUERY_STRING": "EIO=4&transport=websocket",
            "HTTP_HOST": "localhost",
            "HTTP_CONNECTION": "Upgrade",
            "HTTP_UPGRADE": "websocket",
            "HTTP_SEC_WEBSOCKET_VERSION": "13",
            "HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(b"sixteen byte key").decode(),
            "eventlet.input": eventlet.wsgi.Input(io.BytesIO(), None, server_end),
        }
        frames: list[int] = []
        count_eventlet_websocket_frames(environ, lambda: frames.append(1))

        def handler(ws):
            ws.send("4text")
            ws.send(b"binary")

        websocket_class(handler, socketio.Server(async_mode="eventlet").eio)(environ, lambda *args: None)
        client_end.settimeout(5)
        written = b""
        while b"\x88" not in written[-4:]:  # up to the close frame
            written += client_end.recv(65536)
    assert len(frames) == 2
    assert written.startswith(b"HTTP/1.1 101")
    assert b"\x81\x054text" in written and b"\x82\x06binary" in written
    assert is_data_frame(b"\x81\x054text") and not is_data_frame(b"\x88\x00")
