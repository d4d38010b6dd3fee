"""Placeholder until the helper's module lands: EventStreams' meta and canaries."""

from __future__ import annotations

from typing import Any


def is_canary(event: dict[str, Any]) -> bool:
    meta = event.get("meta")
    return isinstance(meta, dict) and meta.get("domain") == "canary"
