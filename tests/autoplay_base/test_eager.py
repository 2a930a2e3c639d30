"""The eager first step of a coroutine, and the task that finishes it (``autoplay_base._eager``)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from autoplay_base import _eager as eager

TRAIL: contextvars.ContextVar[str] = contextvars.ContextVar("trail", default="")


async def test_a_coroutine_that_never_suspends_finishes_in_start() -> None:
    steps: list[str] = []

    async def quick() -> None:
        steps.append("ran")

    assert eager.start(quick()) is None
    assert steps == ["ran"]


async def test_an_exception_before_the_first_suspension_reaches_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        eager.start(broken())


async def test_a_suspended_coroutine_resumes_with_its_future_result_and_bare_yields() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    steps: list[object] = []

    async def waits() -> None:
        steps.append("before")
        steps.append(await future)
        await asyncio.sleep(0)  # a bare yield
        steps.append("after")

    suspended = eager.start(waits())
    assert suspended is not None
    assert steps == ["before"]
    task = asyncio.ensure_future(eager.finish(suspended))
    await asyncio.sleep(0)
    assert steps == ["before"]  # still waiting on the future
    future.set_result(7)
    await asyncio.wait_for(task, 5)
    assert steps == ["before", 7, "after"]


async def test_a_failed_future_raises_inside_the_coroutine_and_its_error_propagates() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    seen: list[str] = []

    async def waits() -> None:
        try:
            await future
        except KeyError as exc:
            seen.append(f"caught {exc.args[0]}")
            raise RuntimeError("after catching") from exc

    suspended = eager.start(waits())
    assert suspended is not None
    task = asyncio.ensure_future(eager.finish(suspended))
    future.set_exception(KeyError("k"))
    with pytest.raises(RuntimeError, match="after catching"):
        await asyncio.wait_for(task, 5)
    assert seen == ["caught k"]


async def test_cancelling_the_task_cancels_what_the_coroutine_waits_on() -> None:
    never = asyncio.Event()
    cleanup: list[str] = []

    async def stuck() -> None:
        try:
            await never.wait()
        finally:
            cleanup.append("finally ran")

    suspended = eager.start(stuck())
    assert suspended is not None
    task = asyncio.ensure_future(eager.finish(suspended))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleanup == ["finally ran"]


async def test_a_coroutine_may_swallow_its_cancellation_and_finish() -> None:
    never = asyncio.Event()

    async def stubborn() -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
        return "done"

    suspended = eager.start(stubborn())
    assert suspended is not None
    task = asyncio.ensure_future(eager.finish(suspended))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(task, 5)  # finished normally: the coroutine swallowed it
    assert not task.cancelled()


async def test_each_coroutine_has_its_own_context_like_a_task() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def sets(mark: str) -> None:
        TRAIL.set(TRAIL.get() + mark)
        await future
        seen.append(TRAIL.get())

    TRAIL.set("caller:")
    first = eager.start(sets("a"))
    second = eager.start(sets("b"))
    assert first is not None and second is not None
    assert TRAIL.get() == "caller:"  # nothing leaked into the caller's context
    tasks = [asyncio.ensure_future(eager.finish(s)) for s in (first, second)]
    future.set_result(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert seen == ["caller:a", "caller:b"]
