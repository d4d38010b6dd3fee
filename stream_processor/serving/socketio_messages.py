"""What a Socket.IO subscriber is sent for records of the recording, as (event, args).

- plain RCStream: `change` with the event as recorded (its line, sent as it is: see
  socketio_json.py); `with_offsets` adds its offset;
  a line that is not an event gets an `error` naming its line;
- `raw`: `change` with the recorded line itself (bytes if it is not UTF-8, so nothing is
  replaced), its offset and its line number, for every line, events or not;
- `batch`: one `changes` with a list of [line, offset, line number], each as with `raw`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stream_processor.core.records import Record
from stream_processor.serving.socketio_json import EncodedJson
from stream_processor.serving.subscription import Subscription

Message = tuple[str, Any]  # event name, and its argument (a tuple for several)


def messages_for(records: list[Record], subscription: Subscription) -> Iterator[Message]:
    if subscription.batch is not None:
        yield "changes", [[lossless_text(r.raw), r.offset, r.line_number] for r in records]
        return
    for record in records:
        yield message_for(record, subscription)


def message_for(record: Record, subscription: Subscription) -> Message:
    if subscription.raw:
        return "change", (lossless_text(record.raw), record.offset, record.line_number)
    if record.event is None:
        return "error", {"message": f"line {record.line_number} of the recording is not an event: {record.error}"}
    event = EncodedJson(record.raw.decode("utf-8"))  # the recorded line: it parsed, so it is UTF-8 JSON
    if subscription.with_offsets:
        return "change", (event, record.offset)
    return "change", event


def error_message(message: str) -> Message:
    return "error", {"message": message}


def end_message(count: int, offset: int) -> Message:
    # `offset`: one past the last line of the recording the replay covered, so a client
    # whose messages arrive out of order knows when it has them all.
    return "end", {"count": count, "offset": offset}


def packets_in(args: Any) -> int:
    """Engine.io packets an emit of `args` takes: one, plus one per binary attachment."""
    return 1 + _attachments(args)


def _attachments(value: Any) -> int:
    """Bytes in the arguments or in a batch's lists (an event parsed from JSON holds none)."""
    if isinstance(value, bytes):
        return 1
    if isinstance(value, tuple | list):
        return sum(_attachments(item) for item in value)
    return 0


def lossless_text(raw: bytes) -> str | bytes:
    """The recorded line as text, or as bytes (a binary attachment) if it is not UTF-8:
    replacing bytes would turn a bad line into a good one on the client."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
