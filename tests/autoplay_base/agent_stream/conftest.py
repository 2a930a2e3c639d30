"""Fixtures of the run stream tests: one contract x [in-process, Redis] x [sync, async].

:class:`Streams` drives a ``RunStream`` (sync mode) or an ``AsyncRunStream``
(async mode) through one async interface, so each contract test is written once.
Sync listeners run in a worker thread (they block between reads, as they would in
a WSGI worker); sync runs are entered and left on the test's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from autoplay_base.agent_stream import AsyncRunStream, Run, RunEvent, RunStream
from autoplay_base.backends.redis import RedisBackend

LISTEN_TIMEOUT = 10.0
"""A listener that has not ended by then fails the test instead of hanging it."""


class Streams:
    """One async face over either twin (see the module docstring)."""

    def __init__(self, stream: RunStream | AsyncRunStream, mode: str) -> None:
        self.stream = stream
        self.mode = mode

    @asynccontextmanager
    async def run(self, **kwargs: Any) -> AsyncIterator[Run]:
        if isinstance(self.stream, AsyncRunStream):
            async with self.stream.run(**kwargs) as run:
                yield run
        else:
            with self.stream.run(**kwargs) as run:
                yield run

    async def listen(self, run_id: str, **kwargs: Any) -> list[RunEvent]:
        """Every event until the listener ends by itself."""
        if isinstance(self.stream, AsyncRunStream):
            stream = self.stream

            async def collect() -> list[RunEvent]:
                return [e async for e in stream.listen(run_id, **kwargs)]

            return await asyncio.wait_for(collect(), LISTEN_TIMEOUT)
        sync = self.stream
        return await asyncio.wait_for(
            asyncio.to_thread(lambda: list(sync.listen(run_id, **kwargs))), LISTEN_TIMEOUT
        )

    async def follow(self, session_id: str, count: int, **kwargs: Any) -> list[RunEvent]:
        """The first ``count`` events ``follow`` yields."""
        if isinstance(self.stream, AsyncRunStream):
            stream = self.stream

            async def collect() -> list[RunEvent]:
                out: list[RunEvent] = []
                async for event in stream.follow(session_id, **kwargs):
                    out.append(event)
                    if len(out) == count:
                        break
                return out

            return await asyncio.wait_for(collect(), LISTEN_TIMEOUT)
        sync = self.stream

        def collect_sync() -> list[RunEvent]:
            out: list[RunEvent] = []
            for event in sync.follow(session_id, **kwargs):
                out.append(event)
                if len(out) == count:
                    break
            return out

        return await asyncio.wait_for(asyncio.to_thread(collect_sync), LISTEN_TIMEOUT)

    async def cancel(self, run_id: str | None = None, **kwargs: Any) -> bool:
        if isinstance(self.stream, AsyncRunStream):
            return await self.stream.cancel(run_id, **kwargs)
        return self.stream.cancel(run_id, **kwargs)

    async def live_sessions(self, user_id: str, **kwargs: Any) -> list[Any]:
        if isinstance(self.stream, AsyncRunStream):
            return await self.stream.live_sessions(user_id, **kwargs)
        return self.stream.live_sessions(user_id, **kwargs)


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_streams(kind: str, mode: str, request: pytest.FixtureRequest) -> Callable[..., Streams]:
    """``make_streams(**options)``: a stream of this kind and mode (Redis: a fresh prefix)."""
    factory = request.getfixturevalue("make_redis_backend") if kind == "redis" else None

    def make(*, backend: RedisBackend | None = None, **options: Any) -> Streams:
        if factory is not None and backend is None:
            backend = factory()
        cls = AsyncRunStream if mode == "async" else RunStream
        return Streams(cls(backend, **options), mode)

    return make


@pytest.fixture
def streams(make_streams: Callable[..., Streams]) -> Streams:
    return make_streams()
