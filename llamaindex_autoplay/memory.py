"""``AutoplayMemoryBlock``: the session's live activity as a LlamaIndex ``Memory`` block.

``Memory`` asks each of its blocks for content on every ``get``/``aget`` and
renders it into the system message (or the latest user message), so an agent
or chat engine built on that ``Memory`` sees what the user is doing right now
without any other wiring::

    memory = Memory.from_defaults(
        session_id=session_id,                      # the autoplay session id
        memory_blocks=[AutoplayMemoryBlock(store=store, product_id=product_id)],
    )
    agent = FunctionAgent(tools=[...], llm=llm)
    await agent.run("What should I do next?", memory=memory)

The content is exactly what ``store.aget`` returns (``Summary: …`` and the
numbered ``Recent activity:``), read fresh on every call with the store's async
read. ``Memory`` wraps it in ``<live_context>`` tags (the block's ``name``).

Which session, first match wins per call: the enclosing ``with
autoplay_session(...)`` block, then the ``session_id`` that ``Memory`` passes
(its own ``session_id``; turn off with ``use_memory_session_id=False`` when the
chat store key is not the autoplay session id), then the ``session_id`` field.
``product_id`` falls back to the field, then to the store's resolution, which
raises :class:`~autoplay_base.errors.AmbiguousSessionError` when the session
exists under several products.

``strict=True`` raises :class:`~autoplay_base.errors.ConfigError` when no session is
named and :class:`~autoplay_base.errors.SessionLookupError` when the store does not
know it. ``copy.deepcopy`` shares the store; ``pickle`` raises ``TypeError`` (build a
new block with a store in the other process; ``model_dump()`` leaves the store out).

Chat messages are not activity: messages that ``Memory`` flushes from its
short-term queue are not accepted (``accept_short_term_memory=False``) and
``aput`` stores nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.memory import BaseMemoryBlock

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.formatting import view_text
from llamaindex_autoplay._fields import (
    LiveStoreComponent,
    ReadOverridesAlias,
    context_options_field,
    strict_errors,
)
from llamaindex_autoplay.session import current_session, resolve_session

__all__ = ["DEFAULT_BLOCK_NAME", "AutoplayMemoryBlock"]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_NAME = "live_context"
"""The block's default name (``Memory`` renders it as the ``<live_context>`` tag)."""


class AutoplayMemoryBlock(LiveStoreComponent, ReadOverridesAlias, BaseMemoryBlock[str]):
    """Supplies the session's live activity (``store.aget``) as memory content."""

    name: str = Field(default=DEFAULT_BLOCK_NAME, description="The name of the memory block.")
    description: str | None = Field(
        default="What the user is doing in the product right now (live UI activity).",
        description="A description of the memory block.",
    )
    accept_short_term_memory: bool = Field(
        default=False, description="Chat messages are not activity; flushed ones are ignored."
    )
    store: ContextStore | AsyncContextStore = Field(
        exclude=True, description="The context store to read (with its async read)."
    )
    session_id: str | None = Field(
        default=None, description="Session used when neither a scope nor Memory names one."
    )
    product_id: str | None = Field(
        default=None, description="Product used when the chosen session source has none."
    )
    use_memory_session_id: bool = Field(
        default=True, description="Read the session that Memory passes (its session_id)."
    )
    context_options: dict[str, Any] = context_options_field(
        "Store read options (lookback_seconds, max_actions, include_summary, ...); "
        "also accepted as read_overrides."
    )
    strict: bool = Field(
        default=False, description="Raise when no session is named or the store lacks it."
    )

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        scoped = current_session()
        from_memory = block_kwargs.get("session_id") if self.use_memory_session_id else None
        scope = resolve_session(
            (scoped.session_id, scoped.product_id) if scoped is not None else (None, None),
            (from_memory if isinstance(from_memory, str) else None, None),
            (self.session_id, self.product_id),
            default_product_id=self.product_id,
        )
        if scope is None:
            if self.strict:
                strict_errors(type(self).__name__, None, None, None)
            logger.debug("autoplay memory block %r: no session; no content", self.name)
            return ""
        view = await self.store.aview(scope.session_id, scope.product_id, **self.context_options)
        if self.strict:
            strict_errors(type(self).__name__, scope.session_id, scope.product_id, view)
        return view_text(view)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Nothing to store: the block's content comes from the live stream, not the chat."""
