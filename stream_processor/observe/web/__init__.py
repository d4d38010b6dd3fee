"""The pages, plain files shipped in the package (no CDN, no internet): the run's live page
(`dashboard.*`, served by `stream_processor.observe.dashboard`), the replay server's status page
(`status.*`), and what both use (`page.js`: the token prompt, text-only DOM helpers and
canvas charts; `dashboard.css`).

A server maps a request's path to a file with `static_file` and sends `SECURITY_HEADERS`
with it: the pages load nothing but their own files, run no inline script or style, and
cannot be framed.
"""

from __future__ import annotations

from importlib import resources

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SHARED = {"/page.js": "page.js", "/dashboard.css": "dashboard.css"}
RUN_PAGE = {"/": "dashboard.html", "/dashboard.js": "dashboard.js", **SHARED}
# The replay server's pages: its status at /, and its streams at /v2/ui, as EventStreams serves its UI.
STREAMS_PAGE = {"/v2/ui": "streams.html", "/v2/streams.js": "streams.js", "/v2/dashboard.css": "dashboard.css"}
STATUS_PAGE = {"/": "status.html", "/status.js": "status.js", **SHARED, **STREAMS_PAGE}
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


def static_file(page: dict[str, str], path: str) -> tuple[bytes, str] | None:
    """The body and content type of `path` in `page` (RUN_PAGE or STATUS_PAGE); None if
    the page has no such file. The files hold no data: serve them without a token."""
    name = page.get(path)
    if name is None:
        return None
    return resources.files(__name__).joinpath(name).read_bytes(), _TYPES[name.rsplit(".", 1)[1]]
