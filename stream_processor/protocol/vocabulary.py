"""The replay protocol's shared vocabulary: the namespace, the defaults, the token's
environment variable. Shared by the server and the client, so neither imports the
other's machinery; what a `subscribe` may ask for is the server's (serving/subscription.py).
"""

from __future__ import annotations

NAMESPACE = "/rc"
DEFAULT_WINDOW = 1000
DEFAULT_MAX_PAYLOAD = 1_000_000  # bytes a client may send in one message (engine.io's limit)
DEFAULT_SUBSCRIBE_BURST = 10  # subscribes a client may send at once...
DEFAULT_SUBSCRIBE_RATE = 2.0  # ...and then this many a second
TOKEN_ENV = "STREAM_PROCESSOR_TOKEN"  # the shared secret, for servers and clients alike
