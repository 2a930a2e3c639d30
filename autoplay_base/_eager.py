"""Run a coroutine's first step at once, and hand the rest to a task only if it suspends.

Python 3.12's eager tasks, for the async client's callbacks on 3.10+: most
callbacks (``AsyncContextStore.add`` on the in-memory backend, a metrics
counter) finish without ever suspending, and creating a task for each of them
cost about a fifth of the client's time per event. A coroutine that does
suspend continues in :func:`finish`, inside a task, exactly as a task would
have run it. Each coroutine runs in its own copy of the context, as in a task,
so a callback that sets a context variable never leaks it into the reader.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, NamedTuple

__all__ = ["Suspended", "finish", "start"]


class Suspended(NamedTuple):
    """A coroutine stopped at its first suspension, with what it yielded to its task."""

    coro: Coroutine[Any, Any, Any]
    yielded: Any
    context: contextvars.Context


def start(coro: Coroutine[Any, Any, Any]) -> Suspended | None:
    """Run ``coro`` up to its first suspension; ``None`` when it finished.

    Exceptions it raises before suspending propagate to the caller.
    """
    context = contextvars.copy_context()
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    if getattr(yielded, "_asyncio_future_blocking", False):
        # What a task does on receiving a future: until this flag is cleared, any
        # other coroutine awaiting the same future fails ("await wasn't used with
        # future"). _Reyield sets it again when the task takes over.
        yielded._asyncio_future_blocking = False
    return Suspended(coro, yielded, context)


class _Reyield:
    """Awaiting it yields ``value`` to the running task: the future (or ``None``,
    a bare yield) the suspended coroutine is waiting on, so the task wakes when
    that coroutine would have been woken."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, None]:
        value = self.value
        if value is not None and hasattr(value, "_asyncio_future_blocking"):
            value._asyncio_future_blocking = True  # as the future's own __await__ does
        yield value


async def finish(suspended: Suspended) -> None:
    """Drive a coroutine from :func:`start` to its end, inside the current task.

    What the task is told (a wake-up, or a cancellation) is passed on to the
    coroutine exactly as its own task would have; its exception propagates.
    """
    coro, yielded, context = suspended
    while True:
        try:
            await _Reyield(yielded)
        except BaseException as exc:
            step = context.run(_throw, coro, exc)
        else:
            step = context.run(_send, coro)
        if step is _DONE:
            return
        yielded = step


_DONE = object()


def _send(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return coro.send(None)
    except StopIteration:
        return _DONE


def _throw(coro: Coroutine[Any, Any, Any], exc: BaseException) -> Any:
    try:
        return coro.throw(exc)
    except StopIteration:
        return _DONE
