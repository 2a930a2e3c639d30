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
synthesized one saying why). Needs the ``sse`` extra (``sse-starlette``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from autoplay_base.errors import ConfigError, missing_extra

try:
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import iterate_in_threadpool
    from starlette.requests import Request
except ImportError as exc:  # the optional ``sse`` extra
    raise missing_extra("sse-starlette", "sse") from exc

from autoplay_base.agent_stream._events import RunEvent
from autoplay_base.agent_stream.sse import (
    VERCEL_HEADERS,
    anative_frames,
    avercel_frames,
    split_vercel_cursor,
)
from autoplay_base.agent_stream.stream import AsyncRunStream, RunStream

__all__ = ["DEFAULT_HEARTBEAT_SECONDS", "event_source_response"]

DEFAULT_HEARTBEAT_SECONDS = 15.0
"""Seconds between heartbeat comments on an idle connection."""
MAX_LAST_EVENT_ID = 128
"""A longer ``Last-Event-ID`` header is ignored (hostile input; ours are 40-odd characters)."""


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
) -> EventSourceResponse:
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
        events = _events(stream, run_id, session_id, product_id, None)
        body = avercel_frames(events, skip_through=skip, partial=partial)
        headers = dict(VERCEL_HEADERS)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"  # nginx: do not buffer the stream
    return EventSourceResponse(body, headers=headers, ping=heartbeat)
