"""A bounded set that remembers the most recent keys: the dedupe window of clients and stores."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from autoplay_base.errors import ConfigError

__all__ = ["RecentKeys"]

K = TypeVar("K", bound=Hashable)


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
