"""The streams a server serves, by name, and a comma list of them merged into one replay.

As EventStreams: a stream has a name (`mediawiki.recentchange`) and may have an alias
(`recentchange`); `/v2/stream/a,b` merges the streams in time order. The recording given
with `--input` is `mediawiki.recentchange`; `serve --stream NAME=FILE` adds more (a bare
NAME such as `revision-create` is `mediawiki.revision-create`, with NAME its alias, as
Wikimedia names its streams).

A request for the default stream alone is replayed as it always was (its offsets are the
recording's). Any other request is a `MergedStreams`: each stream read from where the
request starts it (an offset, a time, or the beginning), merged by event time (ties: the
order the request lists them), each record numbered in the merged order and carrying
every stream's next position: its id, so a reconnect resumes each stream where it was.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_processor.core.records import Record
from stream_processor.core.replay import event_time
from stream_processor.protocol.event_stream import (
    STREAM,
    STREAM_ALIASES,
    Resume,
    StreamRecord,
    StreamRequestError,
    positions_id,
    topic_of,
)
from stream_processor.serving.recording import Recording, Replayable

WIKIMEDIA_PREFIX = "mediawiki."
# A name a client can ask for in a path as it is, no escaping (`?`, `%`, `,`, `/` and
# non-ASCII would be unreachable or ambiguous); Wikimedia's names all fit.
STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Streams one server serves, the recording too: a merge of all of them sends ids naming
# each (about 155 characters apiece at most), which must fit one header line as clients
# send them back (eventlet takes 8 KB).
MAX_STREAMS = 32


class StreamError(ValueError):
    """A `--stream NAME=FILE` the server cannot serve (a usage error)."""


@dataclass(frozen=True)
class ServedStream:
    name: str  # as the spec and ids name it: mediawiki.revision-create
    aliases: tuple[str, ...]
    recording: Replayable

    @property
    def topic(self) -> str:
        return topic_of(self.name)


def names_for(given: str) -> tuple[str, tuple[str, ...]]:
    """A stream's name and aliases from what `--stream` calls it: a bare name is Wikimedia's."""
    if "." in given:
        return given, ()
    return WIKIMEDIA_PREFIX + given, (given,)


class StreamCatalog:
    """Every stream this server serves, the default one (the replayed recording) first."""

    def __init__(self, default: Replayable, extra: dict[str, Replayable] | None = None) -> None:
        self.default = ServedStream(STREAM, STREAM_ALIASES, default)
        self.streams = [self.default]
        for given, recording in (extra or {}).items():
            self._add(given, recording)
        self._by_name = {name: stream for stream in self.streams for name in (stream.name, *stream.aliases)}

    def _add(self, given: str, recording: Replayable) -> None:
        name, aliases = names_for(given)
        taken = {taken for stream in self.streams for taken in (stream.name, *stream.aliases)}
        if name in taken or taken & set(aliases):
            raise StreamError(f"--stream {given}: that stream is served already (the recording is {STREAM})")
        self.streams.append(ServedStream(name, aliases, recording))

    def names(self) -> list[str]:
        """Every name a stream may be asked for by, aliases too (as EventStreams' spec lists them)."""
        return sorted(self._by_name)

    def resolve(self, names: list[str]) -> list[ServedStream]:
        """The streams these names ask for, each once, in the order first named; 400 for an unknown one."""
        unknown = [name for name in names if name not in self._by_name]
        if unknown:
            shown = ", ".join(repr(name[:60]) for name in unknown[:5])
            raise StreamRequestError(f"no such stream: {shown}; this server serves {', '.join(self.names())}")
        return list(dict.fromkeys(self._by_name[name] for name in names))


def open_catalog(recording: Replayable, streams: list[str], loop: bool) -> StreamCatalog:
    """The catalog for `serve --stream NAME=FILE ...` beside the recording."""
    if streams and loop:
        raise StreamError("--loop replays one recording forever; it cannot merge --stream recordings by time")
    if len(streams) >= MAX_STREAMS:
        raise StreamError(f"--stream is given {len(streams)} times; a server serves at most {MAX_STREAMS} streams")
    extra: dict[str, Replayable] = {}
    for spec in streams:
        given, sep, path = spec.partition("=")
        if not sep or not path or not STREAM_NAME.fullmatch(given):
            raise StreamError(
                f"--stream takes NAME=FILE, NAME of letters, digits, '.', '_' and '-' (at most 100), not {spec!r:.80}"
            )
        if given in extra:
            raise StreamError(f"--stream {given} is given twice")
        extra[given] = Recording(Path(path))
    return StreamCatalog(recording, extra)


class MergedStreams:
    """One request's streams as one `Replayable`, merged by time, from where each starts."""

    loop = False
    stamps_meta = True  # events go out with meta.topic/partition/offset of where they are served from

    def __init__(self, streams: list[ServedStream], starts: dict[str, Resume]) -> None:
        self.streams = streams
        self.starts = {stream.name: starts.get(stream.name, Resume()) for stream in streams}

    @property
    def path(self) -> str:
        return ",".join(str(stream.recording.path) for stream in self.streams)

    @property
    def events(self) -> int | None:
        counts = [stream.recording.events for stream in self.streams]
        return None if None in counts else sum(count for count in counts if count is not None)

    def records_from(self, offset: int) -> Iterator[Record | None]:
        """Every stream's records merged in time order; `offset` (the merged count to skip) is 0 here."""
        positions = {stream.topic: self.starts[stream.name].offset for stream in self.streams}
        order = [stream.topic for stream in self.streams]
        keyed = heapq.merge(*(self._keyed(index, stream) for index, stream in enumerate(self.streams)))
        for merged, (_, _, topic, record) in enumerate(keyed):
            positions[topic] = record.offset + 1
            if merged >= offset:
                at = tuple((name, positions[name]) for name in order)
                yield StreamRecord(
                    merged, record.raw, record.event, record.error, record.line, at, topic, record.offset
                )

    def _keyed(self, index: int, stream: ServedStream) -> Iterator[tuple[float, int, str, Record]]:
        """A stream's records from its start, keyed for the merge: by time, a line without one
        where the stream's last time was (it stays in its place)."""
        start = self.starts[stream.name]
        last_time = -math.inf
        for record in stream.recording.records_from(start.offset):
            if record is None:  # a followed output is served alone, never merged
                continue
            moment = event_time(record.event)
            if start.since is not None and (moment is None or moment < start.since) and last_time == -math.inf:
                continue  # before the time this stream starts at
            last_time = moment if moment is not None else last_time
            yield last_time, index, stream.topic, record

    def end_id(self) -> str:
        """The id past every stream's end: a reconnect after the end is told 204."""
        return positions_id([(stream.topic, stream.recording.events or 0) for stream in self.streams])

    def ends_before(self, offset: int) -> bool:
        return all(self._nothing_left(stream, self.starts[stream.name]) for stream in self.streams)

    def ends_before_time(self, since: float) -> bool:
        return self.ends_before(0)

    @staticmethod
    def _nothing_left(stream: ServedStream, start: Resume) -> bool:
        if start.since is not None:
            return stream.recording.ends_before_time(start.since)
        return stream.recording.ends_before(start.offset)

    def status(self) -> dict[str, Any] | None:
        return None
