"""Property tests of `KeyedWindow` (key and none modes) and of the ideal of every mode."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processor.core.ordering import KEY, NONE, TOTAL, KeyedWindow, OrderMode, parse_order
from stream_processor.observe.ideal import IdealRun, simulate, simulate_mode


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.one_of(st.none(), st.sampled_from("abc")), max_size=50),
    capacity=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_same_key_events_run_one_at_a_time_in_input_order_and_every_line_leaves_once(keys, capacity, data):
    window = KeyedWindow(capacity)
    startable: list[int] = []  # may start, not started yet
    running: set[int] = set()
    started_order: dict[str, list[int]] = {}
    released: list[int] = []
    next_offset = 0
    while len(released) < len(keys):
        assert len(window) <= capacity
        choices = []
        if next_offset < len(keys) and not window.is_full():
            choices.append("admit")
        if startable:
            choices.append("start")
        if running:
            choices.append("finish")
        action = data.draw(st.sampled_from(choices), label="action")
        if action == "admit":
            if window.admit(next_offset, keys[next_offset]):
                startable.append(next_offset)
            next_offset += 1
        elif action == "start":
            offset = data.draw(st.sampled_from(startable), label="start")
            startable.remove(offset)
            key = keys[offset]
            if key is not None:
                assert not any(keys[other] == key for other in running), "two events of one key at once"
                started_order.setdefault(key, []).append(offset)
            running.add(offset)
        else:
            offset = data.draw(st.sampled_from(sorted(running)), label="finish")
            running.remove(offset)
            out, unblocked = window.finish(offset, f"line {offset}")
            assert out == [(offset, f"line {offset}")]
            assert window.finish(offset, "again") == ([], [])  # a repeat changes nothing
            released.append(offset)
            startable.extend(unblocked)
        assert window.next_to_release == min(set(range(next_offset)) - set(released), default=next_offset)
    assert sorted(released) == list(range(len(keys)))
    for key, offsets in started_order.items():
        assert offsets == sorted(offsets) == [o for o, k in enumerate(keys) if k == key]


@settings(max_examples=200, deadline=None)
@given(chain_keys=st.lists(st.sampled_from("ab"), min_size=1, max_size=12), fail_at=st.integers(0, 11))
def test_a_chain_that_fails_halfway_waits_for_the_retry_of_the_failed_event(chain_keys, fail_at):
    window = KeyedWindow(100)
    heads = [offset for offset, key in enumerate(chain_keys) if window.admit(offset, key)]
    # Each head takes every waiting event of its key along in one batch (a chain).
    chains = {head: [head] for head in heads}
    for head in heads:
        tail = head
        while (following := window.successor(tail)) is not None:
            window.join(following)
            chains[head].append(following)
            tail = following
    assert sorted(o for chain in chains.values() for o in chain) == list(range(len(chain_keys)))
    # In one chain, the event at `fail_at` fails: it stays in flight, the rest of its chain did not run.
    chain = next(c for c in chains.values() if fail_at in c) if fail_at < len(chain_keys) else chains[heads[0]]
    position = chain.index(fail_at) if fail_at in chain else 0
    for done in chain[:position]:
        window.finish(done, "ok")
    skipped = chain[position + 1 :]
    assert window.put_back(skipped) == []  # none may start: they wait for the failed one
    _, unblocked = window.finish(chain[position], "ok after a retry")
    assert unblocked == skipped[:1]


def test_put_back_of_a_lost_batch_lets_each_head_start_again_and_the_rest_wait():
    window = KeyedWindow(10)
    assert window.admit(0, "a") and window.admit(1, None) and not window.admit(2, "a")
    window.join(2)  # 2 travels behind 0
    assert window.put_back([0, 1, 2]) == [0, 1]
    assert window.successor(0) == 2  # it waits for 0 again


def test_done_offsets_from_a_resume_advance_the_watermark_and_are_never_released():
    window = KeyedWindow(10, start=5)
    assert not window.admit(5, "a", done=True)
    assert window.next_to_release == 6
    assert window.admit(6, "a")  # the key is free: its earlier event is done
    assert window.finish(6, "x") == ([(6, "x")], [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("total", OrderMode(TOTAL)),
        ("none", OrderMode(NONE)),
        ("key:wiki,title", OrderMode(KEY, ("wiki", "title"))),
        ("key: wiki , title", OrderMode(KEY, ("wiki", "title"))),
    ],
)
def test_order_flags_parse(text, expected):
    assert parse_order(text) == expected


@pytest.mark.parametrize("text", ["", "key", "key:", "key:a,,b", "key:a,a", "keys:a", "random", "TOTAL"])
def test_bad_order_flags_are_refused_with_the_right_shape(text):
    with pytest.raises(ValueError, match="total, none or key|named twice"):
        parse_order(text)


def test_keys_tell_missing_from_null_and_events_without_any_field_have_none():
    mode = parse_order("key:wiki,title")
    assert mode.key_of({"wiki": "en", "title": None}) != mode.key_of({"wiki": "en"})
    assert mode.key_of({"wiki": "en", "title": "A"}) == mode.key_of({"title": "A", "wiki": "en", "x": 1})
    assert mode.key_of({"wiki": "en", "title": {"b": 1, "a": 2}}) == mode.key_of(
        {"wiki": "en", "title": {"a": 2, "b": 1}}
    )
    assert mode.key_of({"other": 1}) is None
    assert mode.key_of(None) is None
    assert OrderMode(NONE).key_of({"wiki": "en"}) is None


events = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),  # duration
        st.sampled_from([0.0, 0.0, 0.25, 1.0]),  # arrival gap after the event before
        st.one_of(st.none(), st.sampled_from("xyz")),  # key
    ),
    max_size=40,
)


def arrivals_of(gaps: list[float]) -> list[float]:
    at, out = 0.0, []
    for gap in gaps:
        at += gap
        out.append(at)
    return out


@settings(max_examples=300, deadline=None)
@given(events=events, workers=st.integers(1, 5))
def test_total_order_ideal_is_the_fifo_makespan_simulation(events, workers):
    durations, gaps, _ = zip(*events, strict=True) if events else ((), (), ())
    arrivals = arrivals_of(list(gaps))
    assert simulate_mode(durations, workers, arrivals) == pytest.approx(simulate(durations, workers, arrivals))


@settings(max_examples=300, deadline=None)
@given(events=events, workers=st.integers(1, 5), window=st.one_of(st.none(), st.integers(1, 8)))
def test_key_mode_ideal_serialises_each_key_and_never_beats_none_mode(events, workers, window):
    durations, gaps, keys = (list(x) for x in zip(*events, strict=True)) if events else ([], [], [])
    arrivals = arrivals_of(gaps)
    keyed = simulate_mode(durations, workers, arrivals, keys, total_order=False, window=window)
    for offset, (duration, arrival) in enumerate(zip(durations, arrivals, strict=True)):
        assert keyed[offset] >= arrival + duration - 1e-9  # done no earlier than it could be
    for key in set(keys) - {None}:
        same = [offset for offset, k in enumerate(keys) if k == key]
        for earlier, later in zip(same, same[1:], strict=False):  # one at a time, in input order
            assert keyed[later] >= keyed[earlier] + durations[later] - 1e-9
    unordered = simulate_mode(durations, workers, arrivals, total_order=False, window=window)
    total = simulate_mode(durations, workers, arrivals, total_order=True, window=window)
    if window is None and workers >= len(durations):  # nothing competes for workers: the orders rank
        assert all(u <= k + 1e-9 for u, k in zip(unordered, keyed, strict=True))
    if window is None:
        assert max(total, default=0) >= max(unordered, default=0) - 1e-9


@settings(max_examples=200, deadline=None)
@given(events=events, workers=st.integers(1, 5), window=st.integers(1, 8))
def test_the_online_ideal_matches_the_offline_one_and_keeps_memory_within_the_window(events, workers, window):
    durations, gaps, keys = (list(x) for x in zip(*events, strict=True)) if events else ([], [], [])
    arrivals = arrivals_of(gaps)
    offline = simulate_mode(durations, workers, arrivals, keys, total_order=False, window=window)
    released: dict[int, float] = {}
    run = IdealRun(workers, total_order=False, window=window, on_release=lambda o, a, r: released.__setitem__(o, r))
    for duration, arrival, key in zip(durations, arrivals, keys, strict=True):
        run.add(duration, arrival, key)
        assert len(run._events) <= window  # arrived in the simulation: never beyond the window
    run.finish()
    assert [released[o] for o in range(len(durations))] == pytest.approx(offline)


def test_the_per_page_ideal_of_the_shipped_recording_beats_total_order_threefold():
    from pathlib import Path

    from stream_processor.core.replay import ReplaySchedule

    path = Path(__file__).resolve().parents[2] / "sampled_rc.json"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    schedule = ReplaySchedule(1.0, True)
    arrivals = [schedule.due(event) for event in events]
    durations = [event["wait"] for event in events]
    keys = [OrderMode(KEY, ("wiki", "title")).key_of(event) for event in events]

    def median_latency(**kwargs) -> float:
        released = simulate_mode(durations, 12, arrivals, window=1000, **kwargs)
        return sorted(r - a for r, a in zip(released, arrivals, strict=True))[len(events) // 2]

    total, per_page = median_latency(total_order=True), median_latency(total_order=False, keys=keys)
    assert per_page * 3 < total
