"""The dashboard scenario's instruments: a headless Chromium tab that opens a run's live
page as soon as it listens and says afterwards what the page showed, and the CPU time a
run's process and the browser used (steadier than throughput on a shared machine)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from harness.browser import HeadlessChromium

OPEN_TIMEOUT_MS = 10_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PageWatch:
    """`watch` is the harness's callback while the run goes (see runs.Watch): the first
    time the port answers, the tab opens the page and waits for its first snapshot."""

    def __init__(self, browser: HeadlessChromium, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.page: Any = browser.page()
        self.received_when_opened: int | None = None  # 0: the page was there before the first event

    def watch(self, _pid: int) -> None:
        if self.received_when_opened is not None or not self._listening():
            return
        self.page.goto(self.url)
        # A selector, not a JavaScript predicate: the page's Content-Security-Policy forbids eval.
        self.page.wait_for_selector('#status:not([data-state="connecting"])', timeout=OPEN_TIMEOUT_MS)
        self.received_when_opened = int(self._text("received").replace(",", "").replace("–", "0") or 0)

    def final_events(self) -> int | None:
        """The events the page's final summary shows (None if it shows none); then the tab closes."""
        try:
            self.page.wait_for_selector("#final:not([hidden])", timeout=OPEN_TIMEOUT_MS)
            return int(self._text("written").replace(",", ""))
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: no summary came
            return None
        finally:
            self.page.close()

    def _text(self, element_id: str) -> str:
        return self.page.locator(f"#{element_id}").text_content() or ""

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU seconds of the run's main process (the last reading before it exits: at most a
    poll short), and of other processes (the browser's) from the first reading to `stop()`."""

    def __init__(self, others: Callable[[], Iterable[int]] = tuple) -> None:
        self.run_s = 0.0
        self.others = others
        self._others_at_start: dict[int, float] | None = None
        self._others_at_stop: dict[int, float] = {}

    def watch(self, pid: int) -> None:
        self.run_s = cpu_seconds(pid) or self.run_s
        if self._others_at_start is None:
            self._others_at_start = self._read_others()

    def stop(self) -> float:
        """The other processes' CPU seconds since the first reading."""
        self._others_at_stop = self._read_others()
        start = self._others_at_start or {}
        return sum(used - start.get(pid, 0.0) for pid, used in self._others_at_stop.items())

    def _read_others(self) -> dict[int, float]:
        return {pid: used for pid in self.others() if (used := cpu_seconds(pid)) is not None}


def both(*watches: Callable[[int], None]) -> Callable[[int], None]:
    def watch(pid: int) -> None:
        for each in watches:
            each(pid)

    return watch
