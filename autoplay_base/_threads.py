"""The sync client's helper threads: a worker for event callbacks, a notifier for the rest.

:class:`CallbackThreads` keeps the reader thread free of user code. The reader
hands it each chunk's events (:meth:`CallbackThreads.put_many`); a worker
thread runs the callbacks for them, one event at a time in arrival order,
from a queue bounded by ``max_queue_size`` (what does not fit is handed to
``dropped`` at once: backpressure never blocks the reader). A notifier thread
runs notifications (``on_drop``, ``on_error``, ``on_connect``,
``on_disconnect``: :meth:`CallbackThreads.notice`) from a queue of its own,
bounded by ``max_notices``, so a slow ``on_drop`` never holds events back.

It is handed the callables it needs (which callbacks an event has, what to do
with an event that is dropped or a callback that raised) and knows nothing of
the client. One instance serves one run: :meth:`start`, then
:meth:`finish` once reading ended, which returns by its deadline whatever the
callbacks do:

* the worker delivers what is queued for ``drain_timeout`` seconds, then
  hands the rest to ``dropped`` (``drain_timeout=0``: all of it at once);
* a callback still running ``stuck_grace`` seconds past that is given up on:
  the event it holds and everything still queued go to ``dropped``, so
  ``received == delivered + dropped`` once :meth:`finish` returned (the
  worker, should the callback ever return, ends without touching the books);
* the notifier delivers what is pending for ``notice_grace`` seconds (from
  the end of the drain); a notification later than that is logged, not run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from autoplay_base._connection import ClientCounters
from autoplay_base.events import Event

__all__ = ["MAX_NOTICES", "CallbackThreads"]

logger = logging.getLogger("autoplay_base.stream")

MAX_NOTICES = 10_000
"""Notifications waiting for the notifier before new ones are lost (logged)."""

Callback = Callable[..., Any]


class CallbackThreads:
    """A bounded event queue with its worker thread, and a notifier thread (see the module).

    Args:
        callbacks_for: the callbacks to run for one event, in order.
        callback_failed: told about an exception a callback raised (the
            worker goes on with the next callback).
        notice_failed: told about an exception a notification raised.
        dropped: told about every event that will not be delivered, with the reason.
        counters: ``delivered`` is counted here, once every callback ran.
        max_queue_size: events waiting for the worker before drops start.
        drain_timeout: seconds the worker gets, once reading ended, to deliver.
        stuck_grace: seconds past ``drain_timeout`` before a running callback
            is given up on.
        notice_grace: seconds the notifier gets after the drain.
        max_notices: notifications waiting before new ones are lost.
    """

    def __init__(
        self,
        callbacks_for: Callable[[Event], Sequence[Callback]],
        callback_failed: Callable[[Event, Exception], None],
        notice_failed: Callable[[Exception], None],
        dropped: Callable[[Event, str], None],
        counters: ClientCounters,
        *,
        max_queue_size: int,
        drain_timeout: float,
        stuck_grace: float,
        notice_grace: float,
        max_notices: int = MAX_NOTICES,
    ) -> None:
        self._callbacks_for = callbacks_for
        self._callback_failed = callback_failed
        self._notice_failed = notice_failed
        self._dropped = dropped
        self._counters = counters
        self._max_queue_size = max_queue_size
        self._drain_timeout = drain_timeout
        self._stuck_grace = stuck_grace
        self._max_notices = max_notices
        self._notice_grace = notice_grace
        self._queue: deque[Event] = deque()
        self._queue_cond = threading.Condition(threading.Lock())
        self._worker_waiting = False
        self._reading_done = False
        self._drain_deadline = 0.0
        # The event the callbacks are running on, in a one-slot list: list.pop is
        # atomic, so the worker and finish() agree on who accounts for it, lock-free.
        self._flight: list[Event] = []
        self._notices: deque[tuple[Sequence[Callback], tuple[Any, ...]]] = deque()
        self._notice_cond = threading.Condition(threading.Lock())
        self._notices_done = False
        self._notice_deadline = 0.0
        self.lost_notices = 0  # notifications never run: backlog full, or past the deadline
        self._worker = threading.Thread(
            target=self._work, name="autoplay-stream-worker", daemon=True
        )
        self._notifier = threading.Thread(
            target=self._notify_loop, name="autoplay-stream-notifier", daemon=True
        )

    @property
    def queue_size(self) -> int:
        """Events waiting for the worker right now."""
        return len(self._queue)

    def owns(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is this instance's worker or notifier."""
        return thread is self._worker or thread is self._notifier

    def start(self) -> None:
        """Start the worker and the notifier."""
        self._worker.start()
        self._notifier.start()

    # -- reader side --------------------------------------------------------------------
    def put_many(self, events: list[Event]) -> None:
        """Queue one chunk's events; those beyond ``max_queue_size`` go to ``dropped``."""
        # One lock round per chunk read, not per event: the reader is the bottleneck.
        with self._queue_cond:
            room = self._max_queue_size - len(self._queue)
            if room >= len(events):
                self._queue.extend(events)
                overflow: list[Event] = []
            else:
                room = max(room, 0)
                self._queue.extend(events[:room])
                overflow = events[room:]
            if self._worker_waiting and room:
                self._queue_cond.notify()
        for event in overflow:
            self._dropped(event, "buffer full")

    def notice(self, fns: Sequence[Callback], *args: Any) -> None:
        """Have the notifier call each of ``fns`` with ``args`` (nothing when ``fns`` is empty)."""
        if not fns:
            return
        with self._notice_cond:
            if len(self._notices) >= self._max_notices:
                self.lost_notices += 1
                logger.error("stream: notification backlog full; a notification was lost")
                return
            self._notices.append((fns, args))
            self._notice_cond.notify()

    def finish(self) -> None:
        """Reading ended: drain, then stop both threads, by the deadlines of the module's rules."""
        deadline = time.monotonic() + self._drain_timeout
        leftovers: list[Event] = []
        with self._queue_cond:
            self._reading_done = True
            self._drain_deadline = deadline
            if self._drain_timeout == 0:
                while True:
                    try:
                        leftovers.append(self._queue.popleft())
                    except IndexError:
                        break
            self._queue_cond.notify_all()
        for event in leftovers:
            self._dropped(event, "stopped with drain_timeout=0")
        if threading.current_thread() is not self._worker:
            self._worker.join(self._drain_timeout + self._stuck_grace)
            if self._worker.is_alive():
                # A callback is stuck past the drain deadline: account for what it
                # will never reach instead of hanging stop() (the pops are atomic).
                logger.error("stream: a callback is still running after stop's drain_timeout")
                try:
                    stuck: Event | None = self._flight.pop()
                except IndexError:
                    stuck = None  # it returned meanwhile and was counted delivered
                if stuck is not None:
                    self._dropped(stuck, "its callback was stuck when the client stopped")
                while True:
                    try:
                        event = self._queue.popleft()
                    except IndexError:
                        break
                    self._dropped(event, "a callback was stuck when the client stopped")
        with self._notice_cond:
            self._notices_done = True
            # From now, not from the drain deadline: waiting out a stuck callback
            # must not cost the on_drop notices it just produced.
            self._notice_deadline = max(deadline, time.monotonic()) + self._notice_grace
            self._notice_cond.notify_all()
        if threading.current_thread() is not self._notifier:
            # Bounded: a stuck on_drop/on_error callback must not hang stop() either.
            self._notifier.join(self._notice_grace + self._stuck_grace)
            if self._notifier.is_alive():
                logger.error("stream: a notification callback is still running after stop")

    # -- worker side --------------------------------------------------------------------
    def _work(self) -> None:
        queue = self._queue
        cond = self._queue_cond
        counters = self._counters
        callbacks_for = self._callbacks_for
        flight = self._flight
        while True:
            try:
                # deque.popleft is atomic: no lock per event; the lock is only taken to
                # sleep, and finish() may pop the same deque (each event goes to one side).
                event = queue.popleft()
            except IndexError:
                with cond:
                    while not queue and not self._reading_done:
                        self._worker_waiting = True
                        cond.wait()
                        self._worker_waiting = False
                    if not queue:
                        return
                continue
            if self._reading_done and time.monotonic() > self._drain_deadline:
                self._dropped(event, "not delivered before stop's drain_timeout")
                continue
            flight.append(event)
            for fn in callbacks_for(event):
                try:
                    fn(event)
                except Exception as exc:
                    self._callback_failed(event, exc)
                if not flight:
                    break  # finish() gave up on this event and counted it as dropped
            try:
                flight.pop()
            except IndexError:
                # Counted as dropped while a callback was stuck: finish() gave up on
                # this worker, which must end now.
                return
            counters.delivered += 1

    # -- notifier side ------------------------------------------------------------------
    def _notify_loop(self) -> None:
        notices = self._notices
        cond = self._notice_cond
        while True:
            with cond:
                while not notices and not self._notices_done:
                    cond.wait()
                if not notices:
                    return
                fns, args = notices.popleft()
                if self._notices_done and time.monotonic() > self._notice_deadline:
                    self.lost_notices += 1
                    logger.error("stream: a notification was not delivered before stop")
                    continue
            for fn in fns:
                try:
                    fn(*args)
                except Exception as exc:
                    self._notice_failed(exc)
