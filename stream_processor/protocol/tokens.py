"""The shared token rule: how a request offers a token, and whether it is the right one.

One rule for every endpoint of the replay server (Socket.IO, SSE, the status page) and for
the run's dashboard, so they cannot drift apart. A token may come as `Authorization: Bearer
TOKEN` (the scheme's name in any case), as `?token=TOKEN` (EventSource in a browser cannot
set headers), or, for Socket.IO, in the connect's `auth: {token}`. Pure functions.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs


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
    """Whether `offered` is the token (None expected: none is needed)."""
    if expected is None:
        return True
    if offered is None:
        return False
    # no timing hints; surrogatepass: a JSON string may hold a lone surrogate, which is a wrong token, not an error
    return hmac.compare_digest(offered.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def request_authorised(expected: str | None, authorization: str | None, query_string: str, auth: Any = None) -> bool:
    """Whether a request may have data: the token it offers (see `offered_token`) is the expected one."""
    return token_accepted(expected, offered_token(authorization, query_string, auth))
