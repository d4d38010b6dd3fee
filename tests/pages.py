"""Reading a page in the browser as its user sees it, and keeping screenshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SHOTS_ENV = "STREAM_PROCESSOR_PAGE_SHOTS"  # a directory: keep the screenshots there too (docs/dashboard.png is one)


def text(page, element_id: str) -> str:
    return page.locator(f"#{element_id}").text_content()


def number(page, element_id: str) -> int:
    return int(text(page, element_id).replace(",", "") or 0)


def canvas(page, element_id: str) -> str:
    """The canvas's pixels, as a data URL: two reads differ when the chart changed."""
    return page.evaluate(f"document.getElementById('{element_id}').toDataURL()")


def screenshot(page, path: Path, full_page: bool = False) -> Path:
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000  # a picture, not an empty page
    if os.environ.get(SHOTS_ENV):
        shutil.copy(path, Path(os.environ[SHOTS_ENV]) / path.name)
    return path
