"""The lifecycle the emulator and the ingest receiver share: one asyncio server on
loopback, run in the caller's loop (``astart``/``aclose``) or on a background thread
of its own (``start``/``close``, for sync code and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, TypeVar

from autoplay_base.emulator._http import MAX_REQUEST_HEAD

__all__ = ["LoopbackServer"]

logger = logging.getLogger("autoplay_base.emulator")

_L = TypeVar("_L", bound="LoopbackServer")


class LoopbackServer:
    """Base of a small asyncio HTTP server: subclasses define :meth:`_handle`.

    ``kind`` names the server in messages, logs and its thread's name. Hooks:
    :meth:`_starting` runs in the loop before the socket opens, :meth:`_closing`
    after it closed and before the connection tasks are cancelled.
    """

    kind = "server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if not self._port:
            raise RuntimeError(f"the {self.kind} is not started")
        return self._port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _starting(self) -> None:
        """Runs in the server's loop before it listens."""

    def _closing(self) -> None:
        """Runs in the server's loop once it stopped listening, before tasks are cancelled."""

    async def astart(self: _L) -> _L:
        """Start serving in the running loop."""
        if self._server is not None:
            raise RuntimeError(f"the {self.kind} is already started")
        self._loop = asyncio.get_running_loop()
        self._starting()
        self._server = await asyncio.start_server(
            self._handle, self.host, self._requested_port, limit=MAX_REQUEST_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("%s: serving on http://%s:%d", self.kind, self.host, self._port)
        return self

    async def aclose(self) -> None:
        """Stop serving; open connections and background tasks are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._closing()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    def start(self: _L) -> _L:
        """Start serving on a background thread (for sync code); returns once listening."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.aclose())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"autoplay-{self.kind}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        """Stop the background-thread server started by :meth:`start`."""
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(5.0)

    def __enter__(self: _L) -> _L:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _L) -> _L:
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
