"""What a client or a tool learns about this server without reading a stream: the OpenAPI
document at `/?spec` (as EventStreams serves it: tools and its own UI read the stream names
from `paths["/v2/stream/{streams}"].get.parameters[0].schema.items.enum`), and the page at
`/v2/ui` that lists the streams and shows one live (observe/web/streams.*).

The page's files hold no data and are served without a token, as every page's are; the spec
names the streams served (the operator's choice of recordings), so it needs the token as
every data endpoint does, and the page asks for it.
"""

from __future__ import annotations

from typing import Any

from stream_processor.serving.streams import StreamCatalog

SPEC_QUERY = "spec"
UI_PATH = "/v2/ui"


def openapi_spec(catalog: StreamCatalog) -> dict[str, Any]:
    """The spec, its streams enum holding every name a stream may be asked for by (aliases too, as EventStreams)."""
    names = catalog.names()
    streams_route = _stream_route("events of the streams listed, comma separated, merged in time order")
    streams_route["get"]["parameters"].insert(
        0,
        {
            "name": "streams",
            "in": "path",
            "required": True,
            "description": "stream names or aliases, comma separated",
            "style": "simple",
            "explode": False,
            "schema": {"type": "array", "items": {"type": "string", "enum": names}},
        },
    )
    paths: dict[str, Any] = {"/v2/stream/{streams}": streams_route}
    for name in names:
        (stream,) = catalog.resolve([name])
        alias_of = f" (an alias of {stream.name})" if name != stream.name else ""
        paths[f"/v2/stream/{name}"] = _stream_route(f"{name} events{alias_of}, from topic {stream.topic}")
    return {
        "openapi": "3.0.0",
        "info": {
            "title": "stream_processor replay server",
            "version": "2",
            "description": "A recording replayed in the shape of Wikimedia EventStreams (SSE), "
            "and over Socket.IO in RCStream's protocol (namespace /rc).",
        },
        "paths": paths,
    }


def _stream_route(description: str) -> dict[str, Any]:
    return {
        "get": {
            "tags": ["Streams"],
            "summary": description.split(",")[0],
            "description": description,
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "where to resume: the id of the last event received, a JSON array of "
                    "{topic, partition, offset or timestamp}, each the position to read next",
                    "schema": {"type": "string"},
                },
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "start at the first event at or after this time: ISO-8601, or epoch ms",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {"description": "the events", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                "204": {"description": "nothing left to send (this server's extension: a replay ends)"},
                "400": {"description": "an unknown stream, or a request this server cannot read"},
                "404": {"description": "a Last-Event-ID naming a topic that is not the stream's"},
                "429": {"description": "too many connections from this address"},
            },
        }
    }
