"""A page from another origin reads the event stream in a real headless Chromium, as pages
read the public EventStreams: `serve --cors-origin '*'`, the browser's own EventSource,
closed on by `--max-connection-s` and resumed by the browser with Last-Event-ID; and the
server's own streams page (/v2/ui), which lists the streams from /?spec (with the token, if set)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import paced_recording, replay_server, wait_until
from tests.http_stand_in import http_stand_in
from tests.pages import text

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>elsewhere</title></head><body>
<pre id="received"></pre><script>
const source = new EventSource(STREAM_URL);
window.events = []; window.errors = 0;
source.addEventListener("message", (e) => window.events.push({id: e.lastEventId, data: e.data}));
source.addEventListener("end", () => { source.close(); window.ended = true; });
source.onerror = () => { window.errors += 1; };
</script></body></html>"""


@contextmanager
def another_origin(stream_url: str) -> Iterator[str]:
    """A page on another port (another origin) that reads `stream_url` with EventSource."""
    body = PAGE.replace("STREAM_URL", json.dumps(stream_url)).encode()
    with http_stand_in(lambda _: ("text/html; charset=utf-8", body)) as url:
        yield f"{url}/"


@pytest.mark.usefixtures("async_mode")
def test_a_page_from_another_origin_reads_the_stream_and_resumes_across_closes(headless, tmp_path):
    lines = [line.decode() for line in paced_recording(tmp_path / "paced.json", count=40)]
    flags = ["--cors-origin", "*", "--max-connection-s", "0.5"]
    with replay_server(tmp_path / "paced.json", *flags) as (url, _):
        stream_url = f"{url}/v2/stream/recentchange?realtime=true&speed=20"
        with another_origin(stream_url) as page_url, headless.HeadlessChromium() as browser:
            page = browser.page(page_url)
            wait_until(lambda: page.evaluate("window.ended === true"), timeout=60, message="the end event")
            events = page.evaluate("window.events")
            errors = page.evaluate("window.errors")
            problems = browser.problems
        opened = httpx.get(f"{url}/status", timeout=10).json()["event_streams_opened"]
    assert [event["data"] for event in events] == lines  # each once, in order, byte for byte
    assert errors >= 2 and opened >= 3  # closed on (an error event each time), and resumed
    assert problems == []  # no CORS refusal, no script error


def test_without_cors_origin_a_page_from_another_origin_is_refused(headless, tmp_path):
    paced_recording(tmp_path / "paced.json", count=5)
    with (
        replay_server(tmp_path / "paced.json") as (url, _),
        another_origin(f"{url}/v2/stream/recentchange") as page_url,
        headless.HeadlessChromium() as browser,
    ):
        page = browser.page(page_url)
        wait_until(lambda: page.evaluate("window.errors") > 0, timeout=30, message="the refusal")
        assert page.evaluate("window.events") == []
        assert any("CORS" in problem or "Access-Control" in problem for problem in map(str, browser.problems))


def test_the_streams_page_lists_the_streams_and_shows_one_live(headless, tmp_path):
    lines = [line.decode() for line in paced_recording(tmp_path / "rc.json", count=20)]
    paced_recording(tmp_path / "rev.json", count=5, seed=9)
    with (
        replay_server(tmp_path / "rc.json", "--stream", f"revision-create={tmp_path / 'rev.json'}") as (url, _),
        headless.HeadlessChromium() as browser,
    ):
        page = browser.page(f"{url}/v2/ui")
        wait_until(lambda: text(page, "status") == "4 streams", timeout=30, message="the streams from /?spec")
        names = page.locator("#streams input").evaluate_all("boxes => boxes.map((box) => box.value)")
        assert names == ["mediawiki.recentchange", "mediawiki.revision-create", "recentchange", "revision-create"]
        page.click("#streams-form button")  # recentchange is ticked
        wait_until(lambda: text(page, "status") == "the replay ended", timeout=30, message="the replay's end")
        shown = page.locator("#events li").all_inner_texts()
        assert shown == list(reversed(lines))  # newest first, as text
        assert browser.problems == []


def test_the_streams_page_asks_for_the_token_before_it_lists_the_streams(headless, tmp_path):
    lines = [line.decode() for line in paced_recording(tmp_path / "rc.json", count=5)]
    with replay_server(tmp_path / "rc.json", "--token", "s3cret") as (url, _), headless.HeadlessChromium() as browser:
        page = browser.page(f"{url}/v2/ui")
        wait_until(lambda: text(page, "status").startswith("needs its token"), timeout=30, message="the prompt")
        assert page.locator("#streams input").count() == 0  # the names are the token's to see
        page.fill("#token", "wrong")
        page.click("#streams-form button")
        wait_until(lambda: text(page, "status") == "the token was refused", timeout=30, message="the refusal")
        page.fill("#token", "s3cret")
        page.click("#streams-form button")  # lists the streams, then opens recentchange (ticked)
        wait_until(lambda: text(page, "status") == "the replay ended", timeout=30, message="the replay's end")
        shown = page.locator("#events li").all_inner_texts()
        assert shown == list(reversed(lines))
        assert browser.problems == []  # asking for the token is no failed request
