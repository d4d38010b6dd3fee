"""What a Socket.IO client's transport has written out of what was handed to it.

A plain RCStream client cannot acknowledge, and engine.io queues whatever is emitted to
a client without bound until its socket takes it. So the server counts the packets it
hands to Socket.IO for a client, and the packets the transport writes out for it, seen
from outside the library at the HTTP interface (WSGI or ASGI, wrapped by the shell):
websocket frames written to the client's socket, and packets in each long-polling
response. The difference is what engine.io still holds; the replay stops at a window of it.

Only what engine.io's wire protocol shows is used, read by socketio_internals.py (the
handshake names the session, later requests carry `?sid=`, a polling payload separates
packets). Engine.io's own pings and no-ops count as written too; counts are clamped so
they never exceed what was handed, so a ping written while nothing of ours waits changes
nothing, and one written during a backlog lets one extra packet through.
"""

from __future__ import annotations

import weakref

from stream_processor.serving.socketio_internals import handshake_session_id, session_id

DELIVERY_KEY = "stream_processor.delivery"  # where the shell puts a request's Delivery (environ or scope)


class Delivery:
    """Packets handed to Socket.IO for one engine.io session, and packets its transport wrote."""

    def __init__(self) -> None:
        self.handed = 0
        self.written = 0

    def hand(self, packets: int) -> None:
        self.handed += packets

    def wrote(self, packets: int) -> None:
        self.written = min(self.handed, self.written + packets)

    @property
    def backlog(self) -> int:
        """Packets engine.io still holds for the client."""
        return self.handed - self.written


class DeliverySessions:
    """The Delivery of each engine.io session, found again by the `sid` later requests carry.

    Held weakly: the session's environ (kept by python-socketio while it is connected) and
    its subscriber hold it strongly, so an entry goes when its session does.
    """

    def __init__(self) -> None:
        self._by_session: weakref.WeakValueDictionary[str, Delivery] = weakref.WeakValueDictionary()

    def for_request(self, query_string: str) -> Delivery | None:
        """The session's Delivery, a new one for a handshake (no sid), None for an unknown session."""
        sid = session_id(query_string)
        if sid is None:
            return Delivery()
        return self._by_session.get(sid)

    def learn_session(self, handshake_body: bytes, delivery: Delivery) -> None:
        """Note the session id engine.io's handshake response (`0{"sid": ...}`) gave out."""
        sid = handshake_session_id(handshake_body)
        if sid is not None:
            self._by_session[sid] = delivery
