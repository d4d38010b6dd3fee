"""The replay server's logic, for both shells: who is connected, what they subscribed to,
acknowledgements, the replay each one gets (as steps), and the status page's figures.

No eventlet and no asyncio here: a shell calls these methods from its handlers and
carries out what they return (send an error, start a replay's steps, refuse a client).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stream_processor.observe.histogram import LatencyHistogram
from stream_processor.protocol.tokens import token_accepted
from stream_processor.protocol.vocabulary import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_SUBSCRIBE_BURST,
    DEFAULT_SUBSCRIBE_RATE,
    DEFAULT_WINDOW,
)
from stream_processor.serving.access import ANY_ORIGIN, AddressLimit
from stream_processor.serving.rate_limit import TokenBucket
from stream_processor.serving.recording import Replayable
from stream_processor.serving.replay_loop import Pacing, Step, replay
from stream_processor.serving.streams import StreamCatalog
from stream_processor.serving.subscriber import SOCKETIO, SSE, Subscriber, Waker, pacing_figures
from stream_processor.serving.subscription import SubscribeError, Subscription, parse_subscription

if TYPE_CHECKING:  # the transport's counts: the core imports nothing of Socket.IO
    from stream_processor.serving.delivery import Delivery

log = logging.getLogger(__name__)

SOCKETIO_BATCH = 32  # records a plain Socket.IO replay emits between turns it gives the others
STREAM_BATCH = 64  # records an event stream writes as one chunk, when that many are due at once
DEFAULT_HEARTBEAT_S = 15.0


@dataclass(frozen=True)
class ServerSettings:
    realtime: bool = False  # pace replays by the events' timestamps, unless a subscriber says otherwise
    speed: float = 1.0
    window: int = DEFAULT_WINDOW
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # beside localhost and loopback addresses (see access.host_allowed)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    subscribe_burst: int = DEFAULT_SUBSCRIBE_BURST
    subscribe_rate: float = DEFAULT_SUBSCRIBE_RATE
    max_connections_per_address: int | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S  # an idle event stream gets a comment this often
    max_connection_s: float | None = None  # an event stream closes after this long (the client resumes)
    async_mode: str = "eventlet"

    def __post_init__(self) -> None:
        if ANY_ORIGIN in self.cors_origins and self.token is not None:
            raise ValueError(CORS_ANY_WITH_TOKEN)
        if self.max_connection_s is not None and not self.max_connection_s > 0:
            raise ValueError("max_connection_s must be > 0")


CORS_ANY_WITH_TOKEN = (
    "--cors-origin '*' lets any web page read the server, as the public EventStreams does; "
    "a server with a token is not public: list the origins that may use it instead"
)


class Refused(Exception):
    """A connection the server will not admit; the message says why."""


class ServingCore:
    def __init__(
        self,
        recording: Replayable,
        settings: ServerSettings,
        clock: Callable[[], float] = time.monotonic,
        catalog: StreamCatalog | None = None,
    ) -> None:
        self.recording = recording
        self.catalog = catalog or StreamCatalog(recording)  # the event streams by name: `recording` is the default
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.subscribers: dict[str, Subscriber] = {}
        self._sent_by_departed = 0
        self._addresses = AddressLimit(settings.max_connections_per_address)
        self.streams_opened = 0  # event streams ever opened: reconnects show here
        self.pacing_error = LatencyHistogram()  # every paced event to every client, since the start

    # -- admission ----------------------------------------------------------------------

    def admit(self, subscriber: Subscriber, offered_token: str | None) -> None:
        """Add a client, or raise Refused: a wrong or missing token, too many from its address."""
        if not token_accepted(self.settings.token, offered_token):
            log.warning("refused %s from %s: wrong or missing token", subscriber.transport, subscriber.address)
            raise Refused(
                "this server needs a token (auth {token}, Authorization: Bearer, or ?token=); wrong or missing"
            )
        if not self._addresses.admit(subscriber.address):
            raise Refused(
                f"too many connections from {subscriber.address}: "
                f"at most {self.settings.max_connections_per_address} at once"
            )
        subscriber.server_pacing_error = self.pacing_error
        self.subscribers[subscriber.id] = subscriber

    def leave(self, subscriber_id: str) -> None:
        subscriber = self.subscribers.pop(subscriber_id, None)
        if subscriber is not None:
            subscriber.supersede()  # its replay stops at its next step
            self._sent_by_departed += subscriber.sent
            self._addresses.release(subscriber.address)

    def stop_all(self) -> None:
        """The server is stopping: every replay ends at its next step."""
        for subscriber in list(self.subscribers.values()):
            subscriber.supersede()

    # -- Socket.IO ------------------------------------------------------------------------

    def connect(
        self, sid: str, address: str, offered_token: str | None, waker: Waker, delivery: Delivery | None
    ) -> str | None:
        """A Socket.IO connect; returns an error for a client that emits an event named
        `connect` (python-socketio routes it to the connect handler), raises Refused."""
        if sid in self.subscribers:
            return "connect is not an event a client may emit"
        subscribes = TokenBucket(self.settings.subscribe_burst, self.settings.subscribe_rate, self.clock)
        self.admit(Subscriber(sid, SOCKETIO, address, waker, subscribes, delivery), offered_token)
        return None

    def subscribe(self, sid: str, args: tuple) -> Iterator[Step] | str | None:
        """The steps of the replay a `subscribe` asks for, or an error message (None: not a client)."""
        subscriber = self.subscribers.get(sid)
        if subscriber is None:
            return None
        if subscriber.subscribes is not None and not subscriber.subscribes.take():
            return (
                f"too many subscribes: at most {self.settings.subscribe_burst} at once, "
                f"then {self.settings.subscribe_rate:g} a second; this one is ignored"
            )
        try:
            if len(args) > 1:
                raise SubscribeError(f"subscribe takes one argument, not {len(args)}")
            subscription = parse_subscription(args[0] if args else None, self.settings.realtime, self.settings.speed)
        except SubscribeError as exc:
            return str(exc)
        generation = subscriber.restart(subscription)
        pacing = Pacing(batch=subscription.batch or SOCKETIO_BATCH)
        window = subscription.window_within(self.settings.window)
        return replay(subscriber, generation, subscription, self.recording, window, pacing, self.clock)

    def ack(self, sid: str, args: tuple) -> str | None:
        """Take an `ack`; returns an error message for a bad one."""
        subscriber = self.subscribers.get(sid)
        if subscriber is None:
            return None
        offset = args[0] if len(args) == 1 else None
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            return f"ack takes the offset written up to, one whole number >= 0, not {args!r:.60}"
        if offset > subscriber.next_unsent:
            return f"ack {offset} is beyond what was sent (up to {subscriber.next_unsent}); ignored"
        subscriber.acknowledge(offset)
        return None

    # -- event streams ------------------------------------------------------------------

    def open_stream(
        self,
        address: str,
        offered_token: str | None,
        waker: Waker,
        subscription: Subscription,
        streams: Replayable | None = None,
    ) -> tuple[Subscriber, Iterator[Step]]:
        """A new event stream's subscriber and the steps of its replay (of `streams`, a
        comma list merged, else the recording); raises Refused. The shell calls `leave()`
        when the stream ends, however it ends."""
        self.streams_opened += 1
        subscriber = Subscriber(f"sse-{self.streams_opened}", SSE, address, waker)
        self.admit(subscriber, offered_token)
        generation = subscriber.restart(subscription)
        pacing = Pacing(batch=STREAM_BATCH, heartbeat_s=self.settings.heartbeat_s)
        replayed = streams if streams is not None else self.recording
        return subscriber, replay(
            subscriber, generation, subscription, replayed, self.settings.window, pacing, self.clock
        )

    # -- figures ------------------------------------------------------------------------

    @property
    def events_sent(self) -> int:
        return self._sent_by_departed + sum(subscriber.sent for subscriber in self.subscribers.values())

    def pacing_summary(self, subscriber: Subscriber) -> str:
        errors = subscriber.pacing_error
        if not errors.count:
            return "no paced events"
        return (
            f"pacing error over {errors.count} paced events: p50 {errors.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {errors.quantile(0.99) * 1000:.1f} ms, max {errors.max * 1000:.1f} ms"
        )

    def status(self) -> dict[str, Any]:
        now = self.clock()
        window = self.settings.window
        followed = self.recording.status()  # a followed output: what it follows, how far it is committed
        return {
            "async_mode": self.settings.async_mode,
            "uptime_s": round(now - self.started_at, 3),
            "recording": {
                "path": str(self.recording.path),
                "events": self.recording.events,
                "loop": self.recording.loop,
            },
            **({"follow": followed} if followed is not None else {}),
            "events_sent": self.events_sent,
            "event_streams_opened": self.streams_opened,
            "pacing_error_ms": pacing_figures(self.pacing_error),
            "clients": [
                subscriber.status(_window_of(subscriber, window), now) for subscriber in self.subscribers.values()
            ],
        }


def _window_of(subscriber: Subscriber, server_window: int) -> int:
    """The window a subscriber is held to: the server's, or the smaller one it asked for."""
    return subscriber.subscription.window_within(server_window) if subscriber.subscription else server_window
