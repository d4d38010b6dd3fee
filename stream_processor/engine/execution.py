"""Running events where the work happens: parse each line, call the function under a
time limit, and turn what it returns into the line to write.

Shared by the Celery task and the in-process engine, so both give the same outcome per
event. Lines travel as strings and come back as strings: a JSON library's hooks on the
way (kombu decodes {"__type__": ...} objects into datetimes, Decimals, bytes) never see
an event, so any JSON object reaches the function, and comes back, exactly as it was.

An outcome is a list [kind, value, run_s] (the kinds: core/outcomes.py):
- DONE: value is the line to write, or None when the result equals the event (the
  client then writes the very line it read, byte for byte);
- FAILED: the function raised; value says what (the client may run it again);
- TIMED_OUT: it ran past its time limit (not run again: it would most likely again);
- INVALID: the line or the result cannot be a JSON line; value says why;
- SKIPPED: not run, because the event it must follow (same key, earlier in the batch)
  failed: it waits for that one's retry, so a key's events still run in input order.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from stream_processor.core.outcomes import DONE, FAILED, INVALID, SKIPPED, TIMED_OUT, Outcome
from stream_processor.engine.batch_run import BatchRun

log = logging.getLogger(__name__)

MAX_ALARM_S = 1e8  # longer is "no limit" (setitimer overflows near 1e10 s)


class EventTimeout(Exception):
    """Raised inside the function when it runs past its time limit (SIGALRM)."""


def load_function(path: str) -> Callable[..., Any]:
    """Import `package.module:function` and return the function."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--task must look like package.module:function, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--task {path}: cannot import {module_name} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"--task {path}: {module_name} has no function {attribute!r}")
    return function


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def batch_function(function: Callable) -> Callable:
    """Mark `function` as taking a list of events and returning a list of results of the
    same length, so a batch of events is scored in one call."""
    function.stream_processor_batch = True  # type: ignore[attr-defined]  # a marker attribute: not in Callable's type
    return function


def is_batch_function(function: Callable) -> bool:
    return getattr(function, "stream_processor_batch", False) is True


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise EventTimeout in this thread after `seconds`. Only the main thread gets
    signals: elsewhere (the in-process engine's threads) there is no limit."""
    if not seconds or seconds > MAX_ALARM_S or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise EventTimeout(f"ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


MAX_ABANDONED_ENV = "STREAM_PROCESSOR_MAX_ABANDONED"
DEFAULT_MAX_ABANDONED = 32  # threads left running past their limit in one process, before it is recycled


def call_within(call: Callable[[], Any], seconds: float | None) -> Any:
    """`call()`, stopped with EventTimeout after `seconds`, however this process runs tasks:
    - its main thread (prefork, a lone process): SIGALRM interrupts it (`time_limit`);
    - gevent or eventlet: a green Timeout, raised at its next yield (I/O, sleep); a
      function that computes without yielding holds the whole process until it ends;
    - another thread (the threads pool, the in-process engine): no signal reaches it, so
      it runs in a helper thread, abandoned at the limit: it goes on running, its result
      is discarded, the event is TIMED_OUT at once. See `abandoned_threads` for the bound."""
    if not seconds or seconds > MAX_ALARM_S:
        return call()
    green = _green_timeout()
    if green is not None:
        with green(seconds, EventTimeout(f"ran past its time limit of {seconds:g} s")):
            return call()
    if threading.current_thread() is threading.main_thread():
        with time_limit(seconds):
            return call()
    return _in_helper_thread(call, seconds)


def _green_timeout():
    """gevent's or eventlet's Timeout class when this process is monkey-patched by one."""
    if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("threading"):
        import gevent

        return gevent.Timeout
    if "eventlet.patcher" in sys.modules and sys.modules["eventlet.patcher"].is_monkey_patched("thread"):
        import eventlet

        return eventlet.Timeout
    return None


_abandoned: list[threading.Thread] = []  # helper threads still running past their limit
_abandoned_lock = threading.Lock()
_when_too_many: list[Callable[[int], None]] = []  # told the count when it reaches max_abandoned()


def when_too_many_abandoned(hook: Callable[[int], None]) -> None:
    """What to do when too many abandoned threads pile up (a worker recycles its process)."""
    _when_too_many[:] = [hook]


def max_abandoned() -> int:
    return int(os.environ.get(MAX_ABANDONED_ENV) or DEFAULT_MAX_ABANDONED)


def abandoned_threads() -> int:
    """Helper threads of this process still running past their limit. Each holds what its
    call holds (a stack, a socket, a core if it computes) until it ends by itself: at
    `max_abandoned()` of them, the hook set by `when_too_many_abandoned` is told (a worker restarts its
    process, warmly: the tasks it runs end first)."""
    with _abandoned_lock:
        _abandoned[:] = [thread for thread in _abandoned if thread.is_alive()]
        return len(_abandoned)


def _in_helper_thread(call: Callable[[], Any], seconds: float) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as it was
            box["error"] = exc

    helper = threading.Thread(target=run, name="event-call", daemon=True)
    helper.start()
    helper.join(seconds)
    if helper.is_alive():
        with _abandoned_lock:
            _abandoned.append(helper)
        count = abandoned_threads()
        log.warning("an event ran past its time limit of %g s: left running (%d such in this process)", seconds, count)
        if count >= max_abandoned():
            for hook in _when_too_many:
                hook(count)
        raise EventTimeout(f"ran past its time limit of {seconds:g} s (left running, its result discarded)")
    if "error" in box:
        raise box["error"]
    return box["result"]


def run_events(
    function: Callable[..., Any],
    lines: list[str],
    timeout_s: float | None = None,
    call_kwargs: dict[str, Any] | None = None,
    follows: list[int] | None = None,
    run: BatchRun | None = None,
) -> list[Outcome | None]:
    """One outcome per line, in order. A batch function gets them all in one call; if it
    raises or returns a list of another length, each event is run alone instead.
    `follows[i]` is the index of the event line i must follow (same key), or -1.
    `run`: says which event starts next and hears each one end (see batch_run.py); the
    events it hands back are not run, and their outcome is None."""
    call_kwargs = call_kwargs or {}
    if is_batch_function(function) and len(lines) > 1:
        together = _run_as_batch(function, lines, timeout_s, call_kwargs)
        if together is not None and not _any_failed_in_a_chain(together, follows):
            return list(together)
    run = run or BatchRun(len(lines))
    outcomes: list[Outcome | None] = [None] * len(lines)
    while (index := run.start_next()) is not None:
        # The event it follows started (a hand-back takes a suffix), so it has ended: its outcome.
        followed = outcomes[follows[index]] if follows and 0 <= follows[index] < index else None
        if followed is not None and followed[0] in (FAILED, SKIPPED):
            outcome = [SKIPPED, "the event before it with the same key failed; it waits for its retry", 0.0]
        else:
            outcome = _run_one(function, lines[index], timeout_s, call_kwargs)
        outcomes[index] = outcome
        run.ended(index, outcome)
    return outcomes


def _any_failed_in_a_chain(outcomes: list[Outcome], follows: list[int] | None) -> bool:
    """A batch function scored a key's events together, and an earlier one failed: they
    run one by one instead, so the later ones wait for its retry."""
    if not follows:
        return False
    return any(0 <= before < len(outcomes) and outcomes[before][0] == FAILED for before in follows)


def _run_one(function: Callable[..., Any], line: str, timeout_s: float | None, call_kwargs: dict) -> Outcome:
    parsed = _parse(line)
    if isinstance(parsed, str):
        return [INVALID, parsed, 0.0]
    original, event = parsed
    if is_batch_function(function):
        call = lambda: _single_result_of_batch(function([event], **call_kwargs))  # noqa: E731
    else:
        call = lambda: function(event, **call_kwargs)  # noqa: E731
    started = time.perf_counter()
    try:
        result = call_within(call, timeout_s)
    except EventTimeout as exc:
        return [TIMED_OUT, str(exc), time.perf_counter() - started]
    except Exception as exc:  # the event gets an error record (after retries); the batch goes on
        return [FAILED, describe_error(exc), time.perf_counter() - started]
    run_s = time.perf_counter() - started
    kind, value = render(result, original)
    return [kind, value, run_s]


def _single_result_of_batch(results: Any) -> Any:
    if not isinstance(results, list) or len(results) != 1:
        raise TypeError(f"a batch function must return a list of 1 result for 1 event, got {_shape(results)}")
    return results[0]


def _run_as_batch(
    function: Callable[..., Any], lines: list[str], timeout_s: float | None, call_kwargs: dict
) -> list[Outcome] | None:
    """All lines in one call, or None when that call did not give one result per event."""
    parsed = [p for p in map(_parse, lines) if not isinstance(p, str)]
    if len(parsed) != len(lines):
        return None  # a bad line: run them one by one, so it gets its own record
    events = [event for _, event in parsed]
    started = time.perf_counter()
    try:
        results = call_within(lambda: function(events, **call_kwargs), timeout_s * len(lines) if timeout_s else None)
    except Exception:  # including EventTimeout: each event on its own then, under its own limit
        return None
    if not isinstance(results, list) or len(results) != len(lines):
        return None
    run_s = (time.perf_counter() - started) / len(lines)
    return [[*render(result, original), run_s] for result, (original, _) in zip(results, parsed, strict=True)]


def _shape(value: Any) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


def _parse(line: str) -> tuple[Any, Any] | str:
    """Two copies of the event (one to compare with, one the function may change), or
    what is wrong with the line."""
    try:
        return json.loads(line), json.loads(line)
    except RecursionError:
        return "nested too deeply to parse (over about 1000 levels of arrays or objects)"
    except (TypeError, ValueError) as exc:
        return f"not valid JSON ({exc})"


def render(result: Any, original: Any) -> tuple[str, str | None]:
    """(DONE, None) when `result` is the event unchanged; (DONE, line) for another JSON
    value; (INVALID, why) when it cannot be one JSON line."""
    try:
        if _same_json(result, original):
            return DONE, None
        line = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return INVALID, f"result is not JSON-serialisable: {type(exc).__name__}: {exc}"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a string: keep it as a \\u escape
        line = json.dumps(result, allow_nan=False)
    return DONE, line


def _same_json(result: Any, original: Any) -> bool:
    """Equal as JSON: `==` alone takes True for 1 and 1 for 1.0, which JSON tells apart."""
    if result is not original and result != original:
        return False
    # Canonical (sorted keys). 1e400 reads as inf: an event may hold it, and come back unchanged.
    return json.dumps(result, sort_keys=True) == json.dumps(original, sort_keys=True)
