"""Run events as Server-Sent Events frames (pure): our native JSON, and the Vercel AI SDK's.

* :func:`native_frame` / :func:`native_frames`: one frame per event, ``id:`` the
  event's cursor (absent on synthesized events), ``event:`` its type, ``data:``
  ``{"run_id", "seq", "type", "ts", "data"}``.
* :class:`VercelEncoder` / :func:`vercel_frames`: the AI SDK 5 UI message stream
  (send :data:`VERCEL_HEADERS` with it): ``start``, ``text-start``/``-delta``/``-end``,
  ``reasoning-start``/``-delta``/``-end``, ``tool-input-start``/``-delta``/``-available``,
  ``tool-output-available`` / ``tool-output-error``, ``start-step``/``finish-step``,
  ``data-<name>``, ``finish`` (``abort`` for a cancelled or interrupted run),
  ``error`` (``errorText``), then ``data: [DONE]``. The encoder keeps which text,
  reasoning and tool parts are open, so a resumed connection must feed it the
  events before the cursor first (``skip_through``: their frames are not sent).
  Several frames made from one event carry ids ``<cursor>.<k>`` before the last
  one's ``<cursor>`` (:func:`split_vercel_cursor`), so a connection cut between
  them resumes at the next frame: nothing repeated, nothing lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Final

from autoplay_base.agent_stream import _events as ev
from autoplay_base.agent_stream._events import RunEvent, dumps

__all__ = [
    "VERCEL_HEADERS",
    "VercelEncoder",
    "anative_frames",
    "avercel_frames",
    "comment",
    "frame",
    "native_frame",
    "native_frames",
    "split_vercel_cursor",
    "vercel_frames",
]

VERCEL_HEADERS: Final = {"x-vercel-ai-ui-message-stream": "v1"}
"""The response header the AI SDK's ``useChat`` checks for its UI message stream protocol."""
DONE: Final = b"data: [DONE]\n\n"
PRODUCER_LOST_TEXT: Final = "The answer stopped unexpectedly."
UNKNOWN_RUN_TEXT: Final = "This answer is not available."


def frame(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """One SSE frame; ``data`` must not hold a newline (JSON from :func:`dumps` never does)."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n".encode()


def comment(text: str = "") -> bytes:
    """An SSE comment (a heartbeat: keeps proxies from closing an idle connection)."""
    return f": {text}\n\n".encode()


def native_frame(event: RunEvent) -> bytes:
    """One event in our native JSON shape."""
    body = {"run_id": event.run_id, "seq": event.seq, "type": event.type, "ts": event.ts}
    body["data"] = event.data
    return frame(dumps(body), id=event.id, event=event.type)


def native_frames(events: Iterable[RunEvent]) -> Iterator[bytes]:
    """:func:`native_frame` of each event."""
    for event in events:
        yield native_frame(event)


async def anative_frames(events: AsyncIterable[RunEvent]) -> AsyncIterator[bytes]:
    """Async twin of :func:`native_frames`."""
    async for event in events:
        yield native_frame(event)


class VercelEncoder:
    """Run events to AI SDK 5 UI message stream chunks, one run at a time (see the module)."""

    def __init__(self) -> None:
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", part id)
        self._tools: set[str] = set()  # the calls the client was told of (tool-input-start)
        self._names: dict[str, str] = {}  # call id -> tool name, from tool_started
        self._step = False  # a start-step not yet finished

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        kind, part = self._open
        self._open = None
        return [{"type": f"{kind}-end", "id": part}]

    def _part(self, kind: str, seq: int) -> tuple[list[dict[str, Any]], str]:
        if self._open is not None and self._open[0] == kind:
            return [], self._open[1]
        chunks = self._close()
        part = f"{kind}-{seq}"
        self._open = (kind, part)
        return [*chunks, {"type": f"{kind}-start", "id": part}], part

    def _end_step(self) -> list[dict[str, Any]]:
        if not self._step:
            return []
        self._step = False
        return [{"type": "finish-step"}]

    def _ending(self, last: dict[str, Any]) -> list[dict[str, Any]]:
        """The open part and step closed, then the stream's last chunk."""
        return [*self._close(), *self._end_step(), last]

    def _announced(self, call_id: str) -> list[dict[str, Any]]:
        """A call's input parts if the client has not heard of the call yet.

        The AI SDK's reader refuses a tool result for a call it never saw (the whole
        response fails): a tool run with no model call before it, a call whose input
        events were trimmed, an invalid call from a model that did not stream.
        """
        if call_id in self._tools:
            return []
        self._tools.add(call_id)
        name = self._names.get(call_id, "")
        start = {"type": "tool-input-start", "toolCallId": call_id, "toolName": name}
        return [start, {**start, "type": "tool-input-available", "input": None}]

    def _tool(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = self._close()
        call_id = str(data.get("call_id", ""))
        if call_id not in self._tools:
            self._tools.add(call_id)
            chunks.append(
                {"type": "tool-input-start", "toolCallId": call_id, "toolName": data.get("name")}
            )
        return chunks

    def chunks(self, event: RunEvent) -> list[dict[str, Any]]:
        """The chunks for one event (possibly none: ``tool_started`` has no counterpart)."""
        t, data = event.type, event.data
        if t == ev.START:
            return [{"type": "start", "messageId": event.run_id}]
        if t in (ev.TEXT_DELTA, ev.REASONING_DELTA):
            kind = "text" if t == ev.TEXT_DELTA else "reasoning"
            chunks, part = self._part(kind, event.seq)
            return [*chunks, {"type": f"{kind}-delta", "id": part, "delta": data.get("text", "")}]
        if t == ev.TOOL_INPUT_DELTA:
            delta = {"type": "tool-input-delta", "toolCallId": data.get("call_id")}
            return [*self._tool(data), {**delta, "inputTextDelta": data.get("chunk", "")}]
        if t == ev.TOOL_INPUT:
            available = {"type": "tool-input-available", "toolCallId": data.get("call_id")}
            available.update(toolName=data.get("name"), input=data.get("input"))
            return [*self._tool(data), available]
        if t == ev.TOOL_STARTED:  # no chunk of its own: the name, for a late announcement
            self._names[str(data.get("call_id", ""))] = str(data.get("name") or "")
            return []
        if t in (ev.TOOL_OUTPUT, ev.TOOL_ERROR):
            call_id = str(data.get("call_id", ""))
            chunks = [*self._close(), *self._announced(call_id)]
            if t == ev.TOOL_OUTPUT:
                out = {"type": "tool-output-available", "toolCallId": call_id}
                return [*chunks, {**out, "output": data.get("output")}]
            err = {"type": "tool-output-error", "toolCallId": call_id}
            return [*chunks, {**err, "errorText": data.get("error", "")}]
        if t == ev.STEP_STARTED:  # an open step is finished first: they stay balanced
            chunks = [*self._close(), *self._end_step(), {"type": "start-step"}]
            self._step = True
            return chunks
        if t == ev.STEP_FINISHED:
            return [*self._close(), *self._end_step()]
        if t == ev.CUSTOM:
            return [{"type": f"data-{data.get('name')}", "data": data.get("data")}]
        if t == ev.FINISHED:
            return self._ending({"type": "finish" if data.get("status") == "success" else "abort"})
        if t == ev.ERROR:
            return self._ending({"type": "error", "errorText": data.get("message", "")})
        if t == ev.GAP:
            return [{"type": "data-gap", "data": data, "transient": True}]
        if t in (ev.PRODUCER_LOST, ev.UNKNOWN_RUN):
            text = PRODUCER_LOST_TEXT if t == ev.PRODUCER_LOST else UNKNOWN_RUN_TEXT
            return self._ending({"type": "error", "errorText": text})
        return []

    def frames(self, event: RunEvent) -> list[bytes]:
        """The SSE frames for one event (``[DONE]`` after the last event of the run).

        Every frame carries an ``id:``: the last one the event's cursor, the ones
        before it ``<cursor>.<k>`` (k frames of this event delivered), so a
        connection cut between two frames of one event resumes at the next frame.
        """
        chunks = self.chunks(event)
        last = len(chunks) - 1
        out = [
            frame(dumps(c), id=_part_id(event.id, i + 1) if i < last else event.id)
            for i, c in enumerate(chunks)
        ]
        return [*out, DONE] if event.terminal else out


def _part_id(cursor: str | None, delivered: int) -> str | None:
    return None if cursor is None else f"{cursor}.{delivered}"


def split_vercel_cursor(last_event_id: str | None) -> tuple[str | None, int]:
    """``(event cursor, frames of the next event already delivered)`` of a Vercel ``id:``.

    ``<cursor>`` means its event was delivered whole; ``<cursor>.<k>`` that ``k``
    frames of that event were (the cursor then names the event before it for
    :meth:`RunStream.listen`'s purposes, which the caller resolves with ``seq - 1``).
    """
    if last_event_id is None:
        return None, 0
    base, dot, part = last_event_id.partition(".")
    if dot and part.isdigit() and len(part) <= 3:
        return base, int(part)
    return last_event_id, 0


def _resumed(frames: list[bytes], event: RunEvent, skip_through: int, partial: int) -> bytes:
    if (
        event.id is None
        or event.seq > skip_through + 1
        or (event.seq == skip_through + 1 and not partial)
    ):
        return b"".join(frames)
    if event.seq == skip_through + 1:
        return b"".join(frames[partial:])
    return b""


def vercel_frames(
    events: Iterable[RunEvent], *, skip_through: int = 0, partial: int = 0
) -> Iterator[bytes]:
    """The UI message stream of a run's events, resumed: events up to ``seq ==
    skip_through`` only update the encoder, and the first ``partial`` frames of the
    event after them are not sent again."""
    encoder = VercelEncoder()
    for event in events:
        data = _resumed(encoder.frames(event), event, skip_through, partial)
        if data:
            yield data


async def avercel_frames(
    events: AsyncIterable[RunEvent], *, skip_through: int = 0, partial: int = 0
) -> AsyncIterator[bytes]:
    """Async twin of :func:`vercel_frames`."""
    encoder = VercelEncoder()
    async for event in events:
        data = _resumed(encoder.frames(event), event, skip_through, partial)
        if data:
            yield data
