"""A python-socketio client manager for the asyncio shell that sends a packet meant for
one client in the task that emits it.

python-socketio's `AsyncManager.emit` is built for rooms: it starts a task per recipient
and waits for them all, which for a replay's one recipient costs a task and a turn of
the event loop per event. A replay emits to exactly one client, in order, so this sends
its packet straight to engine.io (`AsyncServer.send`, engine.io's public call) and keeps
python-socketio's own path for everything else (rooms, callbacks, several recipients).
Custom managers are python-socketio's documented extension point (`client_manager=`).
"""

from __future__ import annotations

from typing import Any

import socketio
from socketio import packet


class DirectEmitManager(socketio.AsyncManager):
    async def emit(
        self, event: str, data: Any, namespace: str, room=None, skip_sid=None, callback=None, to=None, **kwargs: Any
    ) -> None:
        recipient = to or room
        eio_sid = self.eio_sid_from_sid(recipient, namespace) if isinstance(recipient, str) else None
        if eio_sid is None or callback is not None or skip_sid is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        arguments = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *arguments]).encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:  # a list when it carries bytes
            await self.server.eio.send(eio_sid, part)
