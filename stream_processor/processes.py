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
from collections.abc import Sequence

log = logging.getLogger(__name__)


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


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
