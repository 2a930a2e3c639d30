"""The outage buffer: writes kept while Redis is unreachable, replayed in order (pure).

No sockets and no clock: the backend hands it writes, takes batches to replay,
and tells it how many of a batch were answered. The rules:

* bounded: past ``max_writes`` the oldest write that no replay has in flight is
  given up (context is about recency); when every buffered write is in flight,
  the new write is the one given up;
* a replay in flight holds the head of the buffer, and only that replay takes
  its writes off (an overflow never drops a write that may be applied right now);
* a write that went out and whose answer was lost is marked ``sent``: if it is
  given up later its outcome is unknown (Redis may have applied it).

What it counts goes through the ``count`` callback while the shared lock is held
(the backend's counters stay consistent); a given-up write is handed to
``report_drop`` outside the lock (it may call user code).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from threading import Lock
from typing import Generic, TypeVar

from autoplay_base.backends.base import SessionKey

__all__ = ["NOT_APPLIED", "UNKNOWN", "DroppedWrite", "OutageBuffer", "Pending"]

# -- public values ------------------------------------------------------------------------
NOT_APPLIED = "not_applied"
""":attr:`DroppedWrite.outcome`: Redis never received the write (it was only buffered)."""
UNKNOWN = "unknown"
""":attr:`DroppedWrite.outcome`: the write was sent but its answer was lost (a timeout, a
connection that died mid-reply), so Redis may have applied it."""


@dataclass(frozen=True, slots=True)
class DroppedWrite:
    """A buffered write that was given up (buffer overflow or close during an outage).

    ``reason`` says why it was given up (``"buffer_full"``, ``"closed"``); ``outcome``
    whether it is certainly lost (:data:`NOT_APPLIED`) or may have been applied
    (:data:`UNKNOWN`: it had been sent once and its reply never came).
    """

    kind: str
    key: SessionKey | None
    event_id: str | None
    reason: str
    outcome: str = NOT_APPLIED


OpT = TypeVar("OpT")


class Pending(Generic[OpT]):
    """A buffered write; ``sent`` once it went out and its answer was lost (fate unknown)."""

    __slots__ = ("op", "sent", "seq")

    def __init__(self, seq: int, op: OpT, *, sent: bool) -> None:
        self.seq = seq
        self.op = op
        self.sent = sent


class OutageBuffer(Generic[OpT]):
    """Buffered writes, oldest first, and the state of the replay that drains them.

    Args:
        max_writes: writes kept at most.
        lock: the owner's lock (held while counting, so its counters stay consistent).
        count: ``count(name, n)`` for ``redis_writes_buffered``, ``redis_writes_replayed``,
            ``redis_writes_dropped`` and ``redis_writes_dropped_unknown``.
        report_drop: ``report_drop(pending, reason)`` for each write given up.
    """

    __slots__ = ("_count", "_items", "_lock", "_report", "_seq", "draining", "in_flight", "limit")

    def __init__(
        self,
        max_writes: int,
        *,
        lock: Lock,
        count: Callable[[str, int], None],
        report_drop: Callable[[Pending[OpT], str], None],
    ) -> None:
        self.limit = max_writes
        self._lock = lock
        self._count = count
        self._report = report_drop
        self._items: deque[Pending[OpT]] = deque()
        self._seq = 0
        self.draining = False
        self.in_flight = 0  # writes at the head that the replay under way has sent

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Pending[OpT]]:
        return iter(list(self._items))

    def _count_drop(self, pending: Pending[OpT]) -> None:
        self._count("redis_writes_dropped_unknown" if pending.sent else "redis_writes_dropped", 1)

    def enqueue(self, op: OpT, *, sent: bool = False) -> None:
        """Buffer ``op``; past the bound the oldest write no replay has in flight goes."""
        dropped: list[Pending[OpT]] = []
        with self._lock:
            self._seq += 1
            self._items.append(Pending(self._seq, op, sent=sent))
            self._count("redis_writes_buffered", 1)
            while len(self._items) > self.limit:
                position = min(self.in_flight, len(self._items) - 1)
                lost = self._items[position]
                del self._items[position]
                dropped.append(lost)
                self._count_drop(lost)
        for pending in dropped:
            self._report(pending, "buffer_full")

    def begin_drain(self) -> bool:
        """Start a replay; ``False`` when one is under way or there is nothing to replay."""
        with self._lock:
            if self.draining or not self._items:
                return False
            self.draining = True
            return True

    def end_drain(self) -> None:
        with self._lock:
            self.draining = False
            self.in_flight = 0

    def take_batch(self, size: int) -> list[Pending[OpT]]:
        """The next ``size`` writes to replay, now in flight (empty when the buffer is)."""
        with self._lock:
            batch = list(islice(self._items, size))
            self.in_flight = len(batch)
            return batch

    def replayed(self, batch: list[Pending[OpT]], done: int, *, sent: bool) -> None:
        """The first ``done`` writes of ``batch`` were answered: take them off.

        When the replay was sent and broke off, the rest stay buffered, marked sent.
        """
        with self._lock:
            if sent:
                for pending in batch[done:]:
                    pending.sent = True
            # The batch is still the head: an overflow never drops writes in flight.
            for _ in range(done):
                self._items.popleft()
            self.in_flight = 0
            if done:
                self._count("redis_writes_replayed", done)

    def replace_head(self, pending: Pending[OpT], op: OpT, *, sent: bool) -> None:
        """A replay of the head broke off midway: what is left of it stays at the head."""
        with self._lock:
            pending.op = op
            pending.sent = pending.sent or sent
            self.in_flight = 0

    def drop_all(self, reason: str) -> None:
        """Give up every buffered write (``close`` during an outage)."""
        with self._lock:
            lost = list(self._items)
            self._items.clear()
            for pending in lost:
                self._count_drop(pending)
        for pending in lost:
            self._report(pending, reason)
