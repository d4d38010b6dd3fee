"""The run's live page (`--dashboard`): its server, in process, and the page itself in a
real headless Chromium following a real run (`python run.py --dashboard 0`)."""

from __future__ import annotations

import http.client
import json
import queue
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from stream_processor.core.observer import CoreState, HeadOfLine, WorkerOn
from stream_processor.observe.dashboard import Dashboard
from stream_processor.observe.observations import RunObservations
from stream_processor.observe.trace import LatencyPoint, RunTrace
from stream_processor.sources.generate import generate_events
from tests.conftest import FakeClock, processes_with_marker, raw_http, start_cli, wait_until
from tests.pages import canvas, number, screenshot, text

TOKEN = "s3cret-token"
HOSTILE_TITLE = '<img src=x onerror="window.pwned=1">Slow & <b>bold</b>'


# -- the server, in process ----------------------------------------------------------------


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return answer


@pytest.fixture
def serve():
    """Serve a Dashboard of some observations; closed at the end of the test."""
    started: list[Dashboard] = []

    def start(observations: RunObservations, **kwargs) -> Dashboard:
        dashboard = Dashboard(observations, **kwargs)
        dashboard.serve(0)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.close(grace_s=0)


def test_with_a_token_the_data_endpoints_answer_401_and_the_page_itself_loads(serve):
    port = serve(RunObservations(), token=TOKEN).port
    refused = [
        get(port, "/snapshot"),
        get(port, "/events"),
        get(port, "/snapshot?token=wrong"),
        get(port, "/events", {"Authorization": "Bearer wrong"}),
    ]
    for status, headers, body in refused:
        assert status == 401 and headers["www-authenticate"] == "Bearer", (status, body)
        assert TOKEN.encode() not in body
    assert get(port, f"/snapshot?token={TOKEN}")[0] == 200
    assert get(port, "/snapshot", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, headers, body = get(port, "/")
    assert status == 200 and b"dashboard.js" in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    assert json.loads(get(port, "/access")[2]) == {"token_needed": True, "accepted": False}
    assert json.loads(get(port, f"/access?token={TOKEN}")[2]) == {"token_needed": True, "accepted": True}


def test_without_a_token_the_data_is_open_to_local_pages_only(serve):
    port = serve(RunObservations()).port
    assert json.loads(get(port, "/access")[2]) == {"token_needed": False, "accepted": True}
    assert get(port, "/snapshot")[0] == 200
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 still names its own host.
    assert get(port, "/snapshot", {"Host": f"evil.example:{port}"})[0] == 403
    assert get(port, "/", {"Host": f"evil.example:{port}"})[0] == 403
    assert get(port, "/nowhere")[0] == 404


def test_the_bearer_scheme_is_taken_in_any_case_with_or_without_extra_spaces_as_the_server_takes_it(serve):
    port = serve(RunObservations(), token=TOKEN).port
    offered = ["Bearer", "bearer", "BEARER", "bEaReR"]
    offered = [f"{scheme} {TOKEN}" for scheme in offered] + [f"bearer   {TOKEN}   ", f"Bearer\t{TOKEN}"]
    for authorization in offered:
        assert get(port, "/snapshot", {"Authorization": authorization})[0] == 200, authorization
        assert json.loads(get(port, "/access", {"Authorization": authorization})[2])["accepted"], authorization
    for wrong in ["bearer wrong", f"Basic {TOKEN}", f"Bearer{TOKEN}", "bearer", f"{TOKEN}"]:
        assert get(port, "/snapshot", {"Authorization": wrong})[0] == 401, wrong


def test_loopback_hosts_pass_and_two_host_headers_are_refused(serve):
    port = serve(RunObservations()).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert get(port, "/snapshot", {"Host": host})[0] == 200, host
    two_hosts = f"GET /snapshot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert raw_http(port, two_hosts.encode()).status == 403


def test_head_requests_get_the_headers_only(serve):
    port = serve(RunObservations()).port
    for path in ("/", "/page.js", "/dashboard.js", "/dashboard.css", "/snapshot"):
        status, headers, body = get(port, path, method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0, path
    status, headers, body = get(port, "/events", method="HEAD")
    assert status == 200 and headers["content-type"] == "text/event-stream" and body == b""


class Stream:
    """An /events stream read on a thread of its own: (kind, data) in arrival order."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.request("GET", "/events")
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = None
        for raw in self.response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                self.events.put((kind, json.loads(line[len("data: ") :])))
        self.events.put(("closed", None))

    def next(self, kind: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            got, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if got == kind:
                return data
            assert got != "closed", f"the stream closed before {kind!r}"

    def close(self) -> None:
        self.connection.close()


def observations_with_a_run(clock: FakeClock) -> RunObservations:
    observations = RunObservations(clock=clock, capacity=10, trace=RunTrace())
    observations.settings = {"mode": "file", "workers": 2}
    return observations


def test_a_stream_sends_each_rate_sample_and_latency_point_once(serve):
    clock = FakeClock(100.0)
    observations = observations_with_a_run(clock)
    stream = Stream(serve(observations, snapshot_every_s=0.05).port)
    try:
        settings = stream.next("settings")
        assert settings["run"] == {"mode": "file", "workers": 2} and settings["page"]["head_threshold_s"] == 2.0
        for offset in range(3):
            observations.on_read()
            clock.now += 1.0
            observations.on_written(offset, offset + 1.0, False)
            observations.on_state(CoreState(2 - offset, 0, offset + 1, 0, None, 1, None, None))
        rates, points = [], []
        wait_until(lambda: _collect(stream, rates, points) and len(points) == 3, timeout=10, message="three points")
        clock.now += 1.0
        observations.on_state(CoreState(0, 0, 3, 0, None, 1, None, None))
        wait_until(lambda: _collect(stream, rates, points) and len(rates) == 4, timeout=10, message="four samples")
    finally:
        stream.close()
    assert [point[1:] for point in points] == [[0, 1.0, None], [1, 2.0, None], [2, 3.0, None]]  # once each
    # [at s, received, written, in flight, done waiting, lowest and highest latency of the second's lines]
    assert rates == [
        [1.0, 1, 1, 2, 0, 1.0, 1.0],
        [2.0, 2, 2, 1, 0, 2.0, 2.0],
        [3.0, 3, 3, 0, 0, 3.0, 3.0],
        [4.0, 3, 3, 0, 0, None, None],
    ]


def test_the_last_lines_of_a_run_get_a_rate_sample_of_their_own():
    clock = FakeClock(0.0)
    observations = observations_with_a_run(clock)
    observations.on_read()
    observations.on_read()
    observations.on_state(CoreState(2, 0, 0, 1, None, 1, None, None))
    clock.now += 0.3  # less than a second: no sample, unless the window has emptied
    observations.on_written(0, 0.25, False)
    observations.on_state(CoreState(1, 0, 1, 1, None, 1, None, None))
    clock.now += 0.2
    observations.on_written(1, 0.5, False)
    observations.on_state(CoreState(0, 0, 2, 0, None, 1, None, None))
    observations.on_state(CoreState(0, 0, 2, 0, None, 1, None, None))  # nothing new: no sample
    samples = [list(sample) for sample in observations.rates]
    assert samples == [[0.0, 2, 0, 2, 0, None, None], [0.5, 2, 2, 0, 0, 0.25, 0.5]]


def _collect(stream: Stream, rates: list, points: list) -> bool:
    while True:
        try:
            kind, data = stream.events.get_nowait()
        except queue.Empty:
            return True
        if kind == "snapshot":
            rates += data["rates"]
            points += data["latency"]


def test_an_ideal_that_comes_late_still_reaches_a_page_that_is_past_its_time():
    # File mode: the ideal runs up to a window behind, so an event's point (beside its ideal)
    # can be added after points of later times went out; the cursor counts additions.
    trace = RunTrace()
    trace.latencies.add(LatencyPoint(5.0, 1, 1.0, 0.5))
    first, cursor = trace.latencies.samples_after(-1)
    trace.latencies.add(LatencyPoint(3.0, 0, 3.0, 2.0))  # earlier in time, later in coming
    late, cursor = trace.latencies.samples_after(cursor)
    assert [p.offset for p in first] == [1] and [p.offset for p in late] == [0]
    assert trace.latencies.samples_after(cursor)[0] == []


def test_an_open_page_gets_the_final_summary_and_the_end_when_the_run_is_over(serve):
    clock = FakeClock(0.0)
    observations = observations_with_a_run(clock)
    head = HeadOfLine(
        7, 123, "A title", read_at=-3.0, state="running", attempts=0, done_behind=4, head_since=-2.5, worker="h:1"
    )
    observations.on_state(CoreState(5, 4, 7, 1, head, 1, None, None, running=(WorkerOn("h:1", 7, -1.5),)))
    dashboard = serve(observations, snapshot_every_s=30)  # only the run's end can wake it in time
    stream = Stream(dashboard.port)
    try:
        live = stream.next("snapshot")["live"]
        assert live["head"] == {
            "offset": 7,
            "id": 123,
            "title": "A title",
            "age_s": 3.0,
            "at_head_s": 2.5,
            "state": "running",
            "attempts": 0,
            "done_behind": 4,
            "worker": "h:1",
            "running_s": None,  # not yet said by its worker
        }
        assert live["workers"]["h:1"]["on"] == {"offset": 7, "for_s": 1.5}
        observations.final = {"events": 12, "errors": 0}
        started = time.monotonic()
        closer = threading.Thread(target=dashboard.close)
        closer.start()
        assert stream.next("final", timeout=5) == {"events": 12, "errors": 0}
        assert stream.next("end", timeout=5) == {"final": True}
        closer.join(timeout=10)
        assert not closer.is_alive() and time.monotonic() - started < 5
    finally:
        stream.close()


# -- the page, in a real browser, following a real run ------------------------------------


class RunWithDashboard:
    """`python run.py ... --dashboard 0` as a real process; its stderr read on a thread
    (so it never blocks on a full pipe), the page's URL taken from it."""

    URL = re.compile(r"serving the run's dashboard at (http://127\.0\.0\.1:\d+/)")

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.marker = uuid.uuid4().hex
        self.process = start_cli([*args, "--dashboard", "0", "--no-progress"], cwd, self.marker, env=env)
        self.stderr: list[str] = []
        self.url: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self.url or self.process.poll() is not None, timeout=60, message="the dashboard's URL")
        assert self.url, f"no dashboard URL; stderr:\n{''.join(self.stderr)}"

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            if self.url is None and (found := self.URL.search(line)):
                self.url = found.group(1)

    def finish(self, timeout: float = 180) -> int:
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        self.process.stdout.close()
        wait_until(lambda: not processes_with_marker(self.marker), timeout=15, message="no process left behind")


def recording(path: Path, events: int, wait_s: float, slow: int | None = None, slow_wait_s: float = 5.0) -> Path:
    """Generated edits that each take `wait_s` (the reference task), but event `slow`."""
    with open(path, "w") as stream:
        for offset, event in enumerate(generate_events(events / 300 + 0.1, 10, seed=13)):
            if offset == events:
                break
            event["wait"] = slow_wait_s if offset == slow else wait_s
            if offset == slow:
                event["title"] = HOSTILE_TITLE  # untrusted text: it must show as text
            stream.write(json.dumps(event) + "\n")
    return path


def head_now(page) -> dict:
    """What the head-of-the-line panel shows, as the user sees it."""
    return page.evaluate(
        """() => ({
            offset: document.getElementById('head-offset').textContent,
            waiting: document.getElementById('head-age').textContent,
            flagged: document.getElementById('head').classList.contains('flagged')
                && !document.getElementById('head-flag').hidden,
            behind: document.getElementById('head-behind').textContent,
        })"""
    )


# The slow event comes late enough (about 4 s of work before it) that the page has shown the
# written count moving before the line stops: while it holds the line nothing is written.
SLOW, EVENTS, THRESHOLD_S = 300, 600, 2.0


def test_the_page_follows_a_run_flags_its_slow_head_and_ends_with_the_summary(headless, tmp_path):
    source = recording(tmp_path / "recording.json", EVENTS, wait_s=0.05, slow=SLOW)
    output = tmp_path / "out.json"
    # One event per task: the slow event holds the line alone, not a whole batch with it.
    args = ["--input", str(source), "--output", str(output), "--workers", "4", "--batch-max", "1"]
    run = RunWithDashboard(args, tmp_path)
    try:
        with headless.HeadlessChromium() as browser:
            page = browser.page(run.url)
            wait_until(lambda: text(page, "status") == "live", timeout=30, message="the page to go live")

            # Live: the counts and the charts move while the run goes on.
            wait_until(lambda: number(page, "written") > 0, timeout=60, message="a first line written")
            written, rates = number(page, "written"), canvas(page, "rates-chart")
            wait_until(
                lambda: number(page, "written") > written and canvas(page, "rates-chart") != rates,
                timeout=30,
                message="the written count and the rates chart to change",
            )
            assert number(page, "received") >= number(page, "written")
            assert re.fullmatch(r"[\d,]+ / 1,000", text(page, "in-flight"))

            # The slow event: the head of the line, flagged within 2 s of the line stopping for 2 s.
            became_head, flagged_at, flagged_view = _watch_the_slow_head(page)
            assert flagged_at - (became_head + THRESHOLD_S) <= 2.0, (became_head, flagged_at)
            assert int(flagged_view["behind"].split()[0].replace(",", "")) > 0  # finished results wait for it
            assert text(page, "head-title") == HOSTILE_TITLE  # shown as text, not run as HTML
            assert page.evaluate("window.pwned") is None
            assert page.locator("#head img, #head b").count() == 0
            assert "2 s" in text(page, "head-threshold")
            screenshot(page, tmp_path / "dashboard-1280x800.png")
            phone = browser.page(run.url, headless.PHONE)
            wait_until(lambda: text(phone, "status") == "live", timeout=30, message="the phone page to go live")
            screenshot(phone, tmp_path / "dashboard-390x844.png")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling

            # The end: the final summary, on both pages, and the stream closed by the server.
            for each in (page, phone):
                wait_until(lambda p=each: p.locator("#final").is_visible(), timeout=120, message="the final summary")
                assert text(each, "status") == "finished"
                figures = each.locator("#final-figures").inner_text()
                assert re.search(rf"events\s+{EVENTS}\b", figures) and re.search(r"errors\s+0\b", figures)
                assert json.loads(text(each, "final-report"))["events"] == EVENTS
            assert text(page, "written") == f"{EVENTS:,}" and text(page, "in-flight") == "0 / 1,000"
            assert not page.locator("#head-detail").is_visible()  # nothing left in flight
            assert canvas(page, "latency-chart") != canvas(page, "rates-chart")
            screenshot(page, tmp_path / "dashboard-1280x800-final.png", full_page=True)
            screenshot(phone, tmp_path / "dashboard-390x844-final.png", full_page=True)
            assert browser.problems == []
            pids = browser.pids
        assert run.finish() == 0, "".join(run.stderr)
        assert pids() == []  # the browser is gone
    finally:
        run.stop()
    assert output.read_bytes() == source.read_bytes()


def test_in_batches_the_page_names_the_slow_event_as_the_head_and_its_worker_row_is_on_it(headless, tmp_path):
    """The heavy tail (20 ms a event, 12 s for one) in default batches: the head is the slow
    event itself, not a batch-mate of it that had long finished, and a worker row says it
    is on it."""
    slow = 200
    source = recording(tmp_path / "recording.json", 620, wait_s=0.02, slow=slow, slow_wait_s=12.0)
    args = ["--input", str(source), "--output", str(tmp_path / "out.json"), "--workers", "12"]
    run = RunWithDashboard(args, tmp_path)
    try:
        with headless.HeadlessChromium() as browser:
            page = browser.page(run.url)
            wait_until(lambda: text(page, "status") == "live", timeout=30, message="the page to go live")
            became_head, flagged_at, _ = _watch_the_slow_head(page, slow=slow)
            assert flagged_at - (became_head + THRESHOLD_S) <= 2.0, (became_head, flagged_at)
            assert text(page, "head-state").startswith("running on "), text(page, "head-state")
            wait_until(
                lambda: any(
                    cell.startswith(f"{slow}, for ") for cell in page.locator("#workers td.on").all_inner_texts()
                ),
                timeout=10,
                message=f"a worker row on offset {slow}",
            )
            screenshot(page, tmp_path / "dashboard-heavy-tail.png")
            wait_until(lambda: page.locator("#final").is_visible(), timeout=120, message="the final summary")
            assert browser.problems == []
        assert run.finish() == 0, "".join(run.stderr)
    finally:
        run.stop()
    assert (tmp_path / "out.json").read_bytes() == source.read_bytes()


def _watch_the_slow_head(page, timeout: float = 90, slow: int = SLOW) -> tuple[float, float, dict]:
    """Watch the head panel until it flags the slow event; return when (by this test's
    clock) the slow event became the head, as its own figures tell, and when the flag was
    first seen. Whenever the panel flags the slow event, the line has stood past the threshold."""
    deadline = time.monotonic() + timeout
    became_head = None
    while time.monotonic() < deadline:
        view = head_now(page)
        seen_at = time.monotonic()
        if view["offset"] == str(slow):
            at_head = float(re.search(r"([\d.]+) s at the head", view["waiting"]).group(1))
            estimate = seen_at - at_head  # never earlier than the truth: the figure is as old as its snapshot
            became_head = estimate if became_head is None else min(became_head, estimate)
            if view["flagged"]:
                assert at_head > THRESHOLD_S, view
                return became_head, seen_at, view
        elif view["flagged"]:
            pytest.fail(f"another event than {slow} was flagged: {view}")
        elif page.locator("#final").is_visible():
            break  # the run is over
        time.sleep(0.1)
    raise AssertionError(f"event {slow} was never flagged as the head of the line; last seen {view}")


def test_with_a_token_the_page_asks_for_it_and_works_once_it_is_given(headless, tmp_path):
    source = recording(tmp_path / "recording.json", 300, wait_s=0.05)
    args = ["--input", str(source), "--output", str(tmp_path / "out.json"), "--workers", "2"]
    run = RunWithDashboard(args, tmp_path, env={"STREAM_PROCESSOR_DASHBOARD_TOKEN": TOKEN})
    try:
        port = int(run.url.rsplit(":", 1)[1].rstrip("/"))
        assert get(port, "/snapshot")[0] == 401 and get(port, "/events")[0] == 401
        with headless.HeadlessChromium() as browser:
            page = browser.page(run.url)
            wait_until(lambda: page.locator("#token-form").is_visible(), timeout=30, message="the token prompt")
            assert not page.locator("#run").is_visible() and text(page, "status") == "needs its token"
            page.fill("#token", "not-the-token")
            page.click("#token-form button")
            wait_until(lambda: page.locator("#token-refused").is_visible(), timeout=10, message="a refusal")
            page.fill("#token", TOKEN)
            page.click("#token-form button")
            wait_until(lambda: text(page, "status") in ("live", "finished"), timeout=30, message="the page to open")
            assert not page.locator("#token-form").is_visible()
            wait_until(lambda: page.locator("#final").is_visible(), timeout=120, message="the final summary")
            assert number(page, "written") == 300
            assert TOKEN not in page.content()  # the page does not show it
            assert browser.problems == []
        assert run.finish() == 0, "".join(run.stderr)
    finally:
        run.stop()
