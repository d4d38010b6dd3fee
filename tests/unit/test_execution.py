"""`run_events` and `render` (execution.py): what a worker makes of each line, whatever
JSON it holds; the time limit; and batch functions with their one-at-a-time fallback."""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processor.engine.execution import (
    DONE,
    FAILED,
    INVALID,
    TIMED_OUT,
    EventTimeout,
    batch_function,
    render,
    run_events,
    time_limit,
)

# -- JSON values that Python's json module round-trips -----------------------------------

keys = st.one_of(
    st.sampled_from(["__type__", "__value__", "__bytes__", "__class__", "id", "", "\\u00e9", "é", "\x00", "\ud800"]),
    st.text(max_size=8),
)
# Any code point, lone surrogates included: json.dumps escapes them, json.loads gives them back.
texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["datetime", "decimal", "bytes", "\n", "\\", '"', "\u2028", "😀"]),
)
json_values = st.recursive(
    leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4), max_leaves=25
)


@st.composite
def deeply_nested(draw) -> Any:
    """A value nested a few hundred levels deep: lists and objects, in any mix."""
    value = draw(leaves)
    for wrap_in_object in draw(st.lists(st.booleans(), min_size=50, max_size=300)):
        value = {draw(keys): value} if wrap_in_object else [value]
    return value


events = st.one_of(json_values, deeply_nested(), st.dictionaries(keys, json_values, max_size=5))


def exactly(a: Any, b: Any) -> bool:
    """Equal as JSON values: types too (True is not 1, 1 is not 1.0), and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(exactly(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(exactly, a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


def identity(event: Any) -> Any:
    return event


def spellings(event: Any) -> list[str]:
    """The same JSON value written in several ways a producer might."""
    return [
        json.dumps(event),
        json.dumps(event, separators=(",", ":")),
        json.dumps(event, separators=(" ,  ", " :\t")),
        json.dumps(event, ensure_ascii=False),
        "  " + json.dumps(event) + " \t",
    ]


@settings(max_examples=150, deadline=None)
@given(event=events)
def test_an_unchanged_event_is_done_with_no_line_however_it_was_spelled(event):
    assert exactly(json.loads(json.dumps(event)), event)  # the strategy makes only round-trippable values
    for line in spellings(event):
        [(kind, value, run_s)] = run_events(identity, [line])
        assert (kind, value) == (DONE, None), line[:200]
        assert run_s >= 0


@settings(max_examples=150, deadline=None)
@given(event=events)
def test_an_equal_copy_counts_as_unchanged(event):
    [(kind, value, _)] = run_events(lambda parsed: copy.deepcopy(parsed), [json.dumps(event)])
    assert (kind, value) == (DONE, None)


@settings(max_examples=150, deadline=None)
@given(event=events, extra=json_values)
def test_a_changed_result_is_a_line_that_loads_back_to_exactly_the_result(event, extra):
    def wrap(parsed: Any) -> Any:
        return {"result": parsed, "extra": extra}

    [(kind, line, _)] = run_events(wrap, [json.dumps(event)])
    assert kind == DONE
    assert "\n" not in line and "\r" not in line
    line.encode("utf-8")  # writable as UTF-8, lone surrogates included
    assert exactly(json.loads(line), {"result": event, "extra": extra})


@given(event=events, change=st.sampled_from([(1, True), (True, 1), (1, 1.0), (1.0, 1), (0, False), (False, 0.0)]))
def test_true_one_and_one_point_zero_are_told_apart(event, change):
    before, after = change
    assert before == after  # what `==` alone would call unchanged

    def replace(parsed: dict) -> dict:
        return {**parsed, "x": after}

    [(kind, line, _)] = run_events(replace, [json.dumps({"x": before, "rest": event})])
    assert kind == DONE and line is not None
    assert exactly(json.loads(line), {"x": after, "rest": event})


@given(event=st.dictionaries(keys, json_values, max_size=5), field=st.text(max_size=5), value=json_values)
def test_an_event_changed_in_place_and_returned_is_the_changed_line(event, field, value):
    def edit_in_place(parsed: dict) -> dict:
        parsed[field] = value
        return parsed

    edited = {**event, field: value}
    [(kind, line, _)] = run_events(edit_in_place, [json.dumps(event)])
    assert kind == DONE
    if exactly(edited, event):
        assert line is None
    else:
        assert exactly(json.loads(line), edited)


def test_non_ascii_text_in_a_result_is_written_as_text_not_escapes():
    [(kind, line, _)] = run_events(lambda event: {"city": "Zürich", "tokyo": "東京"}, ['{"id": 1}'])
    assert kind == DONE
    assert "Zürich" in line and "東京" in line


def test_a_result_with_a_lone_surrogate_is_still_a_utf8_line():
    [(kind, line, _)] = run_events(lambda event: {"text": "a\ud800b", "city": "Zürich"}, ['{"id": 1}'])
    assert kind == DONE
    line.encode("utf-8")
    assert json.loads(line) == {"text": "a\ud800b", "city": "Zürich"}


# -- outcomes other than DONE --------------------------------------------------------------


class ScoringError(Exception):
    pass


@pytest.mark.parametrize(
    ("exception", "expected"),
    [(ValueError("bad wait"), "ValueError: bad wait"), (ScoringError("model gone"), "ScoringError: model gone")],
)
def test_a_function_that_raises_is_failed_with_type_and_message(exception, expected):
    def raise_it(event):
        raise exception

    [(kind, value, run_s)] = run_events(raise_it, ['{"id": 1}'])
    assert (kind, value) == (FAILED, expected)
    assert run_s >= 0


@pytest.mark.parametrize(
    "result", [{"tags": {"a", "b"}}, {"score": math.nan}, {"score": math.inf}, object(), {"raw": b"bytes"}]
)
def test_a_result_that_cannot_be_a_json_line_is_invalid(result):
    [(kind, value, _)] = run_events(lambda event: result, ['{"id": 1}'])
    assert kind == INVALID
    assert value.startswith("result is not JSON-serialisable")


def test_render_tells_unchanged_changed_and_invalid_apart():
    assert render({"a": [1, 2]}, {"a": [1, 2]}) == (DONE, None)
    kind, line = render({"a": [1, 2.0]}, {"a": [1, 2]})
    assert kind == DONE and json.loads(line) == {"a": [1, 2.0]} and "2.0" in line
    assert render({"a": {1, 2}}, {"a": [1, 2]})[0] == INVALID


@pytest.mark.parametrize("line", ["{oops", "", '{"a": 1} trailing', "[" * 5000 + "]" * 5000])
def test_a_line_that_is_not_json_is_invalid_without_calling_the_function(line):
    calls = []
    [(kind, value, _)] = run_events(calls.append, [line])
    assert kind == INVALID and value
    assert calls == []


def test_an_unchanged_event_with_a_number_beyond_float_range_passes_through():
    [(kind, value, _)] = run_events(identity, ['{"id": 1, "big": 1e400}'])
    assert (kind, value) == (DONE, None)


# -- the time limit -----------------------------------------------------------------------


@pytest.fixture
def on_the_main_thread():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGALRM time limits work on the main thread only")
    before = signal.getsignal(signal.SIGALRM)
    yield
    # Nothing left behind: no timer running, the previous handler back.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before


def test_an_event_past_its_time_limit_is_timed_out_long_before_it_would_end(on_the_main_thread):
    def sleep_five_seconds(event):
        time.sleep(5)  # the event's "work"
        return event

    started = time.monotonic()
    [(kind, value, run_s)] = run_events(sleep_five_seconds, ['{"id": 1}'], timeout_s=0.2)
    elapsed = time.monotonic() - started
    assert (kind, value) == (TIMED_OUT, "ran past its time limit of 0.2 s")
    assert 0.2 <= run_s < 2 and elapsed < 2


def test_an_event_within_its_time_limit_is_done_and_no_alarm_fires_later(on_the_main_thread):
    [(kind, value, _)] = run_events(lambda event: {"fast": True}, ['{"id": 1}'], timeout_s=0.2)
    assert kind == DONE and json.loads(value) == {"fast": True}


def test_a_function_that_swallows_its_timeout_still_returns(on_the_main_thread):
    # The soft limit only raises inside the function; one that catches everything goes on
    # and its result counts. Stopping it for good is the hard limit's job: Celery's
    # time_limit kills the worker process (see celery_executor.batch_hard_limit).
    def stubborn(event):
        try:  # noqa: SIM105 - spelled out: this is what a careless function does
            time.sleep(5)  # the event's "work"
        except Exception:
            pass
        return {"finished": "anyway"}

    started = time.monotonic()
    [(kind, value, _)] = run_events(stubborn, ['{"id": 1}'], timeout_s=0.2)
    assert kind == DONE and json.loads(value) == {"finished": "anyway"}
    assert time.monotonic() - started < 2


def test_time_limit_raises_event_timeout_in_its_block(on_the_main_thread):
    with pytest.raises(EventTimeout, match="0.1 s"), time_limit(0.1):
        time.sleep(5)  # the work the limit interrupts


def test_time_limit_off_the_main_thread_sets_no_alarm():
    # Only the main thread gets signals: elsewhere (the in-process engine's threads) no limit.
    outcome: list[Any] = []

    def run() -> None:
        with time_limit(0.05):
            outcome.append(signal.getitimer(signal.ITIMER_REAL))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert outcome == [(0.0, 0.0)]


# -- batch functions -------------------------------------------------------------------------


def lines_of(events: list[dict]) -> list[str]:
    return [json.dumps(event) for event in events]


EVENTS = [{"id": n, "title": "t" * n} for n in range(5)]
RESULTS = [{"id": n, "length": n} for n in range(5)]


def make_batch_function(misbehave=None):
    calls: list[list[int]] = []

    @batch_function
    def lengths(events: list[dict]) -> list[dict]:
        calls.append([event["id"] for event in events])
        if misbehave is not None and len(events) > 1:
            return misbehave(events)
        return [{"id": event["id"], "length": len(event["title"])} for event in events]

    return lengths, calls


def test_a_batch_function_scores_the_whole_batch_in_one_call():
    lengths, calls = make_batch_function()
    outcomes = run_events(lengths, lines_of(EVENTS))
    assert calls == [[0, 1, 2, 3, 4]]
    assert [kind for kind, _, _ in outcomes] == [DONE] * 5
    assert [json.loads(line) for _, line, _ in outcomes] == RESULTS


def test_a_batch_function_returning_events_unchanged_gives_no_lines():
    @batch_function
    def same(events):
        return events

    assert [value for _, value, _ in run_events(same, lines_of(EVENTS))] == [None] * 5


def raise_for_the_batch(events):
    raise RuntimeError("the model server is busy")


def one_result_short(events):
    return [{"id": event["id"]} for event in events[:-1]]


def one_result_too_many(events):
    return [{"id": event["id"]} for event in events] + [{}]


def not_a_list(events):
    return {"results": events}


@pytest.mark.parametrize("misbehave", [raise_for_the_batch, one_result_short, one_result_too_many, not_a_list])
def test_a_batch_function_that_raises_or_miscounts_runs_each_event_alone(misbehave):
    lengths, calls = make_batch_function(misbehave)
    outcomes = run_events(lengths, lines_of(EVENTS))
    assert calls == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    assert [json.loads(line) for _, line, _ in outcomes] == RESULTS


def test_an_event_that_fails_alone_after_the_batch_fell_back_is_failed_and_the_rest_done():
    @batch_function
    def fussy(events):
        if any(event["id"] == 2 for event in events):
            raise ValueError("no 2")
        return [{"ok": event["id"]} for event in events]

    outcomes = run_events(fussy, lines_of(EVENTS))
    assert [kind for kind, _, _ in outcomes] == [DONE, DONE, FAILED, DONE, DONE]
    assert outcomes[2][1] == "ValueError: no 2"


def test_a_batch_function_is_called_with_a_list_even_for_one_event():
    lengths, calls = make_batch_function()
    [(kind, line, _)] = run_events(lengths, lines_of(EVENTS[3:4]))
    assert calls == [[3]] and kind == DONE and json.loads(line) == RESULTS[3]


def test_a_batch_with_a_line_that_is_not_json_runs_each_event_alone():
    lengths, calls = make_batch_function()
    outcomes = run_events(lengths, [json.dumps(EVENTS[0]), "{oops", json.dumps(EVENTS[2])])
    assert calls == [[0], [2]]
    assert [kind for kind, _, _ in outcomes] == [DONE, INVALID, DONE]


def test_a_batch_function_that_edits_events_in_place_gets_the_edits_written():
    @batch_function
    def add_score(events):
        for event in events:
            event["score"] = event["id"] * 2
        return events

    outcomes = run_events(add_score, lines_of(EVENTS))
    assert [json.loads(line) for _, line, _ in outcomes] == [{**event, "score": event["id"] * 2} for event in EVENTS]
