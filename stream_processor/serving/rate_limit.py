"""A token bucket: at most `burst` actions at once, then `rate` a second.

Pure arithmetic on a clock it is given, so it is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError(f"a token bucket needs burst >= 1 and rate > 0, got {burst} and {rate}")
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> bool:
        """Spend a token if there is one; False (and nothing spent) if the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
