"""The ordering modes: when an event may start, and when its line may leave.

- total (`ReorderBuffer`): every event may start at once; results come back in any order
  and leave in input order;
- key (`KeyedWindow`): the events of one key start one at a time, in input order, and
  each line leaves as soon as its event is done;
- none (`KeyedWindow` with no keys): every event starts at once and leaves when done.

Pure data structures, no I/O and no threads, so they can be property-tested on their
own. Each is a deque of slots from the low watermark (every offset below it is done and
written) to the newest offset admitted; its length is the window, bounded by capacity.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_PENDING = object()


class WindowFull(Exception):
    """Raised by `admit` when the window already holds `capacity` events."""


class ReorderBuffer:
    """Admit consecutive offsets, complete them in any order, release the ready prefix."""

    def __init__(self, capacity: int, start: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._head = start  # offset of _slots[0]: the next offset to release
        self._slots: deque[Any] = deque()

    @property
    def next_offset(self) -> int:
        """The next offset `admit` accepts."""
        return self._head + len(self._slots)

    @property
    def next_to_release(self) -> int:
        """The resume point: every offset below it has been released."""
        return self._head

    def __len__(self) -> int:
        return len(self._slots)

    def is_full(self) -> bool:
        return len(self._slots) >= self.capacity

    def admit(self, offset: int, key: Hashable | None = None, done: bool = False) -> bool:
        """Reserve a slot for `offset`, which must be the next one in sequence; it may start
        at once (True). Total order never resumes past a gap, so `done` is never set."""
        if offset != self.next_offset:
            raise ValueError(f"offsets must be admitted in order: expected {self.next_offset}, got {offset}")
        if self.is_full():
            raise WindowFull(f"window of {self.capacity} events is full")
        if done:
            raise ValueError("total order resumes at its low watermark: nothing beyond it is done")
        self._slots.append(_PENDING)
        return True

    def complete(self, offset: int, value: Hashable | Any) -> list[tuple[int, Any]]:
        """Record `value` for `offset` and return the in-order prefix now ready to release.

        A completion for an offset that was already completed or released, or never
        admitted, is a duplicate or a stray (at-least-once delivery): it is ignored.
        """
        index = offset - self._head
        if not 0 <= index < len(self._slots) or self._slots[index] is not _PENDING:
            return []
        self._slots[index] = value
        return self._release_prefix()

    def is_pending(self, offset: int) -> bool:
        index = offset - self._head
        return 0 <= index < len(self._slots) and self._slots[index] is _PENDING

    def finish(self, offset: int, value: Any) -> tuple[list[tuple[int, Any]], list[int]]:
        """`complete`, in the shape every window answers: (lines that leave, events that may start)."""
        return self.complete(offset, value), []

    def successor(self, offset: int) -> int | None:
        """Total order has no keys: nothing waits for anything to start."""
        return None

    def join(self, offset: int) -> None:
        """Total order has no keys: `successor` names no event, so none may join a batch."""
        raise ValueError(f"{offset} waits for no other event in total order")

    def put_back(self, offsets: list[int]) -> list[int]:
        return sorted(offsets)

    def _release_prefix(self) -> list[tuple[int, Any]]:
        released = []
        while self._slots and self._slots[0] is not _PENDING:
            released.append((self._head, self._slots.popleft()))
            self._head += 1
        return released


class OrderKind(StrEnum):
    TOTAL = "total"  # every line in input order
    KEY = "key"  # one key's events one at a time, in input order; each line as soon as it is done
    NONE = "none"  # each line as soon as it is done


TOTAL, KEY, NONE = OrderKind


@dataclass(frozen=True)
class OrderMode:
    """What `--order` asks for: `total`, `none`, or `key` on some fields of the event."""

    kind: OrderKind = TOTAL
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"key:{','.join(self.fields)}" if self.kind == KEY else self.kind

    def key_of(self, event: dict[str, Any] | None) -> Hashable | None:
        """The event's key in key mode: its fields' values, a missing field told apart from
        null, compared as canonical JSON. An event with none of the fields (or not an
        object) has no key: nothing waits for it, and it waits for nothing."""
        if self.kind != KEY or not isinstance(event, dict) or not any(name in event for name in self.fields):
            return None
        values = [[name in event, event.get(name)] for name in self.fields]
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    def window(self, capacity: int, start: int = 0) -> ReorderBuffer | KeyedWindow:
        if self.kind == TOTAL:
            return ReorderBuffer(capacity, start)
        return KeyedWindow(capacity, start)


def parse_order(text: str) -> OrderMode:
    """`total`, `none`, or `key:FIELD[,FIELD...]`; ValueError says what is wrong."""
    if text in (TOTAL, NONE):
        return OrderMode(OrderKind(text))
    kind, sep, rest = text.partition(":")
    fields = tuple(field.strip() for field in rest.split(",")) if sep else ()
    if kind != KEY or not fields or not all(fields):
        raise ValueError(f"--order must be total, none or key:FIELD[,FIELD...] (e.g. key:wiki,title), not {text!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"--order {text}: a field is named twice")
    return OrderMode(KEY, fields)


class KeyedWindow:
    """The window of key and none modes: a line leaves as soon as its event is done; the
    events of one key start one at a time, in input order (no key: no wait).

    Like `ReorderBuffer`, a deque from the low watermark (every offset below it is done)
    to the newest event admitted: here a done flag per offset, so the window counts done
    events too, until the watermark passes them. Per key, `_running` holds what is in
    flight (a chain: several same-key events may travel in one batch, in order) and
    `_waiting` what must wait for it.
    """

    def __init__(self, capacity: int, start: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._head = start
        self._done: deque[bool] = deque()
        self._key_of: dict[int, Hashable] = {}
        self._running: dict[Hashable, deque[int]] = {}
        self._waiting: dict[Hashable, deque[int]] = {}

    @property
    def next_offset(self) -> int:
        return self._head + len(self._done)

    @property
    def next_to_release(self) -> int:
        """The low watermark: every offset below it is done."""
        return self._head

    def __len__(self) -> int:
        return len(self._done)

    def is_full(self) -> bool:
        return len(self._done) >= self.capacity

    def admit(self, offset: int, key: Hashable | None = None, done: bool = False) -> bool:
        """Take the next offset in; True if it may start now. `done`: already written (a resume)."""
        if offset != self.next_offset:
            raise ValueError(f"offsets must be admitted in order: expected {self.next_offset}, got {offset}")
        if self.is_full():
            raise WindowFull(f"window of {self.capacity} events is full")
        self._done.append(done)
        if done:
            self._advance()
            return False
        if key is None:
            return True
        self._key_of[offset] = key
        if key in self._running:
            self._waiting.setdefault(key, deque()).append(offset)
            return False
        self._running[key] = deque([offset])
        return True

    def is_pending(self, offset: int) -> bool:
        index = offset - self._head
        return 0 <= index < len(self._done) and not self._done[index]

    def finish(self, offset: int, value: Any) -> tuple[list[tuple[int, Any]], list[int]]:
        """Mark `offset` done: its line leaves now. Returns it (or nothing for a repeat)
        and the offsets that may start now (the next event of its key)."""
        if not self.is_pending(offset):
            return [], []
        self._done[offset - self._head] = True
        startable = self._leave_chain(offset)
        self._advance()
        return [(offset, value)], startable

    def successor(self, offset: int) -> int | None:
        """The next event of `offset`'s key, admitted and waiting: it may join its batch."""
        waiting = self._waiting.get(self._key_of.get(offset))
        return waiting[0] if waiting else None

    def join(self, offset: int) -> None:
        """`offset` (a `successor`) travels in its predecessor's batch, right after it."""
        key = self._key_of[offset]
        waiting = self._waiting[key]
        if waiting[0] != offset:
            raise ValueError(f"{offset} is not next for its key")
        waiting.popleft()
        if not waiting:
            del self._waiting[key]
        self._running[key].append(offset)

    def put_back(self, offsets: list[int]) -> list[int]:
        """Events of a batch that did not run (lost, or skipped behind a failed one): each
        goes back in front of its key's queue, except the first in flight of its key,
        which may start again now. Returns those."""
        startable = []
        for offset in sorted(offsets, reverse=True):
            key = self._key_of.get(offset)
            if key is None:
                startable.append(offset)
                continue
            chain = self._running[key]
            if chain[0] == offset:
                startable.append(offset)
            else:
                chain.remove(offset)
                self._waiting.setdefault(key, deque()).appendleft(offset)
        return sorted(startable)

    def _leave_chain(self, offset: int) -> list[int]:
        key = self._key_of.pop(offset, None)
        if key is None:
            return []
        chain = self._running[key]
        chain.remove(offset)
        if chain:
            return []
        del self._running[key]
        waiting = self._waiting.get(key)
        if not waiting:
            return []
        following = waiting.popleft()
        if not waiting:
            del self._waiting[key]
        self._running[key] = deque([following])
        return [following]

    def _advance(self) -> None:
        while self._done and self._done[0]:
            self._done.popleft()
            self._head += 1
