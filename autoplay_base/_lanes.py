"""Per-session lanes: the async client's buffer between the reader and the callbacks.

:class:`Lanes` is handed a ``deliver`` callable (run the callbacks for one
event), a ``dropped`` callable (account for an event that will not be
delivered) and a ``failed`` one (an exception ``deliver`` or what it returned
raised); it knows nothing of the client that uses it. Its rules:

* **Order per session, concurrency across sessions.** Each session
  (``product_id``, ``session_id``) has its own lane: its events are delivered
  strictly in arrival order, one at a time (so a store sees a session's
  writes in order), inside the lane's own task, while lanes of different
  sessions run concurrently: a slow callback for session A never delays
  session B. An exception from ``deliver`` (or from what it returned) goes
  to ``failed``; the event still counts as delivered and the lane goes on.
* **Bounded.** At most ``max_buffered`` events wait across all lanes; beyond
  that a new event is handed to ``dropped`` ("buffer full") at once.
* **Lingering.** A lane whose session went idle keeps its task for
  ``linger`` seconds (at least, and under twice that: a sweep every
  ``linger`` seconds ends the lanes already idle at the previous one), so a
  busy session reuses one task instead of starting one per burst of events
  (a task per burst was the largest cost per event after decoding). At most
  ``max_lingering`` lanes linger at once, whatever the number of sessions.
* **Drain.** :meth:`Lanes.drain` wakes lingering lanes (they end), gives busy
  ones ``drain_timeout`` seconds to deliver what they hold, cancels the rest,
  and gives up after ``stuck_grace`` more seconds on a callback that swallows
  its cancellation (its lane is abandoned). Every event not delivered by then,
  the one such a callback still holds included, goes to ``dropped``, so
  ``received == delivered + dropped`` once it returned.

Not thread-safe: everything runs on the event loop of :meth:`Lanes.start`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

from autoplay_base._connection import ClientCounters
from autoplay_base.events import Event

__all__ = ["DEFAULT_LANE_LINGER", "MAX_LINGERING_LANES", "Deliver", "Dropped", "Failed", "Lanes"]

logger = logging.getLogger("autoplay_base.stream")

DEFAULT_LANE_LINGER = 1.0
"""Seconds an idle session lane waits for its next event."""
MAX_LINGERING_LANES = 1024
"""A bound on idle lane tasks, whatever the number of sessions."""

Deliver = Callable[[Event], Awaitable[None] | None]
"""Runs the callbacks for one event; returns what to await, or ``None`` when done."""
Dropped = Callable[[Event, str], None]
"""Accounts for an event that will not be delivered, with the reason."""
Failed = Callable[[Event, Exception], None]
"""Told about an exception raised while delivering an event (the lane goes on)."""


def _log_failure(event: Event, exc: Exception) -> None:
    """The default ``failed``: a log line with the event's type and the exception's (no text)."""
    logger.error("stream: delivering an event of type %s raised %s", event.type, type(exc).__name__)


class _Lane:
    """One session's pending events and the task delivering them.

    ``waiter`` is set while the task lingers, idle, for the session's next event;
    ``idle_since`` is the sweep tick at which it started waiting; ``abandoned``
    is set by ``drain`` when a callback outlived the drain and its cancellation.
    """

    __slots__ = ("abandoned", "events", "idle_since", "task", "waiter")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.idle_since = 0
        self.abandoned = False


class Lanes:
    """Per-session ordered delivery with a shared bound (see the module docstring).

    Args:
        deliver: runs the callbacks for one event, inside the lane's task.
        dropped: told about every event that will not be delivered.
        counters: ``delivered`` is counted here, once ``deliver`` finished.
        max_buffered: events waiting across all lanes before drops start.
        drain_timeout: seconds :meth:`drain` gives busy lanes to deliver.
        stuck_grace: seconds :meth:`drain` then waits for cancelled callbacks
            before it gives up on them.
        linger: seconds an idle lane waits for its session's next event
            (``0``: it ends as soon as it is idle).
        max_lingering: lanes allowed to linger at once.
        failed: told about an exception ``deliver`` (or what it returned)
            raised; by default it is logged.
    """

    def __init__(
        self,
        deliver: Deliver,
        dropped: Dropped,
        counters: ClientCounters,
        *,
        max_buffered: int,
        drain_timeout: float,
        stuck_grace: float,
        linger: float = DEFAULT_LANE_LINGER,
        max_lingering: int = MAX_LINGERING_LANES,
        failed: Failed = _log_failure,
    ) -> None:
        self._deliver = deliver
        self._dropped = dropped
        self._failed = failed
        self._counters = counters
        self._max_buffered = max_buffered
        self._drain_timeout = drain_timeout
        self._stuck_grace = stuck_grace
        self._linger_for = linger
        self._max_lingering = max_lingering
        self._lanes: dict[Hashable, _Lane] = {}
        self.buffered = 0  # events waiting across all lanes (the client's queue_size)
        self._lingering = 0
        self._sweep_tick = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def lingering(self) -> int:
        """Lanes idle right now, waiting for their session's next event."""
        return self._lingering

    @property
    def sessions(self) -> int:
        """Lanes alive right now (busy or lingering)."""
        return len(self._lanes)

    def start(self) -> None:
        """Bind to the running loop and start the sweep (once per run)."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._schedule_sweep()

    def put(self, event: Event) -> None:
        """Queue ``event`` on its session's lane; hand it to ``dropped`` if the buffer is full."""
        if self.buffered >= self._max_buffered:
            self._dropped(event, "buffer full")
            return
        key = (event.product_id, event.session_id)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.task = asyncio.ensure_future(self._run_lane(key, lane))
        lane.events.append(event)
        self.buffered += 1
        if lane.waiter is not None:  # only a lingering lane needs waking (a call less per event)
            self._wake(lane, more=True)

    async def drain(self) -> None:
        """Deliver what is buffered within ``drain_timeout``; drop the rest (see the rules)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._closing = True
        for lane in self._lanes.values():
            self._wake(lane, more=False)  # lingering lanes end; busy ones deliver, then end
        tasks = {lane.task: lane for lane in self._lanes.values() if lane.task is not None}
        if tasks:
            _, pending = await asyncio.wait(list(tasks), timeout=self._drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                # A callback that swallows the cancellation must not hang stop():
                # its lane is abandoned and its events (the one in flight too,
                # still first in the lane) are dropped below.
                _, stuck = await asyncio.wait(pending, timeout=self._stuck_grace)
                if stuck:
                    logger.error("stream: a callback is still running after stop's drain_timeout")
                for task in stuck:
                    tasks[task].abandoned = True
        for lane in list(self._lanes.values()):
            while lane.events:
                self._dropped(lane.events.popleft(), "not delivered before stop's drain_timeout")
        self._lanes.clear()
        self.buffered = 0

    async def _run_lane(self, key: Hashable, lane: _Lane) -> None:
        # Callbacks run inside this task, so what binds to the current task
        # (asyncio.timeout, TaskGroup) binds to the lane that runs them.
        events = lane.events
        deliver = self._deliver
        counters = self._counters
        try:
            while True:
                while events:
                    event = events[0]
                    # Caught here rather than in a wrapper coroutine per event (one
                    # frame and one await less on the per-event path; the try costs
                    # nothing while nothing raises).
                    try:
                        pending = deliver(event)
                        if pending is not None:
                            await pending
                    except Exception as exc:
                        self._failed(event, exc)
                    if lane.abandoned:
                        return  # drain() gave up on this lane and counted its events as dropped
                    events.popleft()
                    self.buffered -= 1
                    counters.delivered += 1
                # Idle: linger for the session's next event rather than end the task
                # and start another for it. An event that came as the lane was told
                # to end is still delivered.
                if not await self._linger(lane) and not events:
                    return
        finally:
            lane.task = None
            if not events and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _linger(self, lane: _Lane) -> bool:
        """Wait for the lane's next event; ``False`` when it should end instead."""
        if self._closing or self._lingering >= self._max_lingering or not self._linger_for:
            return False
        assert self._loop is not None
        waiter: asyncio.Future[bool] = self._loop.create_future()
        lane.waiter = waiter
        lane.idle_since = self._sweep_tick
        self._lingering += 1
        try:
            return await waiter
        finally:
            if lane.waiter is waiter:  # cancelled while waiting
                lane.waiter = None
                self._lingering -= 1

    def _wake(self, lane: _Lane, *, more: bool) -> None:
        waiter = lane.waiter
        if waiter is not None:
            lane.waiter = None
            self._lingering -= 1
            waiter.set_result(more)

    def _schedule_sweep(self) -> None:
        if self._linger_for and self._loop is not None:
            self._sweeper = self._loop.call_later(self._linger_for, self._sweep)

    def _sweep(self) -> None:
        """End the lanes that were already idle at the previous sweep."""
        self._sweep_tick += 1
        for lane in list(self._lanes.values()):
            if lane.waiter is not None and lane.idle_since < self._sweep_tick - 1:
                self._wake(lane, more=False)
        self._schedule_sweep()
