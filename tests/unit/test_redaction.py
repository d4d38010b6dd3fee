"""`safe_url`, `without_credentials` and `redact_text`: a token or password in a URL never
shows, and everything else of the URL does, unchanged."""

from __future__ import annotations

import logging
import subprocess
import sys
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processor.output.sink import JsonlSink, OutputError
from stream_processor.redaction import (
    MASK,
    RedactingFormatter,
    is_credential_name,
    redact_text,
    safe_url,
    without_credentials,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:5000/v2/stream/recentchange?token=S3CRET", "http://127.0.0.1:5000/v2/stream/recentchange?token=***"),
        ("http://h/v2/stream/rc?since=2&TOKEN=S3CRET&speed=2", "http://h/v2/stream/rc?since=2&TOKEN=***&speed=2"),
        ("http://h/?access_token=a&api_key=b&apikey=c&key=d&password=e&secret=f&auth=g", "http://h/?access_token=***&api_key=***&apikey=***&key=***&password=***&secret=***&auth=***"),
        ("https://s3/x?X-Amz-Security-Token=a&client_secret=b&api%5Fkey=c", "https://s3/x?X-Amz-Security-Token=***&client_secret=***&api%5Fkey=***"),
        ("http://h/cb#access_token=S3CRET&state=1", "http://h/cb#access_token=***&state=1"),
        ("http://h/?a=1;token=S3CRET", "http://h/?a=1;token=***"),
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:***@localhost:5672//"),
        ("redis://:S3CRET@host:6379/0", "redis://***@host:6379/0"),
        ("redis://:p#ss@host:6379/0", "redis://***@host:6379/0"),  # an unencoded # in the password
        ("https://ghp_S3CRET@github.com/x", "https://***@github.com/x"),  # a userinfo that is a token
        ("http://user:p@ss@h/x", "http://user:***@h/x"),
        # Nothing to hide: unchanged, to the byte.
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://h:8080/users/@me?monkey=1&keys=2&since=3", "http://h:8080/users/@me?monkey=1&keys=2&since=3"),
        ("http://h/?email=a@b.c", "http://h/?email=a@b.c"),
        ("http://[::1]:80/a@b", "http://[::1]:80/a@b"),
        ("redis+socket:///tmp/stream-processor-redis-x/redis.sock", "redis+socket:///tmp/stream-processor-redis-x/redis.sock"),
        ("http://h/x?token", "http://h/x?token"),
    ],
)  # fmt: skip
def test_a_url_is_shown_with_its_credentials_masked_and_nothing_else_changed(url, shown):
    assert safe_url(url) == shown


@pytest.mark.parametrize(
    ("url", "identity"),
    [
        ("http://127.0.0.1:5000/v2/stream/recentchange?token=S3CRET", "http://127.0.0.1:5000/v2/stream/recentchange"),
        ("http://u:pw@h:1/v2/stream/rc?since=2&Token=x", "http://h:1/v2/stream/rc?since=2"),
        ("http://h:1?token=a", "http://h:1"),
        ("http://h/cb?a=1#access_token=x", "http://h/cb?a=1"),
    ],
)
def test_a_streams_identity_holds_no_credential_at_all(url, identity):
    assert without_credentials(url) == identity


def test_what_counts_as_a_credential_parameter():
    for name in ("token", "Token", "ACCESS_TOKEN", "api_key", "api-key", "apikey", "key", "password", "secret", "auth"):
        assert is_credential_name(name), name
    for name in ("since", "speed", "realtime", "wikis", "monkey", "keys", "tokens_left", "offset", "type"):
        assert not is_credential_name(name), name


def test_free_text_quoting_a_url_is_redacted():
    urllib3 = (
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/v2/stream/recentchange?since=1&token=S3CRET (Caused by NewConnectionError('refused'))"
    )
    assert "S3CRET" not in redact_text(urllib3)
    assert "url: /v2/stream/recentchange?since=1&token=*** (Caused by" in redact_text(urllib3)
    assert redact_text("lost 'http://u:S3CRET@h/x?key=S3CRET'") == "lost 'http://u:***@h/x?key=***'"
    assert redact_text("headers: {'Authorization': 'Bearer S3CRET'}") == "headers: {'Authorization': 'Bearer ***'}"
    ordinary = "the token given is wrong; basic settings: since=3, speed=2"
    assert redact_text(ordinary) == ordinary


def test_log_lines_through_the_clis_formatter_hold_no_secret():
    formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ConnectionError("cannot open http://h/x?token=S3CRET")
    except ConnectionError:
        record = logging.LogRecord("urllib3", logging.WARNING, __file__, 1, "GET %s", ("/x?token=S3CRET",), None)
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "S3CRET" not in line and "GET /x?token=***" in line and "ConnectionError" in line


# -- properties ------------------------------------------------------------------------------

CREDENTIALS = ["token", "TOKEN", "access_token", "api_key", "key", "password", "secret", "auth"]
OTHERS = ["since", "speed", "realtime", "wikis", "type", "a", "b"]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
hosts = st.sampled_from(["127.0.0.1", "localhost", "stream.wikimedia.org", "[::1]", "h"])
schemes = st.sampled_from(["http", "https", "ws", "amqp", "redis"])


@st.composite
def urls_with_secrets(draw):
    """A URL with credential parameters among others (values %-encoded from any text), and
    the URL as it must be shown: the same, each credential value `***`."""
    base = f"{draw(schemes)}://{draw(hosts)}"
    if draw(st.booleans()):
        base += f":{draw(st.integers(1, 65535))}"
    base += "".join(f"/{quote(segment, safe='')}" for segment in draw(st.lists(text, max_size=3)))
    secret = "S3CRET-" + draw(st.text("0123456789abcdef", min_size=4, max_size=16))
    parameters = [(draw(st.sampled_from(CREDENTIALS)), secret)]
    parameters += draw(st.lists(st.tuples(st.sampled_from(OTHERS), text), max_size=4))
    parameters += draw(st.lists(st.tuples(st.sampled_from(CREDENTIALS), text), max_size=2))
    parameters = draw(st.permutations(parameters))
    pairs = [(name, quote(value, safe="")) for name, value in parameters]
    url = base + "?" + "&".join(f"{name}={value}" for name, value in pairs)
    shown = base + "?" + "&".join(f"{name}={MASK if name in CREDENTIALS else value}" for name, value in pairs)
    kept = "&".join(f"{name}={value}" for name, value in pairs if name not in CREDENTIALS)
    return url, shown, base + (f"?{kept}" if kept else ""), secret


@given(urls_with_secrets())
def test_for_any_url_only_the_credential_values_change(case):
    url, shown, identity, secret = case
    assert safe_url(url) == shown
    assert secret not in safe_url(url)
    assert without_credentials(url) == identity
    message = f"cannot open the event stream {safe_url(url)}: refused"
    assert secret not in redact_text(f"cannot open the event stream {url}: refused")
    if url[-1] not in ".,:;!?)]":  # in free text, a URL's last punctuation is read as the sentence's
        assert redact_text(f"cannot open the event stream {url}: refused") == message
    assert redact_text(message) == message  # masked twice (a message, then its log line): the same


@given(
    user=st.text("abcdefghij_.-", min_size=1, max_size=8),
    password=st.text(st.characters(codec="ascii", exclude_characters="\r\n"), min_size=1, max_size=16),
    host=hosts,
)
def test_for_any_userinfo_the_password_never_shows(user, password, host):
    secret = quote(password, safe="") + "S3CRET"  # encoded as a URL must hold it
    url = f"amqp://{user}:{secret}@{host}:5672/vhost"
    assert safe_url(url) == f"amqp://{user}:***@{host}:5672/vhost"
    assert secret not in without_credentials(url) and without_credentials(url) == f"amqp://{host}:5672/vhost"


# -- a checkpoint an earlier version wrote, the token in its stream's URL ----------------------


def test_an_old_checkpoint_holding_the_token_is_continued_and_its_token_never_quoted(tmp_path, caplog):
    output = tmp_path / "out.json"
    written = "http://127.0.0.1:5000/v2/stream/recentchange?token=S3CRET-old"

    def header(url: str) -> dict:
        return {"input": {"url": url}, "task": "stream_processor.tasks:reference", "order": "total"}

    with JsonlSink(output, header(written)) as sink:  # as the version before this one stored it
        sink.write([(0, b"{}"), (1, b"{}")])
    with caplog.at_level(logging.WARNING), JsonlSink(output, header(without_credentials(written)), resume=True) as sink:
        assert sink.start_offset == 2
    assert "earlier version" in caplog.text and "S3CRET" not in caplog.text
    with pytest.raises(OutputError) as refused:
        JsonlSink(output, header("http://127.0.0.1:5001/v2/stream/recentchange"), resume=True)
    assert "it was url http://127.0.0.1:5000/v2/stream/recentchange, now" in str(refused.value)
    assert "S3CRET" not in str(refused.value)


def test_a_traceback_nobody_caught_is_printed_without_the_secret():
    program = (
        "import threading\n"
        "from stream_processor.redaction import redact_tracebacks\n"
        "redact_tracebacks()\n"
        "def fail(): raise ConnectionError('cannot open http://h/x?token=S3CRET-thread')\n"
        "worker = threading.Thread(target=fail, name='reader'); worker.start(); worker.join()\n"
        "raise ValueError('bad http://user:S3CRET-main@h/')\n"
    )
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "Exception in thread reader:" in run.stderr
    assert "ConnectionError: cannot open http://h/x?token=***" in run.stderr
    assert "ValueError: bad http://user:***@h/" in run.stderr and "S3CRET" not in run.stderr
