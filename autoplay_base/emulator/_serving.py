"""The lifecycle the emulator and the ingest receiver share: a Starlette app under a
uvicorn server on loopback, run in the caller's loop (``astart``/``aclose``) or on a
background thread of its own (``start``/``close``, for sync code and tests).

uvicorn's ``Server.serve()`` is used as is, with three of its steps replaced
(:class:`_Uvicorn`): no signal handlers (the owner of the process decides about
signals; a test tool must not take over pytest's), a main loop that waits on an
event instead of polling every 0.1 s, and a shutdown that cuts open connections
instead of waiting for them to end (an event stream never ends by itself, and
uvicorn's own shutdown sleeps 0.1 s and then waits for every response to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Generator
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope

__all__ = ["LoopbackServer", "wait_disconnect"]

logger = logging.getLogger("autoplay_base.emulator")

_L = TypeVar("_L", bound="LoopbackServer")
MAX_REQUEST_HEAD = 64 * 1024
"""Bytes a request line and its headers may take."""
_SHUTDOWN_GRACE = 2.0
"""Seconds the request tasks get to notice their cut connection before they are cancelled."""


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client is gone (the request body, if any, is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Uvicorn(uvicorn.Server):
    """A uvicorn server that says when it listens and stops at once (see the module docstring)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self.exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        await self.exit.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        cut_connections(self)
        tasks = list(self.server_state.tasks)
        if tasks:
            # A cut connection wakes its request with http.disconnect; only a request
            # stuck elsewhere (an app bug) is still running after the grace.
            _, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), _SHUTDOWN_GRACE)


def cut_connections(server: uvicorn.Server, client: Any = None) -> int:
    """Abort the TCP connections of ``server`` (only ``client``'s, when given); returns how many.

    An abort, not a close: the client sees the stream cut (no terminating chunk, no
    FIN after a complete message), which is the fault it must be able to tell apart
    from a clean end.
    """
    cut = 0
    for connection in list(server.server_state.connections):
        if client is not None and getattr(connection, "client", None) != client:
            continue
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
            cut += 1
    return cut


class LoopbackServer:
    """Base of a small Starlette server under uvicorn: subclasses define :meth:`_app`.

    ``kind`` names the server in messages, logs and its thread's name. Hooks:
    :meth:`_starting` runs in the loop before the socket opens, :meth:`_closing`
    once it stopped listening, before connections are cut and tasks cancelled.
    """

    kind = "server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if not self._port:
            raise RuntimeError(f"the {self.kind} is not started")
        return self._port

    def _app(self) -> Starlette:
        raise NotImplementedError

    def _starting(self) -> None:
        """Runs in the server's loop before it listens."""

    def _closing(self) -> None:
        """Runs in the server's loop once it stopped listening, before connections are cut."""

    def _cut(self, scope: Scope | None = None) -> int:
        """Abort the connection of the request ``scope`` (every connection: ``None``)."""
        if self._uvicorn is None:
            return 0
        client = None if scope is None else tuple(scope.get("client") or ()) or None
        if scope is not None and client is None:
            return 0
        return cut_connections(self._uvicorn, client)

    async def astart(self: _L) -> _L:
        """Start serving in the running loop; returns once the port accepts connections."""
        if self._uvicorn is not None:
            raise RuntimeError(f"the {self.kind} is already started")
        self._loop = asyncio.get_running_loop()
        self._starting()
        # Bound here, not by uvicorn: a port in use is an OSError for the caller, where
        # uvicorn would log it and sys.exit() from inside the loop.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET  # "::1" too
        listener = socket.create_server((self.host, self._requested_port), family=family)
        # Accepted sockets inherit this. asyncio sets TCP_NODELAY itself only on sockets
        # whose proto is IPPROTO_TCP, and create_server's are proto 0: without it Nagle
        # held a paced stream's small writes for the client's delayed ACK (~40 ms stalls).
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._port = listener.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            # Leave logging alone: uvicorn would otherwise reconfigure its loggers
            # process-wide (dictConfig and levels) for every emulator a test starts.
            log_config=None,
            log_level=None,
            access_log=False,
            proxy_headers=False,
            lifespan="off",
            http="h11",
            # The old responder's limit on a request head; h11's default is 16 KiB.
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
            # No Server/Date headers: the old responder sent none, and a stream needs none.
            server_header=False,
            date_header=False,
        )
        server = self._uvicorn = _Uvicorn(config)
        self._serving = asyncio.create_task(server.serve(sockets=[listener]))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({ready, self._serving}, return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            self._uvicorn = None
            listener.close()
            await self._serving  # raises what stopped it
            raise RuntimeError(f"the {self.kind} stopped while starting")
        logger.info("%s: serving on http://%s:%d", self.kind, self.host, self._port)
        return self

    async def aclose(self) -> None:
        """Stop serving; open connections are cut and background tasks cancelled."""
        server, serving = self._uvicorn, self._serving
        if server is None or serving is None:
            return
        self._serving = None
        for listening in server.servers:
            listening.close()
        self._closing()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.exit.set()  # its shutdown cuts every open connection
        await serving
        self._uvicorn = None

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
