"""Properties of the adaptive micro-batch policy (batching.py): pure arithmetic, so every
state is reached by feeding it measurements, and the simulation runs on a clock of whole
numbers (no float rounding in the linger arithmetic)."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stream_processor.core.batching import MAX_HANDOFF_S, SLOW_START_GROWTH, BatchPolicy

# What workers measure: zero, or from a nanosecond up (perf_counter differences). Subnormal
# run times are covered on their own by test_size_survives_a_mean_run_time_that_decays_to_a_subnormal.
run_times = st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=100.0))
handoffs = st.floats(min_value=-1.0, max_value=1.0) | st.just(math.nan) | st.just(math.inf)
# One thing the policy learns: an event's run time, a batch that came back, a handoff gap.
observations = st.one_of(
    st.tuples(st.just("run"), run_times),
    st.tuples(st.just("batch"), st.integers(min_value=1, max_value=300)),
    st.tuples(st.just("handoff"), handoffs),
)
batch_maxes = st.integers(min_value=1, max_value=200)
no_run_times = st.one_of(
    st.tuples(st.just("batch"), st.integers(min_value=1, max_value=300)), st.tuples(st.just("handoff"), handoffs)
)


@st.composite
def policies(draw, batch_max=batch_maxes, history=observations, measured: bool = False) -> BatchPolicy:
    """A policy with arbitrary settings, after an arbitrary history of observations."""
    policy = BatchPolicy(
        batch_max=draw(batch_max),
        linger_s=draw(st.sampled_from([0.0, 0.001, 0.005, 0.05, 1.0])),
        target_s=draw(st.floats(min_value=1e-4, max_value=1.0)),
        outstanding_per_worker=draw(st.integers(min_value=1, max_value=4)),
    )
    for kind, value in draw(st.lists(history, max_size=30)):
        learn(policy, kind, value)
    if measured and policy.mean_run_s is None:
        policy.observe(draw(run_times))
    return policy


def learn(policy: BatchPolicy, kind: str, value: float) -> None:
    if kind == "run":
        policy.observe(value)
    elif kind == "batch":
        policy.observe_batch(value)
    else:
        policy.observe_handoff(value)


# -- size() -----------------------------------------------------------------------------


@given(policy=policies(history=no_run_times))
def test_size_is_one_until_a_run_time_is_measured(policy):
    assert policy.mean_run_s is None
    assert policy.size() == 1


@given(policy=policies())
def test_size_stays_between_one_and_batch_max(policy):
    assert 1 <= policy.size() <= policy.batch_max


@given(policy=policies())
def test_size_grows_at_most_fourfold_beyond_the_biggest_batch_that_came_back(policy):
    assert policy.size() <= max(1, SLOW_START_GROWTH * policy.largest_done)


@given(policy=policies(batch_max=st.just(1), measured=True))
def test_batch_max_of_one_always_gives_one(policy):
    assert policy.size() == 1


@given(
    policy=policies(history=no_run_times),
    runs=st.lists(st.floats(min_value=1.0, max_value=100.0), min_size=1, max_size=20),
)
def test_events_as_long_as_the_batch_target_travel_alone(policy, runs):
    policy.observe_batch(policy.batch_max)
    for factor in runs:  # each run at least the batch's target run time
        policy.observe(policy.batch_target_s * factor)
    assert policy.size() == 1


@given(policy=policies(history=no_run_times), zeros=st.integers(min_value=1, max_value=50))
def test_zero_length_events_fill_batch_max_once_a_full_batch_came_back(policy, zeros):
    policy.observe_batch(policy.batch_max)
    for _ in range(zeros):
        policy.observe(0.0)
    assert policy.size() == policy.batch_max


@pytest.mark.parametrize("target_s", [0.02, 0.001])
def test_size_fits_the_batch_target_run_time(target_s):
    policy = BatchPolicy(batch_max=100_000, target_s=target_s)
    policy.observe_batch(100_000)
    policy.observe(target_s / 10)
    assert policy.size() == 10
    policy.observe_handoff(0.01)  # a 10 ms gap between tasks: batches long enough that it is at most 5 %
    assert policy.batch_target_s == pytest.approx(max(target_s, 0.01 / 0.05))
    assert policy.size() == round(policy.batch_target_s / policy.mean_run_s)


def test_size_survives_a_mean_run_time_that_decays_to_a_subnormal():
    decayed = BatchPolicy(batch_max=50)
    decayed.observe_batch(50)
    decayed.observe(0.001)
    for _ in range(40_000):  # zero-length events: the average decays geometrically toward 0
        decayed.observe(0.0)
    assert decayed.size() == 50
    tiny = BatchPolicy(batch_max=50)
    tiny.observe_batch(50)
    tiny.observe(5e-324)  # finite and not negative: observe() accepts it
    assert tiny.size() == 50


# -- the moving average -------------------------------------------------------------------


@given(first=run_times)
def test_the_first_measurement_is_the_mean(first):
    policy = BatchPolicy()
    policy.observe(first)
    assert policy.mean_run_s == first


@given(policy=policies(measured=True), sample=run_times)
def test_the_mean_moves_toward_each_new_measurement(policy, sample):
    before = policy.mean_run_s
    policy.observe(sample)
    after = policy.mean_run_s
    assert min(before, sample) <= after <= max(before, sample)
    assert abs(after - sample) <= abs(before - sample)
    if sample != before:
        assert after != before  # it moved


def test_the_mean_follows_a_change_of_run_time_instead_of_averaging_all_history():
    policy = BatchPolicy()
    for _ in range(1000):
        policy.observe(1.0)
    for _ in range(500):
        policy.observe(0.001)
    # A plain mean would still be about 0.67 s.
    assert policy.mean_run_s == pytest.approx(0.001, rel=0.1)


@given(policy=policies(), bad=st.sampled_from([-1e-9, -1.0, -math.inf, math.inf, math.nan]))
def test_run_times_that_are_negative_or_not_finite_are_ignored(policy, bad):
    before = (policy.mean_run_s, policy.events_measured)
    policy.observe(bad)
    assert (policy.mean_run_s, policy.events_measured) == before


@given(policy=policies(), bad=st.sampled_from([-0.001, MAX_HANDOFF_S * 2, math.inf, math.nan]))
def test_handoffs_outside_the_plausible_range_are_ignored(policy, bad):
    before = policy.handoff_s
    policy.observe_handoff(bad)
    assert policy.handoff_s == before


@pytest.mark.parametrize(
    "settings_", [{"batch_max": 0}, {"linger_s": -0.1}, {"linger_s": math.nan}, {"target_s": 0.0}, {"target_s": -1}]
)
def test_impossible_settings_are_refused(settings_):
    with pytest.raises(ValueError):
        BatchPolicy(**settings_)


# -- max_outstanding() and next_batch() ------------------------------------------------------

workers_counts = st.integers(min_value=1, max_value=16)
ready_counts = st.integers(min_value=0, max_value=500)
waits = st.sampled_from([0.0, 0.0005, 0.001, 0.005, 0.049, 0.05, 0.9, 1.0, 10.0])


@given(policy=policies(), workers=workers_counts)
def test_one_batch_per_worker_is_out_until_run_times_are_known_then_a_few(policy, workers):
    expected_per_worker = 1 if policy.mean_run_s is None else policy.outstanding_per_worker
    assert policy.max_outstanding(workers) == workers * expected_per_worker
    assert policy.max_outstanding(0) >= 1


def test_a_batch_still_running_long_stops_short_events_from_being_batched_with_long_ones():
    # Early in a run the short events come back first and make the mean small, while the
    # long ones still run: what those already took must count, or long events get batched.
    policy = BatchPolicy(mean_run_s=0.001, largest_done=100)
    assert policy.size() == 20
    assert policy.size(running_s=0.004) == 5  # 4 ms per event so far: a floor for the mean
    assert policy.size(running_s=2.0) == 1
    assert policy.next_batch(ready=50, oldest_ready_for_s=0.0, outstanding=0, workers=4, running_s=2.0) == 1


@given(policy=policies(), running_s=st.floats(min_value=0, max_value=1e6))
def test_time_running_never_makes_a_batch_bigger(policy, running_s):
    assert 1 <= policy.size(running_s) <= policy.size()


@pytest.mark.parametrize(
    ("keyed", "mean_run_s", "handoff_s", "per_worker"),
    [
        (True, 2.0, None, 1),  # key mode, seconds-long events: nothing waits at the broker
        (True, 2.0, 0.003, 1),
        (True, 0.2, 0.003, 2),  # shorter than 100 handoffs: a round trip would show
        (True, 0.5, 0.01, 2),  # a busy machine's handoff makes the same event short
        (True, 0.001, None, 2),
        (False, 2.0, None, 2),  # total and none: the broker's queue is in offset order anyway
        (True, None, None, 1),  # nothing measured yet
    ],
)
def test_key_mode_sends_long_events_one_per_worker_so_none_queues_ahead_of_an_older_one(
    keyed, mean_run_s, handoff_s, per_worker
):
    policy = BatchPolicy(keyed=keyed, mean_run_s=mean_run_s, handoff_s=handoff_s)
    assert policy.max_outstanding(12) == 12 * per_worker


@given(policy=policies(), ready=ready_counts, waited=waits, outstanding=st.integers(0, 80), workers=workers_counts)
def test_next_batch_is_never_more_than_ready_nor_than_size(policy, ready, waited, outstanding, workers):
    sent = policy.next_batch(ready, waited, outstanding, workers)
    assert 0 <= sent <= ready
    assert sent <= policy.size()


@given(policy=policies(), ready=ready_counts, waited=waits, extra=st.integers(0, 10), workers=workers_counts)
def test_nothing_leaves_while_the_outstanding_limit_is_reached(policy, ready, waited, extra, workers):
    assert policy.next_batch(ready, waited, policy.max_outstanding(workers) + extra, workers) == 0


@st.composite
def free_slot(draw, idle: bool | None = None) -> tuple[BatchPolicy, int, int]:
    """A policy, a worker count and a number of batches out under the limit: with a worker
    idle (fewer batches out than workers), every worker busy, or either (None)."""
    policy = draw(policies())
    workers = draw(workers_counts)
    limit = policy.max_outstanding(workers)
    low, high = {None: (0, limit - 1), True: (0, min(workers, limit) - 1), False: (workers, limit - 1)}[idle]
    assume(low <= high)
    return policy, workers, draw(st.integers(min_value=low, max_value=high))


@st.composite
def batching_policies(draw) -> BatchPolicy:
    """A policy that makes batches of more than one event: partial batches exist."""
    policy = draw(policies(batch_max=st.integers(min_value=2, max_value=200), measured=True))
    policy.observe_batch(policy.batch_max)
    policy.observe(draw(st.just(0.0) | st.floats(min_value=1e-9, max_value=policy.target_s / 2)))
    assume(policy.size() > 1)
    return policy


@given(state=free_slot(), extra=st.integers(0, 300), waited=waits)
def test_a_full_batch_leaves_at_once_under_the_outstanding_limit(state, extra, waited):
    policy, workers, outstanding = state
    size = policy.size()
    assert policy.next_batch(size + extra, waited, outstanding, workers) == size


@given(policy=batching_policies(), workers=workers_counts, data=st.data())
def test_a_partial_batch_leaves_at_once_while_a_worker_is_idle(policy, workers, data):
    outstanding = data.draw(st.integers(min_value=0, max_value=workers - 1))
    ready = data.draw(st.integers(min_value=1, max_value=policy.size() - 1))
    assert policy.next_batch(ready, 0.0, outstanding, workers) == ready


@given(policy=batching_policies(), workers=workers_counts, data=st.data(), waited=waits)
def test_a_partial_batch_with_every_worker_busy_waits_for_the_linger(policy, workers, data, waited):
    limit = policy.max_outstanding(workers)
    assume(limit > workers)
    outstanding = data.draw(st.integers(min_value=workers, max_value=limit - 1))
    ready = data.draw(st.integers(min_value=1, max_value=policy.size() - 1))
    expected = ready if waited >= policy.linger_s else 0
    assert policy.next_batch(ready, waited, outstanding, workers) == expected
    assert policy.linger_left_s(waited) == max(0.0, policy.linger_s - waited)


# -- a simulation: the core's dispatch loop over the policy, on a whole-number clock ---------

steps = st.one_of(
    st.tuples(st.just("feed"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("tick"), st.integers(min_value=0, max_value=7)),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=1000)),
)


class Simulation:
    """Ready events (oldest first, with when each became ready), batches out, and a clock."""

    def __init__(self, policy: BatchPolicy, workers: int, run_s: float) -> None:
        self.policy, self.workers, self.run_s = policy, workers, run_s
        self.now = 0.0
        self.fed = 0
        self.ready: deque[tuple[float, int]] = deque()
        self.out: list[list[int]] = []
        self.sent: list[int] = []

    def feed(self, count: int) -> None:
        for _ in range(count):
            self.ready.append((self.now, self.fed))
            self.fed += 1
        self.dispatch()

    def complete(self, choice: int) -> None:
        if self.out:
            batch = self.out.pop(choice % len(self.out))
            for _ in batch:
                self.policy.observe(self.run_s)
            self.policy.observe_batch(len(batch))
        self.dispatch()

    def tick(self, seconds: float) -> None:
        """Time passes; the core wakes when a waiting batch's linger runs out, as `_wait_s` does."""
        end = self.now + seconds
        while self.now < end:
            wake = end
            if self.ready and self.slot_free():
                wake = min(end, self.now + self.policy.linger_left_s(self.oldest_waited()))
            self.now = wake
            self.dispatch()

    def slot_free(self) -> bool:
        return len(self.out) < self.policy.max_outstanding(self.workers)

    def oldest_waited(self) -> float:
        return self.now - self.ready[0][0]

    def dispatch(self) -> None:
        while self.ready:
            size = self.policy.next_batch(len(self.ready), self.oldest_waited(), len(self.out), self.workers)
            if not size:
                break
            assert size <= self.policy.batch_max
            batch = [self.ready.popleft()[1] for _ in range(size)]
            self.out.append(batch)
            self.sent.extend(batch)
        self.check()

    def check(self) -> None:
        assert len(self.out) <= self.policy.max_outstanding(self.workers), "more batches out than the limit"
        if self.ready and self.slot_free():
            assert self.oldest_waited() < self.policy.linger_s, "an event waited past the linger with a slot free"
            assert len(self.ready) < self.policy.size(), "a full batch stayed with a slot free"


@settings(max_examples=200)
@given(
    batch_max=st.integers(min_value=1, max_value=30),
    linger=st.sampled_from([0.0, 1.0, 2.0, 5.0]),
    workers=st.integers(min_value=1, max_value=4),
    per_worker=st.integers(min_value=1, max_value=3),
    run_s=st.sampled_from([0.0, 0.0005, 0.004, 0.02, 1.0]),
    plan=st.lists(steps, max_size=60),
)
def test_every_event_is_sent_once_and_none_waits_past_the_linger_while_a_slot_is_free(
    batch_max, linger, workers, per_worker, run_s, plan
):
    policy = BatchPolicy(batch_max=batch_max, linger_s=linger, outstanding_per_worker=per_worker)
    sim = Simulation(policy, workers, run_s)
    for kind, value in plan:
        getattr(sim, kind)(value)
    while sim.out or sim.ready:  # the end of the stream: every batch comes back, time passes
        sim.complete(0)
        sim.tick(linger)
    assert sorted(sim.sent) == list(range(sim.fed))  # every event once: none lost, none twice
