"""``event_source_response``: serve one run as Server-Sent Events from a Starlette/FastAPI route.

::

    @app.get("/runs/{run_id}")
    async def run_events(request: Request, run_id: str) -> Response:
        session_id, product_id = authorize(request)          # your scope check
        return event_source_response(
            stream, run_id, session_id=session_id, product_id=product_id,
            request=request, encoder="vercel",
        )

It reads ``Last-Event-ID`` (a browser's ``EventSource`` and ``httpx-sse`` resend it
on reconnect) and resumes strictly after it, sends a heartbeat comment every
``heartbeat`` seconds, and ends the response after the terminal event (or the
synthesized one saying why). When there is nothing to send, the answer is ``204 No
Content`` instead of an empty stream: a reconnect after the run's end (a browser's
``EventSource`` reconnects whenever a response ends, and stops on a 204), and, with
the Vercel encoder, an unknown or expired run (what the AI SDK's ``useChat``
resume reads as "no stream to resume"). Needs the ``sse`` extra (``sse-starlette``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from autoplay_base.errors import ConfigError, missing_extra

try:
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import iterate_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # the optional ``sse`` extra
    raise missing_extra("sse-starlette", "sse") from exc

from autoplay_base.agent_stream._events import UNKNOWN_RUN, RunEvent
from autoplay_base.agent_stream.sse import (
    VERCEL_HEADERS,
    anative_frames,
    avercel_frames,
    split_vercel_cursor,
)
from autoplay_base.agent_stream.stream import AsyncRunStream, RunStream

__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "PEEK_SECONDS",
    "RunEventsResponse",
    "event_source_response",
]

DEFAULT_HEARTBEAT_SECONDS = 15.0
"""Seconds between heartbeat comments on an idle connection."""
MAX_LAST_EVENT_ID = 128
"""A longer ``Last-Event-ID`` header is ignored (hostile input; ours are 40-odd characters)."""
PEEK_SECONDS = 0.5
"""How long a response waits for its first frame before it starts the stream: a run
with nothing to send tells so at once (its events are stored), a live one may be idle."""


class RunEventsResponse(EventSourceResponse):
    """The run's frames as Server-Sent Events, or ``204 No Content`` when there are none.

    The first frame is awaited (up to :data:`PEEK_SECONDS`) before anything is sent:
    frames that end without one make a 204; otherwise, or when none came in time
    (a live run between events), the stream starts with heartbeats as usual.
    """

    def __init__(self, frames: AsyncIterator[bytes], *, headers: dict[str, str], ping: float):
        self._frames = frames
        self._first: asyncio.Future[bytes | None] | None = None
        super().__init__(self._body(), headers=headers, ping=ping)

    async def _body(self) -> AsyncIterator[bytes]:
        assert self._first is not None  # set by __call__ before the stream starts
        first = await self._first
        if first is None:
            return
        yield first
        async for frame in self._frames:
            yield frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream, or a 204 when the frames ended before the first one."""
        first = self._first = asyncio.ensure_future(anext(self._frames, None))
        await asyncio.wait({first}, timeout=PEEK_SECONDS)
        # A failed first read is raised by the stream, as any later one would be.
        ended = first.done() and not first.cancelled() and first.exception() is None
        if ended and first.result() is None:
            empty = Response(status_code=204, headers={"cache-control": "no-cache"})
            await empty(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _known(events: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
    """The events of a run that exists: an unknown one has none (the Vercel encoder's 204)."""
    async for event in events:
        if event.type == UNKNOWN_RUN:
            return
        yield event


def _events(
    stream: RunStream | AsyncRunStream,
    run_id: str,
    session_id: str,
    product_id: str,
    after: str | None,
) -> AsyncIterator[RunEvent]:
    if isinstance(stream, AsyncRunStream):
        return stream.listen(run_id, session_id=session_id, product_id=product_id, after=after)
    sync = stream.listen(run_id, session_id=session_id, product_id=product_id, after=after)
    return iterate_in_threadpool(sync)


def event_source_response(
    stream: RunStream | AsyncRunStream,
    run_id: str,
    *,
    session_id: str,
    product_id: str,
    request: Request,
    encoder: Literal["native", "vercel"] = "native",
    heartbeat: float = DEFAULT_HEARTBEAT_SECONDS,
) -> RunEventsResponse:
    """An ``sse_starlette.EventSourceResponse`` streaming the run (see the module docstring)."""
    if encoder not in ("native", "vercel"):
        raise ConfigError(f"encoder must be 'native' or 'vercel', got {encoder!r}")
    last = request.headers.get("last-event-id") or None
    if last is not None and len(last) > MAX_LAST_EVENT_ID:
        last = None
    if encoder == "native":
        body = anative_frames(_events(stream, run_id, session_id, product_id, last))
        headers: dict[str, str] = {}
    else:
        # The encoder needs the events before the cursor to know which parts are open.
        cursor, partial = split_vercel_cursor(last)
        seq = stream.cursor_seq(run_id, cursor)
        skip, partial = (seq - 1, partial) if partial and seq else (seq, 0)
        events = _known(_events(stream, run_id, session_id, product_id, None))
        body = avercel_frames(events, skip_through=skip, partial=partial)
        headers = dict(VERCEL_HEADERS)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"  # nginx: do not buffer the stream
    return RunEventsResponse(body, headers=headers, ping=heartbeat)
