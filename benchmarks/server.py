"""The replay server on its own, in each async mode: how fast it delivers to one client
(no pacing), and how closely it keeps to the schedule with many clients at 1x.

Rates are measured from the client's first event to its `end`, for the official clients
(socket.io-client as a plain RCStream subscriber, the npm `eventsource` client) and for
ours (`ReplayClient`, with batches, and `EventStreamClient`, draining their inbox only:
no processing). Pacing is the server's own figure (`/status`: how late each paced event
went out, over every event of every client) while half the clients speak Socket.IO and
half read the event stream, all in one Node process of their own.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.runs import ROOT, RunFailed
from stream_processor.core.contracts import End
from stream_processor.protocol.event_stream import STREAM_PATH
from stream_processor.run.streaming import local_server
from stream_processor.serving import ASYNC_MODES
from stream_processor.sources.source import SSE, TRANSPORTS, open_source

log = logging.getLogger("benchmarks")

RATE_TARGETS = {"node": 10_000, "ours": 8_000}  # events/s; ours needs it on one transport at least
PACING_P99_TARGET_MS = 20.0
JS_DIR = ROOT / "benchmarks" / "js"
NODE_TIMEOUT_S = 900.0
NO_NODE = "skipped: node and npm are needed for the official clients"


def rates(recording: Path, workdir: Path) -> list[dict[str, Any]]:
    """Events a second to one client, per async mode, transport and client (ours only without node)."""
    node = node_clients(workdir)
    rows = [] if node else [{"skipped": f"the Node clients: {NO_NODE}"}]
    for mode in ASYNC_MODES:
        for transport in TRANSPORTS:
            for client in ("node", "ours") if node else ("ours",):
                log.info("server rate: %s, %s, %s client ...", mode, transport, client)
                token = secrets.token_urlsafe(16)
                with local_server(recording, token, mode) as server:
                    url = server.url
                    events, seconds = (
                        node_rate(node, transport, url, token) if client == "node" else our_rate(transport, url, token)
                    )
                rows.append(
                    {
                        "async_mode": mode,
                        "transport": transport,
                        "client": client,
                        "events": events,
                        "seconds": round(seconds, 3),
                        "events_per_s": round(events / seconds),
                        "target_events_per_s": RATE_TARGETS[client],
                    }
                )
    return rows


def pacing(recording: Path, workdir: Path, clients: int) -> list[dict[str, Any]]:
    """The server's pacing error with `clients` clients at 1x, per async mode."""
    node = node_clients(workdir)
    if not node:
        return [{"skipped": NO_NODE}]
    rows = []
    for mode in ASYNC_MODES:
        log.info("server pacing: %s, %d clients at 1x ...", mode, clients)
        token = secrets.token_urlsafe(16)
        with local_server(recording, token, mode) as server:
            url = server.url
            started = time.monotonic()
            received = run_node(node, ["paced_clients.mjs", url, token, str(clients)])
            status = server_status(url, token)
        figures = status["pacing_error_ms"]
        rows.append(
            {
                "async_mode": mode,
                "clients": clients,
                "events": received["events"],
                "paced_events": figures["count"],
                "wall_s": round(time.monotonic() - started, 1),
                "pacing_p50_ms": figures["p50"],
                "pacing_p99_ms": figures["p99"],
                "pacing_max_ms": figures["max"],
                "target_p99_ms": PACING_P99_TARGET_MS,
            }
        )
    return rows


def node_clients(workdir: Path) -> tuple[str, Path] | None:
    """node, and a directory with the official clients installed (once per benchmark); None without node."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        log.warning("server benchmarks: %s", NO_NODE)
        return None
    work = workdir / "js"
    if not (work / "node_modules").is_dir():
        shutil.copytree(JS_DIR, work, ignore=shutil.ignore_patterns("node_modules"), dirs_exist_ok=True)
        install = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if install.returncode != 0:
            raise RunFailed(f"npm install failed: {install.stderr.strip()[-300:]}")
    return node, work


def node_rate(node: tuple[str, Path], transport: str, url: str, token: str) -> tuple[int, float]:
    figures = run_node(node, ["rate.mjs", transport, url, token])
    return figures["events"], figures["seconds"]


def run_node(node: tuple[str, Path], args: list[str]) -> dict[str, Any]:
    executable, work = node
    done = subprocess.run([executable, *args], cwd=work, capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    if done.returncode != 0:
        raise RunFailed(f"node {args[0]} exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def our_rate(transport: str, url: str, token: str) -> tuple[int, float]:
    """Our source drained as `consume` would, acknowledging, without processing anything."""
    source = open_source(url + (STREAM_PATH if transport == SSE else ""), token=token, transport=transport)
    source.connect()
    events, first = 0, None
    try:
        while not isinstance(source.inbox.get(timeout=120), End):
            first = first if first is not None else time.monotonic()
            events += 1
            if events % 100 == 0:  # both sources hold back at their window until acknowledged
                source.acknowledge(events, caught_up=False)
        return events, time.monotonic() - first
    finally:
        source.close()


def server_status(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def paced_recording(source: Path, events: int, path: Path) -> Path:
    """The first `events` lines of a recording (real timestamps: replayed at 1x, they take real time)."""
    with open(source, "rb") as lines, open(path, "wb") as out:
        for _, line in zip(range(events), lines, strict=False):
            out.write(line)
    return path
