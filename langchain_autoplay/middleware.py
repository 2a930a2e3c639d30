"""``AutoplayContextMiddleware``: LangChain v1 agents that see what the user is doing.

On every model call the session's live context is added to what the model gets::

    agent = create_agent(
        model,
        tools=[...],
        system_prompt="You are Acme's support assistant.",
        middleware=[AutoplayContextMiddleware(store)],
        context_schema=SupportContext,  # has session_id and product_id
    )
    context = SupportContext(session_id="ps_abc", product_id="acme")
    agent.invoke({"messages": [...]}, context=context)

Where it goes (``placement``):

* ``"system_prompt"`` (default, unchanged since 0.x): appended to the system message,
  so the model gets ``"You are Acme's support assistant.\\n\\n[Session context]\\n…"``
  (the context alone when the agent has no system prompt). One leading system
  message, which every provider accepts (Anthropic, OpenAI, Mistral). The system
  prompt's own text stays a byte prefix and a content-block list keeps its blocks
  (``cache_control`` included), so a cached system prompt still hits; the
  conversation after it is re-read on every call.
* ``"human_message"``: put first in the latest human message of the call
  (``"[Session context]\\n…\\n\\n<question>"``; a content-block list gets one more text
  block first). System prompt, tools and every earlier turn stay byte-identical
  between calls, so provider prompt caching keeps the whole conversation prefix.
  Choose it for long conversations on a caching provider.

Nothing is added when the session has no live context, and nothing the model sees is
written to the agent's state (the turn in the state keeps its own text), so the
conversation never accumulates stale context.

Which session: the runtime context's ``session_id``/``product_id`` (a dict, a
dataclass or a pydantic model), else ``config["configurable"]``'s; ``session_key`` /
``product_key`` rename both (``session_key="thread_id"`` gives each LangGraph thread
its own live context; ``"autoplay_session_id"`` keeps clear of other users of
``session_id``). The config is read by a ``before_model`` hook, which LangGraph hands
the node's config on every Python version; the hook keeps the ids in a private,
never-checkpointed state key (``autoplay_scope``) for the model call. (On Python 3.10,
LangGraph cannot set the config's context variable for async nodes, because
``asyncio.create_task`` takes no ``context=`` before 3.11, so ``ensure_config()``
inside async middleware sees an empty config there.)

A call without a session id runs the model unchanged. ``strict=True`` raises instead:
:class:`~autoplay_base.errors.ConfigError` when the call names no session,
:class:`~autoplay_base.errors.SessionLookupError` when the store does not know it.

Copies and serialization: ``copy.deepcopy`` copies the options and shares the store
(a live resource, like a connection); ``pickle`` raises ``TypeError`` (rebuild the
middleware with the store in the other process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import AgentState, ExtendedModelResponse, PrivateStateAttr
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, ensure_config
from langgraph.channels.untracked_value import UntrackedValue
from typing_extensions import NotRequired, override

from autoplay_base._store_ref import SharesStore
from autoplay_base.backends.base import SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.formatting import format_context_block, view_text
from langchain_autoplay._messages import append_to_system_message, prepend_to_human_message
from langchain_autoplay._scope import (
    CallScope,
    ScopeKeys,
    call_scope,
    require_found,
    require_session,
)

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

__all__ = [
    "AutoplayContextMiddleware",
    "AutoplayScopeState",
    "Placement",
    "append_to_system_message",
    "prepend_to_human_message",
]

ModelCallResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]

Placement = Literal["system_prompt", "human_message"]
"""Where the middleware puts the live context (see the module docstring)."""
_PLACEMENTS = ("system_prompt", "human_message")

SCOPE_STATE_KEY = "autoplay_scope"


class AutoplayScopeState(AgentState[Any]):
    """The middleware's private state: the ``(session_id, product_id)`` its ``before_model``
    hook resolved from the runtime context and the config.

    ``UntrackedValue``: never checkpointed; ``PrivateStateAttr``: not in the agent's
    input or output schema.
    """

    autoplay_scope: NotRequired[
        Annotated[tuple[str | None, str | None], UntrackedValue, PrivateStateAttr]
    ]


class AutoplayContextMiddleware(SharesStore, AgentMiddleware[AutoplayScopeState, Any, Any]):
    """Add the user's live session context to every model call (see the module docstring).

    Args:
        store: the :class:`~autoplay_base.context_store.ContextStore` or
            :class:`~autoplay_base.context_store.AsyncContextStore` to read
            (``store.view`` in ``wrap_model_call``, ``store.aview`` in ``awrap_model_call``).
        context_options: store read overrides (``lookback_seconds``, ``max_actions``, …).
        placement: ``"system_prompt"`` (default) or ``"human_message"``.
        session_key, product_key: the names the ids are read under, in the runtime
            context and in ``config["configurable"]`` (default ``session_id``, ``product_id``).
        strict: raise when the call names no session or the store does not know it.
    """

    state_schema = AutoplayScopeState

    def __init__(
        self,
        store: ContextStore | AsyncContextStore,
        *,
        context_options: Mapping[str, Any] | None = None,
        placement: Placement = "system_prompt",
        session_key: str = "session_id",
        product_key: str = "product_id",
        strict: bool = False,
    ) -> None:
        super().__init__()
        if placement not in _PLACEMENTS:
            raise ConfigError(
                f"placement must be one of {', '.join(_PLACEMENTS)}, got {placement!r}"
            )
        self.store = store
        self.context_options = dict(context_options or {})
        self.placement = placement
        self.keys = ScopeKeys(session_key, product_key)
        self.strict = strict

    # -- the config's ids, read where LangGraph hands the config over -------------------
    def _call_scope(self, runtime: Runtime[Any], config: RunnableConfig | None) -> dict[str, Any]:
        """The call's scope, resolved where LangGraph hands over the real config."""
        scope = call_scope(
            runtime.context if runtime is not None else None, config or {}, self.keys
        )
        return {SCOPE_STATE_KEY: tuple(scope)}

    @override
    def before_model(
        self,
        state: AutoplayScopeState,
        runtime: Runtime[Any],
        # Spelled ``Optional[...]``: LangGraph injects ``config`` only for the annotations
        # it lists, and ``"RunnableConfig | None"`` (a string here) is not one of them.
        config: Optional[RunnableConfig] = None,  # noqa: UP045
    ) -> dict[str, Any] | None:
        """Resolve the call's session for the model call (LangGraph passes ``config``)."""
        return self._call_scope(runtime, config)

    @override
    async def abefore_model(
        self,
        state: AutoplayScopeState,
        runtime: Runtime[Any],
        config: Optional[RunnableConfig] = None,  # noqa: UP045
    ) -> dict[str, Any] | None:
        """Async twin of :meth:`before_model`."""
        return self._call_scope(runtime, config)

    # -- pure steps around the store read ----------------------------------------------
    def _scope(self, request: ModelRequest[Any]) -> CallScope:
        state: Mapping[str, Any] = request.state or {}
        resolved: tuple[str | None, str | None] | None = state.get(SCOPE_STATE_KEY)
        if resolved is not None:
            scope = CallScope(*resolved)
        else:
            # Not run by create_agent's graph (no before_model ran): the config's variable.
            context = request.runtime.context if request.runtime is not None else None
            scope = call_scope(context, ensure_config(), self.keys)
        if self.strict:
            require_session(scope, self.keys, type(self).__name__)
        return scope

    def _with_context(
        self, request: ModelRequest[Any], view: SessionView | None, scope: CallScope
    ) -> ModelRequest[Any]:
        if self.strict:
            require_found(view, scope.session_id or "", scope.product_id, type(self).__name__)
        block = format_context_block(view_text(view))
        if not block:
            return request
        if self.placement == "human_message":
            return request.override(messages=prepend_to_human_message(request.messages, block))
        return request.override(
            system_message=append_to_system_message(request.system_message, block)
        )

    @override
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelCallResult:
        scope = self._scope(request)
        if scope.session_id is None:
            return handler(request)
        view = self.store.view(scope.session_id, scope.product_id, **self.context_options)
        return handler(self._with_context(request, view, scope))

    @override
    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelCallResult:
        scope = self._scope(request)
        if scope.session_id is None:
            return await handler(request)
        view = await self.store.aview(scope.session_id, scope.product_id, **self.context_options)
        return await handler(self._with_context(request, view, scope))
