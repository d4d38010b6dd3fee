"""Hostile HTTP to the run's live page (`--dashboard`), as to the replay server
(tests/test_server_hostile_requests.py, whose requests and checks this reuses): whatever a
request carries in its query, its headers, its method or its path, the answer is never a
5xx, never a dropped connection and never shows a traceback. With a token and without.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_processor.observe.dashboard import Dashboard
from stream_processor.observe.observations import RunObservations
from tests.conftest import raw_http
from tests.integration.test_server_hostile_requests import (
    HOSTILE_REQUESTS,
    as_header_value,
    assert_answered_without_failing,
    head_read,
    header_items,
    header_values,
    now_and_then,
    query_values,
    request_bytes,
    safe_characters,
)

ENDPOINTS = ["/", "/snapshot", "/events", "/access", "/dashboard.js", "/no/such/endpoint"]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["open", "token"])
def dashboard_port(request):
    """One live page for the module; it must still answer at the end."""
    dashboard = Dashboard(RunObservations(), token=request.param)
    dashboard.serve(0)
    yield dashboard.port
    answer = raw_http(dashboard.port, request_bytes("GET", "/access", [(b"Host", b"127.0.0.1")]))
    dashboard.close(grace_s=0)
    assert answer.status == 200, answer


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_text_in_the_query_or_headers_of_any_endpoint_never_gets_a_5xx_or_a_traceback(
    dashboard_port, endpoint, data
):
    names = data.draw(st.lists(st.sampled_from(["token", "since", "x"]) | st.text(max_size=8), max_size=3))
    safe = data.draw(safe_characters, "unescaped")
    query = "&".join(f"{quote(name, safe=safe)}={quote(data.draw(query_values, name), safe=safe)}" for name in names)
    target = endpoint + ("?" + query if query else "")
    host = data.draw(header_values, "host") if now_and_then(data, "a foreign Host?") else "127.0.0.1"
    headers = [(b"Host", as_header_value(host))]
    headers += [(name.encode(), as_header_value(value)) for name, value in data.draw(header_items, "headers")]
    method = data.draw(st.sampled_from(["HEAD", "OPTIONS", "POST"])) if now_and_then(data, "not GET?") else "GET"
    request = request_bytes(method, target, headers)
    assert_answered_without_failing(raw_http(dashboard_port, request, until=head_read), request)


@pytest.mark.parametrize("request_head", HOSTILE_REQUESTS.values(), ids=HOSTILE_REQUESTS.keys())
def test_hostile_methods_paths_and_headers_never_get_a_5xx_or_a_traceback(dashboard_port, request_head):
    head, _, body = request_head.replace(b"@@", b"127.0.0.1").partition(b"\r\n\r\n")
    request_line, _, headers = head.partition(b"\r\n")
    host = [] if b"Host:" in headers else [b"Host: 127.0.0.1"]
    request = b"\r\n".join([request_line, *host, b"Connection: close", *filter(None, [headers]), b"", body])
    answer = raw_http(dashboard_port, request, until=head_read)
    if answer.status is None and b"Error code: 400" in answer.head + answer.body:
        return  # past HTTP/1.x the standard library answers as HTTP/0.9 would: a page saying 400
    assert_answered_without_failing(answer, request)
