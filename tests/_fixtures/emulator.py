"""Pytest fixtures that start the connector emulator on a free loopback port.

* ``emulator`` — an :class:`EmulatorServer` on a background thread, products
  ``acme`` and ``globex``, heartbeats every 0.2 s. Works from sync and async
  tests (``publish`` is thread-safe; ``await emulator.await_for(...)`` waits
  without blocking the test's loop).
* ``emulator_factory`` — ``emulator_factory(token="t", heartbeat_interval=None, ...)``
  for servers with other options (same thread mode; all closed at teardown).
* ``aemulator`` — the same server as ``emulator`` but running inside the async
  test's own event loop (for tests that want one loop for everything).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from autoplay_base.emulator import EmulatorServer

TEST_PRODUCTS = ("acme", "globex")
TEST_HEARTBEAT = 0.2

EmulatorFactory = Callable[..., EmulatorServer]


def _options(overrides: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"products": TEST_PRODUCTS, "heartbeat_interval": TEST_HEARTBEAT}
    options.update(overrides)
    return options


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators with custom options on background threads; all stop at teardown."""
    started: list[EmulatorServer] = []

    def make(**overrides: Any) -> EmulatorServer:
        server = EmulatorServer(**_options(overrides)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> EmulatorServer:
    """An emulator on a background thread (products ``acme`` and ``globex``)."""
    return emulator_factory()


@pytest.fixture
async def aemulator() -> AsyncIterator[EmulatorServer]:
    """An emulator running in the async test's own event loop."""
    async with EmulatorServer(**_options({})) as server:
        yield server


class Collector:
    """A thread-safe list to register as a callback, with waits on its length.

    ``collector(item)`` appends; ``collector.wait_for(n)`` blocks until it holds
    ``n`` items (``False`` on timeout); ``await collector.await_for(n)`` is the
    async twin (woken by the loop, no polling).
    """

    def __init__(self) -> None:
        import asyncio
        import threading

        self.items: list[Any] = []
        self._cond = threading.Condition()
        self._waiters: list[tuple[int, asyncio.Future[bool], asyncio.AbstractEventLoop]] = []

    def __call__(self, *args: Any) -> None:
        item = args[0] if len(args) == 1 else args
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()
            size = len(self.items)
            ready = [(f, loop) for n, f, loop in self._waiters if size >= n]
        for future, loop in ready:
            loop.call_soon_threadsafe(_resolve, future)

    def __len__(self) -> int:
        return len(self.items)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) >= count, timeout)

    async def await_for(self, count: int, timeout: float = 5.0) -> bool:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._cond:
            if len(self.items) >= count:
                return True
            self._waiters.append((count, future, loop))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return len(self.items) >= count


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(True)
