"""A small real HTTP server (http.server, on a free port of 127.0.0.1) that answers every
GET with what a test's `respond(handler)` returns: a stand-in for a server this project
does not run (another origin's page, an EventStreams that sends what ours does not)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Respond = Callable[[BaseHTTPRequestHandler], tuple[str, bytes]]  # the request -> (content type, body)


@contextmanager
def http_stand_in(respond: Respond) -> Iterator[str]:
    """Serve `respond`'s answers while the block runs; yields the server's URL (no trailing slash)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            content_type, body = respond(self)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="http-stand-in", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
