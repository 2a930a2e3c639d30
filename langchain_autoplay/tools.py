"""The ``get_session_activity`` tool: an agent looks up what the user is doing, on demand.

::

    tool = create_session_activity_tool(store)
    agent = create_agent(model, tools=[tool], context_schema=SupportContext)

The model chooses only how much to read (``max_actions``, ``lookback_seconds``);
the session always comes from the run (the agent's runtime context
``session_id``/``product_id``, else ``config["configurable"]``), never from the
model, so a prompt cannot make the tool read another user's activity. The result
is the context inside its ``[Session context]`` block, or a sentence saying there
is none.

``session_key``/``product_key`` rename where the ids are read (runtime context and
``config["configurable"]``); a call naming no session but carrying a lookalike key
(``sessionId``) is logged once per key name. ``strict=True`` raises
:class:`~autoplay_base.errors.ConfigError` (no session named) or
:class:`~autoplay_base.errors.SessionLookupError` (session unknown to the store)
instead of answering with a sentence. ``copy.deepcopy`` shares the store; ``pickle``
raises ``TypeError`` (rebuild the tool with a store in the other process).
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field
from typing_extensions import override

from autoplay_base._store_ref import SharesStore
from autoplay_base.backends.base import SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.formatting import NO_ACTIVITY, NO_SESSION, format_activity_answer, view_text
from langchain_autoplay._scope import (
    CallScope,
    ScopeKeys,
    call_scope,
    require_found,
    require_session,
    runtime_context,
)

__all__ = [
    "NO_ACTIVITY",
    "NO_SESSION",
    "SessionActivityInput",
    "SessionActivityTool",
    "create_session_activity_tool",
]

logger = logging.getLogger(__name__)

TOOL_NAME = "get_session_activity"
MAX_TOOL_ACTIONS = 100
"""Upper bound a model may ask for in one call."""


class SessionActivityInput(BaseModel):
    """What the model may choose: how much of the user's recent activity to read."""

    max_actions: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOOL_ACTIONS,
        description="Only the most recent N actions (default: all kept for the session).",
    )
    lookback_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Only actions from the last N seconds (default: no time limit).",
    )


class SessionActivityTool(SharesStore, BaseTool):
    """Reads the current user's live session context from a store (see the module docstring)."""

    name: str = TOOL_NAME
    description: str = (
        "Look up what the current user has recently done in the product: a summary of "
        "their session and their latest UI actions (pages visited, buttons clicked). "
        "Use it when the user's question depends on where they are or what they just did."
    )
    args_schema: type[BaseModel] = SessionActivityInput
    store: ContextStore | AsyncContextStore
    context_options: dict[str, Any] = Field(default_factory=dict)
    """Store read overrides applied before the model's own choices."""
    session_key: str = "session_id"
    """Where the session id is read (runtime context, then ``config["configurable"]``)."""
    product_key: str = "product_id"
    """Where the product id is read, from the same source as the session."""
    strict: bool = False
    """Raise instead of answering when the call names no session or the store lacks it."""

    def _options(self, max_actions: int | None, lookback_seconds: float | None) -> dict[str, Any]:
        options = dict(self.context_options)
        if max_actions is not None:
            options["max_actions"] = max_actions
        if lookback_seconds is not None:
            options["lookback_seconds"] = lookback_seconds
        return options

    def _scope(self, config: RunnableConfig) -> CallScope:
        keys = ScopeKeys(self.session_key, self.product_key)
        scope = call_scope(runtime_context(config), config, keys)
        if scope.session_id is None:
            if self.strict:
                require_session(scope, keys, TOOL_NAME)
            logger.warning(
                "%s called without a session id in the runtime context or config['configurable']",
                TOOL_NAME,
            )
        return scope

    def _answer(self, view: SessionView | None, scope: CallScope) -> str:
        if self.strict:
            require_found(view, scope.session_id or "", scope.product_id, TOOL_NAME)
        return format_activity_answer(view_text(view))

    @override
    def _run(
        self,
        max_actions: int | None = None,
        lookback_seconds: float | None = None,
        *,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> str:
        scope = self._scope(config)
        if scope.session_id is None:
            return NO_SESSION
        options = self._options(max_actions, lookback_seconds)
        return self._answer(self.store.view(scope.session_id, scope.product_id, **options), scope)

    @override
    async def _arun(
        self,
        max_actions: int | None = None,
        lookback_seconds: float | None = None,
        *,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> str:
        scope = self._scope(config)
        if scope.session_id is None:
            return NO_SESSION
        options = self._options(max_actions, lookback_seconds)
        view = await self.store.aview(scope.session_id, scope.product_id, **options)
        return self._answer(view, scope)


def create_session_activity_tool(
    store: ContextStore | AsyncContextStore,
    *,
    context_options: dict[str, Any] | None = None,
    session_key: str = "session_id",
    product_key: str = "product_id",
    strict: bool = False,
) -> SessionActivityTool:
    """The ``get_session_activity`` tool reading ``store`` (``store.view`` / ``store.aview``)."""
    return SessionActivityTool(
        store=store,
        context_options=dict(context_options or {}),
        session_key=session_key,
        product_key=product_key,
        strict=strict,
    )
