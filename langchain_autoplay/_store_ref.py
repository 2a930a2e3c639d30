"""Copies and pickles of the adapters that hold a live context store.

A store is a live resource (a lock, a backend's connections, a summarizer's
worker), like a database connection: copying a component must not copy it, and
pickling one cannot carry it to another process. So, for every adapter here:

* ``copy.copy`` / ``copy.deepcopy`` copy the options and share the store;
* ``pickle`` raises :class:`TypeError` saying to rebuild the component with a store
  in the other process (rather than failing on "cannot pickle '_thread.lock'"
  somewhere inside the store).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SharesStore"]


class SharesStore:
    """Mix-in (first in the bases) for a component with a ``store`` attribute."""

    store: Any

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        memo = {} if memo is None else memo
        memo[id(self.store)] = self.store  # deepcopy returns what memo holds: the same store
        parent = getattr(super(), "__deepcopy__", None)
        if parent is not None:  # pydantic models copy their fields themselves
            return parent(memo)
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

    def __copy__(self) -> Any:
        parent = getattr(super(), "__copy__", None)
        if parent is not None:
            return parent()
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"{type(self).__name__} holds a live context store, which cannot be pickled; "
            f"pickle its options instead and build a new {type(self).__name__} with a "
            "store in the other process (copy.deepcopy shares the store)"
        )
