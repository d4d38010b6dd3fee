"""Headless Chromium for the dashboard's benchmark and its tests: Debian's `chromium`,
driven by Playwright (`pip install playwright`; its own browser download is not used).

Each `HeadlessChromium` has a fresh profile of its own and is stopped for sure on the way
out, its processes included. Every page it opens collects console errors and uncaught
exceptions, which a test can assert are none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "STREAM_PROCESSOR_CHROMIUM"  # a Chromium binary other than `chromium` on PATH
# Quiet and self-contained: no sandbox (root in a container), no GPU, and none of Chromium's
# own traffic (updates, sync, safe browsing): as root, with that traffic on, its connections
# to the page are refused many at a time.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
STOP_S = 10.0


def find_chromium() -> str | None:
    """The Chromium to drive, or None if none is installed (`apt-get install chromium`)."""
    chosen = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    return chosen if chosen and Path(chosen).exists() else None


class HeadlessChromium:
    """`with HeadlessChromium() as browser: page = browser.page(url)`."""

    def __init__(self, executable: str | None = None) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no Chromium installed (apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(prefix="stream-processor-chromium-")
        self._playwright: Any = None
        self._context: Any = None
        self.problems: list[str] = []  # console errors and uncaught exceptions of every page, in order

    def __enter__(self) -> HeadlessChromium:
        from playwright.sync_api import sync_playwright  # the [test] extra

        self._playwright = sync_playwright().start()
        try:
            self._context = self._playwright.chromium.launch_persistent_context(
                self._profile.name, executable_path=self.executable, headless=True, args=list(FLAGS), viewport=DESKTOP
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def page(self, url: str | None = None, viewport: dict[str, int] = DESKTOP) -> Any:
        """A new tab at this size, watched for errors; at `url` if given."""
        page = self._context.new_page()
        page.set_viewport_size(viewport)
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: uncaught {error}"))
        if url is not None:
            page.goto(url)
        return page

    def _console(self, page: Any, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"{page.url}: console error: {message.text}")

    def close(self) -> None:
        """Close the browser and stop Playwright's driver; then no process of this
        profile may be left (any that is gets SIGKILL, by its pid)."""
        try:
            if self._context is not None:
                self._context.close()
                self._context = None
        finally:
            if self._playwright is not None:
                self._playwright.stop()
                self._playwright = None
            self._stop_leftovers()
            self._profile.cleanup()

    def pids(self) -> list[int]:
        """The browser's processes: those with its profile on their command line."""
        needle = self._profile.name.encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if needle in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def _stop_leftovers(self) -> None:
        deadline = time.monotonic() + STOP_S
        while (pids := self.pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
