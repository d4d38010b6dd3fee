"""The reorder buffer: results come back in any order and leave in input order.

Pure data structure, no I/O and no threads, so it can be property-tested on its own.
It is a deque of slots, one per admitted offset, starting at the next offset to release.
The deque's length is the number of events in flight; its capacity is the window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
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

    def admit(self, offset: int) -> None:
        """Reserve a slot for `offset`, which must be the next one in sequence."""
        if offset != self.next_offset:
            raise ValueError(f"offsets must be admitted in order: expected {self.next_offset}, got {offset}")
        if self.is_full():
            raise WindowFull(f"window of {self.capacity} events is full")
        self._slots.append(_PENDING)

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

    def _release_prefix(self) -> list[tuple[int, Any]]:
        released = []
        while self._slots and self._slots[0] is not _PENDING:
            released.append((self._head, self._slots.popleft()))
            self._head += 1
        return released
