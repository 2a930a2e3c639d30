"""A real ingest receiver for tracking batches: ``POST /v1/batch`` over loopback HTTP/1.1.

The counterpart of :class:`~autoplay_base.tracking.HttpBatchSink` for tests,
demos and notebooks, on the emulator's own dependency-free stack
(``asyncio.start_server`` and :mod:`autoplay_base.emulator._http`). It accepts
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoplay_base.emulator._http import REASONS, parse_head
from autoplay_base.emulator._serving import LoopbackServer
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
_STATUS_TEXT = {**REASONS, 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large"}


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
    ) -> None:
        if not path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {path!r}")
        if max_body_bytes is not None and not max_body_bytes >= 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {max_body_bytes!r}")
        super().__init__(host, port)
        self.path = path
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

    # -- HTTP --------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

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

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if head is None:
            await _answer(writer, 400, "bad request line")
            return
        headers = head.headers
        length_text = headers.get("content-length", "")
        length = int(length_text) if length_text.isascii() and length_text.isdigit() else -1
        auth = self._authorization(headers.get("authorization"))

        def request(status: int | None, size: int = 0) -> IngestRequest:
            return IngestRequest(
                head.method,
                head.path,
                status,
                time.monotonic(),
                size,
                headers.get("idempotency-key"),
                auth,
            )

        if head.method != "POST" or head.path != self.path:
            status = 404 if head.path != self.path else 405
            self._record(request(status))
            await _answer(writer, status, "not found" if status == 404 else "method not allowed")
            return
        if length < 0:
            self._record(request(411))
            await _answer(writer, 411, "content-length required")
            return
        if length > MAX_INGEST_BODY:
            self._record(request(413, length))
            await _answer(writer, 413, "body too large")
            return
        body = await reader.readexactly(length)
        arrived = request(None, length)
        with self._lock:
            faults = self._faults
            if faults.drop_next > 0:
                faults.drop_next -= 1
                drop = True
            else:
                drop = False
            fail = None
            if not drop and faults.fail_next > 0:
                faults.fail_next -= 1
                fail = (faults.fail_status, faults.retry_after)
            hanging = self._hanging
        if drop:
            self._record(arrived)
            writer.transport.abort()
            return
        if hanging and self._released is not None:
            self._record(arrived)
            await self._released.wait()
            await _answer(writer, 503, "released")
            return
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # a slow server, by request
        status, answer, extra, batch = self._decide(arrived, headers, body, auth, fail)
        self._record(_with_status(arrived, status), batch)
        await _answer(writer, status, answer, extra)

    def _decide(
        self,
        arrived: IngestRequest,
        headers: dict[str, str],
        body: bytes,
        auth: Authorization,
        fail: tuple[int, str | None] | None,
    ) -> tuple[int, str, dict[str, str], IngestBatch | None]:
        if self._token is not None and auth != "valid":
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
            events = parsed["events"]
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise TypeError("events must be a list of objects")
        except (ValueError, TypeError, KeyError):
            return 400, 'body must be {"events": [objects]}', {}, None
        kept = {name: value for name, value in headers.items() if name != "authorization"}
        return 200, "ok", {}, IngestBatch(arrived.at, kept, body, events)


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


async def _answer(
    writer: asyncio.StreamWriter, status: int, body: str, headers: dict[str, str] | None = None
) -> None:
    # Like _http.respond, plus extra headers (Retry-After).
    payload = body.encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
        f"{extra}Connection: close\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
