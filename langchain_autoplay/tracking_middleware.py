"""``AutoplayTrackingMiddleware``: each ``create_agent`` call recorded as one turn.

::

    agent = create_agent(model, tools=[...], middleware=[AutoplayTrackingMiddleware(tracker)],
                         context_schema=SupportContext)  # has session_id and product_id
    agent.invoke({"messages": [...]}, context=SupportContext("ps_1", "acme"))

``before_agent`` resolves the call's session (the runtime context's
``session_id``/``product_id``, else ``config["configurable"]``'s, as
:class:`~langchain_autoplay.middleware.AutoplayContextMiddleware` reads them) and
notes where the call's new messages start, in a private, never-checkpointed state
key; ``wrap_model_call`` records each model call's ``usage``, ``wrap_tool_call``
each ``tool_call`` (with its runtime, and its error when the tool raised);
``after_agent`` records the ``turn``: the user's last message before the call, the
last ``AIMessage``'s text, and the usage summed over the call's messages. These are
the events :class:`~langchain_autoplay.tracking.AutoplayTrackingHandler` records
for a completed call. An interrupted, cancelled or failed call records its usage
and tool calls but no turn (``after_agent`` does not run): the handler records
those statuses.

Tracking never breaks the agent: what a tracking step raises is counted
(``stats()["hook_errors"]``) and logged once; the model's and tools' own errors
pass through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Optional

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import AgentState, PrivateStateAttr
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from typing_extensions import NotRequired, override

from autoplay_base.tracking import TrackedSession
from langchain_autoplay._scope import DEFAULT_KEYS, ScopeKeys, call_scope
from langchain_autoplay._tracking import (
    Guard,
    Usage,
    last_text,
    logger,
    message_usage,
    tool_result,
)
from langchain_autoplay.tracking import AnyTracker

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

__all__ = ["AutoplayTrackingMiddleware", "TrackingState"]

STATE_KEY = "autoplay_tracking"


class TrackingState(AgentState[Any]):
    """The middleware's private state: ``(session_id, product_id, first new message index)``.

    ``UntrackedValue``: never checkpointed; ``PrivateStateAttr``: not in the agent's
    input or output schema.
    """

    autoplay_tracking: NotRequired[
        Annotated[tuple[str | None, str | None, int], UntrackedValue, PrivateStateAttr]
    ]


class AutoplayTrackingMiddleware(AgentMiddleware[TrackingState, Any, Any]):
    """Record each ``create_agent`` call as one turn, with its model usage and tool calls.

    Args:
        tracker: the tracker to record with.
        product_id: the product when the call names none.
        session_key, product_key: the names the ids are read under, in the runtime
            context and ``config["configurable"]``.
    """

    state_schema = TrackingState

    def __init__(
        self,
        tracker: AnyTracker,
        *,
        product_id: str | None = None,
        session_key: str = DEFAULT_KEYS.session,
        product_key: str = DEFAULT_KEYS.product,
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.product_id = product_id
        self.keys = ScopeKeys(session_key, product_key)
        self.guard = Guard(type(self).__name__)
        self.untracked_runs = 0

    def stats(self) -> dict[str, int]:
        """Counters: ``hook_errors``, ``untracked_runs``."""
        return {"hook_errors": self.guard.hook_errors, "untracked_runs": self.untracked_runs}

    def _begin(
        self, state: TrackingState, runtime: Runtime[Any], config: RunnableConfig | None
    ) -> dict[str, Any]:
        context = runtime.context if runtime is not None else None
        scope = call_scope(context, config or RunnableConfig(), self.keys)
        product_id = scope.product_id or self.product_id
        if scope.session_id is None or product_id is None:
            self.untracked_runs += 1
            if self.untracked_runs == 1:
                logger.warning(
                    "AutoplayTrackingMiddleware: an agent call named no %s/%s; not tracked "
                    "(counted in untracked_runs)",
                    self.keys.session,
                    self.keys.product,
                )
        return {STATE_KEY: (scope.session_id, product_id, len(state.get("messages") or ()))}

    def _session(self, state: Any) -> tuple[TrackedSession | None, int]:
        resolved = (state or {}).get(STATE_KEY) if isinstance(state, Mapping) else None
        if not resolved or resolved[0] is None or resolved[1] is None:
            return None, 0
        session_id, product_id, start = resolved
        return self.tracker.session(session_id, product_id=product_id), start

    def _end(self, state: TrackingState) -> None:
        session, start = self._session(state)
        if session is None:
            return
        messages = list(state.get("messages") or ())
        usage = Usage()
        for message in messages[start:]:
            usage.add(message_usage(message))
        session.track_turn(
            user=last_text(messages[:start], HumanMessage) or "",
            assistant=last_text(messages[start:], AIMessage) or "",
            usage=usage.as_dict(),
        )

    def _model_called(self, request: ModelRequest[Any], response: Any) -> None:
        session, _ = self._session(request.state)
        if session is None:
            return
        messages = response.result if isinstance(response, ModelResponse) else [response]
        usage = Usage()
        for message in messages:
            if isinstance(message, BaseMessage):
                usage.add(message_usage(message))
        if usage.calls:
            session.track_usage(
                model=usage.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )

    def _tool_called(
        self, request: ToolCallRequest, started: float, result: Any, error: Exception | None
    ) -> None:
        session, _ = self._session(request.state)
        if session is None:
            return
        call = request.tool_call
        output, failure = tool_result(result)
        session.track_tool_call(
            name=call["name"],
            args=call["args"],
            result=output,
            runtime_ms=(time.perf_counter() - started) * 1000.0,
            error=error if error is not None else failure,
        )

    def _safely(self, hook: str, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:
            self.guard.failed(hook, exc)

    @override
    def before_agent(
        self,
        state: TrackingState,
        runtime: Runtime[Any],
        # ``Optional[...]``: LangGraph injects ``config`` only for the annotations it lists
        # (see langchain_autoplay.middleware).
        config: Optional[RunnableConfig] = None,  # noqa: UP045
    ) -> dict[str, Any] | None:
        """Resolve the call's session and note where its new messages start."""
        try:
            return self._begin(state, runtime, config)
        except Exception as exc:
            self.guard.failed("before_agent", exc)
            return None

    @override
    async def abefore_agent(
        self,
        state: TrackingState,
        runtime: Runtime[Any],
        config: Optional[RunnableConfig] = None,  # noqa: UP045
    ) -> dict[str, Any] | None:
        """Async twin of :meth:`before_agent`."""
        return self.before_agent(state, runtime, config)

    @override
    def after_agent(self, state: TrackingState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Record the turn: the user's message, the final answer, the summed usage."""
        self._safely("after_agent", self._end, state)
        return None

    @override
    async def aafter_agent(
        self, state: TrackingState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Async twin of :meth:`after_agent`."""
        return self.after_agent(state, runtime)

    @override
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> Any:
        response = handler(request)
        self._safely("wrap_model_call", self._model_called, request, response)
        return response

    @override
    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        response = await handler(request)
        self._safely("awrap_model_call", self._model_called, request, response)
        return response

    @override
    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        started = time.perf_counter()
        try:
            result = handler(request)
        except Exception as exc:
            self._safely("wrap_tool_call", self._tool_called, request, started, None, exc)
            raise
        self._safely("wrap_tool_call", self._tool_called, request, started, result, None)
        return result

    @override
    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        started = time.perf_counter()
        try:
            result = await handler(request)
        except Exception as exc:
            self._safely("awrap_tool_call", self._tool_called, request, started, None, exc)
            raise
        self._safely("awrap_tool_call", self._tool_called, request, started, result, None)
        return result
