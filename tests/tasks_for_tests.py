"""User task functions the end-to-end tests name with --task (importable via PYTHONPATH)."""

from __future__ import annotations

import ctypes
import os
import signal
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


def fail_on_odd_ids_twice(event: dict) -> dict:
    """Raises on the first two attempts of events with an odd id; every run of every event
    is counted in a file under $FLAKY_DIR."""
    attempts = Path(os.environ["FLAKY_DIR"]) / f"{event['id']}.attempts"
    with attempts.open("a") as log:
        log.write("x")
    if event["id"] % 2 and attempts.stat().st_size <= 2:
        raise ConnectionError(f"flaky scorer on event {event['id']}")
    return event


def _length_and_title(events: list[dict]) -> list[dict]:
    """A batch function: one result per event; raises for a batch holding a "boom" event,
    and returns one result too few for a batch holding a "short" event."""
    if any(event.get("boom") for event in events) and len(events) > 1:
        raise RuntimeError("the model refused the batch")
    results = [{"id": event.get("id"), "title_length": len(event.get("title") or "")} for event in events]
    if any(event.get("short") for event in events) and len(events) > 1:
        return results[:-1]
    return results


def title_lengths(events: list[dict]) -> list[dict]:
    return _length_and_title(events)


title_lengths.stream_processor_batch = True


def echo_event(event: dict) -> dict:
    """A transforming task that wraps the event it got: each line must be {"echo": <the event as read>}."""
    return {"echo": event}


def die_on_poison(event: dict) -> dict:
    """Kills its own worker process for an event marked `"poison": HOW` (a poison message),
    counting each run of it in a file under $POISON_DIR; other events pass through."""
    how = event.get("poison")
    if how is None:
        return event
    with (Path(os.environ["POISON_DIR"]) / f"{event['id']}.runs").open("a") as runs:
        runs.write("x")
    if how == "exit":
        os._exit(3)
    if how == "systemexit":
        raise SystemExit(1)
    if how == "keyboardinterrupt":
        raise KeyboardInterrupt
    if how == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    raise ValueError(f"unknown poison {how!r}")


def held_or_short(event: dict) -> dict:
    """Counts each run of each event in $HOLD_DIR/runs/ID. An event marked `"hold": true`
    waits (up to 2 minutes) for the file $HOLD_DIR/release, which the test creates once
    what it is checking has happened: a slow event that ends when the test says so. An
    event marked `"die": true` kills its process on its first run. Others sleep `sleep` s."""
    hold_dir = Path(os.environ["HOLD_DIR"])
    runs = hold_dir / "runs"
    runs.mkdir(exist_ok=True)
    with (runs / str(event["id"])).open("a") as count:
        count.write("x")
    if event.get("die") and (runs / str(event["id"])).stat().st_size == 1:
        time.sleep(event.get("sleep", 0))
        os._exit(5)
    if event.get("hold"):
        deadline = time.monotonic() + 120
        while not (hold_dir / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return event
    time.sleep(event.get("sleep", 0))
    return event
