"""One resumable SSE subscription: the I/O loop both clients and the window helpers share.

:class:`StreamCore` holds the per-client state (resume point, counters, the
secret token) and turns frames into events without doing any I/O; whatever
goes wrong with one frame costs that frame (:meth:`StreamCore.on_frame` never
raises), the watchdog measures frames, not bytes, and every wait is bounded.
The token is a :class:`~autoplay_base._secret.Secret`, scrubbed from every
error text that reaches a log line or ``on_error``;
:func:`iter_events` and :func:`aiter_events` are the sync and async loops that
connect, read, reconnect and yield typed events. Their bodies differ only by
``await``; everything they decide is delegated to
:class:`~autoplay_base._reconnect.ResumeState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any
from urllib.parse import urljoin

import httpx

from autoplay_base._counters import Counters
from autoplay_base._reconnect import ResumeState, fatal_status_error, parse_retry_after, safe_url
from autoplay_base._secret import Secret, log_exception, scrub_error
from autoplay_base._sse import DEFAULT_MAX_FRAME_BYTES, MAX_EVENT_ID_CHARS, SSEDecoder, SSEFrame
from autoplay_base.errors import ConfigError, EventDecodeError
from autoplay_base.events import DEFAULT_MAX_EVENT_BYTES, Event, UnknownEvent, decode_event

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "MAX_WAIT_SECONDS",
    "ClientCounters",
    "ResponseSlot",
    "StreamCore",
    "aiter_events",
    "aiter_frame_chunks",
    "bounded_wait",
    "http_timeout",
    "iter_event_batches",
    "iter_events",
]

logger = logging.getLogger("autoplay_base.stream")

HEARTBEAT_EVENT = "heartbeat"
DEFAULT_HEARTBEAT_TIMEOUT = 60.0
"""Seconds without a byte (or without a frame) after which the connection is presumed dead."""
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection."""
MAX_WAIT_SECONDS = 3600.0
"""Cap on any wait between two connection attempts, whatever the server hinted
(``Event.wait``/``asyncio.sleep`` raise ``OverflowError`` on huge values)."""


class ClientCounters(Counters):
    """What a client has seen; ``received == delivered + dropped`` once ``stop`` returned.

    Attributes:
        received: events accepted from the stream (after decoding and dedupe).
        delivered: events handed to every callback registered for their type.
        dropped: events not delivered (buffer full, left over when ``stop`` ran
            out of ``drain_timeout``, or in a callback still stuck when ``stop``
            gave up on it); each one went to ``on_drop``.
        decode_errors: frames rejected (not JSON, not an object, invalid,
            oversized — including frames the decoder discarded while buffering —
            or any other failure while handling one frame); each went to ``on_error``.
        duplicates: replayed frames dropped because they were already delivered.
        callback_errors: exceptions raised by user callbacks.
        heartbeats: keep-alive frames.
        connections: successful connections (status 200).
        reconnects: connection attempts after the first.
        stalls: connections dropped by the watchdog: no frame nor comment for
            ``heartbeat_timeout`` seconds, even though bytes kept arriving.
        rejected_ids: ``id:`` values ignored by the decoder (not printable
            ASCII, or too long); ``Last-Event-ID`` keeps the last valid id.
        rejected_retries: ``retry:`` values ignored or capped by the decoder.
        ids_reused: ids the server sent again for a different event (delivered,
            not taken for replays).
        id_resets: times the dedupe window started over because the server's
            clock (``forwarded_at``) went back (a restarted server).
            ``ids_reused`` and ``id_resets`` are brought up to date once per
            chunk read and when a connection ends.
        last_event_id: id of the last frame received (sent as ``Last-Event-ID``);
            read from the client's resume state, the one place that keeps it.
    """

    __slots__ = (
        "_resume",
        "callback_errors",
        "connections",
        "decode_errors",
        "delivered",
        "dropped",
        "duplicates",
        "heartbeats",
        "id_resets",
        "ids_reused",
        "received",
        "reconnects",
        "rejected_ids",
        "rejected_retries",
        "stalls",
    )
    not_counted = ("_resume",)

    received: int
    delivered: int
    dropped: int
    decode_errors: int
    duplicates: int
    callback_errors: int
    heartbeats: int
    connections: int
    reconnects: int
    stalls: int
    rejected_ids: int
    rejected_retries: int
    ids_reused: int
    id_resets: int

    def __init__(self, resume: ResumeState | None = None) -> None:
        super().__init__()
        self._resume = resume

    @property
    def last_event_id(self) -> str | None:
        """Id of the last frame received (``None`` before the first, or without a resume state)."""
        return None if self._resume is None else self._resume.last_event_id

    # The base's as_dict holds only the integer counters; this one keeps the
    # last event id in it (in its alphabetical place), as it always had, so the
    # value type is wider than the base's: hence the ignore.
    def as_dict(self) -> dict[str, int | str | None]:  # type: ignore[override]
        """The counters and ``last_event_id`` as a plain dict (for metrics exporters and logs)."""
        values: dict[str, int | str | None] = dict(super().as_dict())
        values["last_event_id"] = self.last_event_id
        return dict(sorted(values.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"ClientCounters({inner})"


class _RetryableResponseError(Exception):
    """A response worth retrying (5xx, other 4xx, not an event stream)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _StalledError(Exception):
    """The watchdog gave up on a connection that sends bytes but no frames."""


_MAX_LOGGED_CHARS = 200
_RETRY_AFTER_STATUSES = (429, 503)
# Room a frame needs beyond its data (field names, event name, id, line ends), so
# an event at exactly max_event_bytes is not cut by the decoder's buffering cap.
_FRAME_OVERHEAD = DEFAULT_MAX_FRAME_BYTES - DEFAULT_MAX_EVENT_BYTES


class StreamCore:
    """Connection-independent state of one subscription; no I/O.

    Args:
        url: the stream URL.
        token: bearer token (already resolved).
        resume: the reconnect policy and resume point.
        max_event_bytes: frames above this size are rejected.
        heartbeat_timeout: seconds without a frame or comment after which a
            connection is given up, even while bytes arrive (``None``: never).
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
        heartbeat_timeout: float | None = None,
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
        self.counters = ClientCounters(resume)
        self.max_event_bytes = max_event_bytes
        self.heartbeat_timeout = heartbeat_timeout
        self.on_bad_frame = on_bad_frame
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._attempts = 0
        # The decoder of the open connection and what was read from its counters.
        self._decoder = SSEDecoder(max_frame_bytes=max_event_bytes + _FRAME_OVERHEAD)
        self._seen_oversized = 0
        self._seen_rejected_ids = 0
        self._seen_rejected_retries = 0
        self._seen_progress = 0
        self._progress_at = 0.0

    def headers(self) -> dict[str, str]:
        """Headers of the next request (with ``Last-Event-ID`` when resuming)."""
        self._attempts += 1
        if self._attempts > 1:
            self.counters.reconnects += 1
        return self.resume.request_headers(self.token.reveal())

    def check_response(self, response: httpx.Response) -> None:
        """Raise the fatal error for 3xx/401/403/404, or a retryable one for other answers.

        A redirect is never followed: the bearer token must not travel to
        another address; the error names the target without its query string.
        """
        status = response.status_code
        if status != 200:
            raw_location = response.headers.get("location")
            location = urljoin(self.url, raw_location) if raw_location else None
            fatal = fatal_status_error(status, self.safe_url, location=location)
            if fatal is not None:
                logger.error("stream: %s", fatal)
                raise fatal
            retry_after = None
            if status in _RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _RetryableResponseError(f"connector answered {status}", retry_after=retry_after)
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            raise _RetryableResponseError(
                f"expected text/event-stream, got {content_type[:_MAX_LOGGED_CHARS]!r}"
            )

    def connected(self) -> SSEDecoder:
        """A stream opened: account for it and return the decoder for its body."""
        self.resume.connected()
        self.counters.connections += 1
        self._decoder = decoder = SSEDecoder(max_frame_bytes=self.max_event_bytes + _FRAME_OVERHEAD)
        self._seen_oversized = self._seen_rejected_ids = self._seen_rejected_retries = 0
        self._seen_progress = 0
        self._progress_at = time.monotonic()
        logger.info("stream: connected to %s", self.safe_url)
        if self.on_connect is not None:
            self.on_connect()
        return decoder

    def disconnected(self) -> None:
        self._sync_window_counters()
        if self.on_disconnect is not None:
            self.on_disconnect()

    def chunk_read(self) -> None:
        """After each ``feed``: account for what the decoder rejected; run the watchdog.

        Raises ``_StalledError`` when neither a frame nor a comment has come for
        ``heartbeat_timeout`` seconds: a trickle of junk keeps the read timeout
        from firing, so progress is measured in frames, not bytes.
        """
        decoder = self._decoder
        counters = self.counters
        self._sync_window_counters()
        # Logged once per chunk with a count, never with the values (server input).
        if decoder.rejected_ids != self._seen_rejected_ids:
            new_ids = decoder.rejected_ids - self._seen_rejected_ids
            counters.rejected_ids += new_ids
            self._seen_rejected_ids = decoder.rejected_ids
            logger.warning(
                "stream: ignored %d id field(s) from %s (not printable ASCII, or longer "
                "than %d characters); Last-Event-ID keeps the last valid id",
                new_ids,
                self.safe_url,
                MAX_EVENT_ID_CHARS,
            )
        if decoder.rejected_retries != self._seen_rejected_retries:
            new_retries = decoder.rejected_retries - self._seen_rejected_retries
            counters.rejected_retries += new_retries
            self._seen_rejected_retries = decoder.rejected_retries
            logger.warning(
                "stream: ignored or capped %d retry hint(s) from %s", new_retries, self.safe_url
            )
        while decoder.oversized_frames > self._seen_oversized:
            self._seen_oversized += 1
            self._reject(
                EventDecodeError(
                    f"frame is larger than the {self._decoder.max_frame_bytes}-byte cap "
                    "(discarded while buffering)",
                    reason="oversized",
                ),
                "",
            )
        now = time.monotonic()
        if decoder.progress != self._seen_progress:
            self._seen_progress = decoder.progress
            self._progress_at = now
        elif (
            self.heartbeat_timeout is not None and now - self._progress_at > self.heartbeat_timeout
        ):
            counters.stalls += 1
            logger.warning(
                "stream: %s sent no frame for %.1fs (bytes only); reconnecting",
                self.safe_url,
                now - self._progress_at,
            )
            raise _StalledError(f"no frame for {self.heartbeat_timeout}s")

    def _sync_window_counters(self) -> None:
        # Per chunk and per disconnect, not per event: two property reads per
        # event were 3% of its cost, for counters nobody reads between chunks.
        self.counters.ids_reused = self.resume.ids_reused
        self.counters.id_resets = self.resume.id_resets

    def on_frame(self, sse: SSEFrame) -> Event | None:
        """The event in ``sse``, or ``None`` for keep-alives, hints, duplicates and bad frames.

        Never raises: whatever goes wrong while handling one frame costs that
        frame (a decode error, logged, ``on_error``), never the connection.
        """
        try:
            kind, data, event_id, retry = sse
            resume = self.resume
            if retry is not None:
                resume.note_retry(retry)
            if kind == HEARTBEAT_EVENT:
                self.counters.heartbeats += 1
                resume.frame()
                return None
            if not data and kind == "message":
                resume.frame()  # a field-only frame (``retry:``), nothing to deliver
                return None
            try:
                event = decode_event(
                    data, event_id=event_id or None, max_bytes=self.max_event_bytes
                )
            except EventDecodeError as exc:
                # The resume point moves past a bad frame (a replay of it would fail
                # again), but its id is not remembered as delivered.
                resume.advance(event_id)
                self._reject(exc, event_id)
                return None
            # Dedupe after decoding: the window tells a replay (same id, same event)
            # from a server reusing an id for a new event. The connector's send time is
            # the event's fingerprint: a replay repeats it, a new event under a reused id
            # does not (hashing the frame instead cost more than the rest of the dedupe).
            # Frames without one are fingerprinted by their bytes.
            order: float | None
            if isinstance(event, UnknownEvent):
                raw = event.data.get("forwarded_at")
                # No float() here: a JSON integer of 400 digits would raise OverflowError
                # (the window compares it as is and ignores what is not finite).
                order = raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
            else:
                order = event.forwarded_at
            counters = self.counters
            if not resume.accept(event_id, order, hash(data) if order is None else order):
                counters.duplicates += 1
                return None
            counters.received += 1
            return event
        except Exception as exc:  # a value nobody foresaw: it must not reach the I/O loop
            # (The try costs nothing while nothing raises: zero-cost exceptions.)
            with contextlib.suppress(Exception):
                self.resume.advance(sse.id)
            self._reject(
                EventDecodeError(
                    f"handling the frame failed ({type(exc).__name__})",
                    reason="unexpected",
                    event_id=None,
                ),
                sse.id,
            )
            return None

    def _reject(self, exc: EventDecodeError, event_id: str) -> None:
        """Count, log and report one rejected frame; the stream goes on."""
        self.counters.decode_errors += 1
        scrub = self.token.scrub
        logger.warning(
            "stream: skipped a bad frame (id=%s, reason=%s): %s",
            scrub(event_id[:_MAX_LOGGED_CHARS]) or "-",
            exc.reason,
            scrub(str(exc)[:_MAX_LOGGED_CHARS]),
        )
        if self.on_bad_frame is None:
            return
        if scrub_error(exc, self.token) is not exc:
            exc = _scrubbed_decode_error(exc, self.token)
        try:
            self.on_bad_frame(exc)
        except Exception as error:  # a user's on_error must not end the stream either
            log_exception(logger, logging.ERROR, "stream: on_error raised", error, self.token)

    def clean_close_delay(self) -> float:
        """Seconds to wait after the server closed the stream (the flapping rule applies)."""
        delay = bounded_wait(self.resume.closed_cleanly())
        logger.info("stream: %s closed the stream; reconnecting in %.2fs", self.safe_url, delay)
        return delay

    def failure_delay(self, exc: BaseException) -> float:
        """Seconds to wait after ``exc``; raises ``ConnectorRetriesExhaustedError`` when done.

        Call it outside the ``except`` block that caught ``exc``: an error raised
        here would otherwise chain ``exc`` (whose text may quote headers) as its
        ``__context__``.
        """
        retry_after = exc.retry_after if isinstance(exc, _RetryableResponseError) else None
        delay = bounded_wait(self.resume.failed(exc, retry_after=retry_after))
        logger.warning(
            "stream: %s failed (%s: %s); retry %d in %.2fs",
            self.safe_url,
            type(exc).__name__,
            self.token.scrub(str(exc)[:_MAX_LOGGED_CHARS]),
            self.resume.failures,
            delay,
        )
        return delay


def _scrubbed_decode_error(exc: EventDecodeError, secret: Secret) -> EventDecodeError:
    """A copy of ``exc`` without the secret and without a chain."""
    safe = EventDecodeError(secret.scrub(str(exc)), reason=exc.reason, event_id=None)
    safe.__suppress_context__ = True
    return safe


def bounded_wait(delay: float) -> float:
    """``delay`` within ``[0, MAX_WAIT_SECONDS]`` (NaN and negatives are 0)."""
    if not delay >= 0.0:
        return 0.0
    return min(delay, MAX_WAIT_SECONDS) if math.isfinite(delay) else MAX_WAIT_SECONDS


_RETRYABLE = (
    httpx.HTTPError,
    httpx.StreamError,
    OSError,
    _RetryableResponseError,
    _StalledError,
)


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
        failure: BaseException | None = None
        try:
            with http.stream("GET", core.url, headers=core.headers()) as response:
                core.check_response(response)
                slot.set(response)
                if stopped.is_set():  # stop() ran before the slot held this response
                    return
                decoder = core.connected()
                try:
                    for chunk in response.iter_bytes():
                        frames = decoder.feed(chunk)
                        core.chunk_read()
                        if frames:
                            yield frames
                finally:
                    slot.set(None)
                    core.disconnected()
        except _RETRYABLE as exc:
            if stopped.is_set():
                return
            failure = exc
        # Outside the except block: an error raised while deciding (retries
        # exhausted) must not chain the network error, whose text may quote headers.
        delay = core.clean_close_delay() if failure is None else core.failure_delay(failure)
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
        failure: BaseException | None = None
        try:
            async with http.stream("GET", core.url, headers=core.headers()) as response:
                core.check_response(response)
                decoder = core.connected()
                try:
                    async for chunk in response.aiter_bytes():
                        frames = decoder.feed(chunk)
                        core.chunk_read()
                        if frames:
                            yield frames
                finally:
                    core.disconnected()
        except _RETRYABLE as exc:
            failure = exc
        delay = core.clean_close_delay() if failure is None else core.failure_delay(failure)
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
