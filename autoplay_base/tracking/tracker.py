"""``Tracker`` and ``AsyncTracker``: record what the chatbot said and did, without waiting.

Every ``track_*`` call (on a :class:`TrackedSession` from :meth:`session`, or
the tracker-level :meth:`identify`/:meth:`alias`) is a plain, non-blocking,
O(1) call on both twins, safe from any thread: it captures a record (a clock
reading and references to the values) and puts it in each sink's outbox;
drawing the event id, converting the values (JSON fallbacks, redaction, caps),
batching, sending and retrying happen in the sink's lane
(:mod:`autoplay_base.tracking._lanes`), once per event whatever the number of sinks.
Pass values you do not mutate afterwards: they are read in the background.

Lifecycle:

* ``flush(timeout)`` / ``aflush(timeout)`` send what waits at once and return
  by the deadline, always, with a :class:`~autoplay_base.tracking.results.FlushResult`;
* ``close(timeout)`` / ``aclose(timeout)`` flush, then stop the lanes: what still
  waits at the deadline is dropped and counted (``on_drop`` with reason
  ``"closed"``), what is being sent stays ``pending`` until its request ends;
  later ``track_*`` calls are refused and counted (``rejected_after_close``);
* at interpreter exit a ``Tracker`` still open is closed with ``exit_timeout``
  (2 s by default; ``flush_at_exit=False`` opts out). An ``AsyncTracker`` cannot
  run its loop at exit: close it with ``aclose()`` or ``async with`` (at exit one
  still open logs how many events it leaves pending);
* after ``os.fork()`` the child's trackers start over with empty outboxes and
  no workers (started again by the next event) and forget the parent's
  connections; the parent keeps everything it had.

``AsyncTracker`` is natively async: its lanes are tasks of the loop it is used
in (bound at construction inside a running loop, or by the first
``session()``, ``aflush()`` or ``async with`` made inside one; events tracked
before that wait in the outboxes), sending with ``httpx.AsyncClient`` / ``redis.asyncio``;
``track_*`` from another thread wakes the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from autoplay_base.errors import ConfigError
from autoplay_base.tracking import events as ev
from autoplay_base.tracking._lanes import AsyncLane, Callbacks, Lane, Outbox
from autoplay_base.tracking._values import (
    DEFAULT_MAX_FIELD_CHARS,
    Captured,
    Privacy,
    Scope,
)
from autoplay_base.tracking.results import DeliveryError, DropNotice, FlushResult
from autoplay_base.tracking.session import TrackedSession
from autoplay_base.tracking.sinks.base import Sink

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_EXIT_TIMEOUT",
    "DEFAULT_FLUSH_TIMEOUT",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_QUEUE",
    "AsyncTracker",
    "Tracker",
]

logger = logging.getLogger("autoplay_base.tracking")

DEFAULT_MAX_QUEUE = 10_000
"""Events each sink's outbox holds; beyond, the newest are dropped and counted."""
DEFAULT_FLUSH_TIMEOUT = 5.0
"""Seconds ``flush()`` waits by default."""
DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds ``close()`` waits by default."""
DEFAULT_EXIT_TIMEOUT = 2.0
"""Seconds the exit-time close of a ``Tracker`` may take."""
DEFAULT_MAX_ERRORS = 100
"""Delivery errors kept for ``get_errors()`` (the oldest go first)."""

CANCEL_MARGIN = 0.05
"""Seconds of ``aclose``'s timeout kept for cancelling tasks still sending."""
_now = time.time
_T = TypeVar("_T", bound="_TrackerBase")
_LIVE: weakref.WeakSet[_TrackerBase] = weakref.WeakSet()


def _timeout(value: float) -> float:
    if not 0 <= value <= threading.TIMEOUT_MAX:
        raise ConfigError(f"timeout must be within [0, {threading.TIMEOUT_MAX}], got {value!r}")
    return float(value)


def _text_id(name: str, value: object, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {type(value).__name__}")
    return value


class _TrackerBase:
    """What both trackers share: options, the hot path, stats, errors, fork and exit."""

    asynchronous: ClassVar[bool] = False

    def __init__(
        self,
        sinks: Iterable[Sink],
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        redact: Callable[[str], str] | None = None,
        record_content: bool = True,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        record_errors: bool = False,
        on_error: Callable[[DeliveryError], Any] | None = None,
        on_drop: Callable[[DropNotice], Any] | None = None,
        max_errors: int = DEFAULT_MAX_ERRORS,
        flush_at_exit: bool = True,
        exit_timeout: float = DEFAULT_EXIT_TIMEOUT,
    ) -> None:
        self.sinks = list(sinks)
        if not self.sinks:
            raise ConfigError("a tracker needs at least one sink")
        if not max_queue >= 1:
            raise ConfigError(f"max_queue must be >= 1, got {max_queue!r}")
        if not max_errors >= 1:
            raise ConfigError(f"max_errors must be >= 1, got {max_errors!r}")
        for sink in self.sinks:
            if not isinstance(sink, Sink):
                raise ConfigError(f"a sink must be a Sink, not {type(sink).__name__}")
            sink.check_driver(asynchronous=self.asynchronous)
        self.max_queue = max_queue
        self.privacy = Privacy(
            redact=redact,
            record_content=record_content,
            max_field_chars=max_field_chars,
            record_errors=record_errors,
        )
        self.flush_at_exit = flush_at_exit
        self.exit_timeout = _timeout(exit_timeout)
        self._on_error = on_error
        self._on_drop = on_drop
        self._max_errors = max_errors
        self.names = _unique_names(self.sinks)
        self._closed = False
        self.rejected_after_close = 0
        self._start_lanes()
        _LIVE.add(self)

    def _start_lanes(self) -> None:
        self.callbacks = Callbacks(self._on_error, self._on_drop, self._max_errors)
        self.outboxes = [
            Outbox(name, self.max_queue, sink.batching)
            for name, sink in zip(self.names, self.sinks, strict=True)
        ]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}(sinks={self.sinks!r}, {state})"

    # -- the hot path ------------------------------------------------------------------
    def _capture(self, kind: str, scope: Scope, data: dict[str, Any]) -> None:
        if self._closed:
            self._refuse(kind)
            return
        record = Captured(kind, _now(), scope, data)
        for outbox in self.outboxes:
            outbox.put(record)

    def _on_session(self) -> None:
        """Hook run by :meth:`session` (the async twin binds its loop there)."""

    def _refuse(self, kind: str) -> None:
        self.rejected_after_close += 1
        if self.rejected_after_close == 1:
            logger.warning(
                "tracking: a %s event was tracked after close(); refused (counted)", kind
            )

    # -- handles -----------------------------------------------------------------------
    def session(
        self,
        session_id: str,
        *,
        product_id: str,
        user_id: str | None = None,
        device_id: str | None = None,
        conversation_id: str | None = None,
    ) -> TrackedSession:
        """A handle recording events under these ids (cheap: make one per request).

        Raises:
            ConfigError: ``session_id`` or ``product_id`` is not a non-empty string,
                or an optional id is given but is not one.
        """
        self._on_session()
        scope: Scope = (
            _text_id("session_id", session_id, optional=False),
            _text_id("product_id", product_id, optional=False) or "",
            _text_id("user_id", user_id),
            _text_id("device_id", device_id),
            _text_id("conversation_id", conversation_id),
        )
        return TrackedSession(self._capture, scope)

    def identify(
        self,
        user_id: str,
        *,
        product_id: str,
        device_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
    ) -> None:
        """Identify a user outside any session (traits merge on the receiving side)."""
        scope: Scope = (None, product_id, user_id, device_id, None)
        self._capture(ev.IDENTIFY, scope, {"user_id": user_id, "traits": traits})

    def alias(self, user_id: str, previous_id: str, *, product_id: str) -> None:
        """``user_id`` is the new id of the user known as ``previous_id``, outside any session."""
        scope: Scope = (None, product_id, user_id, None, None)
        self._capture(ev.ALIAS, scope, {"user_id": user_id, "previous_id": previous_id})

    # -- reading -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """``close()``/``aclose()`` was called."""
        return self._closed

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters: one entry per sink name, plus ``"tracker"``.

        Each sink's counts are read at one moment, so ``enqueued == delivered +
        dropped + failed + pending`` holds in every snapshot.
        """
        callbacks = self.callbacks
        tracker = {
            "rejected_after_close": self.rejected_after_close,
            "errors": callbacks.errors_seen,
            "callback_errors": callbacks.callback_errors,
            **self.privacy.counters.as_dict(),
        }
        return {"tracker": tracker, **{o.name: o.counts() for o in self.outboxes}}

    def has_errors(self) -> bool:
        """Some delivery failed since the tracker started."""
        return self.callbacks.errors_seen > 0

    def get_errors(self) -> list[DeliveryError]:
        """The last ``max_errors`` delivery errors, oldest first."""
        with self.callbacks.lock:
            return list(self.callbacks.errors)

    def _result(self, timed_out: bool) -> FlushResult:
        by_sink = {o.name: o.counts() for o in self.outboxes}
        return FlushResult(
            delivered=sum(c["delivered"] for c in by_sink.values()),
            pending=sum(c["pending"] for c in by_sink.values()),
            dropped=sum(c["dropped"] for c in by_sink.values()),
            failed=sum(c["failed"] for c in by_sink.values()),
            timed_out=timed_out,
            by_sink=by_sink,
        )

    # -- closing (the steps both twins share) -----------------------------------------
    def _begin_close(self) -> bool:
        """Refuse new events and ask the lanes to send what waits; ``False`` if already closed."""
        if self._closed:
            return False
        self._closed = True
        _LIVE.discard(self)
        for outbox in self.outboxes:
            outbox.stop()
        return True

    def _give_up(self) -> list[DropNotice]:
        """The deadline passed (or all is sent): stop the lanes, drop what still waits."""
        for lane in self._lanes():
            lane.abandoned = True
        notices = []
        for outbox in self.outboxes:
            count = outbox.abandon(close=True)
            if count:
                notices.append(DropNotice(outbox.name, count, "closed"))
                logger.warning(
                    "tracking: sink %s: %d events still waiting at close were dropped",
                    outbox.name,
                    count,
                )
        return notices

    @staticmethod
    def _sink_close_failed(sink: Sink, exc: Exception) -> None:
        logger.warning("tracking: closing sink %r raised %s", sink, type(exc).__name__)

    def _closed_result(self, flushed: FlushResult, timeout: float) -> FlushResult:
        if flushed.timed_out:
            logger.warning(
                "tracking: close reached its %.1f s deadline with %d events pending",
                timeout,
                flushed.pending,
            )
        return self._result(flushed.timed_out)

    def _lanes(self) -> Sequence[Lane | AsyncLane]:
        raise NotImplementedError

    # -- fork and exit -----------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # Locks may have been held by the parent's workers at the fork: all new.
        self.privacy.lock = threading.Lock()
        self.privacy.counters = type(self.privacy.counters)()
        for sink in self.sinks:
            sink.after_fork()
        self._start_lanes()

    def _at_exit(self) -> None:
        raise NotImplementedError


def _unique_names(sinks: list[Sink]) -> list[str]:
    names: list[str] = []
    for sink in sinks:
        name, n = sink.name, 2
        while name in names:
            name, n = f"{sink.name}-{n}", n + 1
        names.append(name)
    return names


class Tracker(_TrackerBase):
    """Conversation tracking with one worker thread per sink.

    ``Tracker(sinks, *, max_queue=10_000, redact=None, record_content=True,
    max_field_chars=4000, record_errors=False, on_error=None, on_drop=None,
    max_errors=100, flush_at_exit=True, exit_timeout=2.0)``; see the module
    docstring and :mod:`autoplay_base.tracking`.
    """

    def _start_lanes(self) -> None:
        super()._start_lanes()
        self.lanes = [
            Lane(outbox, sink, self.privacy, sink.retry, self.callbacks)
            for outbox, sink in zip(self.outboxes, self.sinks, strict=True)
        ]

    def _lanes(self) -> Sequence[Lane]:
        return self.lanes

    def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> FlushResult:
        """Send everything tracked so far at once; returns by ``timeout`` seconds, always."""
        return self._wait(time.monotonic() + _timeout(timeout))

    def _wait(self, deadline: float) -> FlushResult:
        targets = [(outbox, outbox.request_flush()) for outbox in self.outboxes]
        done = True
        for outbox, target in targets:
            with outbox.changed:
                reached = outbox.changed.wait_for(
                    lambda o=outbox, t=target: o.resolved >= t,  # type: ignore[misc]
                    max(0.0, deadline - time.monotonic()),
                )
            done = done and reached
        return self._result(not done)

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> FlushResult:
        """Flush, then stop the workers and close the sinks; returns by ``timeout`` seconds.

        Idempotent: a second call returns the counts as they are.
        """
        deadline = time.monotonic() + _timeout(timeout)
        if not self._begin_close():
            return self._result(False)
        flushed = self._wait(deadline)
        for notice in self._give_up():
            self.callbacks.call(self.callbacks.on_drop, notice)
        for lane in self.lanes:
            lane.signal.set()
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                self._sink_close_failed(sink, exc)
        return self._closed_result(flushed, timeout)

    def _at_exit(self) -> None:
        if self.flush_at_exit and not self._closed:
            self.close(self.exit_timeout)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTracker(_TrackerBase):
    """Conversation tracking with one asyncio task per sink (same options as :class:`Tracker`).

    ``track_*`` stay plain sync calls (safe from any thread); ``aflush`` and
    ``aclose`` are awaited. Use it inside the loop (``async with AsyncTracker(...)``).
    """

    asynchronous = True

    def _start_lanes(self) -> None:
        super()._start_lanes()
        self.lanes_async = [
            AsyncLane(outbox, sink, self.privacy, sink.retry, self.callbacks)
            for outbox, sink in zip(self.outboxes, self.sinks, strict=True)
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: asyncio.Event | None = None
        self._bind_lock = threading.Lock()
        self._bind()

    def _on_session(self) -> None:
        # A handle made inside a running loop binds the tracker to it.
        if self._loop is None:
            self._bind()

    def _bind(self) -> asyncio.AbstractEventLoop | None:
        """Start the lanes in the running loop, the first time there is one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._loop
        with self._bind_lock:
            if self._loop is None:
                self._progress = progress = asyncio.Event()
                for lane in self.lanes_async:
                    lane.start(loop, progress.set)
                self._loop = loop
        return self._loop

    def _lanes(self) -> Sequence[AsyncLane]:
        return self.lanes_async

    async def aflush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT) -> FlushResult:
        """Send everything tracked so far at once; returns by ``timeout`` seconds, always."""
        return await self._await(time.monotonic() + _timeout(timeout))

    async def _await(self, deadline: float) -> FlushResult:
        self._bind()
        progress = self._progress
        assert progress is not None
        targets = [(outbox, outbox.request_flush()) for outbox in self.outboxes]
        while True:
            progress.clear()
            if all(outbox.resolved >= target for outbox, target in targets):
                return self._result(False)
            left = deadline - time.monotonic()
            if left <= 0:
                return self._result(True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(progress.wait(), left)

    async def aclose(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> FlushResult:
        """Flush, then stop the tasks and close the sinks; returns by ``timeout`` seconds.

        Idempotent: a second call returns the counts as they are. A task still
        sending at the deadline is cancelled: its batch is dropped, and counted.
        """
        deadline = time.monotonic() + _timeout(timeout)
        if not self._begin_close():
            return self._result(False)
        # Stop flushing a little early: cancelled tasks need a loop turn or two to
        # give their batches up before the deadline.
        flushed = await self._await(deadline - min(CANCEL_MARGIN, timeout / 10))
        for notice in self._give_up():
            await self.callbacks.acall(self.callbacks.on_drop, notice)
        tasks = [lane.task for lane in self.lanes_async if lane.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                await sink.aclose()
            except Exception as exc:
                self._sink_close_failed(sink, exc)
        return self._closed_result(flushed, timeout)

    def _at_exit(self) -> None:
        if self.flush_at_exit and not self._closed:
            pending = sum(outbox.pending for outbox in self.outboxes)
            if pending:
                logger.warning(
                    "tracking: an AsyncTracker was not closed; %d events left pending at exit "
                    "(await tracker.aclose())",
                    pending,
                )

    async def __aenter__(self) -> AsyncTracker:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _after_fork_in_child() -> None:
    for tracker in list(_LIVE):
        tracker._after_fork_in_child()


def _at_exit() -> None:
    for tracker in list(_LIVE):
        try:
            tracker._at_exit()
        except Exception as exc:  # never let one tracker stop the others' exit flush
            logger.warning("tracking: exit flush raised %s", type(exc).__name__)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
