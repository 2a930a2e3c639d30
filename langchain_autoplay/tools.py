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
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field
from typing_extensions import override

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.formatting import NO_ACTIVITY, NO_SESSION, format_activity_answer
from langchain_autoplay._scope import CallScope, call_scope, runtime_context

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


class SessionActivityTool(BaseTool):
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

    def _options(self, max_actions: int | None, lookback_seconds: float | None) -> dict[str, Any]:
        options = dict(self.context_options)
        if max_actions is not None:
            options["max_actions"] = max_actions
        if lookback_seconds is not None:
            options["lookback_seconds"] = lookback_seconds
        return options

    @staticmethod
    def _scope(config: RunnableConfig) -> CallScope:
        scope = call_scope(runtime_context(config), config)
        if scope.session_id is None:
            logger.warning(
                "%s called without a session id in the runtime context or config['configurable']",
                TOOL_NAME,
            )
        return scope

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
        return format_activity_answer(self.store.get(scope.session_id, scope.product_id, **options))

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
        return format_activity_answer(
            await self.store.aget(scope.session_id, scope.product_id, **options)
        )


def create_session_activity_tool(
    store: ContextStore | AsyncContextStore,
    *,
    context_options: dict[str, Any] | None = None,
) -> SessionActivityTool:
    """The ``get_session_activity`` tool reading ``store`` (``store.get`` / ``store.aget``)."""
    return SessionActivityTool(store=store, context_options=dict(context_options or {}))
