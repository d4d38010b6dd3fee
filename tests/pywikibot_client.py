"""pywikibot's `EventStreams` (a client nobody here wrote) against a replay server.

Usage: python pywikibot_client.py URL STREAMS SINCE TOTAL
  reads STREAMS (comma separated) from URL since SINCE (ISO-8601), as pywikibot builds
  the request (/v2/stream/a,b?since=...), and prints each event's JSON, one per line,
  until TOTAL have come. A dropped connection is requests-sse's and pywikibot's business:
  they reconnect with Last-Event-ID. Nothing of pywikibot is changed but where its site
  says the streams are: this server instead of stream.wikimedia.org.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("PYWIKIBOT_NO_USER_CONFIG", "1")  # no user-config.py: a bare client

import pywikibot  # noqa: E402 (after its environment)
from pywikibot.comms.eventstreams import EventStreams  # noqa: E402


def main() -> None:
    url, streams, since, total = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
    site = pywikibot.Site("en", "wikipedia", interface="BaseSite")  # no API, so no login: a bare stream client
    site.eventstreams_host = lambda: url  # where its family says the streams are
    stream = EventStreams(site=site, streams=streams, since=since, retry=100, timeout=30)
    stream.set_maximum_items(total)
    for event in stream:
        print(json.dumps(event), flush=True)


if __name__ == "__main__":
    main()
