"""Property tests of `ReorderBuffer`: any completion order in, input order out, window bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stream_processor.core.ordering import ReorderBuffer, WindowFull


def value_for(offset: int) -> tuple[str, int]:
    return ("result", offset)


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=60),
    capacity=st.integers(min_value=1, max_value=12),
    start=st.integers(min_value=0, max_value=10**9),
    data=st.data(),
)
def test_any_completion_order_releases_every_offset_once_in_increasing_order(count, capacity, start, data):
    buffer = ReorderBuffer(capacity, start=start)
    end = start + count
    pending: set[int] = set()  # admitted, not completed
    completed: set[int] = set()  # completed, maybe not yet released
    released: list[tuple[int, object]] = []
    noise_budget = 3 * count  # duplicate / stale / stray completions, bounded so the loop ends

    while len(released) < count:
        assert len(buffer) <= capacity
        if buffer.next_offset < end and not buffer.is_full():
            offset = buffer.next_offset
            buffer.admit(offset)
            pending.add(offset)
            continue
        if noise_budget and data.draw(st.booleans(), label="noise"):
            noise_budget -= 1
            # What an at-least-once engine does: repeat a completion, or deliver one
            # for an offset already released, or for one never admitted.
            candidates = sorted(completed) + [start - 1, end, end + 5]
            offset = data.draw(st.sampled_from(candidates), label="noise offset")
            before = (len(buffer), buffer.next_to_release)
            assert buffer.complete(offset, ("duplicate", offset)) == []
            assert (len(buffer), buffer.next_to_release) == before
            continue
        offset = data.draw(st.sampled_from(sorted(pending)), label="complete")
        pending.remove(offset)
        completed.add(offset)
        out = buffer.complete(offset, value_for(offset))
        released.extend(out)
        assert buffer.next_to_release == start + len(released)

    assert released == [(offset, value_for(offset)) for offset in range(start, end)]
    assert len(buffer) == 0
    assert buffer.next_to_release == end
    assert buffer.next_offset == end


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=40),
    capacity=st.integers(min_value=1, max_value=8),
    rng=st.randoms(use_true_random=False),
)
def test_window_never_exceeds_capacity_and_released_offsets_are_consecutive(count, capacity, rng):
    buffer = ReorderBuffer(capacity)
    pending: list[int] = []
    released: list[int] = []
    while len(released) < count:
        if buffer.next_offset < count and not buffer.is_full():
            pending.append(buffer.next_offset)
            buffer.admit(buffer.next_offset)
        else:
            offset = pending.pop(rng.randrange(len(pending)))
            released += [o for o, _ in buffer.complete(offset, None)]
            buffer.complete(offset, "again")  # a duplicate right away changes nothing
        assert len(buffer) <= capacity
        assert released == list(range(len(released)))
    assert released == list(range(count))


@settings(max_examples=100, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=20), start=st.integers(min_value=0, max_value=10**6))
def test_admit_raises_window_full_once_capacity_offsets_are_held(capacity, start):
    buffer = ReorderBuffer(capacity, start=start)
    for offset in range(start, start + capacity):
        buffer.admit(offset)
    assert buffer.is_full()
    with pytest.raises(WindowFull):
        buffer.admit(start + capacity)
    assert len(buffer) == capacity
    # Releasing the head makes room for exactly one more.
    assert buffer.complete(start, "v") == [(start, "v")]
    buffer.admit(start + capacity)
    with pytest.raises(WindowFull):
        buffer.admit(start + capacity + 1)


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=10**6),
    admitted=st.integers(min_value=0, max_value=5),
    delta=st.integers(min_value=-10, max_value=10).filter(lambda d: d != 0),
)
def test_admit_rejects_an_out_of_sequence_offset_with_value_error(start, admitted, delta):
    buffer = ReorderBuffer(10, start=start)
    for offset in range(start, start + admitted):
        buffer.admit(offset)
    expected = start + admitted
    with pytest.raises(ValueError, match=str(expected)):
        buffer.admit(expected + delta)
    assert len(buffer) == admitted
    buffer.admit(expected)  # the right offset is still accepted afterwards
    assert buffer.next_offset == expected + 1


def test_admit_reports_out_of_sequence_rather_than_full_when_both_apply():
    buffer = ReorderBuffer(1)
    buffer.admit(0)
    with pytest.raises(ValueError) as raised:
        buffer.admit(5)
    assert not isinstance(raised.value, WindowFull)


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_rejected(capacity):
    with pytest.raises(ValueError, match="capacity"):
        ReorderBuffer(capacity)


def test_nonzero_start_admits_from_start_and_releases_from_start():
    buffer = ReorderBuffer(3, start=100)
    assert buffer.next_offset == 100
    assert buffer.next_to_release == 100
    with pytest.raises(ValueError):
        buffer.admit(0)
    for offset in (100, 101, 102):
        buffer.admit(offset)
    assert buffer.complete(102, "c") == []
    assert buffer.complete(101, "b") == []
    assert buffer.next_to_release == 100
    assert buffer.complete(100, "a") == [(100, "a"), (101, "b"), (102, "c")]
    assert buffer.next_to_release == 103
    assert buffer.next_offset == 103


def test_next_to_release_is_the_resume_point_below_which_everything_is_released():
    buffer = ReorderBuffer(5, start=10)
    for offset in range(10, 15):
        buffer.admit(offset)
    buffer.complete(11, "b")
    buffer.complete(13, "d")
    assert buffer.next_to_release == 10  # 10 is still running: a resume must redo it
    buffer.complete(10, "a")
    assert buffer.next_to_release == 12  # 10 and 11 are out; 12 is the first not written
    assert buffer.is_pending(12)
    assert not buffer.is_pending(13)  # completed, held back behind 12
    assert not buffer.is_pending(11)  # released


def test_duplicate_completion_keeps_the_first_value():
    buffer = ReorderBuffer(2)
    buffer.admit(0)
    buffer.admit(1)
    assert buffer.complete(1, "first") == []
    assert buffer.complete(1, "second") == []
    assert buffer.complete(0, "zero") == [(0, "zero"), (1, "first")]
    assert buffer.complete(0, "late") == []
    assert buffer.complete(1, "late") == []


class ReorderMachine(RuleBasedStateMachine):
    """Admit, complete, repeat and stray completions freely interleaved."""

    @initialize(capacity=st.integers(min_value=1, max_value=6), start=st.integers(min_value=0, max_value=1000))
    def setup(self, capacity, start):
        self.capacity = capacity
        self.start = start
        self.buffer = ReorderBuffer(capacity, start=start)
        self.admitted: list[int] = []
        self.completed: dict[int, object] = {}
        self.released: list[tuple[int, object]] = []

    @precondition(lambda self: not self.buffer.is_full())
    @rule()
    def admit(self):
        offset = self.start + len(self.admitted)
        self.buffer.admit(offset)
        self.admitted.append(offset)

    @precondition(lambda self: self.buffer.is_full())
    @rule()
    def admit_when_full_raises(self):
        with pytest.raises(WindowFull):
            self.buffer.admit(self.start + len(self.admitted))

    @precondition(lambda self: any(o not in self.completed for o in self.admitted))
    @rule(data=st.data())
    def complete_pending(self, data):
        offset = data.draw(st.sampled_from([o for o in self.admitted if o not in self.completed]))
        self.completed[offset] = value_for(offset)
        self.released += self.buffer.complete(offset, value_for(offset))

    @precondition(lambda self: bool(self.completed))
    @rule(data=st.data())
    def complete_again(self, data):
        offset = data.draw(st.sampled_from(sorted(self.completed)))
        assert self.buffer.complete(offset, "duplicate") == []

    @rule(ahead=st.integers(min_value=0, max_value=5))
    def complete_never_admitted(self, ahead):
        assert self.buffer.complete(self.start + len(self.admitted) + ahead, "stray") == []
        assert self.buffer.complete(self.start - 1 - ahead, "stray") == []

    @invariant()
    def window_is_bounded(self):
        assert len(self.buffer) <= self.capacity

    @invariant()
    def released_is_the_in_order_prefix(self):
        expected = [(o, value_for(o)) for o in range(self.start, self.start + len(self.released))]
        assert self.released == expected
        assert self.buffer.next_to_release == self.start + len(self.released)
        assert self.buffer.next_offset == self.start + len(self.admitted)
        # Nothing is held back that could be released: the head is still pending.
        if len(self.buffer):
            assert self.buffer.is_pending(self.buffer.next_to_release)

    def teardown(self):
        for offset in self.admitted:
            if offset not in self.completed:
                self.released += self.buffer.complete(offset, value_for(offset))
        assert self.released == [(o, value_for(o)) for o in self.admitted]
        assert len(self.buffer) == 0


ReorderMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_reorder_buffer_state_machine = ReorderMachine.TestCase
