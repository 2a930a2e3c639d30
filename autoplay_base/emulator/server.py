"""A real SSE connector emulator: ``GET /stream/{product_id}`` over loopback HTTP/1.1.

A Starlette app under uvicorn (the ``emulator`` extra). It speaks what the
Autoplay connector speaks and a little more, for tests and demos:

* frames ``event: <type>`` / ``id: <n>`` / ``data: <json>``, ids monotonic per
  product; ``event: heartbeat`` after ``heartbeat_interval`` idle seconds;
  an optional ``retry:`` hint at the start of each stream;
* an optional bearer token (401 without ``Authorization``, 403 with a wrong one)
  and 404 for products it does not know;
* a replay ring of the last ``replay_size`` frames per product: a request with
  ``Last-Event-ID: n`` resumes right after ``n``; without it the stream is live;
* fault injection (:class:`Faults`): close every K frames (cleanly or by
  aborting), answer 5xx for the next N requests or for a while, and
  :meth:`EmulatorServer.publish_raw` for malformed frames;
* responses use chunked encoding, so a client can tell a clean end of stream
  (terminating chunk) from a cut connection (an aborted TCP connection);
* replays and bursts go out as large chunks (up to 512 frames per ASGI
  message), so the server out-runs any client reading them;
* push mode (``push_url=``): every published event is also POSTed as a signed
  webhook, with retries and its own faults (:mod:`~autoplay_base.emulator.push`).

This module is the server: lifecycle, routes, auth and fault decisions, the
stream loop. What it stands on lives below it, and nothing there imports it:
``_channels`` (per-product replay rings, frame encoding), ``_serving`` (the
uvicorn lifecycle shared with the ingest receiver), ``push`` (webhook
deliveries), ``_types`` (:class:`Faults`, :class:`RequestRecord`,
:class:`EmulatorStats`) and :mod:`~autoplay_base.emulator.generators` (what to
publish, written against the small ``Publisher`` protocol).

Use it from sync code (a background thread)::

    with EmulatorServer(products=["acme"]) as server:
        url = server.url_for("acme")
        server.publish("acme", {"type": "actions", ...})

or from async code, in the running loop::

    async with EmulatorServer(products=["acme"]) as server:
        ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoplay_base.emulator._channels import Channel, now_stamp
from autoplay_base.emulator._serving import LoopbackServer, wait_disconnect
from autoplay_base.emulator._types import (
    DEFAULT_COMMAND_PORT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_PRODUCTS,
    DEFAULT_REPLAY_SIZE,
    EMULATOR_TOKEN_ENV_VAR,
    Authorization,
    EmulatorStats,
    Faults,
    RequestRecord,
)
from autoplay_base.emulator.generators import play_script, run_load
from autoplay_base.emulator.push import PushFaults, WebhookPusher
from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_COMMAND_PORT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HOST",
    "DEFAULT_PRODUCTS",
    "DEFAULT_REPLAY_SIZE",
    "EMULATOR_TOKEN_ENV_VAR",
    "EmulatorServer",
    "EmulatorStats",
    "Faults",
    "RequestRecord",
]

logger = logging.getLogger(__name__)

_WRITE_BATCH = 512
_MAX_REQUEST_LOG = 1000


class EmulatorServer(LoopbackServer):
    """The connector emulator. See the module docstring for the protocol.

    Args:
        host: interface to bind (loopback by default; it is a test tool).
        port: TCP port; ``0`` picks a free one (read :attr:`port` after start).
        products: product ids that exist; others get 404. :meth:`publish`
            adds products on first use.
        token: when set, requests need ``Authorization: Bearer <token>``.
        heartbeat_interval: idle seconds between heartbeats (``None``: never).
        retry_ms: ``retry:`` hint sent at the start of each stream (``None``: none).
        replay_size: frames kept per product for ``Last-Event-ID`` resumption.
        faults: fault injection settings (also reachable as :attr:`faults`).
        replay_from_start: streams opened without ``Last-Event-ID`` start at the
            oldest buffered frame instead of live (burst benchmarks, demos).
        push_url: push mode: also POST every published event, signed, to this URL
            (:class:`~autoplay_base.emulator.push.WebhookPusher`, reachable as
            :attr:`pusher`; ``None``: streams only).
        webhook_secret: the HMAC secret of push mode (required with ``push_url``).
        push_faults: push-mode fault injection (duplicates, bad signatures, stale
            timestamps); also reachable as ``pusher.faults``.
        push_timestamped: sign deliveries with ``X-Connector-Timestamp`` (else the
            plain scheme).
    """

    kind = "emulator"

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        products: Iterable[str] = DEFAULT_PRODUCTS,
        token: str | None = None,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        retry_ms: int | None = None,
        replay_size: int = DEFAULT_REPLAY_SIZE,
        faults: Faults | None = None,
        replay_from_start: bool = False,
        push_url: str | None = None,
        webhook_secret: str | None = None,
        push_faults: PushFaults | None = None,
        push_timestamped: bool = True,
    ) -> None:
        if replay_size < 1:
            raise ConfigError(f"replay_size must be >= 1, got {replay_size!r}")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ConfigError(f"heartbeat_interval must be > 0, got {heartbeat_interval!r}")
        super().__init__(host, port)
        self._token = token
        self.heartbeat_interval = heartbeat_interval
        self.retry_ms = retry_ms
        self._replay_size = replay_size
        self.faults = faults if faults is not None else Faults()
        self.replay_from_start = replay_from_start
        self.pusher: WebhookPusher | None = None
        if push_url is not None:
            self.pusher = WebhookPusher(
                push_url,
                webhook_secret or "",
                timestamped=push_timestamped,
                faults=push_faults,
            )
        elif webhook_secret is not None or push_faults is not None:
            raise ConfigError("webhook_secret and push_faults need push_url (push mode)")
        self._channels: dict[str, Channel] = {}
        self._channels_lock = threading.Lock()
        for product in products:
            self.add_product(product)
        self.stats = EmulatorStats()
        self.requests: deque[RequestRecord] = deque(maxlen=_MAX_REQUEST_LOG)
        self._changed = threading.Condition()
        self._watchers: set[Callable[[], None]] = set()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"EmulatorServer({where}, products={sorted(self._channels)!r})"

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, product_id: str) -> str:
        """The stream URL of ``product_id``: ``http://host:port/stream/<product_id>``."""
        return f"{self.url}/stream/{product_id}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs in (for scheduling generators)."""
        if self._loop is None:
            raise RuntimeError("the emulator is not started")
        return self._loop

    # -- products and publishing -------------------------------------------------------
    def add_product(self, product_id: str) -> None:
        """Make ``product_id`` known (idempotent)."""
        with self._channels_lock:
            if product_id not in self._channels:
                channel = self._channels[product_id] = Channel(self._replay_size)
                if self.pusher is not None:
                    channel.wakers.add(self.pusher.waker)

    def _channel(self, product_id: str) -> Channel:
        channel = self._channels.get(product_id)
        if channel is None:
            self.add_product(product_id)
            channel = self._channels[product_id]
        return channel

    def publish(
        self,
        product_id: str,
        payload: Mapping[str, Any],
        *,
        event: str | None = None,
        stamp: bool = False,
    ) -> str:
        """Queue ``payload`` (a JSON object) to every stream of ``product_id``; returns its id.

        ``event`` defaults to ``payload["type"]``. With ``stamp=True`` the
        payload's ``forwarded_at`` is set to the wall clock at the moment the
        frame is written to each connection, so freshness can be measured.
        Safe to call from any thread.
        """
        kind = event if event is not None else str(payload.get("type", "message"))
        if stamp:
            return self._publish(product_id, kind, b"", dict(payload))
        data = json.dumps(payload, separators=(",", ":")).encode()
        return self._publish(product_id, kind, data, None)

    def publish_raw(self, product_id: str, data: str | bytes, *, event: str = "actions") -> str:
        """Queue a frame whose ``data`` is sent verbatim (malformed-frame tests); returns its id."""
        raw = data.encode() if isinstance(data, str) else data
        return self._publish(product_id, event, raw, None)

    def last_id(self, product_id: str) -> str:
        """The id of the last frame published to ``product_id`` (``"0"`` if none)."""
        return str(self._channel(product_id).last_id)

    def _publish(
        self, product_id: str, event: str, data: bytes, payload: dict[str, Any] | None
    ) -> str:
        channel = self._channel(product_id)
        with channel.lock:
            frame_id = channel.append(event, data, payload)
            schedule = not channel.wake_pending and bool(channel.wakers)
            if schedule:
                channel.wake_pending = True
        loop = self._loop
        if schedule and loop is not None and not loop.is_closed():
            # asyncio.Event is not thread-safe: wake writers from the server loop.
            loop.call_soon_threadsafe(self._wake, channel)
        return str(frame_id)

    @staticmethod
    def _wake(channel: Channel) -> None:
        with channel.lock:
            channel.wake_pending = False
            wakers = list(channel.wakers)
        for waker in wakers:
            waker.set()

    # -- fault helpers -----------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` stream requests with ``status``."""
        self.faults.fail_status = status
        self.faults.fail_next = count

    def fail_for(self, seconds: float, status: int = 503) -> None:
        """Answer stream requests with ``status`` for the next ``seconds``."""
        self.faults.fail_status = status
        self.faults.fail_until = time.monotonic() + seconds

    def drop_connections(self) -> None:
        """Cut every open stream at once (clients should resume). Thread-safe."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._cut)

    # -- waiting on the server's state -------------------------------------------------
    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[EmulatorStats], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(stats)`` holds (``False`` on timeout); not on the server loop."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.stats), timeout)

    async def await_for(
        self, predicate: Callable[[EmulatorStats], bool], timeout: float = 5.0
    ) -> bool:
        """Async :meth:`wait_for`: waits without blocking the running loop."""
        if predicate(self.stats):
            return True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(True)

        def check() -> None:
            # Runs on whichever thread changed the stats; hand the result to our loop.
            if predicate(self.stats) and not done.done() and not loop.is_closed():
                loop.call_soon_threadsafe(resolve)

        self._watchers.add(check)
        try:
            check()
            await asyncio.wait_for(done, timeout)
            return True
        except asyncio.TimeoutError:
            return predicate(self.stats)
        finally:
            self._watchers.discard(check)

    def _changed_stats(self) -> None:
        self._notify()
        for check in list(self._watchers):
            check()

    # -- lifecycle ---------------------------------------------------------------------
    def _starting(self) -> None:
        pusher = self.pusher
        if pusher is None:
            return
        # A fresh event for this loop (an asyncio.Event belongs to the loop it waits in).
        old, pusher.waker = pusher.waker, asyncio.Event()
        with self._channels_lock:
            channels = list(self._channels.values())
        for channel in channels:
            with channel.lock:
                channel.wakers.discard(old)
                channel.wakers.add(pusher.waker)
        task = asyncio.get_running_loop().create_task(self._push(pusher))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, pusher: WebhookPusher) -> None:
        try:
            await pusher.run(lambda: self._channels, self._changed_stats)
        except Exception:
            logger.exception("emulator: push mode stopped")

    # -- generators --------------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, int]) -> concurrent.futures.Future[int]:
        """Run ``coro`` on the server loop (cancelled on close); safe from any thread."""

        async def tracked() -> int:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                return await coro
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(tracked(), self.loop)

    def play(
        self, product_id: str, script: str | Path, **options: Any
    ) -> concurrent.futures.Future[int]:
        """Play a script (see :func:`~autoplay_base.emulator.generators.play_script`)."""
        self.add_product(product_id)
        return self.submit(play_script(self, product_id, script, **options))

    def load(self, product_id: str, **options: Any) -> concurrent.futures.Future[int]:
        """Start synthetic load (see :func:`~autoplay_base.emulator.generators.run_load`)."""
        self.add_product(product_id)
        return self.submit(run_load(self, product_id, **options))

    # -- HTTP --------------------------------------------------------------------------
    def _app(self) -> Starlette:
        routes = [
            Route("/healthz", self._health),
            Route("/stream/{product_id}", self._stream_route, methods=["GET"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(_Recording, server=self)])

    async def _health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    def _check_auth(self, header: str | None) -> Authorization:
        if not header:
            return "none"
        scheme, _, value = header.partition(" ")
        if self._token is not None and scheme.lower() == "bearer" and value == self._token:
            return "valid"
        return "invalid" if self._token is not None else "valid"

    def _take_fault_status(self) -> int | None:
        faults = self.faults
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return faults.fail_status
        if faults.fail_until and time.monotonic() < faults.fail_until:
            return faults.fail_status
        return None

    async def _stream_route(self, request: Request) -> Response:
        auth = self._check_auth(request.headers.get("authorization"))
        if auth != "valid" and self._token is not None:
            if auth == "none":
                return PlainTextResponse("unauthorized", 401, _CLOSE)
            return PlainTextResponse("forbidden", 403, _CLOSE)
        product = request.path_params["product_id"]
        channel = self._channels.get(product)
        if channel is None:
            return PlainTextResponse(f"unknown product {product!r}", 404, _CLOSE)
        fault_status = self._take_fault_status()
        if fault_status is not None:
            self.stats.fault_statuses += 1
            self._changed_stats()
            return PlainTextResponse("injected failure", fault_status, _CLOSE)
        return _EventStream(self, channel, request.headers.get("last-event-id"))

    def _resume_point(self, channel: Channel, last_event_id: str | None) -> tuple[int, int]:
        """``(live_from, sent_upto)`` of a new stream (the caller holds the channel's lock)."""
        live_from = channel.last_id
        if last_event_id is None:
            if self.replay_from_start and channel.ring:
                return live_from, channel.ring[0].id - 1
            return live_from, live_from
        try:
            return live_from, max(
                min(int(last_event_id), live_from) - self.faults.replay_overlap, 0
            )
        except ValueError:
            return live_from, live_from

    async def _stream(
        self,
        channel: Channel,
        last_event_id: str | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # Snapshot the live point and subscribe before the client can see the headers,
        # so anything published once the client knows it is connected reaches it.
        waker = asyncio.Event()
        with channel.lock:
            live_from, sent_upto = self._resume_point(channel, last_event_id)
            channel.wakers.add(waker)
        left = asyncio.Event()

        async def watch() -> None:
            # The only way to learn that an idle stream's client went away.
            await wait_disconnect(receive)
            left.set()
            waker.set()

        watcher = asyncio.create_task(watch())
        self.stats.streams_opened += 1
        self.stats.streams_active += 1
        sent_here = 0
        try:
            await send(_STREAM_START)
            if self.retry_ms is not None:
                await send(_body(f"retry: {self.retry_ms}\n\n".encode()))
            self._changed_stats()
            while not left.is_set():
                with channel.lock:
                    frames, gap = channel.since(sent_upto, _WRITE_BATCH)
                    if not frames:
                        waker.clear()
                if gap:
                    self.stats.replay_gaps += gap
                    logger.warning("emulator: %d frames fell out of the replay ring", gap)
                if not frames:
                    await self._idle(waker, left, send)
                    continue
                if sent_upto < live_from:
                    self.stats.replayed += sum(1 for f in frames if f.id <= live_from)
                close_every = self.faults.close_every
                if close_every is not None and sent_here + len(frames) >= close_every:
                    frames = frames[: close_every - sent_here]
                now = now_stamp()  # one clock reading for the frames of one write
                body = b"".join(frame.encode(now) for frame in frames)
                sent_upto = frames[-1].id
                sent_here += len(frames)
                # Counted before the send: a client that read the frames sees them counted.
                self.stats.frames_sent += len(frames)
                self._changed_stats()
                # Many frames per ASGI message: the per-send cost is paid once per batch.
                await send(_body(body))
                if close_every is not None and sent_here >= close_every:
                    self.stats.fault_closes += 1
                    if self.faults.close_mode == "clean":
                        await send(_END)  # the terminating chunk
                    else:
                        self._cut(scope)
                        await left.wait()  # uvicorn has seen the cut: no "incomplete" log
                    return
        finally:
            watcher.cancel()
            with channel.lock:
                channel.wakers.discard(waker)
            self.stats.streams_active -= 1
            self._changed_stats()

    async def _idle(self, waker: asyncio.Event, left: asyncio.Event, send: Send) -> None:
        """Wait for new frames; send a heartbeat after ``heartbeat_interval`` of silence."""
        if self.heartbeat_interval is None:
            await waker.wait()
            return
        try:
            await asyncio.wait_for(waker.wait(), self.heartbeat_interval)
        except asyncio.TimeoutError:
            if left.is_set():
                return
            self.stats.heartbeats_sent += 1
            self._changed_stats()
            await send(_HEARTBEAT)


_CLOSE = {"Connection": "close"}
_STREAM_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        (b"x-accel-buffering", b"no"),
    ],
}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


def _body(data: bytes) -> Message:
    """One chunk of the stream (the response goes on)."""
    return {"type": "http.response.body", "body": data, "more_body": True}


_HEARTBEAT = _body(b"event: heartbeat\ndata: {}\n\n")


class _EventStream(Response):
    """The event stream of one request: the server's stream loop as a Starlette response."""

    def __init__(self, server: EmulatorServer, channel: Channel, last_event_id: str | None):
        super().__init__(status_code=200)
        self._server = server
        self._channel = channel
        self._last_event_id = last_event_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._server._stream(self._channel, self._last_event_id, scope, receive, send)


class _Recording:
    """ASGI middleware keeping a :class:`RequestRecord` of every request, whatever answered it.

    Outside Starlette's router, so its 404 and 405 answers are recorded too.
    """

    def __init__(self, app: ASGIApp, server: EmulatorServer) -> None:
        self._app = app
        self._server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        last_event_id = headers.get("last-event-id")
        auth = self._server._check_auth(headers.get("authorization"))
        requests = self._server.requests

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                requests.append(RequestRecord(path, message["status"], last_event_id, auth))
            await send(message)

        await self._app(scope, receive, recorded)
