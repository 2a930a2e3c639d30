"""One lane per sink: a bounded outbox and the worker that empties it.

A lane is what keeps sinks independent: each has its own outbox (at most
``max_queue`` events; when full the newest event is dropped and counted, with
one warning per :data:`DROP_WARNING_INTERVAL` carrying the count) and its own
worker (a daemon thread for :class:`Lane`, an asyncio task for
:class:`AsyncLane`), so a sink that hangs or fails delays nobody else.

:class:`Outbox` holds the state and every counter under one lock, so
``enqueued == delivered + dropped + failed + pending`` holds whenever it is
read; the workers carry out :mod:`autoplay_base.tracking.policy`'s decisions.
The two workers are twins: their bodies differ only by ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from autoplay_base.tracking._values import Captured, Privacy
from autoplay_base.tracking.policy import (
    BatchPolicy,
    DeliveryFlow,
    Outcome,
    RetryPolicy,
    Send,
    Settled,
    Wait,
    chunk_by_bytes,
    delivery_flow,
)
from autoplay_base.tracking.results import DeliveryError, DropNotice
from autoplay_base.tracking.sinks.base import Encoded, Sink

__all__ = [
    "DROP_WARNING_INTERVAL",
    "RETRY_WARNING_AFTER",
    "AsyncLane",
    "Callbacks",
    "Lane",
    "Outbox",
]

logger = logging.getLogger("autoplay_base.tracking")

DROP_WARNING_INTERVAL = 10.0
"""Seconds between two warnings about a full outbox (each carries the total count),
and between two warnings about a chunk still being retried."""
RETRY_WARNING_AFTER = 5
"""Failed attempts of one chunk before its retries are warned about (not only debug)."""
_COUNTS = ("enqueued", "delivered", "dropped", "failed", "batches", "retries")


class Outbox:
    """A sink's bounded queue and its counters (all under :attr:`lock`).

    ``wake`` is set by the lane: called (outside the lock) when the worker may
    have something new to do — the outbox stopped being empty, a batch is
    full, a flush or a close asks.
    """

    def __init__(self, name: str, max_queue: int, batching: BatchPolicy) -> None:
        self.name = name
        self.max_queue = max_queue
        self.batching = batching
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.items: deque[Captured] = deque()
        self.in_flight = 0
        # In-flight events of a batch waiting out a retry's backoff: no request holds
        # them, so a close that gives up drops them at once (counted exactly).
        self.parked = 0
        self.enqueued = self.delivered = self.dropped = self.failed = 0
        self.batches = self.retries = 0
        self.flush_target = 0
        self.stopping = False
        self.closed = False
        self.woken = False
        self.unreported_drops = 0
        self.warned_at = float("-inf")
        self.wake: Callable[[], None] = _nothing
        self.progress: Callable[[], None] = _nothing

    # -- the hot path ------------------------------------------------------------------
    def put(self, record: Captured) -> None:
        """Queue ``record``, or drop it (counted) when the outbox is full. O(1), never blocks."""
        with self.lock:
            self.enqueued += 1
            waiting = len(self.items)
            if waiting >= self.max_queue or self.closed:
                self.dropped += 1
                self.unreported_drops += 1
                if record.at - self.warned_at < DROP_WARNING_INTERVAL:
                    return
                self.warned_at = record.at
                dropped = self.dropped
            else:
                self.items.append(record)
                # Wake the worker once per reason, not once per event: the first
                # event of a batch starts its timer, a full batch is sent.
                if self.woken or (waiting and waiting + 1 < self.batching.batch_size):
                    return
                self.woken = True
                dropped = 0
        if dropped:
            logger.warning(
                "tracking: sink %s: outbox full (%d events); %d events dropped so far",
                self.name,
                self.max_queue,
                dropped,
            )
            return
        self.wake()

    # -- the worker --------------------------------------------------------------------
    @property
    def resolved(self) -> int:
        """Events finished one way or another (delivered, dropped or failed)."""
        return self.delivered + self.dropped + self.failed

    @property
    def pending(self) -> int:
        """Events waiting or being sent."""
        return len(self.items) + self.in_flight

    def take(self, now: float) -> tuple[list[Captured] | None, float | None, bool]:
        """``(batch, wait, stop)``: a batch to send now, else seconds to wait.

        ``wait`` is ``None`` when the worker should sleep until woken; ``stop``
        tells it to end (closing, and nothing left).
        """
        with self.lock:
            self.woken = False
            if self.stopping and not self.items:
                return None, None, True
            urgent = self.stopping or self.resolved + self.in_flight < self.flush_target
            oldest = self.items[0].at if self.items else now
            wait = self.batching.wait_time(len(self.items), oldest, now, urgent)
            if wait is None or wait > 0:
                return None, wait, False
            size = self.batching.take_size(len(self.items))
            popleft = self.items.popleft
            batch = [popleft() for _ in range(size)]
            self.in_flight += size
            return batch, 0.0, False

    def settle(self, count: int, delivered: bool, attempts: int) -> None:
        """``count`` in-flight events are delivered or failed after ``attempts`` sends."""
        with self.lock:
            self.in_flight -= count
            if delivered:
                self.delivered += count
            else:
                self.failed += count
            self.batches += 1
            self.changed.notify_all()
        self.progress()

    def retrying(self) -> None:
        """A chunk failed and will be sent again (counted as it happens, not when it settles)."""
        with self.lock:
            self.retries += 1

    def park(self, count: int) -> None:
        """``count`` in-flight events wait out a backoff (no request holds them)."""
        with self.lock:
            self.parked = count

    def unpark(self) -> bool:
        """Back from a backoff: ``False`` when a close dropped the parked events meanwhile."""
        with self.lock:
            kept, self.parked = self.parked > 0, 0
            return kept

    def abandon(self, in_flight: int = 0, *, close: bool = False) -> int:
        """Drop what waits (and ``in_flight`` events being sent); returns how many.

        With ``close``, the parked events (a batch in a backoff) are dropped too,
        and an event a racing ``track_*`` call puts later is dropped (counted),
        so nothing but a request still running stays pending in a closed outbox.
        """
        with self.lock:
            self.closed = self.closed or close
            parked = self.parked if close else 0
            self.parked -= parked
            in_flight += parked
            count = len(self.items) + in_flight
            self.items.clear()
            self.in_flight -= in_flight
            self.dropped += count
            self.changed.notify_all()
        self.progress()
        return count

    def take_drops(self) -> int:
        """Drops not yet reported to ``on_drop``."""
        with self.lock:
            count, self.unreported_drops = self.unreported_drops, 0
            return count

    # -- flush and close ---------------------------------------------------------------
    def request_flush(self) -> int:
        """Ask for everything queued now to be sent at once; returns the count to reach."""
        with self.lock:
            target = self.flush_target = max(self.flush_target, self.enqueued)
            idle = self.resolved >= target
        if not idle:
            self.wake()
        return target

    def stop(self) -> None:
        """Ask the worker to send what waits and then end."""
        with self.lock:
            self.stopping = True
        self.wake()

    def counts(self) -> dict[str, int]:
        """Every counter and ``pending``, read at one moment."""
        with self.lock:
            counts = {name: getattr(self, name) for name in _COUNTS}
            counts["pending"] = self.pending
        return counts


def _nothing() -> None:
    return None


class Callbacks:
    """``on_error``/``on_drop`` and the bounded error list, shared by a tracker's lanes.

    A callback may be sync or async; one that raises is counted
    (``callback_errors``) and logged, never propagated into a worker.
    """

    def __init__(
        self,
        on_error: Callable[[DeliveryError], Any] | None,
        on_drop: Callable[[DropNotice], Any] | None,
        max_errors: int,
    ) -> None:
        self.on_error = on_error
        self.on_drop = on_drop
        self.errors: deque[DeliveryError] = deque(maxlen=max_errors)
        self.errors_seen = 0
        self.callback_errors = 0
        self.lock = threading.Lock()

    def failed(self, error: DeliveryError) -> None:
        """Record ``error`` (bounded) and log it."""
        with self.lock:
            self.errors.append(error)
            self.errors_seen += 1
        logger.warning(
            "tracking: sink %s: %d events failed after %d attempts: %s",
            error.sink,
            error.events,
            error.attempts,
            error.message,
        )

    def raised(self, callback: object, exc: BaseException) -> None:
        """A callback raised: count it and log its type only (its text may hold data)."""
        with self.lock:
            self.callback_errors += 1
        logger.warning(
            "tracking: callback %s raised %s (counted, ignored)",
            getattr(callback, "__qualname__", type(callback).__name__),
            type(exc).__name__,
        )

    def call(self, callback: Callable[[Any], Any] | None, value: object) -> None:
        """Call a callback from a worker thread (an awaitable result is run to completion)."""
        if callback is None:
            return
        try:
            result = callback(value)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception as exc:
            self.raised(callback, exc)

    async def acall(self, callback: Callable[[Any], Any] | None, value: object) -> None:
        """Call a callback from a task (an awaitable result is awaited)."""
        if callback is None:
            return
        try:
            result = callback(value)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.raised(callback, exc)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


class _LaneBase:
    """What both workers share: the decisions around the I/O."""

    def __init__(  # noqa: PLR0917 - built by the trackers only
        self,
        outbox: Outbox,
        sink: Sink,
        privacy: Privacy,
        retry: RetryPolicy,
        callbacks: Callbacks,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.privacy = privacy
        self.retry = retry
        self.callbacks = callbacks
        self.clock = clock
        self.abandoned = False
        self.retry_warned_at = float("-inf")

    def plan(self, batch: Sequence[Captured]) -> tuple[list[Encoded], DeliveryFlow]:
        encoded = [self.privacy.finish(record) for record in batch]
        sizes = [len(data) for _, data in encoded]
        ranges = chunk_by_bytes(sizes, self.outbox.batching.max_batch_bytes)
        return encoded, delivery_flow(ranges, self.retry)

    def failure(self, step: Settled) -> DeliveryError | None:
        """The error to report for a failed chunk (recorded in the error list)."""
        if step.delivered:
            return None
        count = step.stop - step.start
        outcome = step.outcome
        message = outcome.error or (
            f"answered {outcome.status}" if outcome.status is not None else "failed"
        )
        error = DeliveryError(
            self.outbox.name, count, outcome.status, message, step.attempts, self.clock()
        )
        self.callbacks.failed(error)
        return error

    def settle(self, step: Settled) -> None:
        # After on_error: a flush that sees these events settled has seen its callback run.
        self.outbox.settle(step.stop - step.start, step.delivered, step.attempts)

    def retrying(self, step: Wait) -> None:
        """Count a retry; past :data:`RETRY_WARNING_AFTER` failures of one chunk, warn
        (then at most once per interval): a blip retried at once is only a debug line,
        an outage retried for minutes says so without a line per attempt."""
        self.outbox.retrying()
        count = step.stop - step.start
        outcome = step.outcome
        reason = outcome.error if outcome is not None and outcome.error else "failed"
        seconds = round(step.seconds, 2)
        now = time.monotonic()
        if (
            step.failures < RETRY_WARNING_AFTER
            or now - self.retry_warned_at < DROP_WARNING_INTERVAL
        ):
            logger.debug(
                "tracking: sink %s: %d events, attempt %d failed (%s); retrying in %g s",
                self.outbox.name,
                count,
                step.failures,
                reason,
                seconds,
            )
            return
        self.retry_warned_at = now
        logger.warning(
            "tracking: sink %s: %d events not delivered after %d attempts (%s); "
            "still retrying, next in %g s",
            self.outbox.name,
            count,
            step.failures,
            reason,
            seconds,
        )

    def drops(self) -> DropNotice | None:
        count = self.outbox.take_drops()
        return DropNotice(self.outbox.name, count, "queue_full") if count else None

    def unsettled(self, encoded: Sequence[Encoded], settled: int) -> int:
        """Events of the batch not settled when the lane gave up."""
        return len(encoded) - settled

    @staticmethod
    def crashed(exc: BaseException) -> Outcome:
        return Outcome(error=f"the sink raised {type(exc).__name__}")


class Lane(_LaneBase):
    """A sink's worker thread (daemon, started on the first event)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signal = threading.Event()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()
        self.outbox.wake = self.wake

    def wake(self) -> None:
        if self.thread is None:
            with self.start_lock:
                if self.thread is None:
                    thread = threading.Thread(
                        target=self.run, name=f"autoplay-tracking-{self.outbox.name}", daemon=True
                    )
                    thread.start()
                    self.thread = thread
        self.signal.set()

    def pause(self, seconds: float | None) -> None:
        self.signal.wait(seconds)
        self.signal.clear()

    def backoff(self, seconds: float) -> None:
        # The whole delay, whatever wakes the lane meanwhile: only close() cuts it short.
        end = time.monotonic() + seconds
        while not self.abandoned and (left := end - time.monotonic()) > 0:
            self.pause(left)

    def run(self) -> None:
        while not self.abandoned:
            notice = self.drops()
            if notice is not None:
                self.callbacks.call(self.callbacks.on_drop, notice)
            batch, wait, stop = self.outbox.take(self.clock())
            if stop:
                return
            if batch is None:
                self.pause(wait)
                continue
            self.deliver(batch)

    def deliver(self, batch: Sequence[Captured]) -> None:
        encoded, flow = self.plan(batch)
        settled = 0
        reply: Outcome | None = None
        try:
            while True:
                step = flow.send(reply)
                reply = None
                if isinstance(step, Send):
                    if self.abandoned:  # close() gave up: no new attempt
                        break
                    try:
                        reply = self.sink.send(encoded[step.start : step.stop])
                    except Exception as exc:
                        reply = self.crashed(exc)
                elif isinstance(step, Settled):
                    settled += step.stop - step.start
                    error = self.failure(step)
                    if error is not None:
                        self.callbacks.call(self.callbacks.on_error, error)
                    self.settle(step)
                else:
                    self.retrying(step)
                    self.outbox.park(self.unsettled(encoded, settled))
                    self.backoff(step.seconds)
                    if not self.outbox.unpark():
                        return  # close() dropped the batch meanwhile (counted there)
        except StopIteration:
            return
        # Given up by close(): what this batch still holds is dropped, and said so.
        count = self.outbox.abandon(self.unsettled(encoded, settled))
        if count:
            self.callbacks.call(
                self.callbacks.on_drop, DropNotice(self.outbox.name, count, "closed")
            )


class AsyncLane(_LaneBase):
    """A sink's worker task, in the loop it was started from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0
        self.event: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.outbox.wake = self.wake

    def start(self, loop: asyncio.AbstractEventLoop, progress: Callable[[], None]) -> None:
        """Start the task in ``loop`` (call from inside it)."""
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.event = asyncio.Event()
        self.outbox.progress = progress
        self.task = loop.create_task(self.run(), name=f"autoplay-tracking-{self.outbox.name}")

    def wake(self) -> None:
        loop, event = self.loop, self.event
        if loop is None or event is None:
            return  # not started yet: the task finds the events when it starts
        if threading.get_ident() == self.loop_thread:
            event.set()
            return
        # asyncio.Event is not thread-safe: set it from the loop's own thread.
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to wake
            loop.call_soon_threadsafe(event.set)

    async def pause(self, seconds: float | None) -> None:
        event = self.event
        assert event is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    async def backoff(self, seconds: float) -> None:
        # The whole delay, whatever wakes the lane meanwhile: only close() cuts it short.
        end = time.monotonic() + seconds
        while not self.abandoned and (left := end - time.monotonic()) > 0:
            await self.pause(left)

    async def run(self) -> None:
        while not self.abandoned:
            notice = self.drops()
            if notice is not None:
                await self.callbacks.acall(self.callbacks.on_drop, notice)
            batch, wait, stop = self.outbox.take(self.clock())
            if stop:
                return
            if batch is None:
                await self.pause(wait)
                continue
            await self.deliver(batch)

    async def deliver(self, batch: Sequence[Captured]) -> None:
        encoded, flow = self.plan(batch)
        settled = 0
        parked = False
        reply: Outcome | None = None
        try:
            while True:
                step = flow.send(reply)
                reply = None
                if isinstance(step, Send):
                    if self.abandoned:  # close() gave up: no new attempt
                        break
                    try:
                        reply = await self.sink.asend(encoded[step.start : step.stop])
                    except Exception as exc:
                        reply = self.crashed(exc)
                elif isinstance(step, Settled):
                    settled += step.stop - step.start
                    error = self.failure(step)
                    if error is not None:
                        await self.callbacks.acall(self.callbacks.on_error, error)
                    self.settle(step)
                else:
                    self.retrying(step)
                    self.outbox.park(self.unsettled(encoded, settled))
                    parked = True
                    await self.backoff(step.seconds)
                    parked = False
                    if not self.outbox.unpark():
                        return  # aclose() dropped the batch meanwhile (counted there)
        except StopIteration:
            return
        except asyncio.CancelledError:
            self.abandoned = True
            if parked and not self.outbox.unpark():
                raise  # aclose() dropped the parked batch already (counted there)
            count = self.outbox.abandon(self.unsettled(encoded, settled))
            if count:
                await self.callbacks.acall(
                    self.callbacks.on_drop, DropNotice(self.outbox.name, count, "closed")
                )
            raise
        count = self.outbox.abandon(self.unsettled(encoded, settled))
        if count:
            await self.callbacks.acall(
                self.callbacks.on_drop, DropNotice(self.outbox.name, count, "closed")
            )
