"""``ContextStoreSink``: what the chatbot said and did, fed back into the live context.

Each ``turn`` becomes one activity line in the package's own
:class:`~autoplay_base.context_store.ContextStore` (or
:class:`~autoplay_base.context_store.AsyncContextStore`) under the same
``(product_id, session_id)``, so the next ``store.enrich(session_id, ...)``
shows what the assistant already told the user; a ``tool_call`` becomes a
short line too (``include_tools``). Only the store's public API is used: an
:class:`~autoplay_base.events.ActionsPayload` with one action whose
description is the line, written with the tracking ``event_id`` as the store's
event id, so a retried batch is stored once. The lines read::

    Assistant answered: <the first max_chars characters of the answer>…
    Assistant answered (<n> characters)           (record_content=False)
    Assistant used tool <name>
    Assistant used tool <name> (failed)

The store cleans them like every other activity (one line, capped). Other
event types carry no context and are skipped (counted as delivered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import BackendUnavailableError, ConfigError
from autoplay_base.events import ActionsPayload, SlimAction
from autoplay_base.formatting import (
    ASSISTANT_ANSWERED,
    ASSISTANT_USED_TOOL,
    assistant_turn_line,
    tool_call_line,
)
from autoplay_base.tracking import events as ev
from autoplay_base.tracking.events import TrackingEvent
from autoplay_base.tracking.policy import OK, BatchPolicy, Outcome, RetryPolicy
from autoplay_base.tracking.sinks.base import Encoded, Sink

__all__ = [
    "ANSWERED",
    "DEFAULT_CONTEXT_FLUSH_INTERVAL",
    "DEFAULT_CONTEXT_MAX_CHARS",
    "USED_TOOL",
    "ContextStoreSink",
    "context_line",
    "context_payload",
]

DEFAULT_CONTEXT_MAX_CHARS = 200
"""Characters of an answer kept in its context line."""
ANSWERED = ASSISTANT_ANSWERED
USED_TOOL = ASSISTANT_USED_TOOL
DEFAULT_CONTEXT_FLUSH_INTERVAL = 0.05
"""The store is local: lines reach it within this many seconds."""


def context_line(event: TrackingEvent, *, max_chars: int, include_tools: bool = True) -> str | None:
    """The activity line for ``event``, or ``None`` when it adds no context."""
    data = event.data
    if event.type == ev.TURN:
        answer = data.get("assistant")
        chars = data.get("assistant_chars")
        return assistant_turn_line(
            answer if isinstance(answer, str) else None,
            max_chars=max_chars,
            chars=chars if isinstance(chars, int) else None,
        )
    if event.type == ev.TOOL_CALL and include_tools:
        return tool_call_line(data.get("name"), failed=bool(data.get("error")))
    return None


def context_payload(
    event: TrackingEvent, *, max_chars: int, include_tools: bool = True
) -> ActionsPayload | None:
    """The payload to store for ``event`` (``None``: nothing to store)."""
    if not event.session_id:
        return None
    line = context_line(event, max_chars=max_chars, include_tools=include_tools)
    if line is None:
        return None
    return ActionsPayload(
        product_id=event.product_id,
        session_id=event.session_id,
        user_id=event.user_id,
        actions=(SlimAction(title=line, description=line, canonical_url=""),),
        forwarded_at=event.at,
        conversation_id=event.conversation_id,
        event_id=event.event_id,
    )


class ContextStoreSink(Sink):
    """Write the assistant's turns (and tool calls) into a context store.

    Args:
        store: a ``ContextStore`` (either tracker) or an ``AsyncContextStore``
            (``AsyncTracker`` only).
        max_chars: characters of an answer kept (>= 2).
        include_tools: write a line per tool call too.
        flush_interval: seconds before waiting lines are written.
        name: the sink's key in ``stats()``.
    """

    name = "context"

    def __init__(
        self,
        store: ContextStore | AsyncContextStore,
        *,
        max_chars: int = DEFAULT_CONTEXT_MAX_CHARS,
        include_tools: bool = True,
        flush_interval: float = DEFAULT_CONTEXT_FLUSH_INTERVAL,
        name: str = "context",
    ) -> None:
        if not max_chars >= 2:
            raise ConfigError(f"max_chars must be >= 2, got {max_chars!r}")
        if not isinstance(store, (ContextStore, AsyncContextStore)):
            raise ConfigError(
                f"store must be a ContextStore or an AsyncContextStore, not {type(store).__name__}"
            )
        self.store = store
        self.max_chars = max_chars
        self.include_tools = include_tools
        self.name = name
        self.sync_capable = isinstance(store, ContextStore)
        self.batching = BatchPolicy(flush_interval=flush_interval)
        self.retry = RetryPolicy()

    def __repr__(self) -> str:
        return f"ContextStoreSink({self.store!r})"

    def payloads(self, events: Sequence[Encoded]) -> list[ActionsPayload]:
        """The payloads to store for ``events``, in order."""
        made = (
            context_payload(event, max_chars=self.max_chars, include_tools=self.include_tools)
            for event, _ in events
        )
        return [payload for payload in made if payload is not None]

    def send(self, events: Sequence[Encoded]) -> Outcome:
        """Store the lines (``add_many``: one backend round trip)."""
        store = self.store
        assert isinstance(store, ContextStore)
        try:
            store.add_many(self.payloads(events))
        except BackendUnavailableError as exc:
            return Outcome(
                network_error=True, error=f"context store unavailable ({type(exc).__name__})"
            )
        return OK

    async def asend(self, events: Sequence[Encoded]) -> Outcome:
        """Store the lines with an ``AsyncContextStore`` (a sync store runs in a thread)."""
        store = self.store
        if isinstance(store, ContextStore):
            return await asyncio.to_thread(self.send, events)
        try:
            await store.add_many(self.payloads(events))
        except BackendUnavailableError as exc:
            return Outcome(
                network_error=True, error=f"context store unavailable ({type(exc).__name__})"
            )
        return OK
