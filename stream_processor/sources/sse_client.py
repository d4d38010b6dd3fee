"""The event-stream client: an SSE source with the same interface as `ReplayClient`.

It reads `GET .../v2/stream/...` (this project's server, or Wikimedia's EventStreams)
on a thread of its own, and puts a `Change` per event and a final `End` on `inbox`.
A dropped connection is opened again with `Last-Event-ID` set to the id of the last
event received, so the server goes on right after it; anything this project's server
sends twice is dropped by its offset.

Flow control: SSE has no way back, so `acknowledge()` sends nothing. The reader holds at
most `window` events past the last offset acknowledged (the run's low watermark) and then
stops reading the socket until an acknowledgement moves the window: the kernel's buffers
fill, TCP tells the server to wait, and memory stays flat on an endless stream. An
acknowledgement also lets go of the ids kept for `resume_token()`.

Canaries: EventStreams sends canary events (`meta.domain == "canary"`, its own monitoring)
that every client should drop. This one drops them, counts them (`canaries_dropped`, in
the run's report) and says so once in the log; `keep_canaries` keeps them.

Reconnecting: after a drop it waits the stream's `retry:` time if the server set one (taken
between 100 ms and 60 s; else `reconnect_delay_s`), doubling after each failed attempt.

Offsets: events are numbered in arrival order from the resume point. For this
project's unfiltered stream that is the server's own offset (its ids carry it); a live
EventStreams stream has none, and a filtered stream skips offsets, so both are numbered
here. To resume such a stream in a later run, keep `resume_token(offset)` (the SSE id of
the event at that offset) of the last event written and pass it back as `resume_token`.

Written over `requests` (already a dependency of python-socketio's client; TLS, proxies)
with a small parser of our own (sse_parser.py): SSE is simple, the parser keeps the
recorded line as bytes, and it is fast enough to drain a local server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

import requests

from stream_processor.core.contracts import Change, End
from stream_processor.protocol.event_meta import is_canary
from stream_processor.protocol.event_stream import offset_of_id, position_id
from stream_processor.protocol.sse_parser import EventTooLarge, SseEvent, SseParser
from stream_processor.protocol.vocabulary import DEFAULT_WINDOW
from stream_processor.redaction import redact_text, safe_url

log = logging.getLogger(__name__)

# Wikimedia asks every client to say who it is (its User-Agent policy); generic ones may be refused.
USER_AGENT = "stream_processor/0.1 (stream-processor consume; python-requests)"
RECONNECT_DELAY_S = 0.2
RECONNECT_DELAY_MAX_S = 2.0
MAX_RETRY_MS = 60_000  # a server's `retry:` beyond a minute is taken as a minute
# ... and below 100 ms as 100 ms: `retry: 0` from a server that closes at once (or answers
# 5xx) would have the client reconnect in a loop as fast as the network goes.
MIN_RETRY_MS = 100
READ_BYTES = 64 * 1024  # at most this much of a chunk at a time: a huge HTTP chunk is not read whole


class SourceRequestError(ValueError):
    """The server (or the client, before asking) refuses the request as written: a usage
    error in `--url` (exit 2), not a server that cannot be reached."""


class EventStreamClient:
    """Receives an event stream as `Change`s (and a final `End`) on `self.inbox`."""

    def __init__(
        self,
        url: str,
        start_offset: int = 0,
        realtime: bool | None = None,
        speed: float | None = None,
        connect_timeout_s: float = 30.0,
        read_timeout_s: float = 60.0,  # silence longer than this (heartbeats come every 15 s) is a dropped connection
        token: str | None = None,
        resume_token: str | None = None,
        reconnect_delay_s: float = RECONNECT_DELAY_S,  # before the first attempt after a drop; doubles up to 2 s
        window: int = DEFAULT_WINDOW,  # events read past the last acknowledged offset, at most
        keep_canaries: bool = False,  # EventStreams' monitoring events: dropped unless kept
    ) -> None:
        self.url = url
        self.shown_url = safe_url(url)  # what logs and messages name: no token, no password
        self.next_offset = start_offset  # the offset the next event gets
        self.realtime = realtime
        self.speed = speed
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.token = token
        self.reconnect_delay_s = reconnect_delay_s
        self.refusal: str | None = None  # why the server refused us, if it did
        self.failure: Exception | None = None  # why the stream cannot be read on, if it cannot
        self.window = max(1, window)
        self.inbox: queue.Queue[Change | End] = queue.Queue()  # bounded by the window, not by a maxsize
        self.reconnects = 0
        self.keep_canaries = keep_canaries
        self.canaries_dropped = 0
        self._retry_s: float | None = None  # the server's `retry:`, once it sets one
        # Where to resume: the token given, else (this project's server) at start_offset.
        self._last_id = resume_token or (position_id(start_offset) if start_offset > 0 else None)
        self._last_server_offset = offset_of_id(self._last_id)
        self._ids: dict[int, str] = {}  # offset -> SSE id, for events not yet acknowledged
        self._kept_from = start_offset
        self._acked = start_offset  # every offset below it is written: the window counts from here
        self._lock = threading.Lock()  # over _ids, _kept_from and _acked; held for no I/O
        self._acked_moved = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._response: requests.Response | None = None
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._disconnected_at: float | None = None

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        """Open the stream (raising ConnectionError, saying why, if that fails; SourceRequestError
        if the server answers 400: the request as written is wrong), then read it on a thread."""
        response = self._open(first=True)
        if response is None:
            return
        self._thread = threading.Thread(target=self._run, args=(response,), name="event-stream", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        with self._acked_moved:  # wake a reader waiting for room in the window
            self._acked_moved.notify_all()
        response = self._response
        if response is not None:
            _interrupt(response)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._session.close()

    def _open(self, first: bool = False) -> requests.Response | None:
        """The stream's response, or None when the server says nothing is left (204): then `End`.
        A 400 on the `first` open is the request's fault (SourceRequestError); later, while
        reconnecting, it is one more failed attempt."""
        try:
            response = self._session.get(
                self._stream_url(),
                headers=self._headers(),
                stream=True,
                timeout=(self.connect_timeout_s, self.read_timeout_s),
            )
        except requests.RequestException as exc:
            # requests quotes the URL it failed to open, query and all
            raise ConnectionError(f"cannot open the event stream {self.shown_url}: {redact_text(str(exc))}") from None
        if response.status_code == 204:
            response.close()
            self.inbox.put(End(0, self.next_offset))
            return None
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
            self.refusal = redact_text(_reason(response))
            response.close()
            if first and response.status_code == 400:
                asked = self._stream_url()
                also = f" (asked as {safe_url(asked)}, with --realtime/--speed)" if asked != self.url else ""
                raise SourceRequestError(
                    f"--url {self.shown_url}: the server refuses the request{also}: {self.refusal}"
                )
            raise ConnectionError(f"cannot open the event stream {self.shown_url}: {self.refusal}")
        self._response = response
        return response

    def _stream_url(self) -> str:
        query = {}
        if self.realtime is not None:
            query["realtime"] = "true" if self.realtime else "false"
        if self.speed is not None:
            query["speed"] = repr(self.speed)
        if not query:
            return self.url
        return f"{self.url}{'&' if urlsplit(self.url).query else '?'}{urlencode(query)}"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # a compressed stream could sit in a decoder's buffer
            "Cache-Control": "no-cache",
            "User-Agent": USER_AGENT,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self._last_id:
            headers["Last-Event-ID"] = self._last_id
        return headers

    # -- reading -------------------------------------------------------------------------

    def _run(self, response: requests.Response) -> None:
        while response is not None and not self._closing.is_set():
            try:
                if self._read(response):
                    return  # `end`, or close()
            except EventTooLarge as exc:  # it would come again after a reconnect: give up, saying why
                self.failure = ConnectionError(f"cannot read the event stream {self.shown_url} on: {exc}")
                log.error("%s", self.failure)
                return
            except Exception as exc:
                if self._closing.is_set():
                    return  # close() cut the connection under the read, whatever that raised
                if not isinstance(exc, requests.RequestException | OSError | ValueError):
                    raise
                log.warning("the event stream %s dropped: %s", self.shown_url, redact_text(str(exc)))
            finally:
                response.close()
            if self._disconnected_at is None:
                self._disconnected_at = time.monotonic()
            reopened = self._reopen(self._retry_s if self._retry_s is not None else self.reconnect_delay_s)
            if reopened is None:
                return  # closed while it waited to reconnect
            response = reopened

    def _reopen(self, delay: float) -> requests.Response | None:
        """Open the stream again after `delay`, growing, until it opens or we close."""
        while not self._closing.wait(delay):
            try:
                response = self._open()
            except ConnectionError as exc:
                log.warning("%s; trying again", exc)
                delay = min(
                    max(delay * 2, MIN_RETRY_MS / 1000),
                    max(RECONNECT_DELAY_MAX_S, self.reconnect_delay_s, self._retry_s or 0.0),
                )
                continue
            self.reconnects += 1
            self._disconnected_at = None
            log.warning("reconnected to %s; resuming after %s", self.shown_url, self._last_id)
            return response
        return None

    def _read(self, response: requests.Response) -> bool:
        """Events from one connection until it ends; True once reading stops (`end`, or close())."""
        parser = SseParser()
        try:
            # Each chunk as it arrives, at most READ_BYTES of it; while `_take` waits for room in
            # the window, the rest of this piece waits in the parser and the socket is not read.
            for chunk in response.iter_content(chunk_size=READ_BYTES):
                for event in parser.feed(chunk):
                    if self._take(event):
                        return True
            return False
        finally:
            if parser.retry_ms is not None:  # the stream's reconnection time, for the next reconnect
                self._retry_s = min(max(parser.retry_ms, MIN_RETRY_MS), MAX_RETRY_MS) / 1000

    def _take(self, event: SseEvent) -> bool:
        """Put one event in the inbox once the window has room for it; True for `end`, or once closing."""
        if event.event == "end":
            self.inbox.put(End(_count(event.data), self.next_offset))
            return True
        if event.event == "message":
            line, line_number = event.data, None
        elif event.event == "error" and (described := _described_line(event.data)) is not None:
            line, line_number = described
        else:
            log.info("ignoring an event %r from %s", event.event[:40], self.shown_url)
            return False
        server_offset = offset_of_id(event.id)
        if server_offset is not None:
            if self._last_server_offset is not None and server_offset <= self._last_server_offset:
                return False  # sent again after a resume: already have it
            self._last_server_offset = server_offset
        if not self.keep_canaries and _is_canary_line(line):
            self._drop_canary(event)
            return False
        offset = self.next_offset
        if not self._wait_for_room(offset):
            return True
        if event.id is not None:
            self._last_id = event.id
            with self._lock:
                if offset >= self._kept_from:  # else the run has it written already (a resume a little back)
                    self._ids[offset] = event.id
        self.inbox.put(Change(offset, line, time.monotonic(), line_number))
        self.next_offset = offset + 1
        return False

    def _drop_canary(self, event: SseEvent) -> None:
        """Skip a canary: it takes no offset, but a resume goes on after it."""
        if self.canaries_dropped == 0:
            log.warning(
                "dropping EventStreams' canary events (meta.domain is canary: its monitoring's) from %s; "
                "--keep-canaries keeps them",
                self.shown_url,
            )
        self.canaries_dropped += 1
        if event.id is not None:
            self._last_id = event.id

    def _wait_for_room(self, offset: int) -> bool:
        """Block until `offset` fits in the window (counted from the last acknowledgement); False once closing."""
        with self._acked_moved:
            self._acked_moved.wait_for(lambda: self._closing.is_set() or offset < self._acked + self.window)
        return not self._closing.is_set()

    # -- flow control and resuming -------------------------------------------------------

    def acknowledge(self, written_up_to: int, caught_up: bool) -> None:
        """Every offset below `written_up_to` is written: the window moves on (waking the reader), and
        the ids of events before the last written one are let go. Nothing goes back to an SSE server."""
        with self._acked_moved:
            if written_up_to <= self._acked:
                return
            self._acked = written_up_to
            while self._kept_from < written_up_to - 1:
                self._ids.pop(self._kept_from, None)
                self._kept_from += 1
            self._acked_moved.notify_all()

    def disconnected_for(self) -> float:
        """Seconds since the stream dropped without coming back; 0 while connected."""
        since = self._disconnected_at
        return 0.0 if since is None else time.monotonic() - since

    def resume_token(self, offset: int) -> str | None:
        """The SSE id of the event at `offset` (kept from the last acknowledged one on): sent
        as `Last-Event-ID`, the stream goes on right after that event."""
        with self._lock:
            return self._ids.get(offset)


def _is_canary_line(line: bytes) -> bool:
    """Whether a line is a canary event; parsed only when it could be one (lines can be 10 MB)."""
    if b"canary" not in line:
        return False
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(event, dict) and is_canary(event)


def _described_line(data: bytes) -> tuple[bytes, int | None] | None:
    """The line an `error` event carries (this project's server), and its line number."""
    try:
        described = json.loads(data)
        line = base64.b64decode(described["base64"]) if "base64" in described else described["line"].encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    number = described.get("line_number")
    return line, number if isinstance(number, int) and not isinstance(number, bool) else None


def _count(data: bytes) -> int:
    with contextlib.suppress(ValueError, AttributeError):
        count = json.loads(data).get("count")
        if isinstance(count, int):
            return count
    return -1


def _reason(response: requests.Response) -> str:
    """Why a server refused the stream: its error message if it gave one."""
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.json()['error']}"
    return f"HTTP {response.status_code} {response.reason}, not an event stream"


def _interrupt(response: requests.Response) -> None:
    """Wake a read blocked on the stream's socket (closing a socket does not, shutting it down does)."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()
