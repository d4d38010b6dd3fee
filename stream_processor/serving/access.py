"""Who may use the server: the Host it is asked for, the shared token, browsers' origins,
connections per address.

The same rules for every endpoint (Socket.IO, SSE, the status page), and for the run's
dashboard. A token may come as `Authorization: Bearer TOKEN` (the scheme's name in any
case), as `?token=TOKEN` (EventSource in a browser cannot set headers), or, for
Socket.IO, in the connect's `auth: {token}`. Pure functions of what a request carries;
the shells read those from their environ or scope.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

LOOPBACK_NAMES = frozenset({"localhost"})
ANY_HOST = "*"  # in the allowed hosts: no Host check at all (behind a proxy that checks it)
MAX_HOST_CHARS = 300
# host[:port]: a DNS name (letters, digits, `.`, `-`, `_`), an IPv4 address, or an IPv6 one in brackets.
HOST_HEADER = re.compile(r"(?P<name>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def offered_token(authorization: str | None, query_string: str, auth: Any = None) -> str | None:
    """The token a request offers, if any: Socket.IO auth first, then the header, then the query.
    The header's scheme is case-insensitive (`bearer`, `BEARER`) and spaces around the token do not count."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    parts = (authorization or "").split(maxsplit=1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip()
    tokens = parse_qs(query_string).get("token")
    return tokens[0] if tokens else None


def token_accepted(expected: str | None, offered: str | None) -> bool:
    if expected is None:
        return True
    if offered is None:
        return False
    # no timing hints; surrogatepass: a JSON string may hold a lone surrogate, which is a wrong token, not an error
    return hmac.compare_digest(offered.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


# -- the Host a request names ---------------------------------------------------------------


def host_name(host_header: str) -> str | None:
    """The host a `Host` header names (lower case; no port, brackets or final dot), or
    None when it is not one well-formed host[:port] (two Host headers arrive joined by a comma)."""
    match = HOST_HEADER.fullmatch(host_header) if len(host_header) <= MAX_HOST_CHARS else None
    return _normal(match["name"]) if match else None


def host_allowed(host_header: str | None, allowed: Iterable[str] = ()) -> bool:
    """Whether a request names this server as its Host, so a web page elsewhere cannot reach
    it through DNS rebinding (its name made to point at 127.0.0.1: the browser still sends
    that name as Host). Allowed: no (or an empty) Host (not a browser), `localhost`, a loopback
    address, and the names and addresses in `allowed`; there, `*` allows any host, and an
    unspecified address (0.0.0.0 or ::, a server bound to every address) any IP address,
    since a page's Host is a name whenever DNS brought it here."""
    if not host_header:
        return True
    name = host_name(host_header)
    if name is None:
        return False
    if name in LOOPBACK_NAMES:
        return True
    address = _address(name)
    if address is not None and address.is_loopback:
        return True
    entries = {host_name(entry) or _normal(entry) for entry in allowed}  # an entry may carry a port: ignored
    if ANY_HOST in entries or name in entries:
        return True
    return address is not None and any(_unspecified(entry) for entry in entries)


def _normal(name: str) -> str:
    name = name.strip("[]").lower()
    if name.endswith(".") and name != ".":
        name = name[:-1]
    address = _address(name)
    return name if address is None else str(address)


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped or address


def _unspecified(entry: str) -> bool:
    address = _address(entry)
    return address is not None and address.is_unspecified


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
