"""The replay loop, written once: a generator of steps that a shell carries out.

A replay decides what goes out and when; carrying that out is the shell's (emit with
eventlet or with asyncio, write an SSE chunk, wait on the shell's event). So the loop
yields steps and never waits itself:

- `Send(records, generation)`: these records go out now, in order (one or more; the
  transport decides how they are framed), after which the shell gives the other clients a
  turn; a shell that may yield between messages stops when the generation moves on;
- `Wait(timeout)`: wait for `timeout` seconds or until the subscriber's waker is set (an
  ack, a resubscribe, a disconnect); `None` waits for the waker alone, `0` just lets the
  other clients have a turn;
- `Heartbeat()`: nothing is due for a while; an SSE stream writes a comment;
- `Finish(count, offset)`: the recording has ended (not when looping).

Before every step it checks its generation: a resubscribe or a disconnect ends it at once.

A followed output (serving/followed.py) is replayed the same way, but it grows: when
nothing is committed beyond where the replay is, its `records_from` yields None, and the
replay sends what it holds and looks again after FOLLOW_POLL_S (with heartbeats through a
long silence, as while pacing). A recording never yields None: its replay is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stream_processor.core.records import Record
from stream_processor.core.replay import ReplaySchedule, event_time
from stream_processor.serving.recording import Replayable
from stream_processor.serving.subscriber import Subscriber
from stream_processor.serving.subscription import Subscription

# A replay gives the other clients a turn after examining this many records, or after
# this many seconds, whichever comes first, whether the records matched or not.
TURN_RECORDS = 64
TURN_S = 0.005
BACKLOG_POLL_S = 0.05  # nothing wakes a replay when a plain client's transport catches up: look again
FOLLOW_POLL_S = 0.01  # nor when a followed output commits more (its poller is another thread): look again


@dataclass(frozen=True, slots=True)
class Send:
    records: list[Record]
    generation: int  # a shell that yields while sending checks it before each message


@dataclass(frozen=True, slots=True)
class Wait:
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Finish:
    count: int  # events sent by this replay
    offset: int  # one past the last offset of the recording it covered


Step = Send | Wait | Heartbeat | Finish
GIVE_A_TURN = Wait(0)


@dataclass(frozen=True)
class Pacing:
    """How a shell wants its steps: records per Send, and how long an SSE stream may stay silent."""

    batch: int = 1  # at most this many records per Send
    heartbeat_s: float | None = None  # None: no heartbeats (engine.io pings)


def replay(
    subscriber: Subscriber,
    generation: int,
    subscription: Subscription,
    recording: Replayable,
    window: int,
    pacing: Pacing,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Step]:
    """The steps of one replay to `subscriber`, from `subscription.offset` on, while its
    generation is `generation` (taken when it subscribed: a generator starts late)."""
    return _Replay(subscriber, generation, subscription, recording, window, pacing, clock).steps()


class _Replay:
    def __init__(
        self,
        subscriber: Subscriber,
        generation: int,
        subscription: Subscription,
        recording: Replayable,
        window: int,
        pacing: Pacing,
        clock: Callable[[], float],
    ) -> None:
        self.subscriber = subscriber
        self.generation = generation
        self.subscription = subscription
        self.recording = recording
        self.window = window
        self.pacing = pacing
        self.clock = clock
        self.schedule = ReplaySchedule(subscription.speed, subscription.realtime)
        self.batch: list[Record] = []
        self.dues: list[float] = []
        self.count = 0  # events sent
        self.next_offset = subscription.offset  # one past the last record examined
        self.examined = 0  # records examined since the last turn given to the others
        self.waiting_for_since = subscription.since is not None  # skipping to the first event at or after it

    @property
    def superseded(self) -> bool:
        return self.subscriber.generation != self.generation

    def steps(self) -> Iterator[Step]:
        self.started = self.last_turn = self.last_output = self.clock()
        for record in self.recording.records_from(self.subscription.offset):
            if self.superseded:
                return  # disconnected or resubscribed: stop scanning at once
            if record is None:  # a followed output has nothing more committed yet
                yield from self._until(self.clock() + FOLLOW_POLL_S)
                continue
            self.next_offset = record.offset + 1
            yield from self._turn_if_due()
            if self.superseded:
                return
            if not self._wanted(record):
                continue
            yield from self._room_for_one_more()
            due = self.started + self.schedule.due(record.event)
            yield from self._until(due)
            if self.superseded:
                return
            self.batch.append(record)
            self.dues.append(due)
            if len(self.batch) >= self.pacing.batch:
                yield from self._flush()
                self.examined, self.last_turn = 0, self.clock()  # a shell gives the others a turn after each Send
        yield from self._flush()
        if not self.superseded:
            yield Finish(self.count, self.next_offset)

    def _wanted(self, record: Record) -> bool:
        since = self.subscription.since
        if self.waiting_for_since and since is not None:
            moment = event_time(record.event)
            if moment is None or moment < since:
                return False
            self.waiting_for_since = False
        # A raw subscriber keeps every line it does not filter out, events or not.
        return self.subscription.matches(record.event) or (self.subscription.raw and record.event is None)

    def _turn_if_due(self) -> Iterator[Step]:
        """Every TURN_RECORDS records or TURN_S seconds, matched or not, the others get a turn."""
        self.examined += 1
        if self.examined >= TURN_RECORDS or self.clock() - self.last_turn >= TURN_S:
            yield from self._flush()
            yield GIVE_A_TURN
            self.examined, self.last_turn = 0, self.clock()

    def _room_for_one_more(self) -> Iterator[Step]:
        """Until the window lets one more record into the batch."""
        while (
            not self.superseded and (room := self.subscriber.room(self.window)) is not None and room <= len(self.batch)
        ):
            if self.batch:
                yield from self._flush()
            else:  # full: an ack wakes an acknowledging client; a plain one's transport does not
                yield Wait(None if self.subscription.acknowledges else BACKLOG_POLL_S)

    def _until(self, due: float) -> Iterator[Step]:
        """Until `due`, flushing what is ready first, with heartbeats through long silences."""
        heartbeat = self.pacing.heartbeat_s
        while not self.superseded and (delay := due - self.clock()) > 0:
            yield from self._flush()
            silent = self.clock() - self.last_output
            if heartbeat is None or silent + delay < heartbeat:
                yield Wait(delay)
                continue
            yield Wait(max(0.0, heartbeat - silent))
            if not self.superseded and self.clock() - self.last_output >= heartbeat:
                yield Heartbeat()
                self.last_output = self.clock()

    def _flush(self) -> Iterator[Step]:
        """Send the batch: what is due now, in order."""
        if not self.batch:
            return
        now = self.clock()
        for record, due in zip(self.batch, self.dues, strict=True):
            self.subscriber.record_sent(record.offset)
            if self.subscription.realtime:
                self.subscriber.record_lateness(max(0.0, now - due))
        self.count += len(self.batch)
        yield Send(list(self.batch), self.generation)
        self.batch.clear()
        self.dues.clear()
        self.last_output = self.clock()
