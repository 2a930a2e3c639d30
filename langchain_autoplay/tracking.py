"""Conversation tracking for LangChain: what the agent said and did, recorded as it runs.

Two ways in, both only calling a tracker's non-blocking ``track_*`` (no I/O in a
hook, see :mod:`autoplay_base.tracking`):

* :class:`AutoplayTrackingHandler`, a callback handler for any runnable (chains,
  chat models, LangGraph graphs, ``create_agent`` agents)::

      handler = AutoplayTrackingHandler(tracker)
      agent.invoke({"messages": [("user", "Export?")]},
                   config={"callbacks": [handler],
                           "metadata": {"session_id": "ps_1", "product_id": "acme"}})

  or for every runnable in a block, without passing callbacks around::

      with tracking_session(tracker, session_id="ps_1", product_id="acme"):
          agent.invoke(...)

  It maps runs onto events: the root run is the turn (the user's input and the
  final answer's text); each chat model / LLM end is a ``usage`` event (tokens
  from ``usage_metadata``, else ``llm_output["token_usage"]``; the model name from
  ``response_metadata``, else the ``invocation_params``), and the turn carries
  their sum (so count either the usage events or the turns' ``usage``, not both);
  each tool start/end/error is a ``tool_call`` with its runtime. A turn that does
  not complete is not a ``turn`` (it has no answer to show): it is an
  ``event`` named :data:`TURN_INCOMPLETE` with ``status`` ``"interrupted"``
  (LangGraph ``interrupt()``), ``"cancelled"`` (``asyncio.CancelledError``) or
  ``"error"``, the error's type name, and the usage so far.

* :class:`AutoplayTrackingMiddleware` for ``create_agent``: one ``turn`` per agent
  call (``before_agent`` / ``after_agent``), a ``usage`` event per model call
  (``wrap_model_call``) and a ``tool_call`` per tool call (``wrap_tool_call``),
  the same events the handler records for a completed call. A call that does not
  complete records its usage and tool calls but no turn (``after_agent`` does not
  run); use the handler to see those calls' status.

Which session (most specific first): the run's ``metadata`` (``session_id`` and
``product_id``, renamed by ``session_key``/``product_key``; ``conversation_id`` and
``user_id`` too), then the ids given to the handler (which is what
:func:`tracking_session` does). Metadata, not ``configurable``: LangChain hands
callbacks the run's ``metadata`` and never its ``configurable``. The middleware
reads the agent's runtime context, then ``configurable`` (as
:class:`~langchain_autoplay.middleware.AutoplayContextMiddleware` does). A run with
no session records nothing; it is counted (``untracked_runs``) and logged once.

The handler's state is a bounded map of open runs (``max_open_runs``, default
:data:`DEFAULT_MAX_OPEN_RUNS`): a run that never ends cannot leak, the oldest
open run is dropped instead (counted in ``open_runs_dropped``, logged once). A bug
in a hook never reaches the user's agent: it is counted (``hook_errors``) and
logged once, without the values. ``run_inline = True``: the hooks run in the
caller's thread or task, in order, which keeps the handler's clocks exact and its
work O(1) per hook.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar
from uuid import UUID

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import AgentState, PrivateStateAttr
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import LLMResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.context import register_configure_hook
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.errors import GraphInterrupt
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from typing_extensions import NotRequired, ParamSpec, override

from autoplay_base.errors import ConfigError
from autoplay_base.tracking import AsyncTracker, TrackedSession, Tracker
from langchain_autoplay._scope import DEFAULT_KEYS, ScopeKeys, call_scope

if TYPE_CHECKING:
    from langgraph.runtime import Runtime

__all__ = [
    "DEFAULT_MAX_OPEN_RUNS",
    "TURN_INCOMPLETE",
    "AutoplayTrackingHandler",
    "AutoplayTrackingMiddleware",
    "TrackingState",
    "Usage",
    "message_usage",
    "result_usage",
    "tracking_session",
]

logger = logging.getLogger("langchain_autoplay")

DEFAULT_MAX_OPEN_RUNS = 10_000
"""Open runs one handler remembers; beyond, the oldest is dropped (``open_runs_dropped``)."""
TURN_INCOMPLETE = "turn_incomplete"
"""The custom event recorded for a turn that did not complete (``status`` says why)."""
STATE_KEY = "autoplay_tracking"

AnyTracker = Tracker | AsyncTracker
_P = ParamSpec("_P")
_R = TypeVar("_R")


# -- pure conversions --------------------------------------------------------------------
@dataclass
class Usage:
    """Tokens summed over model calls, and the last model name seen."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0

    def add(self, other: Usage) -> None:
        """Add one call's usage (``calls`` counts the calls that reported any)."""
        self.model = other.model or self.model
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.calls += other.calls

    def as_dict(self) -> dict[str, Any] | None:
        """What ``track_turn(usage=...)`` takes, or ``None`` when no call reported usage."""
        if not self.calls:
            return None
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


def message_usage(message: BaseMessage) -> Usage:
    """One ``AIMessage``'s ``usage_metadata`` and ``response_metadata`` model name."""
    if not isinstance(message, AIMessage):
        return Usage()
    meta = message.response_metadata or {}
    model = meta.get("model_name") or meta.get("model")
    usage = message.usage_metadata
    if not usage:
        return Usage(model=model if isinstance(model, str) else None)
    return Usage(
        model if isinstance(model, str) else None,
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        1,
    )


def result_usage(response: LLMResult, model: str | None = None) -> Usage:
    """A chat model / LLM call's usage: its messages' metadata, else ``llm_output``'s."""
    total = Usage()
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, BaseMessage):
                total.add(message_usage(message))
    output = response.llm_output or {}
    if not total.calls:
        counts = output.get("token_usage") or output.get("usage")
        if isinstance(counts, Mapping):
            total.input_tokens = int(
                counts.get("prompt_tokens") or counts.get("input_tokens") or 0
            )
            total.output_tokens = int(
                counts.get("completion_tokens") or counts.get("output_tokens") or 0
            )
            total.calls = 1
    named = output.get("model_name") or output.get("model")
    total.model = total.model or (named if isinstance(named, str) else None) or model
    return total


def _last_text(messages: Sequence[Any], kind: type[BaseMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, kind):
            return message.text
        if kind is HumanMessage and isinstance(message, tuple) and message[:1] in (
            ("user",),
            ("human",),
        ):
            return str(message[1])
    return None


def input_text(inputs: Any) -> str:
    """The user's words in a run's input (a string, messages, a prompt, an input dict)."""
    if isinstance(inputs, str):
        return inputs
    if isinstance(inputs, BaseMessage):
        return inputs.text
    if isinstance(inputs, PromptValue):
        inputs = inputs.to_messages()
    if isinstance(inputs, Mapping):
        messages = inputs.get("messages")
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            return _last_text(messages, HumanMessage) or ""
        for key in ("input", "question", "query"):
            if isinstance(inputs.get(key), str):
                return str(inputs[key])
        return ""
    if isinstance(inputs, Sequence):
        return _last_text(inputs, HumanMessage) or ""
    return ""


def output_text(outputs: Any) -> str:
    """The answer's text in a run's output (a string, an ``AIMessage``, agent state)."""
    if isinstance(outputs, str):
        return outputs
    if isinstance(outputs, BaseMessage):
        return outputs.text
    if isinstance(outputs, Mapping):
        messages = outputs.get("messages")
        if isinstance(messages, Sequence) and not isinstance(messages, str):
            return _last_text(messages, AIMessage) or ""
        for key in ("output", "answer", "text", "result"):
            if isinstance(outputs.get(key), str):
                return str(outputs[key])
    return ""


def tool_output(output: Any) -> Any:
    """A tool's result as recorded: a ``ToolMessage``'s content, else the value."""
    if isinstance(output, ToolMessage):
        return output.content
    if isinstance(output, Command):
        return repr(output)
    return output


def incomplete_status(error: BaseException) -> str:
    """``"interrupted"``, ``"cancelled"`` or ``"error"`` for what ended a run."""
    if isinstance(error, GraphInterrupt):
        return "interrupted"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"


class Guard:
    """Counts and logs (once, by type name only) what a tracking hook raised."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.hook_errors = 0

    def failed(self, hook: str, exc: Exception) -> None:
        """A hook raised ``exc``: counted, logged the first time; the user's run goes on."""
        self.hook_errors += 1
        if self.hook_errors == 1:
            logger.warning(
                "%s: %s raised %s; tracking skipped it (counted in hook_errors)",
                self.owner,
                hook,
                type(exc).__name__,
            )


def _guarded(method: Callable[_P, None]) -> Callable[_P, None]:
    """Run a handler hook; what it raises is counted by the handler's guard, never raised."""

    @functools.wraps(method)
    def hook(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:
            handler = args[0]
            assert isinstance(handler, AutoplayTrackingHandler)
            handler.guard.failed(method.__name__, exc)

    return hook


# -- the handler's bounded run state -----------------------------------------------------
@dataclass
class Turn:
    """One root run: its session handle (``None``: untracked), the user's words, usage."""

    session: TrackedSession | None
    user: str = ""
    usage: Usage | None = None
    interrupted: bool = False


@dataclass
class OpenRun:
    """A run between its start and end hooks."""

    turn: Turn
    root: bool
    started: float
    name: str = ""
    args: Any = None
    model: str | None = None


class OpenRuns:
    """Open runs by id, at most ``limit`` (then the oldest go first, counted), thread-safe.

    Sync tools run in executor threads, so hooks of one handler may run in several
    threads at once: a lock keeps the map consistent (each operation is O(1)).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.runs: OrderedDict[UUID, OpenRun] = OrderedDict()
        self.lock = threading.Lock()
        self.dropped = 0

    def add(self, run_id: UUID, run: OpenRun) -> None:
        """Remember ``run``; the oldest open run is dropped when full."""
        with self.lock:
            self.runs[run_id] = run
            if len(self.runs) <= self.limit:
                return
            self.runs.popitem(last=False)
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1:
            logger.warning(
                "AutoplayTrackingHandler: more than %d runs open; the oldest was dropped "
                "(counted in open_runs_dropped)",
                self.limit,
            )

    def get(self, run_id: UUID | None) -> OpenRun | None:
        """The open run ``run_id``, if known."""
        if run_id is None:
            return None
        with self.lock:
            return self.runs.get(run_id)

    def pop(self, run_id: UUID) -> OpenRun | None:
        """Forget ``run_id`` and return it, if it was open."""
        with self.lock:
            return self.runs.pop(run_id, None)


class AutoplayTrackingHandler(BaseCallbackHandler):
    """Record a LangChain run's turn, model usage and tool calls (see the module docstring).

    Args:
        tracker: the :class:`~autoplay_base.tracking.Tracker` or
            :class:`~autoplay_base.tracking.AsyncTracker` to record with.
        session_id, product_id, user_id, conversation_id: ids used when the run's
            metadata names none.
        session_key, product_key: the metadata keys the ids are read under.
        max_open_runs: open runs remembered (default :data:`DEFAULT_MAX_OPEN_RUNS`).
    """

    run_inline = True
    """Hooks run in the caller's thread/task, in order (they do no I/O)."""

    def __init__(
        self,
        tracker: AnyTracker,
        *,
        session_id: str | None = None,
        product_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        session_key: str = DEFAULT_KEYS.session,
        product_key: str = DEFAULT_KEYS.product,
        max_open_runs: int = DEFAULT_MAX_OPEN_RUNS,
    ) -> None:
        if not max_open_runs >= 1:
            raise ConfigError(f"max_open_runs must be >= 1, got {max_open_runs!r}")
        self.tracker = tracker
        self.defaults = (session_id, product_id, user_id, conversation_id)
        self.keys = ScopeKeys(session_key, product_key)
        self.open = OpenRuns(max_open_runs)
        self.guard = Guard(type(self).__name__)
        self.untracked_runs = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tracker={self.tracker!r})"

    def stats(self) -> dict[str, int]:
        """Counters: ``hook_errors``, ``open_runs``, ``open_runs_dropped``, ``untracked_runs``."""
        return {
            "hook_errors": self.guard.hook_errors,
            "open_runs": len(self.open.runs),
            "open_runs_dropped": self.open.dropped,
            "untracked_runs": self.untracked_runs,
        }

    # -- where a run belongs -----------------------------------------------------------
    def _session(self, metadata: Mapping[str, Any] | None) -> TrackedSession | None:
        meta = metadata or {}
        session_id, product_id, user_id, conversation_id = self.defaults
        if meta.get(self.keys.session):
            session_id = meta[self.keys.session]
            product_id = meta.get(self.keys.product) or product_id
        if session_id is None or product_id is None:
            self.untracked_runs += 1
            if self.untracked_runs == 1:
                logger.warning(
                    "AutoplayTrackingHandler: a run named no %s/%s in its metadata and the "
                    "handler has no default; not tracked (counted in untracked_runs)",
                    self.keys.session,
                    self.keys.product,
                )
            return None
        return self.tracker.session(
            session_id,
            product_id=product_id,
            user_id=meta.get("user_id") or user_id,
            conversation_id=meta.get("conversation_id") or conversation_id,
        )

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any] | None,
        user: Any = None,
        **fields: Any,
    ) -> OpenRun:
        parent = self.open.get(parent_run_id)
        if parent is not None:
            run = OpenRun(parent.turn, False, time.perf_counter(), **fields)
        else:
            # A root (or a run whose parent this handler never saw): a new turn.
            turn = Turn(self._session(metadata), input_text(user))
            run = OpenRun(turn, True, time.perf_counter(), **fields)
        self.open.add(run_id, run)
        return run

    def _end_root(self, run: OpenRun, outputs: Any) -> None:
        turn = run.turn
        if turn.session is None:
            return
        if turn.interrupted or (isinstance(outputs, Mapping) and "__interrupt__" in outputs):
            self._incomplete(turn, "interrupted", "GraphInterrupt")
            return
        usage = turn.usage.as_dict() if turn.usage is not None else None
        turn.session.track_turn(user=turn.user, assistant=output_text(outputs), usage=usage)

    def _incomplete(self, turn: Turn, status: str, error: str) -> None:
        if turn.session is None:
            return
        properties: dict[str, Any] = {"status": status, "error": error}
        if turn.usage is not None and turn.usage.calls:
            properties["usage"] = turn.usage.as_dict()
        turn.session.track_event(TURN_INCOMPLETE, properties)

    def _error(self, run_id: UUID, error: BaseException) -> OpenRun | None:
        run = self.open.pop(run_id)
        if run is None:
            return None
        status = incomplete_status(error)
        if status == "interrupted":
            run.turn.interrupted = True
        if run.root:
            self._incomplete(run.turn, status, type(error).__name__)
        return run

    # -- chains (the turn) ---------------------------------------------------------------
    @override
    @_guarded
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, parent_run_id, metadata, inputs)

    @override
    @_guarded
    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        run = self.open.pop(run_id)
        if run is not None and run.root:
            self._end_root(run, outputs)

    @override
    @_guarded
    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._error(run_id, error)

    # -- models (usage) ------------------------------------------------------------------
    @override
    @_guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            run_id,
            parent_run_id,
            metadata,
            messages[0] if messages else None,
            model=_invocation_model(kwargs),
        )

    @override
    @_guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(
            run_id,
            parent_run_id,
            metadata,
            prompts[-1] if prompts else None,
            model=_invocation_model(kwargs),
        )

    @override
    @_guarded
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self.open.pop(run_id)
        if run is None or run.turn.session is None:
            return
        usage = result_usage(response, run.model)
        if run.turn.usage is None:
            run.turn.usage = Usage()
        run.turn.usage.add(usage)
        if usage.calls:
            run.turn.session.track_usage(
                model=usage.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        if run.root:
            generations = response.generations
            answer = generations[0][0].text if generations and generations[0] else ""
            self._end_root(run, answer)

    @override
    @_guarded
    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._error(run_id, error)

    # -- tools ---------------------------------------------------------------------------
    @override
    @_guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self._start(
            run_id,
            parent_run_id,
            metadata,
            name=str(name),
            args=inputs if inputs is not None else input_str,
        )

    def _tool_ended(self, run_id: UUID, result: Any, error: BaseException | None) -> None:
        run = self.open.pop(run_id)
        if run is None or run.turn.session is None:
            return
        run.turn.session.track_tool_call(
            name=run.name,
            args=run.args,
            result=result,
            runtime_ms=(time.perf_counter() - run.started) * 1000.0,
            error=error,
        )
        if run.root and error is not None:
            self._incomplete(run.turn, incomplete_status(error), type(error).__name__)

    @override
    @_guarded
    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._tool_ended(run_id, tool_output(output), None)

    @override
    @_guarded
    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._tool_ended(run_id, None, error)


def _invocation_model(kwargs: Mapping[str, Any]) -> str | None:
    params = kwargs.get("invocation_params") or {}
    model = params.get("model") or params.get("model_name") if isinstance(params, Mapping) else None
    return model if isinstance(model, str) else None


# -- a block of runs -----------------------------------------------------------------------
_ACTIVE: ContextVar[AutoplayTrackingHandler | None] = ContextVar(
    "autoplay_tracking_handler", default=None
)
# LangChain's own hook for context-scoped handlers (what ``collect_runs`` and tracing use):
# every callback manager configured while the variable holds a handler gets it, once.
register_configure_hook(_ACTIVE, inheritable=True)


@contextmanager
def tracking_session(
    tracker: AnyTracker,
    *,
    session_id: str,
    product_id: str,
    user_id: str | None = None,
    conversation_id: str | None = None,
    max_open_runs: int = DEFAULT_MAX_OPEN_RUNS,
) -> Iterator[AutoplayTrackingHandler]:
    """Track every runnable run inside the block under these ids (a run's metadata still wins).

    The handler is attached through a context variable (``register_configure_hook``),
    so it reaches runs in this thread and in tasks started inside the block; blocks
    nest, the inner one wins.
    """
    handler = AutoplayTrackingHandler(
        tracker,
        session_id=session_id,
        product_id=product_id,
        user_id=user_id,
        conversation_id=conversation_id,
        max_open_runs=max_open_runs,
    )
    token = _ACTIVE.set(handler)
    try:
        yield handler
    finally:
        _ACTIVE.reset(token)


# -- create_agent middleware ---------------------------------------------------------------
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

    def _begin(self, state: TrackingState, runtime: Runtime[Any], config: Any) -> dict[str, Any]:
        scope = call_scope(runtime.context if runtime is not None else None, config or {}, self.keys)
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
            user=_last_text(messages[:start], HumanMessage) or "",
            assistant=_last_text(messages[start:], AIMessage) or "",
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
        session.track_tool_call(
            name=call["name"],
            args=call["args"],
            result=tool_output(result),
            runtime_ms=(time.perf_counter() - started) * 1000.0,
            error=error,
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
