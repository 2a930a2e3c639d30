"""One base for the plain counter objects the clients, the store and the summarizer keep."""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """Integer counters named by a subclass's ``__slots__``, all starting at zero.

    Subclasses declare each counter in ``__slots__`` and annotate it (``writes: int``)
    so type checkers see it; :meth:`as_dict` lists them in ``__slots__`` order. A
    slot that is not a counter (a last seen id) is named in ``not_counted`` and
    set by the subclass's own ``__init__``.

    Plain attributes rather than a dict: the hot paths do ``counters.x += 1``, the
    cheapest update Python has.
    """

    __slots__ = ()
    not_counted: tuple[str, ...] = ()

    def __init__(self) -> None:
        for name in self.counted():
            setattr(self, name, 0)

    @classmethod
    def counted(cls) -> tuple[str, ...]:
        """The counter names, in declaration order (base classes first)."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names.extend(
                name for name in klass.__dict__.get("__slots__", ()) if name not in cls.not_counted
            )
        return tuple(names)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for metrics exporters and logs)."""
        return {name: getattr(self, name) for name in self.counted()}
