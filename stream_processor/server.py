"""The Socket.IO replay server (eventlet): RCStream's protocol, replaying a recording.

Protocol, namespace `/rc`:
- the client emits `subscribe` with a wiki name, a list of them, "*", or an object
  {"wikis": [...], "offset": N, "with_offsets": bool, "realtime": bool, "speed": X, "raw": bool};
- the server emits `change` per event: the event as recorded (one argument), or with
  `with_offsets` the event and its offset (the 0-based number of the event in the
  recording; blank lines are not events); with `raw` the recorded line itself, as a
  string, so a client can keep it byte for byte, its offset and its line number;
- after the last event it emits `end` with {"count": N} (unless it loops);
- the client emits `ack` with the offset up to which (exclusive) it has written results:
  the server keeps at most `window` unacknowledged events in flight per client;
- a bad request gets an `error` event with {"message": ...}; the connection stays up.

Secure by default: it binds 127.0.0.1 unless told otherwise; with a token, a connect
must carry `auth: {"token": ...}` or it is refused; no cross-origin browser may connect
unless its origin is listed; a message over `max_payload` bytes closes that connection.

Each subscriber gets its own replay, in its own green thread, from its own offset.
"""

from __future__ import annotations

import hmac
import logging
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # The issue asks for eventlet; its import warns that it is in bugfix-only mode.
    warnings.simplefilter("ignore")
    import eventlet
import eventlet.event
import eventlet.greenthread
import eventlet.hubs
import eventlet.wsgi
import socketio

from stream_processor.protocol import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_WINDOW,
    NAMESPACE,
    SubscribeError,
    Subscription,
    parse_subscription,
)
from stream_processor.records import Record, count_events, read_records
from stream_processor.replay import ReplaySchedule
from stream_processor.report import LatencyHistogram

log = logging.getLogger(__name__)

BACKLOG_POLL_S = 0.05


@dataclass
class Client:
    """One connected subscriber: its flow-control state and the replay it runs."""

    acked: int = 0  # every offset below this is written, says the client
    next_unsent: int = 0  # one past the last offset sent: nothing beyond it may be acked
    unacked: deque[int] = field(default_factory=deque)  # offsets sent and not yet acked, in order
    generation: int = 0  # a new subscribe supersedes the replay already running
    wake: eventlet.event.Event = field(default_factory=eventlet.event.Event)

    def restart_at(self, offset: int) -> int:
        """A new subscription from `offset`: flow control starts afresh; returns its generation."""
        self.acked = self.next_unsent = offset
        self.unacked.clear()
        self.generation += 1
        self._wake_replay()
        return self.generation

    def sent(self, offset: int) -> None:
        self.unacked.append(offset)
        self.next_unsent = offset + 1

    def acknowledge(self, offset: int) -> None:
        if offset > self.acked:
            self.acked = offset
            while self.unacked and self.unacked[0] < offset:
                self.unacked.popleft()
            self._wake_replay()

    def _wake_replay(self) -> None:
        if not self.wake.ready():
            self.wake.send()

    def sleep(self, seconds: float | None) -> None:
        """Until woken (an ack, a resubscribe, a disconnect) or `seconds` pass."""
        self.wake = eventlet.event.Event()
        self.wake.wait(seconds)

    def supersede(self) -> None:
        self.generation += 1
        self._wake_replay()


class ReplayServer:
    def __init__(
        self,
        recording: str | Path,
        realtime: bool = False,
        speed: float = 1.0,
        loop: bool = False,
        window: int = DEFAULT_WINDOW,
        cors_allowed_origins: list[str] | None = None,
        token: str | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.recording = Path(recording)
        self.realtime = realtime
        self.speed = speed
        self.loop = loop
        self.window = window
        self.token = token
        self.pacing_error = LatencyHistogram()  # seconds each paced event went out late
        self._events = count_events(self.recording)  # also fails now, clearly, if it is unreadable
        self._clients: dict[str, Client] = {}
        self.sio = socketio.Server(
            async_mode="eventlet",
            # None = same origin only; engine.io takes [] as "no CORS checks at all".
            cors_allowed_origins=cors_allowed_origins or None,
            max_http_buffer_size=max_payload,
            logger=False,
            engineio_logger=False,
        )
        self.app = socketio.WSGIApp(self.sio)
        self._register_handlers()

    # -- protocol ------------------------------------------------------------------------

    def _register_handlers(self) -> None:
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("subscribe", self._on_subscribe, namespace=NAMESPACE)
        self.sio.on("ack", self._on_ack, namespace=NAMESPACE)
        self.sio.on("*", self._on_unknown, namespace=NAMESPACE)

    def _on_connect(self, sid: str, environ: dict | Any = None, auth: Any = None) -> None:
        if sid in self._clients:
            # python-socketio routes an *event* named "connect" here too: not a new client.
            self._send_error(sid, "connect is not an event a client may emit")
            return
        if not self._authorised(auth):
            log.warning("refused a connect from %s: wrong or missing token", environ.get("REMOTE_ADDR", "?"))
            raise socketio.exceptions.ConnectionRefusedError("this server needs auth {token: ...}; wrong or missing")
        self._clients[sid] = Client()

    def _authorised(self, auth: Any) -> bool:
        if self.token is None:
            return True
        offered = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(offered, str):
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())  # no timing hints

    def _on_disconnect(self, sid: str, *reason: Any) -> None:
        if self.sio.manager.is_connected(sid, NAMESPACE):
            # An *event* named "disconnect" (a real disconnect is no longer "connected" here).
            self._send_error(sid, "disconnect is not an event a client may emit")
            return
        client = self._clients.pop(sid, None)
        if client is not None:
            client.supersede()  # its replay stops at the next event

    def _on_subscribe(self, sid: str, *args: Any) -> None:
        client = self._clients.get(sid)
        if client is None:
            return
        try:
            if len(args) > 1:
                raise SubscribeError(f"subscribe takes one argument, not {len(args)}")
            subscription = parse_subscription(args[0] if args else None, self.realtime, self.speed)
        except SubscribeError as exc:
            self._send_error(sid, str(exc))
            return
        generation = client.restart_at(subscription.offset)
        self.sio.start_background_task(self._replay, sid, client, generation, subscription)

    def _on_ack(self, sid: str, *args: Any) -> None:
        client = self._clients.get(sid)
        if client is None:
            return
        offset = args[0] if len(args) == 1 else None
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            self._send_error(sid, f"ack takes the offset written up to, one whole number >= 0, not {args!r:.60}")
        elif offset > client.next_unsent:
            self._send_error(sid, f"ack {offset} is beyond what was sent (up to {client.next_unsent}); ignored")
        else:
            client.acknowledge(offset)

    def _on_unknown(self, event: str, sid: str, *args: Any) -> None:
        self._send_error(sid, f"unknown event {event!r:.60}; this server knows subscribe and ack")

    def _send_error(self, sid: str, message: str) -> None:
        log.info("client %s: %s", sid, message)
        self.sio.emit("error", {"message": message}, to=sid, namespace=NAMESPACE)

    # -- the replay ----------------------------------------------------------------------

    def _replay(self, sid: str, client: Client, generation: int, subscription: Subscription) -> None:
        schedule = ReplaySchedule(subscription.speed, subscription.realtime)
        started = time.monotonic()
        count = 0
        next_offset = subscription.offset
        for record in self._records_from(subscription.offset):
            next_offset = record.offset + 1
            if not subscription.matches(record.event) and not (subscription.raw and record.event is None):
                continue
            # Only a client that sees offsets can ack; a plain one is held back instead by
            # what engine.io still holds for it, so a client that stops reading costs no memory.
            if not self._wait_for_window(sid, client, generation, subscription.with_offsets):
                return  # disconnected or resubscribed
            due = started + schedule.due(record.event)
            if not self._sleep_until(due, client, generation):
                return
            if subscription.realtime:
                self.pacing_error.add(max(0.0, time.monotonic() - due))
            self._emit_change(sid, record, subscription)
            client.sent(record.offset)
            count += 1
        # `offset`: one past the last line of the recording this replay covered, so a client
        # whose messages arrive out of order knows when it has them all.
        self.sio.emit("end", {"count": count, "offset": next_offset}, to=sid, namespace=NAMESPACE)
        log.info("replay to %s ended after %d events; %s", sid, count, self.pacing_summary())

    def _records_from(self, offset: int) -> Iterator[Record]:
        """The recording from `offset` on; with `loop`, again and again, offsets growing."""
        lap_start = offset - offset % self._events if self.loop and self._events else 0
        while True:
            for record in read_records(self.recording, start=offset - lap_start):
                yield Record(record.offset + lap_start, record.raw, record.event, record.error, record.line)
            if not self.loop or not self._events:
                return
            lap_start += self._events
            offset = lap_start

    def _wait_for_window(self, sid: str, client: Client, generation: int, acks: bool) -> bool:
        while client.generation == generation:
            if acks and len(client.unacked) >= self.window:
                client.sleep(None)  # an ack wakes it
            elif self._outgoing_backlog(sid) >= self.window:
                client.sleep(BACKLOG_POLL_S)  # nothing wakes it: look again soon
            else:
                break
        return client.generation == generation

    def _outgoing_backlog(self, sid: str) -> int:
        """Packets engine.io holds for this client, not yet taken by its (slow) socket."""
        try:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, NAMESPACE)
            return self.sio.eio.sockets[eio_sid].queue.qsize()
        except (KeyError, AttributeError):
            return 0  # gone: the replay notices through its generation

    def _sleep_until(self, due: float, client: Client, generation: int) -> bool:
        """Wait for an event's time, but not past its client leaving or resubscribing."""
        self.sio.sleep(0)  # yield to other clients even when nothing is paced
        while client.generation == generation and (delay := due - time.monotonic()) > 0:
            client.sleep(delay)
        return client.generation == generation

    def _emit_change(self, sid: str, record: Record, subscription: Subscription) -> None:
        if subscription.raw:
            payload: Any = _lossless_text(record.raw)
        elif record.event is None:
            self._send_error(sid, f"line {record.line_number} of the recording is not an event: {record.error}")
            return
        else:
            payload = record.event
        args: Any = payload
        if subscription.raw:  # our own client: it also names the line in its messages
            args = (payload, record.offset, record.line_number)
        elif subscription.with_offsets:
            args = (payload, record.offset)
        self.sio.emit("change", args, to=sid, namespace=NAMESPACE)

    def pacing_summary(self) -> str:
        errors = self.pacing_error
        if not errors.count:
            return "no paced events"
        return (
            f"pacing error over {errors.count} paced events: p50 {errors.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {errors.quantile(0.99) * 1000:.1f} ms, max {errors.max * 1000:.1f} ms"
        )

    # -- serving -------------------------------------------------------------------------

    def request_stop(self, *_signal_args: Any) -> None:
        """Stop `serve()`; meant for a signal handler.

        A signal lands in whichever green thread runs at that moment. In the hub (idle,
        waiting for sockets) raising reaches the serving thread; in one of engine.io's
        handler threads it would be swallowed, so it is thrown into the serving one from
        the hub's next turn instead.
        """
        serving = getattr(self, "_serving_greenlet", None)
        hub = eventlet.hubs.get_hub()
        current = eventlet.greenthread.getcurrent()
        if serving is None or current is serving or current is hub.greenlet:
            raise KeyboardInterrupt
        if not serving.dead:
            hub.schedule_call_global(0, serving.throw, KeyboardInterrupt)

    def serve(self, host: str = "127.0.0.1", port: int = 5000, on_listening=None) -> None:
        """Serve until interrupted (KeyboardInterrupt, or `request_stop()` from a signal handler);
        `on_listening(url)` is told the address once bound."""
        self._serving_greenlet = eventlet.greenthread.getcurrent()
        listener = eventlet.listen((host, port))
        bound_host, bound_port = listener.getsockname()[:2]
        url = f"http://{bound_host}:{bound_port}"
        if on_listening:
            on_listening(url)
        try:
            eventlet.wsgi.server(listener, self.app, log_output=False)
        finally:
            if self.pacing_error.count:
                log.warning("server stopping; %s", self.pacing_summary())


def _lossless_text(raw: bytes) -> str | bytes:
    """The recorded line as text, or as bytes (a binary attachment) if it is not UTF-8:
    replacing bytes would turn a bad line into a good one on the client."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
