"""A real ingest receiver for tracking batches: ``POST /v1/batch`` over loopback HTTP/1.1.

The counterpart of :class:`~autoplay_base.tracking.HttpBatchSink` for tests,
demos and notebooks, on the emulator's stack (a Starlette app under uvicorn,
:mod:`autoplay_base.emulator._serving`). It accepts
``{"events": [...]}`` bodies, records every request and every accepted batch
(headers without ``Authorization``, body, events, arrival time), dedupes
events by ``event_id`` for assertions, and injects faults on command:

* :meth:`IngestReceiver.fail_next` — the next N requests get a status
  (503, 500, 429, ...), optionally with a ``Retry-After`` header;
* :meth:`IngestReceiver.hang` / :meth:`IngestReceiver.release` — requests get
  no answer until released (or until the receiver closes);
* :attr:`IngestReceiver.latency` — seconds before each answer;
* :meth:`IngestReceiver.drop_next` — the next N connections are cut without an answer;
* ``max_body_bytes`` — 413 for a larger body.

An optional bearer token gives 401 to requests without it (the token itself
is never recorded). Use it from sync code (a background thread)::

    with IngestReceiver() as receiver:
        sink = HttpBatchSink(receiver.url)
        ...
        assert receiver.wait_for_events(3)

or in a running loop with ``async with IngestReceiver() as receiver``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from autoplay_base.emulator._serving import LoopbackServer, wait_disconnect
from autoplay_base.emulator._types import Authorization
from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_INGEST_PATH",
    "MAX_INGEST_BODY",
    "IngestBatch",
    "IngestReceiver",
    "IngestRequest",
]

logger = logging.getLogger(__name__)

DEFAULT_INGEST_PATH = "/v1/batch"
"""Where batches are accepted."""
MAX_INGEST_BODY = 16 * 1024 * 1024
"""Largest body the receiver reads at all (beyond: 413, whatever ``max_body_bytes`` says)."""
_MAX_RECORDS = 100_000


@dataclass(frozen=True)
class IngestRequest:
    """One request the receiver read: what it was answered, and when it arrived.

    ``at`` is ``time.monotonic()`` once the body was read; ``status`` is
    ``None`` for a request that got no answer (cut or hung until close).
    """

    method: str
    path: str
    status: int | None
    at: float
    body_bytes: int
    idempotency_key: str | None
    authorization: Authorization


@dataclass(frozen=True)
class IngestBatch:
    """One accepted batch: its headers (no ``Authorization``), body and events."""

    at: float
    headers: dict[str, str]
    body: bytes
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Faults:
    fail_next: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    drop_next: int = 0


class IngestReceiver(LoopbackServer):
    """The ingest receiver (see the module docstring).

    Args:
        host: interface to bind (loopback by default).
        port: TCP port; ``0`` picks a free one.
        path: the path batches are POSTed to.
        token: when set, requests need ``Authorization: Bearer <token>`` (else 401).
        max_body_bytes: a larger body is answered 413 (``None``: up to :data:`MAX_INGEST_BODY`).
        latency: seconds before each answer.
        single_event_path: also accept one event object per POST on this path (a batch of
            one, numbered with a fresh ``event_id`` when it has none), with the same
            token, faults and recording (how ``mlsdk-python`` posts).
    """

    kind = "receiver"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_INGEST_PATH,
        token: str | None = None,
        max_body_bytes: int | None = None,
        latency: float = 0.0,
        single_event_path: str | None = None,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {path!r}")
        if single_event_path is not None and (
            not single_event_path.startswith("/") or single_event_path == path
        ):
            raise ConfigError(
                f"single_event_path must start with '/' and differ from path, "
                f"got {single_event_path!r}"
            )
        if max_body_bytes is not None and not max_body_bytes >= 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {max_body_bytes!r}")
        super().__init__(host, port)
        self.path = path
        self.single_event_path = single_event_path
        self.max_body_bytes = max_body_bytes
        self.latency = latency
        self._token = token
        self._faults = _Faults()
        # Reentrant: wait_for's predicate reads the records under the same lock.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.requests: list[IngestRequest] = []
        self.batches: list[IngestBatch] = []
        self._released: asyncio.Event | None = None
        self._hanging = False

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "not started"
        return f"IngestReceiver({where}, path={self.path!r})"

    # -- addresses ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The batch URL: ``http://host:port/v1/batch``."""
        return f"http://{self.host}:{self.port}{self.path}"

    # -- what arrived ------------------------------------------------------------------
    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted batch, in arrival order (duplicates included)."""
        with self._lock:
            return [event for batch in self.batches for event in batch.events]

    def unique_events(self) -> list[dict[str, Any]]:
        """:attr:`events` without repeats of an ``event_id`` (first arrival kept)."""
        seen: set[Any] = set()
        unique = []
        for event in self.events:
            key = event.get("event_id")
            if key not in seen:
                seen.add(key)
                unique.append(event)
        return unique

    def wait_for(self, predicate: Callable[[IngestReceiver], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(receiver)`` holds (``False`` on timeout); not on its loop."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def wait_for_events(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` distinct events arrived (``False`` on timeout)."""
        return self.wait_for(lambda r: len(r.unique_events()) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests were read (answered or not)."""
        return self.wait_for(lambda r: len(r.requests) >= count, timeout)

    async def await_for(
        self, predicate: Callable[[IngestReceiver], bool], timeout: float = 5.0
    ) -> bool:
        """:meth:`wait_for` from async code (waits in a thread, never blocks the loop)."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    # -- faults ------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503, *, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After``, if given)."""
        with self._lock:
            self._faults.fail_next = count
            self._faults.fail_status = status
            self._faults.retry_after = retry_after

    def drop_next(self, count: int) -> None:
        """Cut the next ``count`` connections after reading the request, without answering."""
        with self._lock:
            self._faults.drop_next = count

    def hang(self) -> None:
        """Leave every request from now on unanswered until :meth:`release`."""
        with self._lock:
            self._hanging = True
        self._call(self._clear_released)

    def release(self) -> None:
        """Answer the hung requests (and stop hanging new ones)."""
        with self._lock:
            self._hanging = False
        self._call(self._set_released)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn)

    def _clear_released(self) -> None:
        if self._released is not None:
            self._released.clear()

    def _set_released(self) -> None:
        if self._released is not None:
            self._released.set()

    # -- lifecycle ---------------------------------------------------------------------
    def _starting(self) -> None:
        self._released = asyncio.Event()
        self._released.set()

    def _closing(self) -> None:
        # Hung requests are answered (on connections about to be cut) so none outlives us.
        self._set_released()

    # -- HTTP --------------------------------------------------------------------------
    def _app(self) -> Starlette:
        every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        routes = [Route(self.path, self._batch, methods=["POST"])]
        if self.single_event_path is not None:
            routes.append(Route(self.single_event_path, self._batch, methods=["POST"]))
        routes += [
            # Everything else, answered and recorded here rather than by the router.
            Route("/{rest:path}", self._elsewhere, methods=every),
        ]
        return Starlette(routes=routes)

    def _authorization(self, header: str | None) -> Authorization:
        if header is None:
            return "none"
        return (
            "valid" if self._token is not None and header == f"Bearer {self._token}" else "invalid"
        )

    def _record(self, request: IngestRequest, batch: IngestBatch | None = None) -> None:
        with self._changed:
            if len(self.requests) < _MAX_RECORDS:
                self.requests.append(request)
            if batch is not None and len(self.batches) < _MAX_RECORDS:
                self.batches.append(batch)
            self._changed.notify_all()

    def _arrived(self, request: Request, status: int | None, size: int = 0) -> IngestRequest:
        headers = request.headers
        return IngestRequest(
            request.method,
            request.url.path,
            status,
            time.monotonic(),
            size,
            headers.get("idempotency-key"),
            self._authorization(headers.get("authorization")),
        )

    async def _elsewhere(self, request: Request) -> Response:
        status = 405 if request.url.path in (self.path, self.single_event_path) else 404
        self._record(self._arrived(request, status))
        return _answer(status, "not found" if status == 404 else "method not allowed")

    async def _batch(self, request: Request) -> Response:
        length_text = request.headers.get("content-length", "")
        length = int(length_text) if length_text.isascii() and length_text.isdigit() else -1
        if length < 0:
            self._record(self._arrived(request, 411))
            return _answer(411, "content-length required")
        if length > MAX_INGEST_BODY:
            self._record(self._arrived(request, 413, length))
            return _answer(413, "body too large")
        body = await request.body()
        arrived = self._arrived(request, None, length)
        with self._lock:
            faults = self._faults
            drop = faults.drop_next > 0
            if drop:
                faults.drop_next -= 1
            fail = None
            if not drop and faults.fail_next > 0:
                faults.fail_next -= 1
                fail = (faults.fail_status, faults.retry_after)
            hanging = self._hanging
        if drop:
            self._record(arrived)
            return _Cut(self)
        if hanging and self._released is not None:
            self._record(arrived)
            await self._released.wait()
            return _answer(503, "released")
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # a slow server, by request
        headers = dict(request.headers.items())
        single = request.url.path == self.single_event_path
        status, answer, extra, batch = self._decide(arrived, headers, body, fail, single=single)
        self._record(_with_status(arrived, status), batch)
        return _answer(status, answer, extra)

    def _decide(
        self,
        arrived: IngestRequest,
        headers: dict[str, str],
        body: bytes,
        fail: tuple[int, str | None] | None,
        *,
        single: bool = False,
    ) -> tuple[int, str, dict[str, str], IngestBatch | None]:
        if self._token is not None and arrived.authorization != "valid":
            return 401, "unauthorized", {}, None
        if fail is not None:
            status, retry_after = fail
            return (
                status,
                "injected fault",
                {"Retry-After": retry_after} if retry_after else {},
                None,
            )
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            return 413, "body too large", {}, None
        try:
            parsed = json.loads(body)
            events = [_numbered(parsed)] if single else parsed["events"]
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise TypeError("events must be a list of objects")
        except (ValueError, TypeError, KeyError):
            expected = "one JSON object" if single else '{"events": [objects]}'
            return 400, f"body must be {expected}", {}, None
        kept = {name: value for name, value in headers.items() if name != "authorization"}
        return 200, "ok", {}, IngestBatch(arrived.at, kept, body, events)


def _numbered(event: Any) -> dict[str, Any]:
    """One event posted on its own, with an ``event_id`` (a fresh one when it has none).

    Clients that post one object per request (mlsdk-python's queue endpoint) send
    no id; numbering each accepted request keeps :meth:`IngestReceiver.unique_events`
    counting what arrived.
    """
    if not isinstance(event, dict) or "events" in event:
        raise TypeError("a single event must be one object")
    return event if event.get("event_id") else {**event, "event_id": uuid.uuid4().hex}


def _with_status(request: IngestRequest, status: int) -> IngestRequest:
    return IngestRequest(
        request.method,
        request.path,
        status,
        request.at,
        request.body_bytes,
        request.idempotency_key,
        request.authorization,
    )


def _answer(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    # Connection: close, as the receiver always answered: one request per connection.
    return PlainTextResponse(body, status, {**(headers or {}), "Connection": "close"})


class _Cut(Response):
    """No answer at all: the request's connection is aborted (a dropped request)."""

    def __init__(self, receiver: IngestReceiver) -> None:
        super().__init__(status_code=200)
        self._receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receiver._cut(scope)
        await wait_disconnect(receive)  # uvicorn has seen the cut: no "no response" log
