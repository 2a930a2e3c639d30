"""One resumable SSE subscription: the I/O loop both clients and the window helpers share.

:class:`StreamCore` holds the per-client state (resume point, counters, the
secret token) and turns frames into events without doing any I/O;
:func:`iter_events` and :func:`aiter_events` are the sync and async loops that
connect, read, reconnect and yield typed events. Their bodies differ only by
``await``; everything they decide is delegated to
:class:`~autoplay_base._reconnect.ResumeState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from autoplay_base._reconnect import ResumeState, fatal_status_error
from autoplay_base._sse import SSEDecoder, SSEFrame
from autoplay_base.errors import ConfigError, EventDecodeError
from autoplay_base.events import Event, decode_event

__all__ = [
    "TOKEN_ENV_VAR",
    "ClientCounters",
    "ResponseSlot",
    "Secret",
    "StreamCore",
    "aiter_events",
    "aiter_frame_chunks",
    "http_timeout",
    "iter_event_batches",
    "iter_events",
    "resolve_token",
    "safe_url",
]

logger = logging.getLogger("autoplay_base.stream")

TOKEN_ENV_VAR = "AUTOPLAY_APP_UNKEY_TOKEN"
"""Environment variable read when no token is passed."""
HEARTBEAT_EVENT = "heartbeat"


class Secret:
    """A string that never shows itself in ``repr``/``str`` (tokens)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself (only to build the Authorization header)."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def resolve_token(token: str) -> Secret:
    """``token``, or ``$AUTOPLAY_APP_UNKEY_TOKEN`` when it is empty."""
    return Secret(token or os.environ.get(TOKEN_ENV_VAR, ""))


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (where secrets hide), for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ClientCounters:
    """What a client has seen; ``received == delivered + dropped`` once it has stopped.

    Attributes:
        received: events accepted from the stream (after dedupe and decoding).
        delivered: events handed to every callback registered for their type.
        dropped: events not delivered (buffer full, or left over when ``stop``
            ran out of ``drain_timeout``); each one went to ``on_drop``.
        decode_errors: frames rejected (not JSON, not an object, invalid, oversized).
        duplicates: replayed frames dropped because their id was already seen.
        callback_errors: exceptions raised by user callbacks.
        heartbeats: keep-alive frames.
        connections: successful connections (status 200).
        reconnects: connection attempts after the first.
        last_event_id: id of the last frame received (sent as ``Last-Event-ID``).
    """

    __slots__ = (
        "callback_errors",
        "connections",
        "decode_errors",
        "delivered",
        "dropped",
        "duplicates",
        "heartbeats",
        "last_event_id",
        "received",
        "reconnects",
    )

    def __init__(self) -> None:
        self.received = 0
        self.delivered = 0
        self.dropped = 0
        self.decode_errors = 0
        self.duplicates = 0
        self.callback_errors = 0
        self.heartbeats = 0
        self.connections = 0
        self.reconnects = 0
        self.last_event_id: str | None = None

    def as_dict(self) -> dict[str, int | str | None]:
        """The counters as a plain dict (for metrics exporters and logs)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"ClientCounters({inner})"


class _RetryableResponseError(Exception):
    """A response worth retrying (5xx, other 4xx, not an event stream)."""


class StreamCore:
    """Connection-independent state of one subscription; no I/O.

    Args:
        url: the stream URL.
        token: bearer token (already resolved).
        resume: the reconnect policy and resume point.
        max_event_bytes: frames above this size are rejected.
        on_bad_frame: told about every rejected frame (after it is counted and logged).
        on_connect / on_disconnect: told when a stream opens / ends.
    """

    def __init__(
        self,
        url: str,
        token: Secret,
        resume: ResumeState,
        *,
        max_event_bytes: int,
        on_bad_frame: Callable[[EventDecodeError], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"url must be an http(s) URL, got {safe_url(url)!r}")
        if max_event_bytes < 1:
            raise ConfigError(f"max_event_bytes must be >= 1, got {max_event_bytes!r}")
        self.url = url
        self.safe_url = safe_url(url)
        self.token = token
        self.resume = resume
        self.counters = ClientCounters()
        self.max_event_bytes = max_event_bytes
        self.on_bad_frame = on_bad_frame
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._attempts = 0

    def headers(self) -> dict[str, str]:
        """Headers of the next request (with ``Last-Event-ID`` when resuming)."""
        self._attempts += 1
        if self._attempts > 1:
            self.counters.reconnects += 1
        return self.resume.request_headers(self.token.reveal())

    def check_response(self, response: httpx.Response) -> None:
        """Raise the fatal error for 401/403/404, or a retryable one for other answers."""
        status = response.status_code
        if status != 200:
            fatal = fatal_status_error(status, self.safe_url)
            if fatal is not None:
                logger.error("stream: %s", fatal)
                raise fatal
            raise _RetryableResponseError(f"connector answered {status}")
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            raise _RetryableResponseError(f"expected text/event-stream, got {content_type!r}")

    def connected(self) -> None:
        self.resume.connected()
        self.counters.connections += 1
        logger.info("stream: connected to %s", self.safe_url)
        if self.on_connect is not None:
            self.on_connect()

    def disconnected(self) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect()

    def on_frame(self, sse: SSEFrame) -> Event | None:
        """The event in ``sse``, or ``None`` for keep-alives, hints, duplicates and bad frames."""
        kind, data, event_id, retry = sse
        if retry is not None:
            self.resume.note_retry(retry)
        if kind == HEARTBEAT_EVENT:
            self.counters.heartbeats += 1
            self.resume.frame()
            return None
        if not data and kind == "message":
            self.resume.frame()  # a field-only frame (``retry:``), nothing to deliver
            return None
        if not self.resume.accept(event_id):
            self.counters.duplicates += 1
            return None
        if event_id:
            self.counters.last_event_id = event_id
        try:
            event = decode_event(data, event_id=event_id or None, max_bytes=self.max_event_bytes)
        except EventDecodeError as exc:
            self.counters.decode_errors += 1
            logger.warning(
                "stream: skipped a bad frame (id=%s, reason=%s): %s",
                event_id or "-",
                exc.reason,
                str(exc)[:200],
            )
            if self.on_bad_frame is not None:
                self.on_bad_frame(exc)
            return None
        self.counters.received += 1
        return event

    def clean_close_delay(self) -> float:
        delay = self.resume.closed_cleanly()
        logger.info("stream: %s closed the stream; reconnecting in %.2fs", self.safe_url, delay)
        return delay

    def failure_delay(self, exc: BaseException) -> float:
        """Seconds to wait after ``exc``; raises ``ConnectorRetriesExhaustedError`` when done."""
        delay = self.resume.failed()
        logger.warning(
            "stream: %s failed (%s: %s); retry %d in %.2fs",
            self.safe_url,
            type(exc).__name__,
            str(exc)[:200],
            self.resume.failures,
            delay,
        )
        return delay


_RETRYABLE = (httpx.HTTPError, httpx.StreamError, OSError, _RetryableResponseError)


class ResponseSlot:
    """The response being read, so another thread can cut it short (``stop``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self.stopped = threading.Event()

    def set(self, response: httpx.Response | None) -> None:
        with self._lock:
            self._response = response

    def abort(self) -> None:
        """Stop: wake a blocked read now by shutting the socket down (closing it would not)."""
        self.stopped.set()
        with self._lock:
            response = self._response
        if response is None:
            return
        stream: Any = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already closed by the server or the reader
                sock.shutdown(socket.SHUT_RDWR)


def _iter_frame_chunks(
    core: StreamCore, http: httpx.Client, slot: ResponseSlot
) -> Generator[list[SSEFrame], None, None]:
    """Connect, read and reconnect until ``slot.abort()``; yield the frames of each chunk read."""
    stopped = slot.stopped
    while not stopped.is_set():
        try:
            with http.stream("GET", core.url, headers=core.headers()) as response:
                core.check_response(response)
                slot.set(response)
                if stopped.is_set():  # stop() ran before the slot held this response
                    return
                core.connected()
                decoder = SSEDecoder()
                try:
                    for chunk in response.iter_bytes():
                        frames = decoder.feed(chunk)
                        if frames:
                            yield frames
                finally:
                    slot.set(None)
                    core.disconnected()
            delay = core.clean_close_delay()
        except _RETRYABLE as exc:
            if stopped.is_set():
                return
            delay = core.failure_delay(exc)
        if delay > 0 and stopped.wait(delay):
            return


def iter_events(core: StreamCore, http: httpx.Client, slot: ResponseSlot) -> Iterator[Event]:
    """Connect, read and reconnect until ``slot.abort()``; yield each new event once.

    Frames are turned into events one at a time, as the consumer asks: one
    that stops early (``max_events``) leaves the rest unaccounted, so the
    resume point never passes an event it was not given.

    Raises ``ConnectorAuthError`` / ``ConnectorNotFoundError`` at once and
    ``ConnectorRetriesExhaustedError`` after ``max_retries`` failures.
    """
    stopped = slot.stopped
    with contextlib.closing(_iter_frame_chunks(core, http, slot)) as chunks:
        for frames in chunks:
            for frame in frames:
                event = core.on_frame(frame)
                if event is not None:
                    yield event
                if stopped.is_set():
                    return


def iter_event_batches(
    core: StreamCore, http: httpx.Client, slot: ResponseSlot
) -> Iterator[list[Event]]:
    """Like :func:`iter_events`, but yield the new events of each chunk read as one list.

    For a consumer that reads until ``slot.abort()`` and hands events to
    another thread: it can take its lock once per chunk instead of once per
    event. Lists are never empty.
    """
    stopped = slot.stopped
    on_frame = core.on_frame
    with contextlib.closing(_iter_frame_chunks(core, http, slot)) as chunks:
        for frames in chunks:
            events: list[Event] = []
            for frame in frames:
                event = on_frame(frame)
                if event is not None:
                    events.append(event)
                if stopped.is_set():
                    if events:
                        yield events
                    return
            if events:
                yield events


async def aiter_frame_chunks(
    core: StreamCore, http: httpx.AsyncClient
) -> AsyncGenerator[list[SSEFrame], None]:
    """Async twin of :func:`_iter_frame_chunks`: the frames of each chunk read, as one list.

    Stop it by cancelling the task that iterates (or closing it).
    """
    while True:
        try:
            async with http.stream("GET", core.url, headers=core.headers()) as response:
                core.check_response(response)
                core.connected()
                decoder = SSEDecoder()
                try:
                    async for chunk in response.aiter_bytes():
                        frames = decoder.feed(chunk)
                        if frames:
                            yield frames
                finally:
                    core.disconnected()
            delay = core.clean_close_delay()
        except _RETRYABLE as exc:
            delay = core.failure_delay(exc)
        if delay > 0:
            await asyncio.sleep(delay)


async def aiter_events(core: StreamCore, http: httpx.AsyncClient) -> AsyncIterator[Event]:
    """Async twin of :func:`iter_events`; stop it by cancelling the task that iterates."""
    async with contextlib.aclosing(aiter_frame_chunks(core, http)) as chunks:
        async for frames in chunks:
            for frame in frames:
                event = core.on_frame(frame)
                if event is not None:
                    yield event


def http_timeout(connect_timeout: float, heartbeat_timeout: float | None) -> httpx.Timeout:
    """The read timeout is the heartbeat watchdog: that long without a byte means dead."""
    return httpx.Timeout(
        connect=connect_timeout, read=heartbeat_timeout, write=connect_timeout, pool=None
    )
