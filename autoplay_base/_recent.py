"""Bounded memory of recent keys: the dedupe windows of the clients and of the stores.

:class:`RecentKeys` remembers the last ``capacity`` distinct keys (the oldest is
forgotten first). :class:`DedupeWindow` is what event dedupe needs on top of it:

* **Replays past the window cost only the part outside it.** Each remembered id
  carries the time its source sent the event (``order``: the connector's
  ``forwarded_at``). An event older than every id remembered is passed on as new
  (it may be a replay of something already forgotten) but is *not* remembered, so
  it never pushes out an id the same replay is about to repeat. With plain FIFO
  eviction, a replay one event longer than the window was delivered again in
  full: each replayed old id evicted the next.
* **Reused ids are not duplicates.** Each id also carries a digest of its
  content. The same id with another digest (a server that restarted and counts
  its ids from 1 again) is new; it is counted in :attr:`DedupeWindow.reused` and
  remembered with its new content.
* **A clock reset starts a new epoch.** If more than ``4 * capacity`` events in a
  row are older than the whole window, the source's clock went back: the window
  is cleared and :attr:`DedupeWindow.resets` counts it, so dedupe works again at
  once instead of only when the clock catches up. (A replay reaching back further
  than that is then delivered again from there on; nothing is ever dropped.)

Events without an ``order`` count as the newest (plain FIFO); events without a
digest match any digest of the same id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from autoplay_base.errors import ConfigError

__all__ = ["DedupeWindow", "RecentKeys"]

K = TypeVar("K", bound=Hashable)
Digest = float | str | None
_INF = float("inf")
_INFINITE = (_INF, -_INF)
_STALE_RUN_FACTOR = 4  # events older than the window, in a row and per slot, before a reset


class RecentKeys(Generic[K]):
    """The last ``capacity`` distinct keys added; the oldest is forgotten first.

    A set for membership plus a ``deque(maxlen=...)`` for age: about half the
    cost of an ``OrderedDict`` per key, which matters on the per-event path.
    """

    __slots__ = ("_keys", "_order", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"a dedupe window must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._order: deque[K] = deque(maxlen=capacity)
        self._keys: set[K] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: K) -> bool:
        """Remember ``key``; ``False`` if it was already in the window."""
        keys = self._keys
        if key in keys:
            return False
        order = self._order
        if len(order) == self.capacity:
            keys.discard(order[0])  # the append below pushes it out of the deque
        keys.add(key)
        order.append(key)
        return True


class DedupeWindow(Generic[K]):
    """The ids of the newest ``capacity`` events, by the time their source sent them.

    Use :meth:`check` for the one-step case (a client); a store that must not
    mark an id seen before its write succeeded calls :meth:`is_duplicate`, writes,
    then :meth:`remember`. Not thread-safe: the caller holds its own lock.
    """

    __slots__ = (
        "_age_orders",
        "_ages",
        "_entries",
        "_newest",
        "_stale_run",
        "capacity",
        "on_reset",
        "on_reused",
        "resets",
        "reused",
    )

    def __init__(
        self,
        capacity: int,
        *,
        on_reused: Callable[[], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        """``on_reused`` / ``on_reset`` are told of each reused id / reset as it happens."""
        if capacity < 1:
            raise ConfigError(f"a dedupe window must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self.on_reused = on_reused
        self.on_reset = on_reset
        # key -> (order, digest); the two deques hold the (key, order) stamps in
        # insertion order, side by side. A key remembered again leaves a stale stamp
        # behind (its order no longer matches the entry), skipped when it reaches the
        # front. Two deques rather than one of pairs: a pair is a tuple the collector
        # tracks, one more container per event kept for a window's length, and what
        # the gen0 collections are counted in.
        self._entries: dict[K, tuple[float, Digest]] = {}
        self._ages: deque[K] = deque()
        self._age_orders: deque[float] = deque()
        self._newest = float("-inf")
        self._stale_run = 0
        self.reused = 0
        """Ids seen again with other content (counted as new events)."""
        self.resets = 0
        """Times the window was cleared because its source's clock or ids started over."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def is_duplicate(self, key: K, digest: Digest = None) -> bool:
        """Whether ``key`` was remembered with the same content (no state changes)."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        return digest is None or entry[1] is None or entry[1] == digest

    def remember(self, key: K, order: float | None = None, digest: Digest = None) -> None:
        """Remember a new event (call after :meth:`is_duplicate` said it is not one)."""
        entries = self._entries
        if order is None:
            order = self._newest
        # The usual case, written out once: a new id, in order (a finite order not
        # older than the newest; NaN fails the comparison and takes the general path).
        if self._newest <= order < _INF and key not in entries:
            self._newest = order
            self._stale_run = 0
            entries[key] = (order, digest)
            self._ages.append(key)
            self._age_orders.append(order)
            if len(entries) > self.capacity:
                self._evict_oldest()
            return
        self._remember_general(key, order, digest)

    def _remember_general(self, key: K, order: float, digest: Digest) -> None:
        entries = self._entries
        if key in entries:  # the same id with other content: a reused id
            self.reused += 1
            del entries[key]
            if self.on_reused is not None:
                self.on_reused()
        if order != order or order in _INFINITE:  # noqa: PLR0124 - the NaN test
            # NaN would make every stamp look stale (NaN != NaN); infinities would pin
            # the window's ends. An order that cannot be compared counts as the newest.
            order = self._newest
        elif len(entries) >= self.capacity and order < self._oldest():
            # Older than everything remembered: pass it on, but keep the window for
            # the ids a replay repeats next. Many in a row mean a clock reset.
            self._stale_run += 1
            if self._stale_run <= _STALE_RUN_FACTOR * self.capacity:
                return
            self._clear()
            self.resets += 1
            if self.on_reset is not None:
                self.on_reset()
        self._stale_run = 0
        self._newest = max(self._newest, order)
        entries[key] = (order, digest)
        self._ages.append(key)
        self._age_orders.append(order)
        while len(entries) > self.capacity:
            self._evict_oldest()
        if len(self._ages) > 2 * self.capacity:
            self._compact()  # stale stamps come only from this path (reused ids)

    def check(self, key: K, order: float | None = None, digest: Digest = None) -> bool:
        """``True`` (and remember it) for a new event, ``False`` for a duplicate."""
        entry = self._entries.get(key)
        if entry is not None and (digest is None or entry[1] is None or entry[1] == digest):
            return False
        self.remember(key, order, digest)
        return True

    def _oldest(self) -> float:
        ages, orders, entries = self._ages, self._age_orders, self._entries
        while True:
            order = orders[0]
            entry = entries.get(ages[0])
            if entry is not None and entry[0] == order:
                return order
            ages.popleft()  # a stale stamp
            orders.popleft()

    def _evict_oldest(self) -> None:
        ages, orders, entries = self._ages, self._age_orders, self._entries
        while True:
            key = ages.popleft()
            order = orders.popleft()
            entry = entries.get(key)
            if entry is not None and entry[0] == order:
                del entries[key]
                return

    def _compact(self) -> None:
        """Drop stale stamps (bounded memory when ids are reused over and over)."""
        entries = self._entries
        live = [
            (key, order)
            for key, order in zip(self._ages, self._age_orders, strict=True)
            if entries.get(key, (None,))[0] == order
        ]
        self._ages = deque(key for key, _ in live)
        self._age_orders = deque(order for _, order in live)

    def _clear(self) -> None:
        self._entries.clear()
        self._ages.clear()
        self._age_orders.clear()
        self._newest = float("-inf")
        self._stale_run = 0
