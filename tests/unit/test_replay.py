"""The replay schedule: paced by timestamps, scaled by speed, never out of order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processor.core.replay import ReplaySchedule


def dues(timestamps, speed=1.0, realtime=True):
    schedule = ReplaySchedule(speed, realtime)
    return [schedule.due({"timestamp": ts} if ts is not None else {}) for ts in timestamps]


def test_events_are_due_at_their_offset_from_the_first_timestamp_divided_by_speed():
    assert dues([100, 101, 103, 110], speed=2) == [0.0, 0.5, 1.5, 5.0]


def test_an_event_stamped_earlier_than_the_one_ahead_goes_out_right_after_it():
    assert dues([100, 105, 102, 106]) == [0.0, 5.0, 5.0, 6.0]


def test_an_event_without_a_usable_timestamp_goes_out_with_the_one_ahead():
    schedule = ReplaySchedule()
    events = [{"timestamp": 10}, {"timestamp": None}, {"timestamp": "x"}, {"timestamp": True}, None, {"timestamp": 12}]
    assert [schedule.due(event) for event in events] == [0.0, 0.0, 0.0, 0.0, 0.0, 2.0]


def test_a_replay_that_starts_mid_recording_starts_its_clock_there():
    assert dues([500, 502]) == [0.0, 2.0]


def test_without_realtime_everything_is_due_at_once():
    assert dues([1, 50, 100], realtime=False) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("speed", [0, -1, float("inf"), float("nan")])
def test_a_speed_that_is_not_positive_and_finite_is_refused(speed):
    with pytest.raises(ValueError):
        ReplaySchedule(speed)


@given(st.lists(st.one_of(st.none(), st.integers(0, 10**6)), max_size=200), st.floats(0.1, 100))
def test_due_times_never_decrease_and_never_run_ahead_of_their_timestamp(timestamps, speed):
    times = dues(timestamps, speed)
    assert times == sorted(times)
    stamped = [ts for ts in timestamps if ts is not None]
    for ts, due in zip(timestamps, times, strict=True):
        if ts is not None:
            assert due >= (ts - stamped[0]) / speed - 1e-9
