"""The in-process transport: bounded runs in this process, listened to from any thread or loop.

One :class:`MemoryTransport` per :class:`~autoplay_base.agent_stream.RunStream`:
its runs are bounded in number (``max_runs``: the oldest ended run goes first,
then the oldest), in events (``max_events`` per run, the oldest trimmed: a
listener behind them gets a ``gap``) and in time (an ended run is forgotten
``retention_seconds`` after it ended). Events are written inline by
:class:`MemorySink` (an append under a lock): nothing here waits on a network.
A run is live from ``start`` until its terminal event; the producer shares the
listener's process, so there is no lease to lose.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from autoplay_base.agent_stream._events import TERMINAL, RunEvent
from autoplay_base.agent_stream._state import Pending
from autoplay_base.agent_stream._transport import LiveRun, Read, RunRef, SinkOwner, Started

__all__ = ["MemorySink", "MemoryTransport"]


class _Log:
    __slots__ = ("ended_at", "events", "live", "started_at", "user_id")

    def __init__(self, max_events: int, user_id: str | None, now: float) -> None:
        # The drained events as they were buffered: a listener's read makes its
        # ``RunEvent``s (and cursors), so the producer's emit does not.
        self.events: deque[Pending] = deque(maxlen=max_events)
        self.live = True
        self.ended_at: float | None = None
        self.started_at = now
        self.user_id = user_id


class MemoryTransport:
    """In-process runs (see the module docstring)."""

    def __init__(
        self,
        *,
        max_runs: int,
        max_events: int,
        retention_seconds: float,
        clock: Callable[[], float],
        on_evict: Callable[[], None],
    ) -> None:
        self.max_runs = max_runs
        self.max_events = max_events
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._on_evict = on_evict
        self._runs: OrderedDict[RunRef, _Log] = OrderedDict()  # in start order
        # A plain lock under the condition (the ``with`` of a ``Condition`` is a Python-level
        # call per emit) and a count of the sync listeners waiting on it: ``notify_all``
        # costs a Python call and a deque copy, skipped when nobody waits.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_waiting = 0
        # Async listeners: an asyncio.Event per waiting task, set from any thread.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # -- bookkeeping (under the lock) -------------------------------------------------------
    def _prune(self, now: float) -> None:
        stale = [
            ref
            for ref, log in self._runs.items()
            if log.ended_at is not None and now - log.ended_at > self.retention_seconds
        ]
        for ref in stale:
            del self._runs[ref]
        while len(self._runs) > self.max_runs:
            ended = next((r for r, log in self._runs.items() if not log.live), None)
            del self._runs[ended if ended is not None else next(iter(self._runs))]
            self._on_evict()

    def _wake(self) -> None:
        if self._sync_waiting:
            self._cond.notify_all()
        if not self._waiters:
            return
        # Each waiting task is woken once and forgotten: it registers again at its next
        # pause, so a burst of tokens costs one wake-up per listener, not one per token.
        waiters = list(self._waiters)
        self._waiters.clear()
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its listener is gone
                continue

    # -- producer side ------------------------------------------------------------------------
    def start(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started:
        """Register a run; ``started=False`` when another one is live and ``reject_if_live``."""
        with self._lock:
            self._prune(self._clock())
            live = self._live(ref.product_id, ref.session_id)
            if live and reject_if_live:
                return Started(False, live)
            self._runs[ref] = _Log(self.max_events, user_id, now)
            self._prune(self._clock())
            return Started(True, live)

    async def astart(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started:
        """Async twin of :meth:`start` (nothing to await in-process)."""
        return self.start(ref, user_id=user_id, reject_if_live=reject_if_live, now=now)

    def sink(self, ref: RunRef, run: SinkOwner) -> MemorySink:
        """The inline writer of one run."""
        return MemorySink(self, ref, run)

    def write(self, ref: RunRef, run: SinkOwner) -> None:
        """Move what ``run`` buffered into its log (a run evicted meanwhile takes nothing).

        Drained under the transport's lock, so two threads emitting into one run
        append in seq order with one lock taken per emit.
        """
        with self._lock:
            batch = run.drain()
            if not batch:
                return
            log = self._runs.get(ref)
            if log is not None:
                log.events.extend(batch)
                if batch[-1].type in TERMINAL:
                    log.live = False
                    log.ended_at = self._clock()
            if self._sync_waiting or self._waiters:  # no call per token when nobody listens
                self._wake()

    # -- listener side ------------------------------------------------------------------------
    def read(self, ref: RunRef, next_seq: int, count: int) -> Read:
        """Up to ``count`` events from ``next_seq`` on."""
        with self._lock:
            log = self._runs.get(ref)
            if log is None:
                return Read([], False, False)
            events = log.events
            # Seqs are contiguous from the oldest kept: index from there instead of
            # scanning the whole log (a deque indexes from its nearer end, and a
            # listener reads near the tail).
            start = max(0, next_seq - events[0].seq) if events else 0
            stop = min(len(events), start + count)
            run_id = ref.run_id
            ended = bool(events) and events[-1].type in TERMINAL
            read = [events[i].event(run_id) for i in range(start, stop)]
            return Read(read, log.live, True, ended)

    async def aread(self, ref: RunRef, next_seq: int, count: int) -> Read:
        """Async twin of :meth:`read`."""
        return self.read(ref, next_seq, count)

    def _ready(self, ref: RunRef | None, next_seq: int | None) -> bool:
        """Whether a listener at ``next_seq`` has something to read now (under the lock).

        Checked before waiting, so an event written between the listener's read and
        its wait wakes it at once instead of after a whole ``timeout``.
        """
        if ref is None or next_seq is None:
            return False  # follow (a new run) or no cursor: only the next write says so
        log = self._runs.get(ref)
        return log is None or not log.live or (bool(log.events) and log.events[-1].seq >= next_seq)

    def pause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]:
        """Wait until ``ref`` has an event from ``next_seq`` on, or ended (or ``timeout``).

        Returns no events: the next :meth:`read` is a local copy under the same lock.
        """
        with self._lock:
            if not self._ready(ref, next_seq):
                self._sync_waiting += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._sync_waiting -= 1
        return []

    async def apause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]:
        """Async twin of :meth:`pause`: woken from the writer's thread through the loop."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._ready(ref, next_seq):
                return []
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)
        return []

    def _live(self, product_id: str, session_id: str) -> list[str]:
        return [
            ref.run_id
            for ref, log in self._runs.items()
            if log.live and ref.product_id == product_id and ref.session_id == session_id
        ]

    def live_runs(self, product_id: str, session_id: str, now: float) -> list[str]:
        """The session's live runs, oldest first."""
        with self._lock:
            return self._live(product_id, session_id)

    async def alive_runs(self, product_id: str, session_id: str, now: float) -> list[str]:
        """Async twin of :meth:`live_runs`."""
        return self.live_runs(product_id, session_id, now)

    def runs(self, product_id: str, session_id: str) -> list[str]:
        """Every kept run of the session, in start order."""
        with self._lock:
            self._prune(self._clock())
            return [
                r.run_id
                for r in self._runs
                if r.product_id == product_id and r.session_id == session_id
            ]

    async def aruns(self, product_id: str, session_id: str) -> list[str]:
        """Async twin of :meth:`runs`."""
        return self.runs(product_id, session_id)

    def request_cancel(self, refs: Sequence[RunRef]) -> None:
        """Nothing to send: every in-process run is cancelled through the stream's registry."""

    async def arequest_cancel(self, refs: Sequence[RunRef]) -> None:
        """Async twin of :meth:`request_cancel`."""

    def live_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]:
        """The user's live runs under ``product_id``, oldest first."""
        with self._lock:
            return [
                LiveRun(ref.session_id, ref.run_id)
                for ref, log in self._runs.items()
                if log.live and log.user_id == user_id and ref.product_id == product_id
            ]

    async def alive_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]:
        """Async twin of :meth:`live_sessions`."""
        return self.live_sessions(product_id, user_id, now)


class MemorySink:
    """Writes a run's buffered events into its :class:`MemoryTransport` at once, inline."""

    __slots__ = ("_ref", "_run", "_transport")

    def __init__(self, transport: MemoryTransport, ref: RunRef, run: SinkOwner) -> None:
        self._transport = transport
        self._ref = ref
        self._run = run

    def notify(self) -> None:
        """Move everything buffered into the run's log (an O(events) append)."""
        self._transport.write(self._ref, self._run)

    def close(self, timeout: float) -> bool:
        """Write what is left: in-process nothing can be lost."""
        self.notify()
        return True
