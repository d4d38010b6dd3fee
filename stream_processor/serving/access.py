"""Who may use the server: the shared token, browsers' origins, connections per address.

The same rules for every endpoint (Socket.IO, SSE, the status page). A token may come as
`Authorization: Bearer TOKEN`, as `?token=TOKEN` (EventSource in a browser cannot set
headers), or, for Socket.IO, in the connect's `auth: {token}`. Pure functions of what a
request carries; the shells read those from their environ or scope.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Any
from urllib.parse import parse_qs


def offered_token(authorization: str | None, query_string: str, auth: Any = None) -> str | None:
    """The token a request offers, if any: Socket.IO auth first, then the header, then the query."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    tokens = parse_qs(query_string).get("token")
    return tokens[0] if tokens else None


def token_accepted(expected: str | None, offered: str | None) -> bool:
    if expected is None:
        return True
    if offered is None:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())  # no timing hints


def origin_allowed(origin: str | None, scheme: str, host: str | None, allowed: tuple[str, ...]) -> bool:
    """A browser's cross-origin request is refused unless its origin is listed; same origin
    and non-browser clients (no Origin header) always pass."""
    if not origin:
        return True
    return origin == f"{scheme}://{host}" or origin in allowed


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
