"""User task functions the end-to-end tests name with --task (importable via PYTHONPATH)."""

from __future__ import annotations


def title_length(event: dict) -> dict:
    """A transforming task: a new JSON object per event."""
    return {"id": event.get("id"), "title_length": len(event.get("title") or "")}


def fail_on_new_pages(event: dict) -> dict:
    """Raises for some events, so their lines must hold error records."""
    if event.get("type") == "new":
        raise RuntimeError(f"cannot score new page {event.get('id')}")
    return event
