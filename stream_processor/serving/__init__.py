"""The replay server: one core of protocol logic, two thin shells around it.

`core.py` holds what both serve (subscriptions, flow control, the replay loop as steps,
status) with no eventlet and no asyncio in it; `base_shell.py` what both shells do with
it; `eventlet_server.py` and `asyncio_server.py` carry the steps out, differing only in
how they wait, sleep and start tasks, and in the HTTP interface they speak (WSGI, ASGI).
Whatever rests on python-socketio's or python-engineio's internals is in `socketio_internals.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the shells import eventlet or asyncio: only the chosen one is imported
    from stream_processor.serving.asyncio_server import AsyncioReplayServer
    from stream_processor.serving.core import ServerSettings
    from stream_processor.serving.eventlet_server import EventletReplayServer
    from stream_processor.serving.recording import Replayable

ASYNC_MODES = ("eventlet", "asyncio")
ASYNC_MODE_ENV = "STREAM_PROCESSOR_ASYNC_MODE"  # the default of `serve --async-mode`
DEFAULT_ASYNC_MODE = "eventlet"


def create_server(
    recording: str | Path | Replayable, settings: ServerSettings, loop: bool = False, streams: Sequence[str] = ()
) -> EventletReplayServer | AsyncioReplayServer:
    """The replay server for `settings.async_mode`: the core inside the chosen shell.

    `recording`: a recording's path (replayed once, or with `loop` forever), or what to
    serve instead, e.g. a followed output (`serving.followed.follow()`: `serve --follow`).
    `streams`: more event streams, as `NAME=FILE` (`serve --stream`; raises StreamError).
    Each shell is imported only when chosen: an asyncio server never imports eventlet.
    """
    from stream_processor.serving.core import ServingCore
    from stream_processor.serving.recording import Recording
    from stream_processor.serving.streams import open_catalog

    source = Recording(recording, loop) if isinstance(recording, str | Path) else recording
    core = ServingCore(source, settings, catalog=open_catalog(source, list(streams), loop))
    if settings.async_mode == "asyncio":
        from stream_processor.serving.asyncio_server import AsyncioReplayServer

        return AsyncioReplayServer(core)
    from stream_processor.serving.eventlet_server import EventletReplayServer

    return EventletReplayServer(core)
