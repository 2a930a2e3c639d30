"""``AutoplayContextMiddleware``: LangChain v1 agents that see what the user is doing.

On every model call the session's live context is appended to the system message::

    agent = create_agent(
        model,
        tools=[...],
        system_prompt="You are Acme's support assistant.",
        middleware=[AutoplayContextMiddleware(store)],
        context_schema=SupportContext,  # has session_id and product_id
    )
    context = SupportContext(session_id="ps_abc", product_id="acme")
    agent.invoke({"messages": [...]}, context=context)

The model then gets ``"You are Acme's support assistant.\\n\\n[Session context]\\n…"``
(the context alone when the agent has no system prompt). Nothing is added when the
session has no live context, and nothing is written to the agent's state, so the
conversation never accumulates stale context.

The session is the runtime context's ``session_id``/``product_id`` (a dict, a
dataclass or a pydantic model), or else ``config["configurable"]``'s; a call
without a session id runs the model unchanged. On Python 3.10 event loops LangGraph
cannot pass the config to middleware, so use the runtime context there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.runnables import ensure_config
from typing_extensions import override

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.formatting import append_block, format_context_block
from langchain_autoplay._scope import CallScope, call_scope

__all__ = ["AutoplayContextMiddleware", "append_to_system_message"]

ModelCallResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


def append_to_system_message(message: SystemMessage | None, block: str) -> SystemMessage | None:
    """``message`` with ``block`` appended after a blank line (a new message if ``None``).

    Content-block lists get one more text block, so provider-specific blocks (cache
    control, images) stay as they were.
    """
    if not block:
        return message
    if message is None:
        return SystemMessage(content=block)
    if isinstance(message.content, str):
        content: str | list[str | dict[Any, Any]] = append_block(message.content, block)
    else:
        content = [*message.content, {"type": "text", "text": block}]
    return message.model_copy(update={"content": content})


class AutoplayContextMiddleware(AgentMiddleware[Any, Any, Any]):
    """Append the user's live session context to the system message of every model call.

    Args:
        store: the :class:`~autoplay_base.context_store.ContextStore` or
            :class:`~autoplay_base.context_store.AsyncContextStore` to read
            (``store.get`` in ``wrap_model_call``, ``store.aget`` in ``awrap_model_call``).
        context_options: store read overrides (``lookback_seconds``, ``max_actions``, …).
    """

    def __init__(
        self,
        store: ContextStore | AsyncContextStore,
        *,
        context_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.context_options = dict(context_options or {})

    @staticmethod
    def _scope(request: ModelRequest[Any]) -> CallScope:
        context = request.runtime.context if request.runtime is not None else None
        return call_scope(context, ensure_config())

    @staticmethod
    def _with_context(request: ModelRequest[Any], context: str) -> ModelRequest[Any]:
        if not context:
            return request
        system = append_to_system_message(request.system_message, format_context_block(context))
        return request.override(system_message=system)

    @override
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult:
        scope = self._scope(request)
        if scope.session_id is None:
            return handler(request)
        context = self.store.get(scope.session_id, scope.product_id, **self.context_options)
        return handler(self._with_context(request, context))

    @override
    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult:
        scope = self._scope(request)
        if scope.session_id is None:
            return await handler(request)
        context = await self.store.aget(scope.session_id, scope.product_id, **self.context_options)
        return await handler(self._with_context(request, context))
