"""The Socket.IO client: subscribe from an offset, receive in order, acknowledge, reconnect.

Events are handed over through a queue, so the Socket.IO thread never blocks on a full
processing window (it must keep answering pings). python-socketio runs the handler of
each incoming message on a thread of its own, so a big message can be overtaken by the
next one: changes are put back in offset order here, and `end` (which names the offset
the replay ended at) waits for every change before it. On a dropped connection, python-
socketio reconnects and this client subscribes again from the first offset it has not
received: no gap, and anything received twice is dropped by offset.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

import socketio

from stream_processor.core.contracts import Change, End
from stream_processor.protocol.vocabulary import DEFAULT_WINDOW, NAMESPACE
from stream_processor.redaction import redact_text, safe_url

log = logging.getLogger(__name__)

# Changes per message: python-socketio's client hands each message to a thread of its own,
# which caps it at a few thousand messages a second; batches of 100 make that cap moot.
DEFAULT_BATCH = 100


class ReplayClient:
    """Receives a replay as `Change`s (and a final `End`) on `self.inbox`."""

    def __init__(
        self,
        url: str,
        start_offset: int = 0,
        realtime: bool | None = None,
        speed: float | None = None,
        ack_every: int = 100,
        connect_timeout_s: float = 30.0,
        token: str | None = None,
        batch: int = DEFAULT_BATCH,
        reconnect_delay_s: float = 0.2,  # before the first attempt after a drop; doubles up to 2 s
        window: int = DEFAULT_WINDOW,  # events past the last acknowledged offset the server may send, at most
    ) -> None:
        self.window = window
        self.url = url  # a token may be in its query: engine.io sends it on, as the server accepts
        self.shown_url = safe_url(url)  # what logs and messages name: no token, no password
        self.next_offset = start_offset  # the first offset not yet received
        self.realtime = realtime
        self.speed = speed
        self.ack_every = max(1, ack_every)
        self.connect_timeout_s = connect_timeout_s
        self.token = token
        self.batch = batch  # changes per message asked of the server (1: one `change` each)
        self.refusal: str | None = None  # why the server refused us, if it did
        self.failure: Exception | None = None  # never set: python-socketio reconnects on every error
        self.inbox: queue.Queue[Change | End] = queue.Queue()
        self.reconnects = 0
        self.canaries_dropped = 0  # RCStream's protocol has none: lines go on as recorded
        self._acked = start_offset
        self._ack_lock = threading.Lock()
        self._arrival_lock = threading.Lock()  # handlers run on threads of their own
        self._early: dict[int, Change] = {}  # arrived before an earlier offset did
        self._end: End | None = None  # arrived before some of its changes did
        self._connected_once = False
        self._disconnected_at: float | None = None
        self._closing = False
        self.sio = socketio.Client(
            reconnection=True, reconnection_delay=reconnect_delay_s, reconnection_delay_max=max(2, reconnect_delay_s)
        )
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        self.sio.on("change", self._on_change, namespace=NAMESPACE)
        self.sio.on("changes", self._on_changes, namespace=NAMESPACE)
        self.sio.on("end", self._on_end, namespace=NAMESPACE)
        self.sio.on("error", self._on_error, namespace=NAMESPACE)

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        try:
            self.sio.connect(
                self.url,
                namespaces=[NAMESPACE],
                transports=["websocket"],
                wait_timeout=self.connect_timeout_s,
                auth={"token": self.token} if self.token else None,
            )
        except socketio.exceptions.ConnectionError as exc:
            reason = self.refusal or redact_text(str(exc))
            raise ConnectionError(f"cannot subscribe to {self._shown_namespace()}: {reason}") from None

    def _shown_namespace(self) -> str:
        """The namespace's address as a user writes it (`http://host:port/rc`), without secrets."""
        base, query = self.shown_url.partition("?")[::2]
        return f"{base.rstrip('/')}{NAMESPACE}" + (f"?{query}" if query else "")

    def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict):  # the server answered, and said no (a wrong token, say)
            message = data.get("message")
            self.refusal = redact_text(str(message)) if message is not None else None
            log.error("%s refused the connection: %s", self.shown_url, self.refusal)
        else:  # nobody answered (yet): a server restarting, a network gone
            log.info("cannot reach %s (%s); trying again", self.shown_url, redact_text(str(data)))

    def close(self) -> None:
        self._closing = True
        self.sio.disconnect()

    def _on_disconnect(self, *reason: Any) -> None:
        if self._disconnected_at is None and not self._closing:
            self._disconnected_at = time.monotonic()
            log.warning("lost the connection to %s (%s); reconnecting", self.shown_url, reason[0] if reason else "?")

    def disconnected_for(self) -> float:
        """Seconds since the connection dropped without coming back; 0 while connected."""
        since = self._disconnected_at
        return 0.0 if since is None else time.monotonic() - since

    def _on_connect(self) -> None:
        self._disconnected_at = None
        if self._connected_once:
            self.reconnects += 1
            log.warning("reconnected to %s; resubscribing from offset %d", self.shown_url, self.next_offset)
        self._connected_once = True
        self.sio.emit("subscribe", self._subscription(), namespace=NAMESPACE)

    def _subscription(self) -> dict[str, Any]:
        request: dict[str, Any] = {"wikis": "*", "offset": self.next_offset, "with_offsets": True, "raw": True}
        request["window"] = self.window  # the server holds us to the smaller of its window and ours
        if self.batch > 1:
            request["batch"] = self.batch
        if self.realtime is not None:
            request["realtime"] = self.realtime
        if self.speed is not None:
            request["speed"] = self.speed
        return request

    # -- receiving -----------------------------------------------------------------------

    def _on_change(self, line: Any, offset: Any = None, line_number: Any = None) -> None:
        with self._arrival_lock:
            self._arrived(line, offset, line_number)
            self._release_in_order()

    def _on_changes(self, changes: Any = None) -> None:
        """Several changes in one message (`batch`): each [line, offset, line number]."""
        if not isinstance(changes, list):
            log.error("ignoring changes that are not a list: %.200r", changes)
            return
        with self._arrival_lock:
            for change in changes:
                if isinstance(change, list) and len(change) == 3:
                    self._arrived(*change)
                else:
                    log.error("ignoring a change that is not [line, offset, line number]: %.200r", change)
            self._release_in_order()

    def _arrived(self, line: Any, offset: Any, line_number: Any) -> None:
        if isinstance(line, str):
            line = line.encode("utf-8")
        if isinstance(offset, bool) or not isinstance(offset, int) or not isinstance(line, bytes):
            log.error("ignoring a change without a line and an offset: %.200r", (line, offset))
            return
        if offset < self.next_offset or offset in self._early:
            return  # sent again after a resubscribe: already have it
        number = line_number if isinstance(line_number, int) and not isinstance(line_number, bool) else None
        self._early[offset] = Change(offset, line, time.monotonic(), number)

    def _release_in_order(self) -> None:
        while self.next_offset in self._early:
            self.inbox.put(self._early.pop(self.next_offset))
            self.next_offset += 1
        self._release_end()

    def _on_end(self, data: Any = None) -> None:
        count = data.get("count") if isinstance(data, dict) else None
        offset = data.get("offset") if isinstance(data, dict) else None
        with self._arrival_lock:
            self._end = End(count if isinstance(count, int) else -1, offset if isinstance(offset, int) else None)
            self._release_end()

    def _release_end(self) -> None:
        """Pass `end` on once every change before it is in the inbox."""
        if self._end is not None and (self._end.offset is None or self.next_offset >= self._end.offset):
            self.inbox.put(self._end)
            self._end = None

    def _on_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        log.error("server says: %s", redact_text(str(message)))

    # -- flow control --------------------------------------------------------------------

    def resume_token(self, offset: int) -> str | None:
        """None: a Socket.IO replay resumes from an offset alone."""
        return None

    def acknowledge(self, written_up_to: int, caught_up: bool) -> None:
        """Tell the server every offset below `written_up_to` is written.

        Sent every `ack_every` lines, and whenever the client has caught up, so the
        server's window can never stay full while the client waits for more.
        """
        with self._ack_lock:
            if written_up_to - self._acked < self.ack_every and not caught_up:
                return
            self._acked = written_up_to
        # While reconnecting there is nobody to tell: the resubscribe resets the server's window.
        with contextlib.suppress(socketio.exceptions.BadNamespaceError):
            if self.sio.connected:
                self.sio.emit("ack", written_up_to, namespace=NAMESPACE)
