"""Bounded windows of a live stream as plain iterators (for loaders and readers).

:func:`iter_stream_events` and :func:`aiter_stream_events` connect, yield
decoded events (``ActionsPayload``, ``SummaryPayload``, ``UnknownEvent``) until
``max_events`` or ``timeout``, and close. They resume and dedupe across
reconnects exactly like the clients (same code), raise the same errors for
401/403/404, and skip bad frames (counted, logged, passed to ``on_error``).
No callbacks, threads or buffers: the socket is read only as fast as the
caller consumes.

A window that ends by its ``timeout`` without the connector ever having
answered 200 with an event stream (connection refused, no answer, 5xx for the
whole window) raises :class:`~autoplay_base.errors.ConnectorError`: that is an
outage, and an ingestion job must not "succeed" with zero documents. A
connector that answered but sent nothing within the window is a quiet stream:
the window is simply empty. The HTTP connect and read timeouts are capped at
the window's ``timeout``, so a connector that accepts the connection but never
answers cannot hold the window past its deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from autoplay_base._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT_TIMEOUT,
    ResponseSlot,
    StreamCore,
    aiter_events,
    http_timeout,
    iter_events,
)
from autoplay_base._reconnect import (
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    Backoff,
    ResumeState,
)
from autoplay_base._secret import resolve_token
from autoplay_base._tls import atls_context_for, tls_context_for
from autoplay_base.errors import (
    ConfigError,
    ConnectorUnavailableError,
    EventDecodeError,
)
from autoplay_base.events import DEFAULT_MAX_EVENT_BYTES, Event

__all__ = ["aiter_stream_events", "iter_stream_events"]


def _core(
    url: str,
    *,
    token: str,
    max_events: int | None,
    timeout: float | None,
    last_event_id: str | None,
    initial_backoff: float,
    max_backoff: float,
    max_retries: int | None,
    max_event_bytes: int,
    heartbeat_timeout: float | None,
    on_error: Callable[[EventDecodeError], Any] | None,
) -> StreamCore:
    if max_events is not None and max_events < 0:
        raise ConfigError(f"max_events must be >= 0 or None, got {max_events!r}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be > 0 or None, got {timeout!r}")
    resume = ResumeState(Backoff(initial_backoff, max_backoff), max_retries=max_retries)
    resume.last_event_id = last_event_id
    return StreamCore(
        url,
        resolve_token(token),
        resume,
        max_event_bytes=max_event_bytes,
        heartbeat_timeout=heartbeat_timeout,
        on_bad_frame=on_error,
    )


def iter_stream_events(
    url: str,
    *,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
    last_event_id: str | None = None,
    heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    max_retries: int | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    on_error: Callable[[EventDecodeError], Any] | None = None,
) -> Iterator[Event]:
    """Yield events from a live stream until ``max_events`` or ``timeout`` seconds.

    Args:
        url: full URL of ``GET /stream/{product_id}``.
        token: bearer token; empty means ``$AUTOPLAY_APP_UNKEY_TOKEN`` (or none).
        max_events: stop after this many events (``None``: no limit).
        timeout: stop after this many seconds from the first ``next()``,
            even on an idle stream (``None``: no limit).
        last_event_id: resume after this id (replay from the server's buffer)
            instead of starting live.
        heartbeat_timeout, connect_timeout, initial_backoff, max_backoff,
        max_retries, max_event_bytes: as for
            :class:`~autoplay_base.stream.ConnectorClient`.
        on_error: called with each rejected frame's ``EventDecodeError``.

    Raises:
        ConnectorError: the window ended by ``timeout`` and the connector never
            answered 200 with an event stream (refused, silent, 5xx): it is down.
            A connector that answered but sent nothing yields an empty window.
        ConnectorAuthError: 401/403. ConnectorNotFoundError: 404.
        ConnectorRetriesExhaustedError: ``max_retries`` consecutive failures.
        ConfigError: invalid options (raised here, before connecting).
    """
    core = _core(
        url,
        token=token,
        max_events=max_events,
        timeout=timeout,
        last_event_id=last_event_id,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_retries=max_retries,
        max_event_bytes=max_event_bytes,
        heartbeat_timeout=heartbeat_timeout,
        on_error=on_error,
    )
    return _iter_window(
        core, max_events, timeout, _limits(connect_timeout, heartbeat_timeout, timeout)
    )


def _limits(
    connect_timeout: float, heartbeat_timeout: float | None, timeout: float | None
) -> httpx.Timeout:
    """The HTTP timeouts, none longer than the window: a blocked connect or a
    server that never sends its headers cannot outlast ``timeout`` (the sync
    window's timer can only cut a response it already holds)."""
    if timeout is None:
        return http_timeout(connect_timeout, heartbeat_timeout)
    heartbeat = timeout if heartbeat_timeout is None else min(heartbeat_timeout, timeout)
    return http_timeout(min(connect_timeout, timeout), heartbeat)


def _check_answered(core: StreamCore, timeout: float | None) -> None:
    """Raise when a window ended by its timeout without one answered connection."""
    if core.counters.connections == 0:
        raise ConnectorUnavailableError(
            f"the connector at {core.safe_url} did not answer with an event stream within "
            f"{timeout}s ({core.resume.failures} failed attempt(s)): is it running and "
            "reachable? (A connector that answers but sends nothing gives an empty window.)"
        )


def _iter_window(
    core: StreamCore, max_events: int | None, timeout: float | None, limits: httpx.Timeout
) -> Iterator[Event]:
    if max_events == 0:
        return
    slot = ResponseSlot()
    timer = threading.Timer(timeout, slot.abort) if timeout is not None else None
    yielded = 0
    with httpx.Client(timeout=limits, verify=tls_context_for(core.url)) as http:
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            for event in iter_events(core, http, slot):
                yield event
                yielded += 1
                if max_events is not None and yielded >= max_events:
                    return
        finally:
            if timer is not None:
                timer.cancel()
    # Only a stop can end iter_events without an error: the window's timer fired.
    _check_answered(core, timeout)


def aiter_stream_events(
    url: str,
    *,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
    last_event_id: str | None = None,
    heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    max_retries: int | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    on_error: Callable[[EventDecodeError], Any] | None = None,
) -> AsyncIterator[Event]:
    """Async twin of :func:`iter_stream_events` (``async for event in ...``)."""
    core = _core(
        url,
        token=token,
        max_events=max_events,
        timeout=timeout,
        last_event_id=last_event_id,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_retries=max_retries,
        max_event_bytes=max_event_bytes,
        heartbeat_timeout=heartbeat_timeout,
        on_error=on_error,
    )
    return _aiter_window(
        core, max_events, timeout, _limits(connect_timeout, heartbeat_timeout, timeout)
    )


_END = object()


async def _aiter_window(
    core: StreamCore, max_events: int | None, timeout: float | None, limits: httpx.Timeout
) -> AsyncIterator[Event]:
    if max_events == 0:
        return
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    # One producer task owns the connection, so connection scopes never cross tasks;
    # the queue of one gives backpressure: the socket is read as fast as we consume.
    handoff: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            verify = await atls_context_for(core.url)
            async with httpx.AsyncClient(timeout=limits, verify=verify) as http:
                async for event in aiter_events(core, http):
                    await handoff.put(event)
        except Exception as exc:
            await handoff.put(exc)

    producer = asyncio.ensure_future(produce())
    yielded = 0
    try:
        while max_events is None or yielded < max_events:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(handoff.get(), remaining)
            except asyncio.TimeoutError:
                break
            if isinstance(item, Exception):
                raise item
            yield item
            yielded += 1
        else:
            return  # max_events reached
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
    # The deadline passed (the producer is stopped, so its counters are final).
    _check_answered(core, timeout)
