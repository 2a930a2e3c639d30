"""``AutoplayChatMessageHistory``: chat histories stored next to the live context.

Messages go through the context store's backend (``append_messages`` /
``get_messages`` / ``clear_messages``), keyed by ``(product_id, session_id)``:
the in-memory backend keeps them in this process, the Redis backend shares them
between processes and keeps them across restarts. Length and lifetime are the
backend's bounds (``max_messages`` and the sliding ``history_ttl_seconds`` of
:class:`~autoplay_base.backends.memory.InMemoryBackend`; the oldest messages
fall off first).

Live context (the "inbound watermark" of ``autoplay-sdk``): with ``live_context``
set, reading the messages adds one block holding what the user did since their
previous human message::

    [Session context]
    Recent activity:
    1. Opened billing settings — /settings/billing

It is computed on every read and never stored, so it is always fresh and the
stored history stays the plain conversation. With no activity since the previous
human message nothing is added; on the first turn the whole current context is
shown. Where the block goes (``live_context=``):

* ``"human_message"`` (also ``live_context=True``, the recommended placement): one
  :class:`~langchain_core.messages.HumanMessage` after the history, right before the
  new human message ``RunnableWithMessageHistory`` (or your graph node) appends, so
  it joins the user's new turn (Anthropic merges consecutive human messages into
  one user turn; OpenAI and Mistral accept them as they are). Chosen as the default
  placement for prompt caching: the system prompt and every earlier turn stay
  byte-identical from one turn to the next, so a provider's cached prefix (OpenAI's
  automatic caching, Anthropic's ``cache_control`` breakpoints) keeps hitting.
* ``"system_prompt"``: merged into the one leading system message of the history
  (a new system message first when the history has none, which comes right after a
  prompt template's own system message: consecutive system messages, accepted by
  every provider). The system prompt changes on every turn, so nothing after the
  prompt template's own system text is served from a provider's cache.
* ``"system_message"``: the 0.x behaviour, kept unchanged: a
  :class:`~langchain_core.messages.SystemMessage` *after* the history. OpenAI and
  Mistral accept it, but ``langchain-anthropic`` rejects it from the second turn on
  ("multiple non-consecutive system messages"); use ``"human_message"`` instead.

Each stored entry is JSON ``{"at": <time.time()>, "message": message_to_dict(m)}``:
the time rides next to the message rather than in ``additional_kwargs``, so the
messages you get back are exactly those you stored and nothing extra reaches a
model provider. A human message's ``at`` is the moment this history object last
read the messages (when its turn's context was computed) if it did, otherwise
the moment it was added; so activity that happens while the model is answering
is shown on the next turn instead of falling between two watermarks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    messages_from_dict,
)

from autoplay_base._store_ref import SharesStore
from autoplay_base.agent_stream._events import to_json_value
from autoplay_base.backends.base import SessionKey
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.formatting import format_context_block
from langchain_autoplay._messages import merge_into_leading_system

__all__ = ["AutoplayChatMessageHistory", "LiveContextMode"]

logger = logging.getLogger(__name__)

LiveContextMode = Literal["human_message", "system_prompt", "system_message"]
"""Where live context enters the conversation (see the module docstring; ``None`` turns
it off)."""

DEFAULT_LIVE_CONTEXT: LiveContextMode = "human_message"
"""The placement ``live_context=True`` selects: the one that keeps provider prompt caches
hitting and that every provider's message formatting accepts."""

DECODE_ERRORS_COUNTER = "chat_history_entries_undecodable"
"""The counter of stored entries that could not be read: ``store.stats()[DECODE_ERRORS_COUNTER]``
(counted by the store, ``StoreCounters.chat_history_entries_undecodable``; until 0.x it
was kept in ``store.backend.stats.extra``)."""

_LIVE_CONTEXT_MODES: tuple[LiveContextMode, ...] = (
    "human_message",
    "system_prompt",
    "system_message",
)


def _encode(messages: Sequence[BaseMessage], now: float, human_at: float | None) -> list[str]:
    return [
        json.dumps(
            {
                "at": human_at if human_at is not None and isinstance(m, HumanMessage) else now,
                "message": message_to_dict(m),
            },
            separators=(",", ":"),
            # A tool's artifact, a parsed output or metadata may hold datetimes, bytes,
            # models: stored in their JSON form rather than failing the whole turn.
            default=to_json_value,
        )
        for m in messages
    ]


class AutoplayChatMessageHistory(SharesStore, BaseChatMessageHistory):
    """The chat history of one ``(product_id, session_id)``, in the context store's backend.

    Args:
        store: the :class:`~autoplay_base.context_store.ContextStore` or
            :class:`~autoplay_base.context_store.AsyncContextStore` whose backend
            holds the history and whose context feeds ``live_context``.
        session_id: the user's session.
        product_id: the product the session belongs to (part of the key).
        live_context: where to add the user's activity since their previous human
            message on every read: ``"human_message"`` (or ``True``, recommended),
            ``"system_prompt"`` or ``"system_message"`` (0.x behaviour, not for
            Anthropic); ``None`` (default) or ``False`` for a plain history.
        context_options: store read overrides for the live context
            (``lookback_seconds``, ``max_actions``, ``include_summary``, …).
        clock: the local clock; must be the store's clock (``time.time``) since
            the watermark is compared with the store's arrival times.

    Use one instance per conversation turn or per session (as
    ``RunnableWithMessageHistory``'s factory does); never share one between users.
    ``copy.deepcopy`` copies it and shares the store; ``pickle`` raises ``TypeError``
    (build a new history with a store in the other process; the messages themselves
    are in the backend).

    ``BaseChatMessageHistory`` and ``RunnableWithMessageHistory`` are deprecated in
    langchain-core 1.x; for new LangGraph agents use ``create_agent`` with a
    checkpointer and :class:`~langchain_autoplay.middleware.AutoplayContextMiddleware`.
    """

    def __init__(
        self,
        store: ContextStore | AsyncContextStore,
        session_id: str,
        *,
        product_id: str,
        live_context: LiveContextMode | bool | None = None,
        context_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not session_id:
            raise ConfigError("session_id must be a non-empty string")
        if live_context is True:
            live_context = DEFAULT_LIVE_CONTEXT
        elif live_context is False:
            live_context = None
        if live_context is not None and live_context not in _LIVE_CONTEXT_MODES:
            raise ConfigError(
                f"live_context must be one of {', '.join(_LIVE_CONTEXT_MODES)} or None, "
                f"got {live_context!r}"
            )
        self.store = store
        self.session_id = session_id
        self.product_id = product_id
        self.key = SessionKey(product_id, session_id)
        self.live_context: LiveContextMode | None = live_context
        self.context_options = dict(context_options or {})
        self._clock = clock
        # When this object last computed the live context: the watermark of the
        # human message its turn adds next (see the module docstring).
        self._read_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"AutoplayChatMessageHistory(product_id={self.product_id!r}, "
            f"session_id={self.session_id!r}, live_context={self.live_context!r})"
        )

    # -- pure steps ---------------------------------------------------------------------
    def _decode(self, raw: list[str]) -> tuple[list[BaseMessage], float | None]:
        """The stored messages and the ``at`` of the last human one."""
        messages: list[BaseMessage] = []
        last_human_at: float | None = None
        for index, entry in enumerate(raw):
            try:
                data = json.loads(entry)
                at = float(data["at"])
                (message,) = messages_from_dict([data["message"]])
            except (ValueError, TypeError, KeyError) as exc:
                self.store.count_undecodable_history_entry()
                logger.warning(
                    "chat history: skipped undecodable entry %d of product_id=%r "
                    "session_id=%r (%s)",
                    index,
                    self.product_id,
                    self.session_id,
                    type(exc).__name__,
                )
                continue
            messages.append(message)
            if isinstance(message, HumanMessage):
                last_human_at = at
        return messages, last_human_at

    def _since(self, last_human_at: float | None) -> dict[str, Any]:
        if last_human_at is None:
            return self.context_options
        return {**self.context_options, "since": last_human_at}

    def _with_context(self, messages: list[BaseMessage], context: str) -> list[BaseMessage]:
        block = format_context_block(context)
        if not block:
            return messages
        if self.live_context == "system_prompt":
            return merge_into_leading_system(messages, block)
        if self.live_context == "human_message":
            return [*messages, HumanMessage(content=block)]
        return [*messages, SystemMessage(content=block)]

    def _entries(self, messages: Sequence[BaseMessage]) -> list[str]:
        entries = _encode(messages, self._clock(), self._read_at)
        if any(isinstance(m, HumanMessage) for m in messages):
            self._read_at = None
        return entries

    # -- BaseChatMessageHistory -----------------------------------------------------------
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The stored messages, oldest first, plus the live context message if enabled."""
        messages, last_human_at = self._decode(self.store.backend.get_messages(self.key))
        if self.live_context is None:
            return messages
        self._read_at = self._clock()
        context = self.store.get(self.session_id, self.product_id, **self._since(last_human_at))
        return self._with_context(messages, context)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of :attr:`messages`."""
        messages, last_human_at = self._decode(await self.store.backend.aget_messages(self.key))
        if self.live_context is None:
            return messages
        self._read_at = self._clock()
        context = await self.store.aget(
            self.session_id, self.product_id, **self._since(last_human_at)
        )
        return self._with_context(messages, context)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (the backend drops the oldest past its ``max_messages``)."""
        self.store.backend.append_messages(self.key, self._entries(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of :meth:`add_messages`."""
        await self.store.backend.aappend_messages(self.key, self._entries(messages))

    def clear(self) -> None:
        """Delete this session's history (its live context stays in the store)."""
        self.store.backend.clear_messages(self.key)

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self.store.backend.aclear_messages(self.key)
