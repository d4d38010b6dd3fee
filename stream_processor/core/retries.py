"""Running an event again: after its function raised, or its worker process died.

The client decides, not the worker, so that an event of a batch is retried alone, and
so that an event whose run keeps killing its process (a poison message) ends as an
error record instead of being redelivered forever.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_BACKOFF_MAX_S = 60.0


def backoff_before(attempt: int, backoff_s: float) -> float:
    """Seconds to wait before attempt 2, 3, ...: backoff_s, then doubling, at most a minute."""
    return min(RETRY_BACKOFF_MAX_S, backoff_s * 2 ** (attempt - 2))


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2  # runs after the first
    backoff_s: float = 1.0

    def delay_after(self, attempts: int) -> float | None:
        """Seconds before the next attempt once `attempts` have failed; None when no more."""
        if attempts > self.retries:
            return None
        return backoff_before(attempts + 1, self.backoff_s)

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def gave_up(self, attempts: int, why: str) -> str:
        """The error record's message once the function raised on every attempt."""
        return f"failed: {why} (attempt {attempts} of {self.attempts})"

    def died(self, attempts: int, why: str) -> str:
        """The error record's message for an event whose run killed its process every time."""
        return f"the worker process died while running it, {attempts} times ({why})"
