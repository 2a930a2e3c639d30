"""Copies and pickles of the adapters that hold a live context store (both frameworks).

A store is a live resource (a lock, a backend's connections, a summarizer's
worker), like a database connection: copying a component must not copy it, and
pickling one cannot carry it to another process. So, for every adapter:

* ``copy.copy`` / ``copy.deepcopy`` copy the options and share the store;
* ``pickle`` raises :class:`TypeError` saying to rebuild the component with a store
  in the other process (rather than failing on "cannot pickle '_thread.lock'"
  somewhere inside the store).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SharesStore", "pickle_refused", "share_store"]


def pickle_refused(owner: object, *, instead: str = "") -> TypeError:
    """The ``TypeError`` pickling ``owner`` raises while it holds a store (one wording).

    ``instead`` names what can be pickled, for the adapters whose store is optional.
    Raised instead of the store's own "cannot pickle '_thread.lock'" deep inside it.
    """
    name = type(owner).__name__
    alternative = f"pickle a {name} with {instead}, or " if instead else ""
    return TypeError(
        f"{name} holds a live context store, which cannot be pickled; {alternative}"
        f"build a new {name} with a store in the other process (copy.deepcopy shares "
        "the store)"
    )


def share_store(memo: dict[int, Any], store: object | None) -> None:
    """Make ``copy.deepcopy`` keep ``store`` as it is: the copy shares the original's store."""
    if store is not None:
        memo[id(store)] = store  # deepcopy returns what memo holds: the same store


class SharesStore:
    """Mix-in (first in the bases) for a component with a ``store`` attribute."""

    store: Any

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        memo = {} if memo is None else memo
        share_store(memo, self.store)
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
        raise pickle_refused(self)
