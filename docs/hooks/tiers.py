"""MkDocs hook: the test tiers, generated from pytest's markers in pyproject.toml at build time.

`docs/testing.md` holds the placeholder `<!-- test-tiers -->`. The markers say what each
tier holds, so a tier added, renamed or removed shows up here without an edit.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

PLACEHOLDER = "<!-- test-tiers -->"
ROOT = Path(__file__).resolve().parents[2]


def render_tiers() -> str:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = settings["tool"]["pytest"]["ini_options"]["markers"]
    lines = ["| marker | what it marks |", "| --- | --- |"]
    for marker in markers:
        name, _, meaning = marker.partition(":")
        meaning = meaning.strip().replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| `{name.strip()}` | {meaning} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render_tiers())
