"""JSON for python-socketio's packets that sends a recorded line as it is.

A plain RCStream subscriber gets each event as a JSON object. The recorded line already
is that JSON text, so decoding it and having python-socketio encode it again, for every
client, is work for nothing (and python-socketio walks every value of an object looking
for bytes before it encodes it). python-socketio takes a JSON module of one's own (its
`json=` option, which it also hands to engine.io): this one encodes an `EncodedJson`
argument by inserting its text, and everything else as engine.io's own module does;
decoding is engine.io's (it refuses integers written with over 100 digits). Both rest on
library behaviour no API promises: socketio_internals.py has them, its test pins them.
"""

from __future__ import annotations

from typing import Any

from stream_processor.serving.socketio_internals import engineio_json

loads = engineio_json.loads


class EncodedJson(str):
    """JSON text (a recorded line that parsed as an event) to go into a packet as it is."""

    __slots__ = ()


def dumps(value: Any, **options: Any) -> str:
    """A packet's arguments ([event, arg, ...]) as JSON; EncodedJson arguments go in as they are."""
    if isinstance(value, list) and any(isinstance(item, EncodedJson) for item in value):
        return "[" + ",".join(_encoded(item, options) for item in value) + "]"
    return engineio_json.dumps(value, **options)


def _encoded(item: Any, options: dict[str, Any]) -> str:
    return str(item) if isinstance(item, EncodedJson) else engineio_json.dumps(item, **options)
