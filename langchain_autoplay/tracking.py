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

* :class:`~langchain_autoplay.tracking_middleware.AutoplayTrackingMiddleware` for
  ``create_agent`` (in its own module: it needs the full ``langchain`` package):
  one ``turn`` per agent call (``before_agent`` / ``after_agent``), a ``usage``
  event per model call (``wrap_model_call``) and a ``tool_call`` per tool call
  (``wrap_tool_call``),
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

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook
from typing_extensions import ParamSpec, override

from autoplay_base.errors import ConfigError
from autoplay_base.tracking import AsyncTracker, TrackedSession, Tracker
from langchain_autoplay import _context_turn
from langchain_autoplay._context_turn import ContextTurn
from langchain_autoplay._scope import DEFAULT_KEYS, ScopeKeys
from langchain_autoplay._tracking import (
    TURN_INCOMPLETE,
    Guard,
    Usage,
    incomplete_status,
    input_text,
    output_text,
    result_usage,
    tool_result,
)

__all__ = [
    "DEFAULT_MAX_OPEN_RUNS",
    "TURN_INCOMPLETE",
    "AnyTracker",
    "AutoplayTrackingHandler",
    "tracking_session",
]

logger = logging.getLogger("langchain_autoplay")

DEFAULT_MAX_OPEN_RUNS = 10_000
"""Open runs one handler remembers; beyond, the oldest is dropped (``open_runs_dropped``)."""

AnyTracker = Tracker | AsyncTracker
"""Either tracker twin (the hooks only call ``session()`` and ``track_*``, the same on both)."""
_P = ParamSpec("_P")


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
    context: Token[ContextTurn | None] | None = None
    """A root's mark on the context it started in (see :mod:`._context_turn`)."""


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
        *,
        adopt: bool = True,
        **fields: Any,
    ) -> OpenRun:
        parent = self.open.get(parent_run_id)
        if parent is None and parent_run_id is None and adopt:
            parent = self._context_root()
        if parent is not None:
            run = OpenRun(parent.turn, False, time.perf_counter(), **fields)
        else:
            # A root (or a run whose parent this handler never saw): a new turn. A lookup
            # that fails still opens the (untracked) turn, so its children stay quiet.
            try:
                session = self._session(metadata)
            except Exception as exc:
                self.guard.failed("the session lookup", exc)
                session = None
            turn = Turn(session, input_text(user))
            run = OpenRun(turn, True, time.perf_counter(), **fields)
            if parent_run_id is None and _context_turn.NEEDED:  # its configless runs
                scope = ContextTurn(self, run_id, self._is_open, self.open.limit)
                run.context = _context_turn.enter(scope)
        self.open.add(run_id, run)
        return run

    def _context_root(self) -> OpenRun | None:
        """This handler's root open in the current context (for a run with no parent)."""
        scope = _context_turn.current() if _context_turn.NEEDED else None
        return self.open.get(scope.root_id) if scope is not None and scope.owner is self else None

    def _is_open(self, run_id: UUID) -> bool:
        return self.open.get(run_id) is not None

    def _root_ended(self, run: OpenRun) -> None:
        if run.context is not None:
            _context_turn.leave(run.context)
            run.context = None

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
            self._root_ended(run)
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
        # A chain with no parent is a turn of its own; a model or tool call with no
        # parent, made where a turn of ours is open, is that turn's (see _context_turn).
        self._start(run_id, parent_run_id, metadata, inputs, adopt=False)

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
            self._root_ended(run)
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
            self._root_ended(run)
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

    def _tool_ended(self, run_id: UUID, result: Any, error: BaseException | str | None) -> None:
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
        if run.root and isinstance(error, BaseException):  # not a result that reports one
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
        self._tool_ended(run_id, *tool_result(output))

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
