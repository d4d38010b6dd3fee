"""Percentiles of a stream of durations in bounded memory: a log-bucketed histogram
(0.5 % relative precision, exact maximum), so memory stays flat however long the stream.

A leaf (standard library only): the run's report and the replay server both keep one.
"""

from __future__ import annotations

import math
from collections import Counter

_BUCKET_GROWTH = 1.01  # bucket edges grow by 1 %; a bucket's midpoint is within 0.5 %
_SMALLEST_S = 1e-6
_LARGEST_S = 1e9  # anything longer (or infinite) shares the top bucket; the maximum stays exact


class LatencyHistogram:
    """Percentiles of a stream of durations in bounded memory."""

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float, times: int = 1) -> None:
        """One duration, or `times` equal ones (the lines of one write)."""
        self.count += times
        self.total += seconds * times
        self.max = max(self.max, seconds)
        self._buckets[self._bucket(seconds)] += times

    @staticmethod
    def _bucket(seconds: float) -> int:
        if seconds <= _SMALLEST_S:
            return -1
        return int(math.log(min(seconds, _LARGEST_S) / _SMALLEST_S, _BUCKET_GROWTH))

    @staticmethod
    def _value(bucket: int) -> float:
        if bucket < 0:
            return 0.0
        low = _SMALLEST_S * _BUCKET_GROWTH**bucket
        return low * (1 + _BUCKET_GROWTH) / 2

    def count_at_most(self, seconds: float) -> int:
        """How many durations were at most `seconds` (bucket-exact: within 1 %)."""
        return sum(count for bucket, count in self._buckets.items() if self._value(bucket) <= seconds)

    def quantile(self, q: float) -> float:
        """The q-quantile (nearest rank), within 0.5 %; the maximum exactly for q = 1."""
        if not self.count:
            return 0.0
        if q >= 1:
            return self.max
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(self._value(bucket), self.max)
        return self.max
