"""The zero-overhead ideal: W workers, events taken in input order, results released in order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_processor.observe.ideal import IdealSchedule, simulate


def test_one_worker_releases_at_the_running_sums():
    assert simulate([3, 1, 2], workers=1) == [3, 4, 6]
    assert simulate([0.5, 0.25, 2.0, 1.0], workers=1) == [0.5, 0.75, 2.75, 3.75]


def test_as_many_workers_as_events_release_the_last_at_the_longest_duration():
    assert simulate([3, 1, 2], workers=3)[-1] == 3
    assert simulate([1, 2, 3], workers=5)[-1] == 3
    assert simulate([4, 9, 2, 7], workers=4)[-1] == 9


def test_a_short_event_behind_a_long_one_is_released_with_it():
    # Two workers: 0 runs 0..1, 1 runs 0..5, 2 runs 1..2, 3 runs 2..3; 1 holds back 2 and 3.
    assert simulate([1, 5, 1, 1], workers=2) == [1, 5, 5, 5]


def test_each_event_takes_the_worker_that_frees_first():
    # 0 on A 0..2, 1 on B 0..1, 2 on B 1..2, 3 on A or B 2..3.
    assert simulate([2, 1, 1, 1], workers=2) == [2, 2, 2, 3]


def test_arrivals_delay_starts():
    assert simulate([1, 1], workers=2, arrivals=[0, 10]) == [1, 11]
    assert simulate([2, 2], workers=1, arrivals=[0, 1]) == [2, 4]  # waits for the worker
    assert simulate([2, 2], workers=1, arrivals=[0, 5]) == [2, 7]  # waits for the event


def test_schedule_span_runs_from_the_first_arrival_to_the_last_release():
    schedule = IdealSchedule(2)
    assert schedule.span == 0.0
    assert schedule.add(1.0, arrival=100.0) == 101.0
    assert schedule.add(3.0, arrival=100.5) == 103.5
    assert schedule.add(0.5, arrival=101.0) == 103.5  # done at 101.5 but held behind the 3 s one
    assert schedule.count == 3
    assert schedule.finish == 103.5
    assert schedule.span == 3.5


def test_no_events_release_nothing():
    assert simulate([], workers=3) == []
    assert IdealSchedule(3).count == 0


def test_zero_workers_are_rejected():
    with pytest.raises(ValueError):
        IdealSchedule(0)


def test_arrivals_must_match_durations():
    with pytest.raises(ValueError):
        simulate([1, 2], workers=1, arrivals=[0])


def brute_force_releases(durations: list[int], workers: int, arrivals: list[int]) -> list[int]:
    """Step a clock one tick at a time: at each tick, hand the next events (in input order)
    that have arrived to idle workers. Integer times make the ticks exact."""
    busy_until = [0] * workers
    done: list[int] = []
    tick = 0
    while len(done) < len(durations):
        for worker in range(workers):
            index = len(done)
            if index < len(durations) and arrivals[index] <= tick and busy_until[worker] <= tick:
                busy_until[worker] = tick + durations[index]
                done.append(tick + durations[index])
        tick += 1
    return list(itertools.accumulate(done, max))


@st.composite
def integer_streams(draw):
    count = draw(st.integers(min_value=0, max_value=14))
    durations = draw(st.lists(st.integers(min_value=1, max_value=9), min_size=count, max_size=count))
    gaps = draw(st.lists(st.integers(min_value=0, max_value=6), min_size=count, max_size=count))
    return durations, list(itertools.accumulate(gaps))


@settings(max_examples=200, deadline=None)
@given(stream=integer_streams(), workers=st.integers(min_value=1, max_value=5))
def test_releases_equal_a_tick_by_tick_simulation(stream, workers):
    durations, arrivals = stream
    releases = simulate(durations, workers, arrivals)
    assert releases == brute_force_releases(durations, workers, arrivals)


@settings(max_examples=200, deadline=None)
@given(stream=integer_streams(), workers=st.integers(min_value=1, max_value=5))
def test_schedule_last_release_and_span_match_the_brute_force(stream, workers):
    durations, arrivals = stream
    schedule = IdealSchedule(workers)
    for duration, arrival in zip(durations, arrivals, strict=True):
        schedule.add(duration, arrival)
    expected = brute_force_releases(durations, workers, arrivals)
    assert schedule.count == len(durations)
    if durations:
        assert schedule.finish == expected[-1]
        assert schedule.span == expected[-1] - arrivals[0]
    else:
        assert schedule.span == 0.0


float_durations = st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=25)


@st.composite
def float_streams(draw):
    durations = draw(float_durations)
    gaps = draw(st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=len(durations), max_size=len(durations)))
    return durations, list(itertools.accumulate(gaps))


@settings(max_examples=200, deadline=None)
@given(stream=float_streams(), workers=st.integers(min_value=1, max_value=6))
def test_releases_are_in_order_and_never_before_an_events_own_finish(stream, workers):
    durations, arrivals = stream
    releases = simulate(durations, workers, arrivals)
    assert len(releases) == len(durations)
    assert releases == sorted(releases)
    for release, duration, arrival in zip(releases, durations, arrivals, strict=True):
        assert release >= arrival + duration


@settings(max_examples=200, deadline=None)
@given(stream=float_streams(), workers=st.integers(min_value=1, max_value=6))
def test_adding_a_worker_never_makes_any_release_later(stream, workers):
    durations, arrivals = stream
    fewer = simulate(durations, workers, arrivals)
    more = simulate(durations, workers + 1, arrivals)
    assert all(m <= f for m, f in zip(more, fewer, strict=True))


@settings(max_examples=100, deadline=None)
@given(durations=st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=25))
def test_last_release_is_bounded_by_the_longest_event_and_the_sum(durations):
    for workers in (1, 3, len(durations)):
        last = simulate(durations, workers)[-1]
        assert max(durations) <= last <= sum(durations) + 1e-9
    assert simulate(durations, 1)[-1] == pytest.approx(sum(durations))
    assert simulate(durations, len(durations))[-1] == max(durations)
