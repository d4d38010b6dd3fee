"""User task functions the end-to-end tests name with --task (importable via PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def title_length(event: dict) -> dict:
    """A transforming task: a new JSON object per event."""
    return {"id": event.get("id"), "title_length": len(event.get("title") or "")}


def fail_on_new_pages(event: dict) -> dict:
    """Raises for some events, so their lines must hold error records."""
    if event.get("type") == "new":
        raise RuntimeError(f"cannot score new page {event.get('id')}")
    return event


def fail_twice_then_pass(event: dict) -> dict:
    """Raises on an event's first two attempts, counted in files under $FLAKY_DIR."""
    attempts = Path(os.environ["FLAKY_DIR"]) / f"{event['id']}.attempts"
    with attempts.open("a") as log:
        log.write("x")
    if attempts.stat().st_size <= 2:
        raise ConnectionError(f"flaky scorer on event {event['id']}")
    return event


def sleep_for_field(event: dict) -> dict:
    """Sleeps `event["sleep"]` seconds (0 if absent): some events outlast --task-timeout."""
    time.sleep(event.get("sleep", 0))
    return event


def ignore_the_soft_time_limit(event: dict) -> dict:
    """Swallows Celery's soft time limit, so only the hard limit can stop it."""
    deadline = time.monotonic() + event.get("sleep", 0)
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:  # noqa: BLE001 - SoftTimeLimitExceeded, on purpose
            continue
    return event
