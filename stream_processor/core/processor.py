"""`StreamProcessor`: the run's core. One thread owns the run's state; others post to it.

Like Flink's async operator, which completes its element queue through a mailbox: the
reader (intake), the executor's reply thread and anyone stopping the run only put
messages in a queue. The owner thread alone admits events into the window, chooses
what to send and in which batches, retries, hands the ready lines to the sink's writer
thread (core/writer.py), and tells the observers (figures, metrics, progress, plot, the
server's acks) once they are written. So a slow terminal, disk, database or socket slows
the writing, never the sending of work or the receiving of completions, and no lock is
held across any I/O.

The window is counted in credits: the reader takes one per event before posting it
(blocking while none is left), and the owner gives them back as events leave the
window. Bad input never reaches the executor: its error record completes in place.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from stream_processor.core.batching import BatchPolicy
from stream_processor.core.contracts import Batch, Completion, EventTask, Executor, Reply, Sink, Window
from stream_processor.core.observer import CoreState, EntryState, HeadOfLine, Observer, WorkerOn, overrides
from stream_processor.core.ordering import KEY, TOTAL, OrderMode
from stream_processor.core.outcomes import DONE, FAILED, LOST, SKIPPED, TIMED_OUT
from stream_processor.core.records import Record
from stream_processor.core.retries import RetryPolicy
from stream_processor.core.writer import LineWriter

log = logging.getLogger(__name__)

TICK_S = 0.5  # the owner wakes at least this often, and tells the observers how things stand
MAX_MESSAGES_PER_TURN = 2000  # then it sends and writes, so lines never wait on a flood
WORKER_SEEN_S = 60.0  # a worker process not heard of for this long no longer counts


class RunFailed(RuntimeError):
    """Writing results failed, or something the run needs could not be kept running."""


NO_ID = object()  # an event without an "id" field (not the same as "id": null)


def error_record(offset: int, message: str, event_id: Any = NO_ID) -> dict[str, Any]:
    record: dict[str, Any] = {"error": message, "offset": offset}
    if event_id is not NO_ID:
        record["id"] = event_id
    return record


QUEUED, RUNNING, RETRYING, WAITING_FOR_KEY, DONE_WAITING, HANDED_BACK = EntryState


# -- the mailbox: what other threads post to the owner ------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """Intake read an event (it holds a window credit)."""

    record: Record
    duration_s: float | None
    arrival_s: float
    read_at: float


@dataclass(frozen=True, slots=True)
class Replied:
    """The executor pushed a reply for a batch."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Drain:
    """Set `done` once every event submitted so far is written."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class Fail:
    """Stop the run: something it needs cannot be kept running."""

    reason: BaseException


@dataclass(frozen=True, slots=True)
class AskAgain:
    """The workers or the broker restarted: send again what was out before `sent_before`."""

    why: str
    suspects: bool
    sent_before: float | None


@dataclass(frozen=True, slots=True)
class Written:
    """The writer wrote these lines: (offset, line, is_error), in the order written."""

    lines: list[tuple[int, bytes, bool]]


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish the turn, tell the observers how the run ended, and end the owner thread."""


Message = Read | Replied | Drain | Fail | AskAgain | Written | Stop


@dataclass(slots=True)
class _Entry:
    """An event in the window, until its line is written."""

    raw: bytes
    event_id: Any
    read_at: float
    attempts: int = 0  # runs that failed or died so far
    state: EntryState = QUEUED  # what it waits for, for the head of the line
    # It was out in a batch whose worker process died (redelivered): maybe what killed it.
    # From then on it runs alone in a process of its own, where its death is an attempt.
    suspect: bool = False


@dataclass(slots=True)
class _BatchOut:
    """A batch sent and not yet over: when it left, its offsets (in the order it runs
    them), those not yet back, and what its worker has said of it."""

    sent_at: float
    offsets: tuple[int, ...]
    waiting: set[int]
    worker: str | None = None
    running: tuple[int, float] | None = None  # (offset, since): the event it said it runs

    def first_waiting(self) -> int | None:
        """The event of it that runs now, as far as we know: the first not yet back."""
        return next((offset for offset in self.offsets if offset in self.waiting), None)


class StreamProcessor:
    """Ordered parallel processing of an endless stream, with at most `max_in_flight` held."""

    def __init__(
        self,
        executor: Executor,
        sink: Sink,
        max_in_flight: int = 1000,
        start_offset: int = 0,
        observers: Sequence[Observer] = (),
        clock: Callable[[], float] = time.monotonic,
        batching: BatchPolicy | None = None,
        retries: RetryPolicy | None = None,
        workers: int | None = None,
        order: OrderMode | None = None,
        already_done: Collection[int] = (),
    ) -> None:
        self.executor = executor
        self.sink = sink
        self.clock = clock
        self.observers = list(observers)
        self.batching = batching or BatchPolicy()
        self.retries = retries or RetryPolicy(retries=0)
        self.workers = workers  # pool processes, if known; else estimated from the replies
        self.order = order or OrderMode()
        self.batching.keyed = self.order.kind == KEY  # how far ahead to send depends on it
        self.batching.in_total_order = self.order.kind == TOTAL  # how long a batch may run depends on it
        self.capacity = max_in_flight
        self._credits = threading.Semaphore(max_in_flight)
        self._mailbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        # The owner's state: touched by the owner thread only.
        self._order: Window = self.order.window(max_in_flight, start_offset)
        self._already_done = set(already_done)  # written by the run this one resumes (beyond its watermark)
        self._watermark = start_offset
        self._watermark_moved_at = clock()  # when the line last moved, for the head of the line
        self._watermark_hooks = [o.on_watermark for o in self.observers if overrides(o, "on_watermark")]
        self._completion_hooks = [o.on_completions for o in self.observers if overrides(o, "on_completions")]
        self._state_hooks = [o.on_state for o in self.observers if overrides(o, "on_state")]
        self._last_tick = 0.0
        self._unfinished = 0  # admitted, not yet done (the rest of the window is done, waiting)
        self._entries: dict[int, _Entry] = {}
        self._ready: list[int] = []  # heap: the events that may start, lowest offset first
        self._ready_since: dict[int, float] = {}
        self._ready_times: deque[tuple[float, int]] = deque()  # (since, offset), oldest first, for the linger
        self._batch_ids = itertools.count()
        self._out: dict[int, _BatchOut] = {}  # batch id -> the batch, until its final reply
        self._alone: deque[int] = deque()  # retries and events of a lost batch: one per batch
        self._retry_at: list[tuple[float, int]] = []  # heap of (due, offset)
        self._to_write: list[tuple[int, tuple[bytes, bool]]] = []
        self._writer = LineWriter(sink, lambda lines: self._mailbox.put(Written(lines)), self.fail)
        self._being_written: list[int] = []  # heap: offsets handed to the writer, until written
        self._written_offsets: set[int] = set()  # written, still in _being_written (popped lazily)
        self._drain_waiters: list[threading.Event] = []
        self._workers_seen: dict[str, float] = {}
        self.batches_out = 0
        self._progress_at: float | None = None  # last completion, or when batches went out after none were
        self.written = 0
        self.errors = 0
        self.duplicates_dropped = 0  # completions for an offset already done: never written twice
        self.replies = 0  # messages back for batches out: reports while they run, and final replies
        self.results_back = 0  # events those told of for the first time
        self.handed_back = 0  # events workers gave back unstarted
        self.asked_again = 0  # events sent again after a restart of the workers or the broker

    # -- called from any thread ----------------------------------------------------------

    def start(self) -> StreamProcessor:
        self._writer.start()
        self.executor.start(lambda reply: self._mailbox.put(Replied(reply)))
        self._thread = threading.Thread(target=self._run, name="run-owner", daemon=True)
        self._thread.start()
        return self

    def submit(
        self, record: Record, duration_s: float | None = None, arrival_s: float = 0.0, timeout: float | None = None
    ) -> None:
        """Hand one record to the owner; blocks while the window is full."""
        self._raise_failure()
        if not self._credits.acquire(timeout=timeout):
            raise TimeoutError(f"window of {self.capacity} events stayed full for {timeout} s")
        if self._failure is not None:
            self._credits.release()  # for the next caller, who fails the same way instead of waiting
            self._raise_failure()
        self._mailbox.put(Read(record, duration_s, arrival_s, self.clock()))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted event is written; False if `timeout` ran out first."""
        done = threading.Event()
        self._mailbox.put(Drain(done))
        finished = done.wait(timeout)
        self._raise_failure()
        return finished

    def fail(self, reason: BaseException) -> None:
        """Stop the run from outside (a broker or worker that cannot be kept running)."""
        self._mailbox.put(Fail(reason))

    def ask_again(self, why: str, suspects: bool, sent_before: float | None = None) -> None:
        """Send again every batch out (sent before `sent_before`, on this run's clock), from
        outside: the run's workers or its broker were restarted, and a task can be lost
        then (see `_ask_again`)."""
        self._mailbox.put(AskAgain(why, suspects, sent_before))

    def close(self) -> None:
        if self._thread is not None:
            self._mailbox.put(Stop())
            self._thread.join()
            self._thread = None
        self._writer.stop()  # what was released is written: the output is a prefix to resume from
        self.executor.close()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def head_read_at(self) -> float | None:
        """When the oldest event not yet written (at the low watermark) was read."""
        entry = self._entries.get(self._watermark)
        return entry.read_at if entry is not None else None

    def idle_since(self) -> float | None:
        """When work last moved: the last completion, or the send that ended a quiet spell."""
        return self._progress_at

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RunFailed(f"the run cannot go on: {self._failure}") from self._failure

    # -- the owner thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                message = self._mailbox.get(timeout=self._wait_s())
            except queue.Empty:
                message = None
            if isinstance(message, Stop):
                if self._failure is None:
                    self._tick(force=True)  # the last word: the views see the run as it ended
                return
            if self._failure is not None:
                if isinstance(message, Drain):
                    message.done.set()  # drain() raises the failure
                continue  # failed: only waiting to be stopped
            try:
                self._take_messages(message)
                self._send_due_retries()
                self._dispatch()
                self._write_ready_lines()
                self._tick()
            except Exception as exc:  # e.g. the disk is full: stop the run, loudly
                self._set_failure(exc)

    def _take_messages(self, first: Message | None) -> None:
        message, taken = first, 0
        while message is not None:
            if isinstance(message, Stop):
                self._mailbox.put(message)  # seen on the next turn, after this one's writes
                return
            self._handle(message)
            taken += 1
            if taken >= MAX_MESSAGES_PER_TURN:
                return
            try:
                message = self._mailbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, message: Message) -> None:
        match message:
            case Read(record, duration_s, arrival_s, read_at):
                self._admit(record, duration_s, arrival_s, read_at)
            case Replied(reply):
                self._on_reply(reply)
            case Drain(done):
                self._drain_waiters.append(done)
            case Fail(reason):
                raise _Failed(reason)
            case AskAgain(why, suspects, sent_before):
                self._ask_again(why, suspects, sent_before)
            case Written(lines):
                self._on_written(lines)

    def _wait_s(self) -> float:
        now = self.clock()
        wait = max(0.0, self._last_tick + TICK_S - now)
        if self._retry_at:
            wait = min(wait, self._retry_at[0][0] - now)
        if self._ready and self.batches_out < self.batching.max_outstanding(self._worker_count()):
            wait = min(wait, self.batching.linger_left_s(now - self._oldest_ready_since()))
        return max(0.0, wait)

    # -- intake ----------------------------------------------------------------------

    def _admit(self, record: Record, duration_s: float | None, arrival_s: float, read_at: float) -> None:
        key = self.order.key_of(record.event) if record.error is None else None
        for observer in self.observers:
            observer.on_read(duration_s, arrival_s, key)
        offset = record.offset
        if offset in self._already_done:  # written by the run this one resumes
            self._already_done.discard(offset)
            self._order.admit(offset, done=True)
            return
        may_start = self._order.admit(offset, key)
        event_id = record.event.get("id", NO_ID) if isinstance(record.event, dict) else NO_ID
        self._entries[offset] = _Entry(record.raw, event_id, read_at, state=QUEUED if may_start else WAITING_FOR_KEY)
        self._unfinished += 1
        if record.error is not None:
            self._finish_with_error(offset, record.error)
        elif may_start:
            self._make_ready(offset)

    def _make_ready(self, offset: int) -> None:
        if self._entries[offset].suspect:  # it runs alone, isolated (see _suspect)
            self._entries[offset].state = QUEUED
            self._alone.append(offset)
            return
        now = self.clock()
        self._entries[offset].state = QUEUED
        heapq.heappush(self._ready, offset)
        self._ready_since[offset] = now
        self._ready_times.append((now, offset))

    def _oldest_ready_since(self) -> float:
        while self._ready_times and self._ready_times[0][1] not in self._ready_since:
            self._ready_times.popleft()  # sent since
        return self._ready_times[0][0] if self._ready_times else self.clock()

    # -- sending ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        workers = self._worker_count()
        limit = self.batching.max_outstanding(workers)
        while self._alone and self.batches_out < limit:
            offset = self._alone.popleft()
            if self._order.is_pending(offset):  # else done meanwhile (a late reply counted first)
                self._send([(offset, -1)])
        now = self.clock()
        running_s = self._out_per_event_s(now)
        while self._ready:
            waited = now - self._oldest_ready_since()
            size = self.batching.next_batch(len(self._ready), waited, self.batches_out, workers, running_s)
            if not size:
                return
            self._send(self._take_batch(size), running_s)

    def _out_per_event_s(self, now: float) -> float:
        """A floor for the mean run time from the batches still out (the batch policy's
        `running_s`): the time they have run so far, over the events measured so far.
        Short events come back first; early in a run this says that the many still out
        are long (a "total time on test" estimate), and later it fades."""
        running = sum(now - out.sent_at for out in self._out.values())  # a few per worker
        return running / max(1, self.batching.events_measured)

    def _take_batch(self, size: int) -> list[tuple[int, int]]:
        """Up to `size` events, lowest offsets first, each followed by the same-key events
        already waiting for it (they run after it, in order): (offset, index it follows)."""
        batch: list[tuple[int, int]] = []
        while len(batch) < size and self._ready:
            offset = heapq.heappop(self._ready)
            del self._ready_since[offset]
            batch.append((offset, -1))
            while (
                len(batch) < size
                and (following := self._order.successor(offset)) is not None
                and not self._entries[following].suspect
            ):
                self._order.join(following)
                batch.append((following, len(batch) - 1))
                offset = following
        return batch

    def _send(self, batch: list[tuple[int, int]], running_s: float = 0.0) -> None:
        tasks = []
        for offset, follows in batch:
            entry = self._entries[offset]
            entry.state = RUNNING
            tasks.append(EventTask(offset, entry.raw.decode("utf-8"), follows))
        batch_id = next(self._batch_ids)
        isolate = len(tasks) == 1 and self._entries[tasks[0].offset].suspect
        self.executor.submit(Batch(batch_id, tasks, self.batching.handback_after_s(len(tasks), running_s), isolate))
        now = self.clock()
        if not self.batches_out:
            self._progress_at = now
        self.batches_out += 1
        offsets = tuple(offset for offset, _ in batch)
        self._out[batch_id] = _BatchOut(now, offsets, set(offsets))

    def _send_due_retries(self) -> None:
        now = self.clock()
        while self._retry_at and self._retry_at[0][0] <= now:
            _, offset = heapq.heappop(self._retry_at)
            if self._order.is_pending(offset):
                self._entries[offset].state = QUEUED
                self._alone.append(offset)

    def _worker_count(self) -> int:
        if self.workers:
            return self.workers
        # Workers started elsewhere: as many as have answered lately (at least a few, to begin).
        now = self.clock()
        for worker, seen_at in list(self._workers_seen.items()):
            if now - seen_at > WORKER_SEEN_S:
                del self._workers_seen[worker]
        return max(4, len(self._workers_seen))

    # -- completions -----------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        out = self._out.get(reply.batch_id)
        if out is None:
            # A repeat of a batch already over (at-least-once engines: a redelivery, a host back late).
            self.duplicates_dropped += sum(self._is_done(completion.offset) for completion in reply.completions)
            return
        self._progress_at = self.clock()
        self.replies += 1
        self._note_worker(out, reply)
        # What this batch has not told us yet: a final reply repeats what reports carried.
        completions = [completion for completion in reply.completions if completion.offset in out.waiting]
        out.waiting.difference_update(completion.offset for completion in completions)
        handed_back = [offset for offset in reply.handed_back if offset in out.waiting]
        out.waiting.difference_update(handed_back)
        self.results_back += len(completions)
        self.handed_back += len(handed_back)
        if completions:
            self._on_completions(completions, len(out.offsets))
        if handed_back:
            if reply.redelivered:
                self._suspect(handed_back)
            self._hand_back(handed_back, alone=reply.redelivered)
        if reply.final:
            self._batch_over(reply, out)

    def _ask_again(self, why: str, suspects: bool, sent_before: float | None) -> None:
        """Forget every batch out (sent before `sent_before`: later ones went out after the
        restart began, some maybe in answer to a redelivery) and send its events with no
        result yet again.

        After a restart nobody may hold a task any more: a Redis consumer that dies in its
        BRPOP takes one with it, a reconnecting worker leaves its prefetched ones unacked
        for the visibility timeout, a broker may lose what it had not written. Waiting for
        the broker to hand them out again can mean waiting forever. A forgotten batch that
        still comes back is a repeat (dropped, `_on_reply`); one handed out again runs
        nothing. `suspects`: the workers died or stalled with these out, and one of them
        may be why; each then runs alone, isolated (see `_suspect`)."""
        lost = [batch_id for batch_id, out in self._out.items() if sent_before is None or out.sent_at < sent_before]
        if not lost:
            return
        offsets = sorted(offset for batch_id in lost for offset in self._out.pop(batch_id).waiting)
        log.warning("%s: sending again the %d events of the %d batches out", why, len(offsets), len(lost))
        self.batches_out -= len(lost)
        self.asked_again += len(offsets)
        if suspects:
            self._suspect(offsets)
        self._hand_back(offsets, alone=suspects)

    def _note_worker(self, out: _BatchOut, reply: Reply) -> None:
        """Which process runs the batch, and which event of it, as its replies say."""
        out.worker = reply.worker or next((c.worker for c in reply.completions if c.worker), out.worker)
        if reply.running is not None:
            offset, run_s = reply.running
            out.running = (offset, self.clock() - run_s)

    def _batch_over(self, reply: Reply, out: _BatchOut) -> None:
        del self._out[reply.batch_id]
        self.batches_out -= 1
        self.batching.observe_batch(len(out.offsets))
        if reply.completions and reply.completions[0].handoff_s is not None:
            self.batching.observe_handoff(reply.completions[0].handoff_s)
        if out.waiting:  # a final reply that does not account for some: they did not run
            log.warning("a batch's reply said nothing of offsets %s; they run again", sorted(out.waiting))
            self._hand_back(sorted(out.waiting), alone=True)

    def _on_completions(self, completions: list[Completion], batch_size: int) -> None:
        now = self.clock()
        for hook in self._completion_hooks:
            hook(completions)
        for completion in completions:
            if completion.worker:
                self._workers_seen[completion.worker] = now
            if completion.run_s is not None and completion.kind == DONE:
                self.batching.observe(completion.run_s)
        did_not_run = []
        for completion in completions:
            if not self._order.is_pending(completion.offset):
                self.duplicates_dropped += self._is_done(completion.offset)  # a repeat: the first one counted
                continue
            if completion.kind != DONE and not self._is_running(completion.offset):
                continue  # a repeated failure or loss: it must not use up another attempt
            if completion.kind == SKIPPED or (completion.kind == LOST and batch_size > 1):
                did_not_run.append(completion.offset)
            else:
                self._complete(completion)
        if did_not_run:
            self._put_back(did_not_run)

    def _hand_back(self, offsets: list[int], alone: bool) -> None:
        """Events a worker gave back unstarted: they go to the next free worker (alone,
        after a lost worker: one of them may be what killed it)."""
        running = [offset for offset in offsets if self._is_running(offset)]
        if alone:
            self._put_back(running)
            return
        startable = self._order.put_back(running)
        for offset in running:
            self._entries[offset].state = WAITING_FOR_KEY
        for offset in startable:
            self._make_ready(offset)
            self._entries[offset].state = HANDED_BACK

    def _suspect(self, offsets: list[int]) -> None:
        """A whole worker died with these out (a threads or gevent worker dies with every
        event it runs): one of them may have killed it, and nobody knows which. None is
        charged an attempt for it (so innocent batch-mates are never failed by a poison
        event), but each runs again alone, isolated, where a death is its own."""
        for offset in offsets:
            if self._is_running(offset):
                self._entries[offset].suspect = True

    def _is_done(self, offset: int) -> bool:
        """Written, or done and waiting for its turn (not a stray offset never admitted)."""
        if offset < self._watermark:
            return True
        entry = self._entries.get(offset)
        return entry is not None and entry.state == DONE_WAITING

    def _is_running(self, offset: int) -> bool:
        entry = self._entries.get(offset)
        return entry is not None and entry.state == RUNNING

    def _put_back(self, offsets: list[int]) -> None:
        """Events of a batch that did not run: each runs alone (which event of a lost batch
        killed its process?), except those that must wait for their key's retry."""
        startable = self._order.put_back(offsets)
        for offset in offsets:
            self._entries[offset].state = WAITING_FOR_KEY
        for offset in startable:
            self._entries[offset].state = QUEUED
        self._alone.extend(startable)

    def _complete(self, completion: Completion) -> None:
        offset, kind, value = completion.offset, completion.kind, completion.value
        if kind == DONE:
            entry = self._entries[offset]
            self._finish(offset, entry.raw if value is None else value.encode("utf-8"), False)
            return
        # Every other kind says why: the engines make it so (executor.well_formed, _failure_of).
        assert value is not None, f"a {kind} completion without its reason"
        if kind == FAILED:
            self._retry_or_give_up(offset, self.retries.gave_up, value)
        elif kind == LOST:
            self._retry_or_give_up(offset, self.retries.died, value)
        elif kind == TIMED_OUT:
            self._finish_with_error(offset, f"timed out: {value}")
        else:  # INVALID
            self._finish_with_error(offset, value)

    def _retry_or_give_up(self, offset: int, give_up: Callable[[int, str], str], why: str) -> None:
        entry = self._entries[offset]
        entry.attempts += 1
        delay = self.retries.delay_after(entry.attempts)
        if delay is None:
            log.warning("event at offset %d: %s", offset, give_up(entry.attempts, why))
            self._finish_with_error(offset, give_up(entry.attempts, why))
            return
        log.info("event at offset %d: attempt %d: %s; again in %.1f s", offset, entry.attempts, why, delay)
        entry.state = RETRYING
        heapq.heappush(self._retry_at, (self.clock() + delay, offset))

    def _finish_with_error(self, offset: int, message: str) -> None:
        record = error_record(offset, message, self._entries[offset].event_id)
        self._finish(offset, json.dumps(record).encode(), True)  # ASCII: any text in it survives

    def _finish(self, offset: int, line: bytes, is_error: bool) -> None:
        self._entries[offset].state = DONE_WAITING
        self._unfinished -= 1
        released, startable = self._order.finish(offset, (line, is_error))
        self._to_write.extend(released)
        for following in startable:
            self._make_ready(following)

    # -- writing ---------------------------------------------------------------------

    def _write_ready_lines(self) -> None:
        """Hand the released lines to the writer (core/writer.py); they count once written."""
        if self._to_write:
            released, self._to_write = self._to_write, []
            for offset, _ in released:
                heapq.heappush(self._being_written, offset)
            self._writer.hand([(offset, line, is_error) for offset, (line, is_error) in released])
        self._move_watermark()
        if self._drain_waiters and not self._entries:
            for waiter in self._drain_waiters:
                waiter.set()
            self._drain_waiters.clear()

    def _on_written(self, lines: list[tuple[int, bytes, bool]]) -> None:
        now = self.clock()
        for offset, _, is_error in lines:
            entry = self._entries.pop(offset)
            self._written_offsets.add(offset)
            self.written += 1
            self.errors += is_error
            for observer in self.observers:
                observer.on_written(offset, now - entry.read_at, is_error)

    def _tick(self, force: bool = False) -> None:
        """Tell the observers how things stand (the window, the head of the line), twice a second."""
        now = self.clock()
        if now - self._last_tick < TICK_S and not force:
            return
        self._last_tick = now
        if not self._state_hooks:
            return
        state = CoreState(
            in_flight=len(self._order),
            done_waiting=len(self._order) - self._unfinished,
            low_watermark=self._watermark,
            batches_out=self.batches_out,
            head=self._head_of_line(),
            batch_size=self.batching.size(),
            mean_event_run_s=self.batching.mean_run_s,
            handoff_s=self.batching.handoff_s,
            duplicates_dropped=self.duplicates_dropped,
            late_replies_dropped=self.executor.late_replies_dropped,
            running=self._workers_on(),
            replies=self.replies,
            results_back=self.results_back,
            handed_back=self.handed_back,
            asked_again=self.asked_again,
        )
        for hook in self._state_hooks:
            hook(state)

    def _head_of_line(self) -> HeadOfLine | None:
        offset = self._watermark
        entry = self._entries.get(offset)
        if entry is None:
            return None
        state: EntryState | str = entry.state
        worker, running_since = None, None
        out = self._batch_holding(offset) if entry.state == RUNNING else None
        if out is not None:
            worker = out.worker
            running = out.first_waiting()
            if running != offset:  # inside its batch, behind an event of it that has not ended
                state = f"waiting in its batch behind offset {running}"
            elif out.running is not None and out.running[0] == offset:
                running_since = out.running[1]
        return HeadOfLine(
            offset=offset,
            event_id=None if entry.event_id is NO_ID else entry.event_id,
            title=_title_of(entry.raw),
            read_at=entry.read_at,
            state=state,
            attempts=entry.attempts,
            done_behind=len(self._order) - self._unfinished,
            head_since=max(self._watermark_moved_at, entry.read_at),
            worker=worker,
            running_since=running_since,
        )

    def _batch_holding(self, offset: int) -> _BatchOut | None:
        """The batch out that `offset` is in (a few per worker: a scan, twice a second)."""
        return next((out for out in self._out.values() if offset in out.waiting), None)

    def _workers_on(self) -> tuple[WorkerOn, ...]:
        """The events workers have said they run, and still do, by worker."""
        return tuple(
            WorkerOn(out.worker, out.running[0], out.running[1])
            for out in self._out.values()
            if out.worker is not None and out.running is not None and out.running[0] in out.waiting
        )

    def _move_watermark(self) -> None:
        """Events below the low watermark are written: they have left the window, their
        credits go back. (Released lines still being written hold it back.)"""
        while self._being_written and self._being_written[0] in self._written_offsets:
            self._written_offsets.discard(heapq.heappop(self._being_written))
        watermark = self._order.next_to_release
        if self._being_written:
            watermark = min(watermark, self._being_written[0])
        if watermark > self._watermark:
            self._credits.release(watermark - self._watermark)
            self._watermark = watermark
            self._watermark_moved_at = self.clock()
            for hook in self._watermark_hooks:
                hook(watermark)

    def _set_failure(self, exc: BaseException) -> None:
        self._failure = exc.reason if isinstance(exc, _Failed) else exc
        self._credits.release(self.capacity)  # wake a reader blocked on a full window
        for waiter in self._drain_waiters:
            waiter.set()
        self._drain_waiters.clear()


def _title_of(raw: bytes) -> str | None:
    try:
        title = json.loads(raw).get("title")
    except (ValueError, AttributeError, RecursionError):
        return None
    return title if isinstance(title, str) else None


class _Failed(Exception):
    """`fail()` from another thread, raised on the owner thread."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason
