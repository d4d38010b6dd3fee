"""Hostile HTTP to a real replay server (`socket_server.py`), one per async mode: whatever
a request carries in its query, its headers, its method or its path, the answer is never a
5xx and never shows a traceback. Requests go out as raw bytes (http.client refuses odd
header values); each asks for `Connection: close`, and its answer is read to the end (an
event stream only to its first event). And each shell's last line of defence: a request
whose answer raises (a bug planted for the test) gets a JSON error, its traceback the log.

Not fuzzed: `Content-Length` and `Transfer-Encoding` (the HTTP parser's framing, whose
errors are the parser's 400s and 501s), and `Connection` (we need the server to close).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.serving import ASYNC_MODES
from stream_processor.serving.sse_request import QUERY_FIELDS
from tests.conftest import RawAnswer, cli_env, raw_http, replay_server, terminate

SOCKETIO_PATH = "/socket.io/"
ENDPOINTS = ["/", "/status", "/access", STREAM_PATH, SOCKETIO_PATH, "/no/such/endpoint"]
ENGINEIO_FIELDS = ("EIO", "transport", "sid", "t", "j", "b64")
QUERY_NAMES = (*QUERY_FIELDS, *ENGINEIO_FIELDS)
HEADER_NAMES = (
    "Host",
    "Origin",
    "Authorization",
    "Last-Event-ID",
    "Upgrade",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "X-Forwarded-Proto",
    "X-Forwarded-For",
    "Cookie",
    "Content-Type",
    "Accept",
    "Accept-Encoding",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Expect",
    "User-Agent",
)
TRACEBACK_SIGNS = (b"Traceback", b'File "')


@pytest.fixture(scope="module", params=ASYNC_MODES)
def server_port(request, small_recording):
    """One real server per async mode for the whole module; it must still be up at the end."""
    with replay_server(small_recording, "--async-mode", request.param) as (url, _):
        yield int(url.rsplit(":", 1)[1])


def request_bytes(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), *(name + b": " + value for name, value in headers)]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def head_read(received: bytes) -> bool:
    """Enough of an event stream: its head and a first chunk (a paced stream may go on for minutes)."""
    head, found, body = received.partition(b"\r\n\r\n")
    return bool(found) and b"text/event-stream" in head.lower() and len(body) > 0


def assert_answered_without_failing(answer: RawAnswer, request: bytes) -> None:
    assert answer.status is not None, (request[:300], answer.head[:300])
    assert answer.status < 500, (request[:300], answer.head[:300], answer.body[:300])
    for sign in TRACEBACK_SIGNS:
        assert sign not in answer.head + answer.body, (request[:300], answer.body[:500])


def as_header_value(text: str) -> bytes:
    # CR and LF would end the header (the request), not make it odd; anything else goes.
    return text.replace("\r", "").replace("\n", "").encode("utf-8")


# Text that looks like a number: `isdigit()` is true for ² and ①, and int() refuses them.
numberish = st.text(st.sampled_from("0123456789-+._e ²①٣"), min_size=1, max_size=8)
ODD_VALUES = ["--5", "²", "-²", "①", "٣", "１", "1_0", " 1", "9" * 40, "1e999", "nan", "%ff", "\x00", "[" * 50]
PLAUSIBLE_VALUES = ["0", "1", "true", "*", "en.*", "4", "websocket", "polling", "2016-11-24T15:06:45Z"]
query_values = st.sampled_from(ODD_VALUES) | numberish | st.sampled_from(PLAUSIBLE_VALUES) | st.text(max_size=40)
# The parameters each endpoint reads (all get `token`); an unknown one is refused before values are looked at.
QUERY_NAMES_OF = {STREAM_PATH: QUERY_FIELDS, SOCKETIO_PATH: (*ENGINEIO_FIELDS, "token")}
# Valid values, for the parameters around the one fuzzed: a bad one is refused before the next is looked at.
VALID_VALUES = {
    "wikis": st.sampled_from(["*", "en.*", "enwiki"]),
    "type": st.sampled_from(["edit", "log"]),
    "namespace": st.integers(-5, 20).map(str),
    "bot": st.sampled_from(["true", "false"]),
    "since": st.sampled_from(["1480000005000", "2016-11-24T15:06:45Z"]),
    "realtime": st.just("false"),
    "speed": st.sampled_from(["1", "2.5"]),
    "EIO": st.just("4"),
    "transport": st.just("polling"),
    "j": st.just("0"),
}
safe_characters = st.sampled_from(["", "", "&=,%+;", ",*"])  # `&=` lets values add parameters, `%` breaks escapes
header_values = (
    st.sampled_from(ODD_VALUES)
    | numberish
    | st.text(max_size=60)
    | st.sampled_from(["evil.com", "127.0.0.1,evil.com", "http://evil.com", "bearer ²", '[{"offset": -1}]'])
)
header_names = st.sampled_from(HEADER_NAMES[1:]) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
header_items = st.lists(st.tuples(header_names, header_values), max_size=3)


def now_and_then(data: st.DataObject, what: str) -> bool:
    """About one example in five: for what is answered before the rest is looked at (a foreign Host)."""
    return data.draw(st.sampled_from([False, False, False, False, True]), what)


def fuzzed_request(port: int, endpoint: str, data: st.DataObject, fuzzed: str | None = None) -> bytes:
    """A request to `endpoint`: one of the parameters it reads (`fuzzed`, or any) with an arbitrary
    value, among valid others; arbitrary headers; now and then a foreign Host, unknown
    parameters, another method."""
    names = QUERY_NAMES_OF.get(endpoint, ("token",))
    around = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=3), "valid parameters")
    query = [(name, data.draw(VALID_VALUES.get(name, st.text(max_size=8)), name)) for name in around]
    fuzzed = fuzzed or data.draw(st.sampled_from(names), "fuzzed parameter")
    query.insert(data.draw(st.integers(0, len(query))), (fuzzed, data.draw(query_values, fuzzed)))
    if now_and_then(data, "unknown parameters?"):
        query += data.draw(st.lists(st.tuples(st.text(max_size=10), query_values), min_size=1, max_size=2))
    safe = data.draw(safe_characters, "unescaped")
    target = endpoint + "?" + "&".join(f"{quote(k, safe=safe)}={quote(v, safe=safe)}" for k, v in query)
    host = data.draw(header_values, "host") if now_and_then(data, "a foreign Host?") else f"127.0.0.1:{port}"
    headers = [(name, value) for name, value in data.draw(header_items, "headers")]
    lines = [(b"Host", as_header_value(host)), *((name.encode(), as_header_value(value)) for name, value in headers)]
    method = (
        data.draw(st.sampled_from(["HEAD", "OPTIONS", "POST"]), "method") if now_and_then(data, "not GET?") else "GET"
    )
    if method == "POST":
        lines.append((b"Content-Length", b"0"))
    return request_bytes(method, target, lines)


# The event stream parses the most (filters, numbers, times): each of its parameters gets examples of its own.
@pytest.mark.parametrize("parameter", QUERY_FIELDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_text_in_each_query_parameter_of_the_event_stream_never_gets_a_5xx_or_a_traceback(
    server_port, parameter, data
):
    request = fuzzed_request(server_port, STREAM_PATH, data, fuzzed=parameter)
    assert_answered_without_failing(raw_http(server_port, request, until=head_read), request)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_text_in_any_query_parameter_or_header_of_any_endpoint_never_gets_a_5xx_or_a_traceback(
    server_port, endpoint, data
):
    request = fuzzed_request(server_port, endpoint, data)
    assert_answered_without_failing(raw_http(server_port, request, until=head_read), request)


HOSTILE_REQUESTS = {
    "a number with two signs": b"GET /v2/stream/recentchange?namespace=--5 HTTP/1.1",
    "a superscript namespace": b"GET /v2/stream/recentchange?namespace=%C2%B2 HTTP/1.1",
    "a superscript since": b"GET /v2/stream/recentchange?since=%C2%B2 HTTP/1.1",
    "an arabic-indic speed": b"GET /v2/stream/recentchange?speed=%D9%A3 HTTP/1.1",
    "a huge timestamp in Last-Event-ID": b"GET /v2/stream/recentchange HTTP/1.1\r\nLast-Event-ID: "
    + b'[{"topic":"stream_processor.recentchange","timestamp":1'
    + b"0" * 400
    + b"}]",
    "a path with NUL": b"GET /%00 HTTP/1.1",
    "a path that is not UTF-8": b"GET /%ff%fe HTTP/1.1",
    "raw bytes in the path": b"GET /\xc3\xa9\xff HTTP/1.1",
    "raw bytes in the query": b"GET /status?token=\xff%ff%ed%a0%80 HTTP/1.1",
    "a path of 20 kB": b"GET /" + b"a" * 20_000 + b" HTTP/1.1",
    "dot segments": b"GET /socket.io/../../status HTTP/1.1",
    "an absolute URI": b"GET http://evil.com/status HTTP/1.1",
    "an asterisk": b"OPTIONS * HTTP/1.1",
    "CONNECT": b"CONNECT 127.0.0.1:80 HTTP/1.1",
    "an unknown method": b"FROB /status HTTP/1.1",
    "a lower-case method": b"get /status HTTP/1.1",
    "a method that is not ASCII": b"G\xc3\xa9T /status HTTP/1.1",
    "DELETE on the stream": b"DELETE /v2/stream/recentchange HTTP/1.1",
    "HTTP/2's preface": b"PRI * HTTP/2.0",
    "HTTP/9.9": b"GET /status HTTP/9.9",
    "a header value that is not latin-1": b"GET /status HTTP/1.1\r\nAuthorization: Bearer \xc3\xa9\xff\xfe",
    "a control character in Host": b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\x01",
    "a Host that is not ASCII": b"GET /status HTTP/1.1\r\nHost: \xc3\xa9vil.com",
    "two Hosts": b"GET /status HTTP/1.1\r\nHost: @@\r\nHost: evil.com",
    "two Hosts, Socket.IO": b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: @@\r\nHost: evil.com",
    "a header of 100 kB": b"GET /status HTTP/1.1\r\nX-Big: " + b"a" * 100_000,
    "1000 headers": b"GET /status HTTP/1.1\r\n" + b"\r\n".join(b"X-H%d: v" % i for i in range(1000)),
    "two Last-Event-IDs": b"GET /v2/stream/recentchange HTTP/1.1\r\nLast-Event-ID: [{}]\r\nLast-Event-ID: 5",
    "a Last-Event-ID whose topic is an object": b"GET /v2/stream/recentchange HTTP/1.1\r\n"
    b'Last-Event-ID: [{"topic": {"a": 1}, "partition": 0, "offset": 0}]',
    "a Last-Event-ID whose topic is a list, on a comma list": b"GET /v2/stream/recentchange,recentchange/ HTTP/1.1"
    b'\r\nLast-Event-ID: [{"topic": [], "offset": 0}]',
    "a Last-Event-ID whose partition is an object": b"GET /v2/stream/recentchange HTTP/1.1\r\n"
    b'Last-Event-ID: [{"topic": "eqiad.mediawiki.recentchange", "partition": {}, "offset": 0}]',
    "a header line without a colon": b"GET /status HTTP/1.1\r\ngarbage",
    "a folded header": b"GET /status HTTP/1.1\r\nX-A: a\r\n b",
    "a websocket upgrade elsewhere": b"GET /status HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x",
    "a websocket transport without an upgrade": b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1",
    "a websocket transport, Upgrade but no Connection: Upgrade": b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1"
    b"\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13",
    "a bad websocket key": b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 99",
    "an engine.io version that is no number": b"GET /socket.io/?EIO=%C2%B2&transport=polling HTTP/1.1",
    "a session that is not UTF-8": b"GET /socket.io/?EIO=4&transport=polling&sid=%ff%00 HTTP/1.1",
    "a JSONP index that is no number": b"GET /socket.io/?EIO=4&transport=polling&j=%C2%B2 HTTP/1.1",
    "a POST of bytes that are not UTF-8": b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\n"
    b"Content-Length: 3\r\n\r\n\xff\xfe\x00",
}


@pytest.mark.parametrize("request_head", HOSTILE_REQUESTS.values(), ids=HOSTILE_REQUESTS.keys())
def test_hostile_methods_paths_and_headers_never_get_a_5xx_or_a_traceback(server_port, request_head):
    head, _, body = request_head.replace(b"@@", f"127.0.0.1:{server_port}".encode()).partition(b"\r\n\r\n")
    request_line, _, headers = head.partition(b"\r\n")
    host = [] if b"Host:" in headers else [f"Host: 127.0.0.1:{server_port}".encode()]
    # Connection: close first: a header the parser chokes on may hide the ones after it.
    request = b"\r\n".join([request_line, *host, b"Connection: close", *filter(None, [headers]), b"", body])
    answer = raw_http(server_port, request, until=head_read)
    if b"HTTP/2.0" in head or b"HTTP/9.9" in head:
        # Past HTTP/1.x, eventlet (the standard library's parser) answers without a status line, as
        # HTTP/0.9 would: an HTML page saying 400 (the standard library says 505; not a server failure).
        assert answer.status == 400 or b"Error code: 400" in answer.head, answer
        return
    assert_answered_without_failing(answer, request)


# The repros (18.3): an odd number is a 400 with the usual one-line JSON error, naming the parameter.
ODD_NUMBERS = {
    "namespace": ["--5", "%C2%B2", "-%C2%B2", "%D9%A3"],
    "since": ["%C2%B2", "--5"],
    "speed": ["%D9%A3", "1_0"],
}


@pytest.mark.parametrize(
    "parameter, value", [(name, value) for name, values in ODD_NUMBERS.items() for value in values]
)
def test_an_odd_number_in_the_event_stream_query_is_a_400_with_a_one_line_json_error(server_port, parameter, value):
    request = request_bytes(
        "GET", f"{STREAM_PATH}?{parameter}={value}", [(b"Host", f"127.0.0.1:{server_port}".encode())]
    )
    answer = raw_http(server_port, request)
    assert answer.status == 400, (request, answer)
    body = answer.body.strip()
    assert b"\n" not in body, body
    error = json.loads(body)["error"]
    assert parameter in error, error


# -- the last line of defence ----------------------------------------------------------------

# `serve`, with a bug planted: answering /boom raises.
SERVER_WITH_A_BUG = """
import sys
from stream_processor.cli.main import main
from stream_processor.serving import http_endpoints

handle = http_endpoints.handle

def failing_handle(core, request, new_waker):
    if request.path == "/boom":
        raise ZeroDivisionError("a bug in answering")
    return handle(core, request, new_waker)

http_endpoints.handle = failing_handle
sys.exit(main(["serve", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_a_request_that_raises_is_answered_with_a_json_error_and_its_traceback_goes_to_the_log(small_recording, mode):
    marker = uuid.uuid4().hex
    command = [sys.executable, "-c", SERVER_WITH_A_BUG, "--input", str(small_recording), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--async-mode", mode], env=cli_env(marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        line = process.stdout.readline().decode()
        assert line.startswith("serving "), line
        port = int(line.split()[1].removesuffix("/rc").rsplit(":", 1)[1])
        request = f"GET /boom HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        failed = raw_http(port, request)
        still_up = raw_http(port, request.replace(b"/boom", b"/status"))
    finally:
        terminate(process, marker, timeout=10)
        log = process.stderr.read().decode()
        process.stdout.close()
        process.stderr.close()
    assert failed.status == 500
    assert json.loads(failed.body) == {"error": "the server failed to answer this request; its log says why"}
    assert b"ZeroDivisionError" not in failed.body and b"Traceback" not in failed.body
    assert "Traceback" in log and "ZeroDivisionError: a bug in answering" in log  # the traceback is in the log
    assert still_up.status == 200
