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
runs ``on_drop``/``on_error``/``on_connect``/``on_disconnect``.

Tasks (async client): the reader task never awaits a callback. Each session
has its own lane: its events are delivered strictly in arrival order, one
event at a time (so a store sees a session's writes in order), while lanes of
different sessions run concurrently — a slow callback for session A never
delays session B. The callbacks registered for one event run concurrently, at
most ``session_concurrency`` at a time per session. Async callbacks are
awaited; plain functions are called directly on the loop and must be fast.
A lane's task lingers for ``lane_linger`` seconds once its session is idle,
so a busy session reuses one task instead of starting one per burst of
events; callbacks always run inside their lane's task (``asyncio.timeout``
and ``TaskGroup`` bind to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from types import CoroutineType, TracebackType
from typing import Any, Generic, TypedDict, TypeVar

import httpx
from typing_extensions import Unpack

from autoplay_base._connection import (
    ClientCounters,
    ResponseSlot,
    StreamCore,
    aiter_frame_chunks,
    http_timeout,
    iter_event_batches,
    log_exception,
    resolve_token,
    scrub_error,
)
from autoplay_base._reconnect import (
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_JITTER,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_SEEN_IDS,
    Backoff,
    ResumeState,
)
from autoplay_base.errors import ConfigError
from autoplay_base.events import (
    DEFAULT_MAX_EVENT_BYTES,
    ActionsPayload,
    Event,
    SummaryPayload,
    UnknownEvent,
)
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events

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
    "aiter_stream_events",
    "iter_stream_events",
]

logger = logging.getLogger("autoplay_base.stream")

DEFAULT_MAX_QUEUE_SIZE = 500
"""Events buffered between the reader and the callbacks before drops start."""
DEFAULT_SESSION_CONCURRENCY = 4
"""In-flight callbacks per session (async client)."""
DEFAULT_LANE_LINGER = 1.0
"""Seconds an idle session lane waits for its next event (async client)."""
_MAX_LINGERING_LANES = 1024  # a bound on idle tasks, whatever the number of sessions
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
"""Seconds without a byte (or without a frame) after which the connection is presumed dead."""
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection."""
DEFAULT_DRAIN_TIMEOUT = 5.0
"""On ``stop()``, seconds spent delivering already-buffered events before dropping them."""
_MAX_NOTICES = 10_000
_STUCK_CALLBACK_GRACE = 1.0  # seconds a callback gets past drain_timeout before it is given up
_NOTICE_GRACE = 1.0  # seconds the notifier gets, once reading ended, to deliver what is pending

_C = TypeVar("_C", bound="_ClientBase[Any]")
_F = TypeVar("_F", bound=Callable[..., Any])


class _Handlers(Generic[_F]):
    """The callbacks registered for one kind of notification, in order."""

    __slots__ = ("fns",)

    def __init__(self) -> None:
        self.fns: list[_F] = []


def _raw_payload(event: Event) -> dict[str, Any]:
    """The JSON object an event came from (for ``on_drop``)."""
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return event.model_dump(mode="json")


def _is_awaitable(result: object) -> bool:
    # A coroutine first: what async callbacks return, and a far cheaper check.
    return type(result) is CoroutineType or inspect.isawaitable(result)


def _session_key(event: Event) -> Hashable:
    return (event.product_id, event.session_id)


class ClientOptions(TypedDict, total=False):
    """Keyword options both clients take (described on :class:`ConnectorClient`)."""

    heartbeat_timeout: float | None
    connect_timeout: float
    initial_backoff: float
    max_backoff: float
    backoff_jitter: float
    max_retries: int | None
    drain_timeout: float
    max_event_bytes: int
    seen_ids: int
    rng: Callable[[], float] | None


class _ClientBase(Generic[_F]):
    """Registration, counters and configuration shared by both clients."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        backoff_jitter: float = DEFAULT_JITTER,
        max_retries: int | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        seen_ids: int = DEFAULT_SEEN_IDS,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if max_queue_size < 1:
            raise ConfigError(f"max_queue_size must be >= 1, got {max_queue_size!r}")
        if heartbeat_timeout is not None and heartbeat_timeout <= 0:
            raise ConfigError(f"heartbeat_timeout must be > 0, got {heartbeat_timeout!r}")
        if connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0, got {connect_timeout!r}")
        if drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        backoff = (
            Backoff(initial_backoff, max_backoff, jitter=backoff_jitter)
            if rng is None
            else Backoff(initial_backoff, max_backoff, jitter=backoff_jitter, rng=rng)
        )
        self._core = StreamCore(
            url,
            resolve_token(token),
            ResumeState(backoff, max_retries=max_retries, seen_ids=seen_ids),
            max_event_bytes=max_event_bytes,
            heartbeat_timeout=heartbeat_timeout,
            on_bad_frame=self._bad_frame,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
        )
        self._max_queue_size = max_queue_size
        self._timeout = http_timeout(connect_timeout, heartbeat_timeout)
        self._drain_timeout = drain_timeout
        self._actions: list[_F] = []
        self._summary: list[_F] = []
        self._unknown: list[_F] = []
        self._drop: list[_F] = []
        self._error: list[_F] = []
        self._connect: list[_F] = []
        self._disconnect: list[_F] = []
        self._running = False

    # -- registration (chainable) -------------------------------------------------------
    def on_actions(self: _C, fn: Callable[[ActionsPayload], Any]) -> _C:
        """Call ``fn(payload)`` for every ``actions`` event; returns ``self``."""
        self._actions.append(fn)
        return self

    def on_summary(self: _C, fn: Callable[[SummaryPayload], Any]) -> _C:
        """Call ``fn(payload)`` for every ``summary`` event; returns ``self``."""
        self._summary.append(fn)
        return self

    def on_event(self: _C, fn: Callable[[UnknownEvent], Any]) -> _C:
        """Call ``fn(event)`` for events of other types (``usertour_trigger``, …)."""
        self._unknown.append(fn)
        return self

    def on_drop(self: _C, fn: Callable[[dict[str, Any], int], Any]) -> _C:
        """Call ``fn(raw_payload, total_dropped)`` for every event that is not delivered."""
        self._drop.append(fn)
        return self

    def on_error(self: _C, fn: Callable[[Exception], Any]) -> _C:
        """Call ``fn(error)`` for bad frames, callback exceptions and the fatal error."""
        self._error.append(fn)
        return self

    def on_connect(self: _C, fn: Callable[[], Any]) -> _C:
        """Call ``fn()`` every time a stream opens (including reconnects)."""
        self._connect.append(fn)
        return self

    def on_disconnect(self: _C, fn: Callable[[], Any]) -> _C:
        """Call ``fn()`` every time an open stream ends."""
        self._disconnect.append(fn)
        return self

    # -- observability ------------------------------------------------------------------
    @property
    def counters(self) -> ClientCounters:
        """Live counters (received, delivered, dropped, decode_errors, reconnects, …)."""
        return self._core.counters

    @property
    def dropped_count(self) -> int:
        """Events dropped so far (buffer full, or not delivered before stop)."""
        return self._core.counters.dropped

    @property
    def last_event_id(self) -> str | None:
        """Id of the last frame received; the next connection resumes after it."""
        return self._core.resume.last_event_id

    @property
    def url(self) -> str:
        """The stream URL (without query string or user info)."""
        return self._core.safe_url

    def __repr__(self) -> str:
        token = "set" if self._core.token else "none"
        return (
            f"{type(self).__name__}(url={self._core.safe_url!r}, token={token}, "
            f"running={self._running}, received={self.counters.received}, "
            f"dropped={self.counters.dropped})"
        )

    def _callbacks_for(self, event: Event) -> list[_F]:
        if isinstance(event, ActionsPayload):
            return self._actions
        if isinstance(event, SummaryPayload):
            return self._summary
        return self._unknown

    def _log_callback_error(self, what: str, exc: BaseException) -> None:
        self._core.counters.callback_errors += 1
        log_exception(
            logger,
            logging.ERROR,
            f"stream: {what} callback raised {type(exc).__name__}: {str(exc)[:200]}",
            exc,
            self._core.token,
        )

    def _safe(self, exc: Exception) -> Exception:
        """``exc``, or a stand-in without the token, for ``on_error`` and ``raise``."""
        return scrub_error(exc, self._core.token)

    # Hooks from the reader and the buffer; each client's ``_notice`` delivers them.
    def _notice(self, fns: list[_F], *args: Any) -> None:
        raise NotImplementedError

    def _dropped(self, event: Event, why: str) -> None:
        counters = self._core.counters
        counters.dropped += 1
        logger.warning(
            "stream: dropped a %s event (%s; session=%r, total dropped=%d)",
            event.type,
            why,
            event.session_id,
            counters.dropped,
        )
        if self._drop:
            self._notice(self._drop, _raw_payload(event), counters.dropped)

    def _bad_frame(self, exc: Exception) -> None:
        self._notice(self._error, exc)

    def _connected(self) -> None:
        self._notice(self._connect)

    def _disconnected(self) -> None:
        self._notice(self._disconnect)


SyncCallback = Callable[..., Any]


class ConnectorClient(_ClientBase[SyncCallback]):
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
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(url, token, max_queue_size=max_queue_size, **options)
        self._queue: deque[Event] = deque()
        self._queue_cond = threading.Condition(threading.Lock())
        self._worker_waiting = False
        self._reading_done = False
        self._notices: deque[tuple[list[SyncCallback], tuple[Any, ...]]] = deque()
        self._notice_cond = threading.Condition(threading.Lock())
        self._notices_done = False
        self._slot = ResponseSlot()
        self._thread: threading.Thread | None = None
        self._error_raised: BaseException | None = None
        self._run_lock = threading.Lock()
        self._helper_threads: set[threading.Thread] = set()
        self._drain_deadline = 0.0
        self._notice_deadline = 0.0
        self._flight: list[Event] = []

    @property
    def queue_size(self) -> int:
        """Events waiting for the worker right now."""
        return len(self._queue)

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
        self._flight = []  # per run: a worker given up on by a previous run keeps its own
        self._error_raised = None
        self._reading_done = False
        self._notices_done = False

    def _run(self) -> None:
        worker = threading.Thread(target=self._work, name="autoplay-stream-worker", daemon=True)
        notifier = threading.Thread(
            target=self._notify_loop, name="autoplay-stream-notifier", daemon=True
        )
        self._helper_threads = {worker, notifier}
        worker.start()
        notifier.start()
        failure: BaseException | None = None
        try:
            with httpx.Client(timeout=self._timeout) as http:
                for events in iter_event_batches(self._core, http, self._slot):
                    self._enqueue_many(events)
        except BaseException as exc:
            failure = exc
            if isinstance(exc, Exception):
                failure = self._safe(exc)
                self._notice(self._error, failure)
        finally:
            self._finish(worker, notifier)
            self._error_raised = failure
            self._running = False
        if failure is not None:
            # Raised here, outside the except block, so a scrubbed stand-in does
            # not carry the original (with its text) as __context__.
            raise failure

    def _finish(self, worker: threading.Thread, notifier: threading.Thread) -> None:
        deadline = time.monotonic() + self._drain_timeout
        leftovers: list[Event] = []
        with self._queue_cond:
            self._reading_done = True
            self._drain_deadline = deadline
            if self._drain_timeout == 0:
                while True:
                    try:
                        leftovers.append(self._queue.popleft())
                    except IndexError:
                        break
            self._queue_cond.notify_all()
        for event in leftovers:
            self._dropped(event, "stopped with drain_timeout=0")
        if threading.current_thread() is not worker:
            worker.join(self._drain_timeout + _STUCK_CALLBACK_GRACE)
            if worker.is_alive():
                # A callback is stuck past the drain deadline: account for what it
                # will never reach instead of hanging stop() (the pops are atomic).
                logger.error("stream: a callback is still running after stop's drain_timeout")
                try:
                    stuck: Event | None = self._flight.pop()
                except IndexError:
                    stuck = None  # it returned meanwhile and was counted delivered
                if stuck is not None:
                    self._dropped(stuck, "its callback was stuck when the client stopped")
                while True:
                    try:
                        event = self._queue.popleft()
                    except IndexError:
                        break
                    self._dropped(event, "a callback was stuck when the client stopped")
        with self._notice_cond:
            self._notices_done = True
            # From now, not from the drain deadline: waiting out a stuck callback
            # must not cost the on_drop notices it just produced.
            self._notice_deadline = max(deadline, time.monotonic()) + _NOTICE_GRACE
            self._notice_cond.notify_all()
        if threading.current_thread() is not notifier:
            # Bounded: a stuck on_drop/on_error callback must not hang stop() either.
            notifier.join(_NOTICE_GRACE + _STUCK_CALLBACK_GRACE)
            if notifier.is_alive():
                logger.error("stream: a notification callback is still running after stop")

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
        if current is self._thread or current in self._helper_threads:
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

    # -- reader side --------------------------------------------------------------------
    def _enqueue_many(self, events: list[Event]) -> None:
        # One lock round per chunk read, not per event: the reader is the bottleneck.
        with self._queue_cond:
            room = self._max_queue_size - len(self._queue)
            if room >= len(events):
                self._queue.extend(events)
                overflow: list[Event] = []
            else:
                room = max(room, 0)
                self._queue.extend(events[:room])
                overflow = events[room:]
            if self._worker_waiting and room:
                self._queue_cond.notify()
        for event in overflow:
            self._dropped(event, "buffer full")

    def _notice(self, fns: list[SyncCallback], *args: Any) -> None:
        if not fns:
            return
        with self._notice_cond:
            if len(self._notices) >= _MAX_NOTICES:
                logger.error("stream: notification backlog full; a notification was lost")
                return
            self._notices.append((fns, args))
            self._notice_cond.notify()

    # -- worker side --------------------------------------------------------------------
    def _work(self) -> None:
        queue = self._queue
        cond = self._queue_cond
        counters = self._core.counters
        # The event the callbacks are running on, in a one-slot list: list.pop is
        # atomic, so this thread and stop() agree on who accounts for it, lock-free.
        flight = self._flight
        while True:
            try:
                # deque.popleft is atomic: no lock per event; the lock is only taken to
                # sleep, and _finish may pop the same deque (each event goes to one side).
                event = queue.popleft()
            except IndexError:
                with cond:
                    while not queue and not self._reading_done:
                        self._worker_waiting = True
                        cond.wait()
                        self._worker_waiting = False
                    if not queue:
                        return
                continue
            if self._reading_done and time.monotonic() > self._drain_deadline:
                self._dropped(event, "not delivered before stop's drain_timeout")
                continue
            flight.append(event)
            for fn in self._callbacks_for(event):
                try:
                    fn(event)
                except Exception as exc:
                    self._log_callback_error(event.type, exc)
                    self._notice(self._error, self._safe(exc))
                if not flight:
                    break  # stop() gave up on this event and counted it as dropped
            try:
                flight.pop()
            except IndexError:
                # Counted as dropped while a callback was stuck: stop() gave up on
                # this worker, which must end now (a later run has its own).
                return
            counters.delivered += 1

    def _notify_loop(self) -> None:
        notices = self._notices
        cond = self._notice_cond
        while True:
            with cond:
                while not notices and not self._notices_done:
                    cond.wait()
                if not notices:
                    return
                fns, args = notices.popleft()
                if self._notices_done and time.monotonic() > self._notice_deadline:
                    logger.error("stream: a notification was not delivered before stop")
                    continue
            for fn in fns:
                try:
                    fn(*args)
                except Exception as exc:
                    self._log_callback_error("notification", exc)


AsyncCallback = Callable[..., Any]


class _Lane:
    """One session's pending events and the task delivering them.

    ``waiter`` is set while the task lingers, idle, for the session's next event;
    ``idle_since`` is the sweep tick at which it started waiting; ``abandoned``
    is set by ``stop`` when a callback outlived the drain and its cancellation.
    """

    __slots__ = ("abandoned", "events", "idle_since", "semaphore", "task", "waiter")

    def __init__(self, concurrency: int) -> None:
        self.events: deque[Event] = deque()
        self.task: asyncio.Task[None] | None = None
        self.semaphore = asyncio.Semaphore(concurrency)
        self.waiter: asyncio.Future[bool] | None = None
        self.idle_since = 0
        self.abandoned = False


class AsyncConnectorClient(_ClientBase[AsyncCallback]):
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
        self._lane_linger = lane_linger
        self._lanes: dict[Hashable, _Lane] = {}
        self._buffered = 0
        self._lingering = 0
        self._sweep_tick = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        self._stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()

    @property
    def queue_size(self) -> int:
        """Events buffered (not yet delivered) across all sessions right now."""
        return self._buffered

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and deliver events until :meth:`stop`; raises the fatal error, if any."""
        self._prepare()
        await self._run()

    def _prepare(self) -> None:
        if self._running:
            raise RuntimeError("this client is already running")
        self._running = True
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()

    async def _run(self) -> None:
        assert self._stop_event is not None
        reader = asyncio.ensure_future(self._read())
        stopper = asyncio.ensure_future(self._stop_event.wait())
        self._schedule_sweep()
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()
            stopper.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, stopper, return_exceptions=True)
            await self._drain()
            self._running = False
        if not reader.cancelled() and reader.exception() is not None:
            error = reader.exception()
            assert error is not None
            if isinstance(error, Exception):
                error = self._safe(error)
                await self._notice_now(self._error, error)
            raise error

    async def _read(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            on_frame = self._core.on_frame
            async with contextlib.aclosing(aiter_frame_chunks(self._core, http)) as chunks:
                async for frames in chunks:
                    for frame in frames:
                        event = on_frame(frame)
                        if event is not None:
                            self._enqueue(event)

    async def _drain(self) -> None:
        self._closing = True
        for lane in self._lanes.values():
            self._wake(lane, more=False)  # lingering lanes end; busy ones deliver, then end
        tasks = {lane.task: lane for lane in self._lanes.values() if lane.task is not None}
        if tasks:
            _, pending = await asyncio.wait(list(tasks), timeout=self._drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                # A callback that swallows the cancellation must not hang stop():
                # its lane is abandoned and its events (the one in flight too,
                # still first in the lane) are dropped below.
                _, stuck = await asyncio.wait(pending, timeout=_STUCK_CALLBACK_GRACE)
                if stuck:
                    logger.error("stream: a callback is still running after stop's drain_timeout")
                for task in stuck:
                    tasks[task].abandoned = True
        for lane in list(self._lanes.values()):
            while lane.events:
                self._dropped(lane.events.popleft(), "not delivered before stop's drain_timeout")
        self._lanes.clear()
        self._buffered = 0
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=1.0)

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

    # -- dispatch -----------------------------------------------------------------------
    def _enqueue(self, event: Event) -> None:
        if self._buffered >= self._max_queue_size:
            self._dropped(event, "buffer full")
            return
        key = _session_key(event)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(self._session_concurrency)
            lane.task = asyncio.ensure_future(self._run_lane(key, lane))
        lane.events.append(event)
        self._buffered += 1
        self._wake(lane, more=True)

    async def _run_lane(self, key: Hashable, lane: _Lane) -> None:
        # Callbacks run inside this task, so what binds to the current task
        # (asyncio.timeout, TaskGroup) binds to the lane that runs them.
        events = lane.events
        counters = self._core.counters
        try:
            while True:
                while events:
                    event = events[0]
                    fns = self._callbacks_for(event)
                    if len(fns) == 1:
                        await self._call(fns[0], event)
                    elif fns:
                        await asyncio.gather(*(self._call_bounded(lane, fn, event) for fn in fns))
                    if lane.abandoned:
                        return  # stop() gave up on this lane and counted its events as dropped
                    events.popleft()
                    self._buffered -= 1
                    counters.delivered += 1
                # Idle: linger for the session's next event rather than end the task
                # and start another for it (a task per burst was the largest cost
                # per event after decoding). An event that came as the lane was told
                # to end is still delivered.
                if not await self._linger(lane) and not events:
                    return
        finally:
            lane.task = None
            if not events and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _linger(self, lane: _Lane) -> bool:
        """Wait for the lane's next event; ``False`` when it should end instead."""
        if self._closing or self._lingering >= _MAX_LINGERING_LANES or not self._lane_linger:
            return False
        assert self._loop is not None
        waiter: asyncio.Future[bool] = self._loop.create_future()
        lane.waiter = waiter
        lane.idle_since = self._sweep_tick
        self._lingering += 1
        try:
            return await waiter
        finally:
            if lane.waiter is waiter:  # cancelled while waiting
                lane.waiter = None
                self._lingering -= 1

    def _wake(self, lane: _Lane, *, more: bool) -> None:
        waiter = lane.waiter
        if waiter is not None:
            lane.waiter = None
            self._lingering -= 1
            waiter.set_result(more)

    def _schedule_sweep(self) -> None:
        if self._lane_linger and self._loop is not None:
            self._sweeper = self._loop.call_later(self._lane_linger, self._sweep)

    def _sweep(self) -> None:
        """End the lanes that were already idle at the previous sweep."""
        self._sweep_tick += 1
        for lane in list(self._lanes.values()):
            if lane.waiter is not None and lane.idle_since < self._sweep_tick - 1:
                self._wake(lane, more=False)
        self._schedule_sweep()

    async def _call_bounded(self, lane: _Lane, fn: AsyncCallback, event: Event) -> None:
        async with lane.semaphore:
            await self._call(fn, event)

    async def _call(self, fn: AsyncCallback, event: Event) -> None:
        try:
            result = fn(event)
            if result is not None and _is_awaitable(result):
                await result
        except Exception as exc:
            self._log_callback_error(event.type, exc)
            self._notice(self._error, self._safe(exc))

    # -- notifications ------------------------------------------------------------------
    def _notice(self, fns: list[AsyncCallback], *args: Any) -> None:
        for fn in fns:
            try:
                result = fn(*args)
            except Exception as exc:
                self._log_callback_error("notification", exc)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await_notice(result))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _await_notice(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except Exception as exc:
            self._log_callback_error("notification", exc)

    async def _notice_now(self, fns: list[AsyncCallback], *args: Any) -> None:
        for fn in fns:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._log_callback_error("notification", exc)
