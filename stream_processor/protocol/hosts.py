"""The shared Host rule: a request must name this server as its Host, so a web page
elsewhere cannot reach it through DNS rebinding. Used by the replay server and by the
run's dashboard alike. Pure functions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

LOOPBACK_NAMES = frozenset({"localhost"})
ANY_HOST = "*"  # in the allowed hosts: no Host check at all (behind a proxy that checks it)
MAX_HOST_CHARS = 300
# host[:port]: a DNS name (letters, digits, `.`, `-`, `_`), an IPv4 address, or an IPv6 one in brackets.
HOST_HEADER = re.compile(r"(?P<name>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


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
