"""What every async driver does around a framework's run: race it against a cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from autoplay_base.agent_stream._run import Run

__all__ = ["until_cancelled"]

T = TypeVar("T")


async def until_cancelled(
    run: Run,
    work: Awaitable[T],
    *,
    on_cancel: Callable[[], Awaitable[object]] | None = None,
) -> T | None:
    """Await ``work`` until it finishes or ``run`` is cancelled, whichever comes first.

    The work never outlives this call, whatever ends it (our own cancellation
    too): it is cancelled, after ``on_cancel`` (a framework's own stop, such as
    a workflow's ``cancel_run``) when one is given. Returns ``None`` when the run
    was cancelled, else the work's result; the work's exception propagates, so
    the run's block records it as an error.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(run.await_cancelled())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            if on_cancel is not None:
                await on_cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if run.cancelled:
        return None
    return task.result()
