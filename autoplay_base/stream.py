"""``ConnectorClient`` and ``AsyncConnectorClient``: connector streams that lose nothing.

Same API as ``autoplay-sdk`` (constructor, ``on_actions``/``on_summary``/
``on_drop``, ``run``, ``run_in_background``, ``stop``, context managers,
``dropped_count``, ``queue_size``), plus ``on_event`` (types this package does
not model, such as ``usertour_trigger``), ``on_error``, ``on_connect``/
``on_disconnect`` and :attr:`counters`. Several callbacks per type all run.

What differs from the reference client:

* **zero loss across reconnects** — the last event id is sent as
  ``Last-Event-ID``, replayed duplicates are dropped (bounded window), the
  server's ``retry:`` hint is honoured; after a clean close the client
  reconnects at once, after errors it backs off 1 s → 30 s with jitter;
* 401/403 raise :class:`~autoplay_base.errors.ConnectorAuthError`, 404
  :class:`~autoplay_base.errors.ConnectorNotFoundError` and 3xx
  :class:`~autoplay_base.errors.ConnectorRedirectError` at once, never retried
  (a redirect is never followed: the token must not travel); ``Retry-After``
  on 429/503 is honoured;
* a bad frame (not JSON, not an object, invalid, oversized — the decoder
  drops an oversized frame while it buffers) is counted, logged, handed to
  ``on_error`` and skipped — the connection stays up. So is any other failure
  while handling one frame: nothing a server sends ends the connection or
  ``run()``, and every wait is capped (a huge ``retry:`` is held to
  ``max_backoff``);
* a heartbeat watchdog: ``heartbeat_timeout`` seconds without a byte, or
  without a frame or comment even while bytes trickle in, means a dead
  connection (``counters.stalls``), so the client reconnects and resumes; a
  server that accepts and hangs up at once is retried with backoff, not in a
  tight loop;
* ``stop()`` takes effect at once even on an idle stream, and every event
  already buffered is either delivered (within ``drain_timeout``) or counted
  as dropped and reported to ``on_drop`` — including the event a stuck
  callback still holds, so ``received == delivered + dropped`` once ``stop``
  returned;
* the token (argument or ``$AUTOPLAY_APP_UNKEY_TOKEN``) is validated when the
  client is built (surrounding whitespace stripped; anything that cannot be a
  header value is a ``ConfigError`` that does not echo it) and only ever sent
  as a Bearer header: never logged, never in a ``repr``; error text that
  reaches a log line, ``on_error`` or a raised exception is scrubbed of it.

Threads (sync client): the calling thread (or the ``run_in_background``
thread) only reads the socket; a worker thread runs ``on_actions``/
``on_summary``/``on_event`` callbacks from a bounded queue; a notifier thread
runs ``on_drop``/``on_error``/``on_connect``/``on_disconnect``
(:class:`~autoplay_base._threads.CallbackThreads`).

Tasks (async client): the reader task never awaits a callback. Each session
has its own lane: its events are delivered strictly in arrival order, one
event at a time (so a store sees a session's writes in order), while lanes of
different sessions run concurrently — a slow callback for session A never
delays session B. The callbacks registered for one event run concurrently, at
most ``session_concurrency`` at a time per session. Async callbacks are
awaited; plain functions are called directly on the loop and must be fast.
The reader hands the loop over after every chunk read (and every 256 events
of a larger one), so what it just read is delivered before it reads more,
even while the socket always has data. A lane's task lingers for
``lane_linger`` seconds once its session is idle, so a busy session reuses
one task instead of starting one per burst of events; callbacks always run
inside their lane's task (``asyncio.timeout`` and ``TaskGroup`` bind to it)
(:class:`~autoplay_base._lanes.Lanes`).

This module holds the two clients' lifecycle and wiring; what they share
(registration, counters, options) is :class:`~autoplay_base._client.ClientBase`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable
from types import CoroutineType, TracebackType
from typing import Any

import httpx
from typing_extensions import Unpack

from autoplay_base._client import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_QUEUE_SIZE,
    Callback,
    ClientBase,
    ClientOptions,
)
from autoplay_base._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT_TIMEOUT,
    ClientCounters,
    ResponseSlot,
    aiter_frame_chunks,
    iter_event_batches,
)
from autoplay_base._lanes import DEFAULT_LANE_LINGER, MAX_LINGERING_LANES, Lanes
from autoplay_base._threads import CallbackThreads
from autoplay_base._tls import atls_context_for, tls_context_for
from autoplay_base.errors import ConfigError
from autoplay_base.events import Event

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "DEFAULT_LANE_LINGER",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_SESSION_CONCURRENCY",
    "AsyncConnectorClient",
    "ClientCounters",
    "ClientOptions",
    "ConnectorClient",
]

logger = logging.getLogger("autoplay_base.stream")

DEFAULT_SESSION_CONCURRENCY = 4
"""In-flight callbacks per session (async client)."""
_STUCK_CALLBACK_GRACE = 1.0  # seconds a callback gets past drain_timeout before it is given up
_NOTICE_GRACE = 1.0  # seconds notifications get, once the drain ended, to be delivered
# Events the async reader queues before it hands the loop to the lanes. A chunk read
# holds up to about 230 events of the usual size, so in practice the loop is handed
# over once per chunk: 64 cost 8% more instructions per event in a burst (a lane
# wake-up per session every 64 events), 256 and "once per chunk" 0.6%.
_READ_GROUP = 256


def _is_awaitable(result: object) -> bool:
    # A coroutine first: what async callbacks return, and a far cheaper check.
    return type(result) is CoroutineType or inspect.isawaitable(result)


class ConnectorClient(ClientBase):
    """Synchronous connector client: the reader never runs callbacks.

    Args:
        url: full URL of ``GET /stream/{product_id}`` on the connector.
        token: bearer token; empty means ``$AUTOPLAY_APP_UNKEY_TOKEN`` (or none).
        max_queue_size: events buffered between the reader and the worker;
            beyond it new events are dropped, counted and passed to ``on_drop``.
        heartbeat_timeout: seconds without a byte, or without a frame or
            comment while bytes arrive, before the connection is presumed dead
            and resumed (``None``: wait forever).
        connect_timeout: seconds to establish a connection.
        initial_backoff, max_backoff, backoff_jitter: retry delays after errors.
        max_retries: consecutive failures before
            :class:`~autoplay_base.errors.ConnectorRetriesExhaustedError`
            (``None``: forever).
        drain_timeout: on stop, seconds spent delivering buffered events; the
            rest are dropped (counted, ``on_drop``).
        max_event_bytes: frames larger than this are rejected.
        seen_ids: size of the window of ids used to drop replayed duplicates.
        rng: random source for backoff jitter (tests).
        metrics: an ``SdkMetricsHook`` (:mod:`autoplay_base.metrics`): told of each
            dropped event, connect, disconnect and bad frame.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(url, token, max_queue_size=max_queue_size, **options)
        self._slot = ResponseSlot()
        self._threads = self._new_threads()
        self._thread: threading.Thread | None = None
        self._error_raised: BaseException | None = None
        self._run_lock = threading.Lock()

    def _new_threads(self) -> CallbackThreads:
        # One per run: a worker given up on by a previous run keeps its own queue.
        return CallbackThreads(
            self._callbacks_for,
            self._callback_failed,
            self._notice_failed,
            self._dropped,
            self._core.counters,
            max_queue_size=self._max_queue_size,
            drain_timeout=self._drain_timeout,
            stuck_grace=_STUCK_CALLBACK_GRACE,
            notice_grace=_NOTICE_GRACE,
        )

    @property
    def queue_size(self) -> int:
        """Events waiting for the worker right now."""
        return self._threads.queue_size

    # -- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        """Connect and deliver events until :meth:`stop`; raises the fatal error, if any.

        Raises:
            ConnectorAuthError: the connector answered 401/403.
            ConnectorNotFoundError: the connector answered 404.
            ConnectorRetriesExhaustedError: ``max_retries`` consecutive failures.
        """
        self._prepare()
        self._run()

    def _prepare(self) -> None:
        with self._run_lock:
            if self._running:
                raise RuntimeError("this client is already running")
            self._running = True
        self._slot = ResponseSlot()
        self._threads = self._new_threads()
        self._error_raised = None

    def _run(self) -> None:
        threads = self._threads
        threads.start()
        failure: BaseException | None = None
        try:
            with httpx.Client(
                timeout=self._timeout, verify=tls_context_for(self._core.url)
            ) as http:
                for events in iter_event_batches(self._core, http, self._slot):
                    threads.put_many(events)
        except BaseException as exc:
            failure = exc
            if isinstance(exc, Exception):
                failure = self._safe(exc)
                self._notice(self._error, failure)
        finally:
            threads.finish()
            self._error_raised = failure
            self._running = False
        if failure is not None:
            # Raised here, outside the except block, so a scrubbed stand-in does
            # not carry the original (with its text) as __context__.
            raise failure

    def run_in_background(self) -> threading.Thread:
        """Run on a daemon thread and return it; :meth:`stop` or :meth:`join` re-raise its error."""
        self._prepare()
        thread = threading.Thread(target=self._run_quietly, name="autoplay-stream", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def _run_quietly(self) -> None:
        # The error is kept in _error_raised and re-raised by join()/stop().
        with contextlib.suppress(Exception):
            self._run()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background run to end; re-raise its fatal error.

        Returns ``False`` if it is still running after ``timeout`` seconds.
        """
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False
        if self._error_raised is not None:
            raise self._error_raised
        return True

    wait = join

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop reading now; deliver what is buffered (up to ``drain_timeout``), drop the rest.

        Safe from any thread, including from a callback. From another thread it
        also waits (up to ``timeout``) for a background run to finish and
        re-raises its fatal error, if it had one. A blocked read ends at once
        (the socket is shut down); only a TCP connect in progress can hold the
        end back, by at most ``connect_timeout``.
        """
        self._slot.abort()
        current = threading.current_thread()
        if current is self._thread or self._threads.owns(current):
            return
        if self._thread is not None:
            self.join(timeout)

    def __enter__(self) -> ConnectorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except Exception:
            logger.exception("stream: the client failed while another error was propagating")

    def _notice(self, fns: list[Callback], *args: Any) -> None:
        self._threads.notice(fns, *args)


class AsyncConnectorClient(ClientBase):
    """Asyncio connector client with per-session lanes (see the module docstring).

    Callbacks may be ``async def`` coroutines (awaited) or plain functions
    (called directly on the loop — keep them fast), so both
    ``AsyncContextStore.add`` and ``ContextStore.add`` can be registered.

    Args:
        url: full URL of ``GET /stream/{product_id}`` on the connector.
        token: bearer token; empty means ``$AUTOPLAY_APP_UNKEY_TOKEN`` (or none).
        session_concurrency: callbacks of one session in flight at once.
        max_queue_size: events buffered across all sessions before drops start.
        lane_linger: seconds (at least, and under twice that) a session's lane
            task waits, idle, for the session's next event before it ends; a
            busy session so reuses one task instead of starting one per burst.
            ``0`` ends it as soon as it is idle. At most 1,024 lanes linger.
        Other options: as :class:`ConnectorClient`.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        session_concurrency: int = DEFAULT_SESSION_CONCURRENCY,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        lane_linger: float = DEFAULT_LANE_LINGER,
        **options: Unpack[ClientOptions],
    ) -> None:
        if session_concurrency < 1:
            raise ConfigError(f"session_concurrency must be >= 1, got {session_concurrency!r}")
        if lane_linger < 0:
            raise ConfigError(f"lane_linger must be >= 0, got {lane_linger!r}")
        super().__init__(url, token, max_queue_size=max_queue_size, **options)
        self._session_concurrency = session_concurrency
        self._lanes = Lanes(
            self._deliver,
            self._dropped,
            self._core.counters,
            max_buffered=max_queue_size,
            drain_timeout=self._drain_timeout,
            stuck_grace=_STUCK_CALLBACK_GRACE,
            linger=lane_linger,
            max_lingering=MAX_LINGERING_LANES,
            failed=self._callback_failed,
        )
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()

    @property
    def queue_size(self) -> int:
        """Events buffered (not yet delivered) across all sessions right now."""
        return self._lanes.buffered

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and deliver events until :meth:`stop`; raises the fatal error, if any."""
        self._prepare()
        await self._run()

    def _prepare(self) -> None:
        if self._running:
            raise RuntimeError("this client is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()

    async def _run(self) -> None:
        assert self._stop_event is not None
        reader = asyncio.ensure_future(self._read())
        stopper = asyncio.ensure_future(self._stop_event.wait())
        self._lanes.start()
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, stopper, return_exceptions=True)
            await self._lanes.drain()
            if self._side_tasks:
                await asyncio.wait(list(self._side_tasks), timeout=_NOTICE_GRACE)
            self._running = False
        if not reader.cancelled() and reader.exception() is not None:
            error = reader.exception()
            assert error is not None
            if isinstance(error, Exception):
                error = self._safe(error)
                await self._notice_now(self._error, error)
            raise error

    async def _read(self) -> None:
        verify = await atls_context_for(self._core.url)
        async with httpx.AsyncClient(timeout=self._timeout, verify=verify) as http:
            on_frame = self._core.on_frame
            put = self._lanes.put
            group = _READ_GROUP
            async with contextlib.aclosing(aiter_frame_chunks(self._core, http)) as chunks:
                async for frames in chunks:
                    for start in range(0, len(frames), group):
                        for frame in frames[start : start + group]:
                            event = on_frame(frame)
                            if event is not None:
                                put(event)
                        # While the socket holds data a read returns without suspending,
                        # so without this the reader kept the loop for as long as data
                        # kept coming: the lanes delivered nothing meanwhile (freshness
                        # p99 of tens of ms at 2,000 events/s on a busy machine) and
                        # buffered events piled up. Hand the loop over after each group.
                        await asyncio.sleep(0)

    def run_in_background(self) -> asyncio.Task[None]:
        """Schedule :meth:`run` as a task and return it; awaiting it re-raises the fatal error."""
        self._prepare()
        self._task = asyncio.ensure_future(self._run())
        return self._task

    def stop(self) -> None:
        """Stop reading now; buffered events are delivered (up to ``drain_timeout``) or dropped.

        Non-blocking and safe from any thread; await the task from
        :meth:`run_in_background` (or the ``run()`` call) to wait for the end.
        """
        event, loop = self._stop_event, self._loop
        if event is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        """Await the background run; re-raise its fatal error."""
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> AsyncConnectorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        task = self._task
        if task is None:
            return
        if exc is None:
            await task
            return
        try:
            await task
        except Exception:
            logger.exception("stream: the client failed while another error was propagating")

    # -- dispatch (inside the lanes' tasks) ----------------------------------------------
    def _deliver(self, event: Event) -> Awaitable[None] | None:
        """What the lane awaits for ``event``: its callbacks (``None`` when there is nothing).

        The common case, one callback, is called right here: no gather, no
        semaphore, no wrapper coroutine; what it raises (now or when awaited)
        reaches the lane, which hands it to :meth:`_callback_failed`.
        """
        fns = self._callbacks_for(event)
        if len(fns) == 1:
            result = fns[0](event)
            return result if result is not None and _is_awaitable(result) else None
        return self._call_all(fns, event) if fns else None

    async def _call_all(self, fns: list[Callback], event: Event) -> None:
        # A lane delivers one event at a time, so bounding this event's callbacks
        # bounds its session's: at most session_concurrency in flight.
        semaphore = asyncio.Semaphore(self._session_concurrency)

        async def bounded(fn: Callback) -> None:
            async with semaphore:
                await self._call(fn, event)

        await asyncio.gather(*(bounded(fn) for fn in fns))

    async def _call(self, fn: Callback, event: Event) -> None:
        try:
            result = fn(event)
            if result is not None and _is_awaitable(result):
                await result
        except Exception as exc:
            self._callback_failed(event, exc)

    # -- notifications ------------------------------------------------------------------
    def _notice(self, fns: list[Callback], *args: Any) -> None:
        for fn in fns:
            try:
                result = fn(*args)
            except Exception as exc:
                self._notice_failed(exc)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await_notice(result))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _await_notice(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except Exception as exc:
            self._notice_failed(exc)

    async def _notice_now(self, fns: list[Callback], *args: Any) -> None:
        for fn in fns:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._notice_failed(exc)
