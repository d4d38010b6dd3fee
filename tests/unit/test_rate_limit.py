"""The token bucket behind the server's subscribe limit."""

from __future__ import annotations

import pytest

from stream_processor.serving.rate_limit import TokenBucket
from tests.conftest import FakeClock


def test_a_burst_is_allowed_then_refused_until_tokens_come_back_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(burst=3, rate=2, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.4  # 0.8 of a token: still none
    assert not bucket.take()
    clock.now = 0.5  # one token
    assert bucket.take() and not bucket.take()


def test_tokens_never_pile_up_beyond_the_burst():
    clock = FakeClock()
    bucket = TokenBucket(burst=2, rate=10, clock=clock)
    clock.now = 3600.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_a_refused_take_spends_nothing():
    clock = FakeClock()
    bucket = TokenBucket(burst=1, rate=1, clock=clock)
    assert bucket.take()
    for step in range(9):  # refused again and again over 0.9 s
        clock.now = step / 10
        assert not bucket.take()
    clock.now = 1.0
    assert bucket.take()


@pytest.mark.parametrize(("burst", "rate"), [(0, 1), (1, 0), (1, -1)])
def test_a_bucket_that_could_never_allow_anything_is_refused(burst, rate):
    with pytest.raises(ValueError):
        TokenBucket(burst, rate)
