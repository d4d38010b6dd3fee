"""Who may use the server, beside the shared token and Host rules (protocol/tokens.py,
protocol/hosts.py, which the run's dashboard uses too): browsers' origins, and
connections per address. Pure; the shells read what a request carries from their environ or scope.
"""

from __future__ import annotations

from collections import Counter

ANY_ORIGIN = "*"  # `--cors-origin '*'`: any browser may read, as from the public EventStreams (no token then)


def origin_allowed(origin: str | None, scheme: str, host: str | None, allowed: tuple[str, ...]) -> bool:
    """A browser's cross-origin request is refused unless its origin is listed; same origin
    and non-browser clients (no Origin header) always pass."""
    if not origin:
        return True
    return origin == f"{scheme}://{host}" or origin in allowed or ANY_ORIGIN in allowed


class AddressLimit:
    """At most `limit` open connections from one client address (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.limit is not None and self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]
