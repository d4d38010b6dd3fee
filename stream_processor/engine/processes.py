"""Owning child processes: start them so they cannot outlive us, stop them for sure.

Each child gets its own session (so a terminal's Ctrl-C reaches only us, and we decide
how it stops) and, on Linux, a parent-death signal (so even a SIGKILL of the owner
takes it down). Stopping signals the whole process group, so a child's own children
(Celery's pool processes) go too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class StartError(Exception):
    """A process we own (broker, worker, server) did not start."""


def set_parent_death_signal(signum: int) -> None:
    """Linux: deliver `signum` to this process when the thread that forked it exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return  # not Linux: the owner's explicit stop is the only guard
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0)


def _detach_and_die_with_parent() -> None:
    set_parent_death_signal(signal.SIGKILL)


def spawn(command: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Start `command` in its own process group, bound to die with this process.

    Call it from a thread that lives as long as the child should (the main thread):
    Linux sends the parent-death signal when the forking *thread* exits.
    """
    return subprocess.Popen(
        list(command),
        start_new_session=True,
        preexec_fn=_detach_and_die_with_parent,
        **popen_kwargs,
    )


def wait_until_ready(
    process: subprocess.Popen,
    is_ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    error: type[StartError] = StartError,
    why_it_exited: Callable[[], str] | None = None,
    poll_s: float = 0.01,
) -> None:
    """Poll `is_ready` until it holds; if the child exits first, time runs out or we are
    interrupted, kill what is left of it and raise."""
    deadline = time.monotonic() + timeout_s
    try:
        while not is_ready():
            if process.poll() is not None:
                reason = why_it_exited() if why_it_exited else f"code {process.returncode}"
                raise error(f"{what} exited at start: {reason}")
            if time.monotonic() > deadline:
                raise error(f"{what} not ready after {timeout_s:.0f} s")
            time.sleep(poll_s)
    except BaseException:
        stop(process, signal.SIGKILL, grace_s=0)  # the whole group: its children too
        raise


def stop(process: subprocess.Popen, first_signal: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
    """Ask the process group to stop with `first_signal`, then SIGKILL whatever is left."""
    _signal_group(process, first_signal)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("pid %s did not stop within %.0f s; killing it", process.pid, grace_s)
    # The leader may be gone while its children linger: the group still has an id.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def log_tail(path: Path | None, chars: int = 800, when_none: str = "no log") -> str:
    """The end of a process's log, to say why it exited (a start that failed, a death)."""
    if path is None:
        return when_none
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "its log is empty"
    except OSError:
        return "no log"


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


class Supervisor:
    """Keeps one owned child running: when it dies unexpectedly, it is started again.

    `start()` must return a running (and ready) child. `before_restart()` runs after a
    crash, once whatever was left of the child is killed, and before the next start
    (e.g. to hand the dead worker's tasks back to the queue); `after_restart(died_at)` once
    the new child is ready, with the `time.monotonic()` the death was seen at (e.g. to send
    again what was sent to the dead one). After `max_restarts`
    within `window_s`, or a failed restart, it stops trying and calls `on_give_up`.
    """

    def __init__(
        self,
        name: str,
        start: Callable[[], subprocess.Popen],
        before_restart: Callable[[], None] | None = None,
        on_give_up: Callable[[Exception], None] | None = None,
        max_restarts: int = 5,
        window_s: float = 60.0,
        after_restart: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self._start = start
        self._before_restart = before_restart
        self._after_restart = after_restart
        self.on_give_up = on_give_up
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.restarts = 0
        self.process: subprocess.Popen | None = None
        self._restart_times: list[float] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._watcher: threading.Thread | None = None

    def start(self) -> Supervisor:
        process = self.process = self._start()
        # The watcher restarts children from its own thread, and their parent-death
        # signal fires when that thread ends: it ends only once stop() has stopped them.
        self._watcher = threading.Thread(
            target=self._watch, args=(process,), name=f"supervise-{self.name}", daemon=True
        )
        self._watcher.start()
        return self

    def _watch(self, process: subprocess.Popen) -> None:
        while True:
            code = process.wait()
            with self._lock:
                if self._stopping:
                    return
                log.warning("%s exited unexpectedly (code %s); starting it again", self.name, code)
                try:
                    process = self._restart(process)
                except Exception as exc:
                    log.error("%s: giving up: %s", self.name, exc)
                    if self.on_give_up:
                        self.on_give_up(exc)
                    return

    def _restart(self, dead: subprocess.Popen) -> subprocess.Popen:
        """Start the child again in place of `dead`; returns the new one."""
        now = time.monotonic()  # when the death was seen
        self._restart_times = [t for t in self._restart_times if now - t < self.window_s] + [now]
        if len(self._restart_times) > self.max_restarts:
            raise StartError(f"{self.name} died {len(self._restart_times)} times within {self.window_s:.0f} s")
        stop(dead, signal.SIGKILL, grace_s=0)  # anything the dead leader left behind
        if self._before_restart:
            self._before_restart()
        process = self.process = self._start()
        self.restarts += 1
        if self._after_restart:
            self._after_restart(now)
        return process

    def stop(self, first_signal: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            if self.process is not None:
                stop(self.process, first_signal, grace_s)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=grace_s + 5)
