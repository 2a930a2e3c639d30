"""Conversation tracking for LlamaIndex: turns, tool calls and usage from its instrumentation.

::

    handle = instrument_tracking(tracker, product_id="acme")
    with autoplay_session("ps_1", product_id="acme"):
        response = await agent.run(user_msg="How do I export?")   # or query / chat
    handle.uninstrument()

:func:`instrument_tracking` adds one span handler and one event handler to the
root dispatcher (``llama_index.core.instrumentation.get_dispatcher()``), which
sees every span and event of every LlamaIndex component. It is idempotent: a
second call for the same tracker returns the same handle, and
:meth:`TrackingInstrumentation.uninstrument` (also idempotent) removes both
handlers. The handlers only call the tracker's non-blocking ``track_*`` (no I/O).

What becomes an event:

* a **turn**: a root span (one with no parent) of a query engine
  (``query``/``aquery``: the query string and the response text), a chat engine
  (``chat``/``achat``: the message and the response) or a workflow agent such as
  ``FunctionAgent`` (``run``: the start event's ``user_msg`` and the final
  response), with the usage summed over its LLM calls. A root span that raised is
  an ``event`` named :data:`TURN_INCOMPLETE` with ``status`` ``"cancelled"``
  (``asyncio.CancelledError``, a workflow cancelled by its user) or ``"error"``,
  the error's type name and the usage so far. So is a workflow run ended by
  ``await handler.cancel_run()``, whose span exits without a result (``status``
  ``"cancelled"``, ``error`` ``"WorkflowCancelledByUser"``). Streaming responses are recorded
  with the text available when the call returns (a stream not consumed yet is
  empty);
* a **tool call**: a tool's ``call``/``acall`` span (its metadata name, keyword
  arguments, the ``ToolOutput``'s content, the runtime, and the error when it
  raised or returned ``is_error``);
* **usage**: each ``LLMChatEndEvent`` / ``LLMCompletionEndEvent`` whose response
  reports tokens (``additional_kwargs`` or ``raw["usage"]``, as
  ``prompt_tokens``/``completion_tokens`` or ``input_tokens``/``output_tokens``),
  with the model from the start event's ``model_dict`` (else ``raw["model"]``).
  Count either the usage events or the turns' ``usage``, not both.

Which session: the :func:`~llamaindex_autoplay.session.autoplay_session` block the
root span starts in (its ``product_id``, else the handle's); a query, chat or agent
run outside any block records nothing and is counted (``untracked_runs``, logged
once); other root spans (index builds, bare embedding or LLM calls) record their
LLM usage inside a block and nothing, silently, outside one.
Spans and events of a root span inherit its session, whatever task or thread
they run in.

Bounded: at most ``max_open_spans`` spans are remembered (default
:data:`DEFAULT_MAX_OPEN_SPANS`; the oldest is dropped first, counted in
``open_spans_dropped``). A handler bug never reaches the application: it is
counted (``hook_errors``) and logged once, without values.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.schema import QueryBundle
from llama_index.core.tools.types import BaseTool
from llama_index.core.workflow import Workflow
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.dispatcher import Dispatcher
from pydantic import PrivateAttr

from autoplay_base.errors import ConfigError
from autoplay_base.tracking import AsyncTracker, TrackedSession, Tracker
from llamaindex_autoplay.session import current_session

__all__ = [
    "DEFAULT_MAX_OPEN_SPANS",
    "TURN_INCOMPLETE",
    "TrackingInstrumentation",
    "instrument_tracking",
]

logger = logging.getLogger("llamaindex_autoplay")

DEFAULT_MAX_OPEN_SPANS = 10_000
"""Spans one instrumentation remembers; beyond, the oldest is dropped (``open_spans_dropped``)."""
TURN_INCOMPLETE = "turn_incomplete"
"""The custom event recorded for a turn that did not complete (``status`` says why)."""
_CANCELLED = frozenset({"CancelledError", "WorkflowCancelledByUser"})
_SPAN_CANCELLED = "SpanCancelledEvent"
"""What a workflow's run span sends before it exits with no result, on ``cancel_run``."""
_USER_ARGS = ("str_or_query_bundle", "message", "query", "query_str")

AnyTracker = Tracker | AsyncTracker


# -- pure conversions ----------------------------------------------------------------------
def _field(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _text(value: Any) -> str:
    """A string, a ``QueryBundle``'s query, a ``ChatMessage``'s content; else ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, QueryBundle):
        return value.query_str
    content = getattr(value, "content", None)
    return content if isinstance(content, str) else ""


def user_text(arguments: Mapping[str, Any]) -> str:
    """The user's words in a root span's bound arguments (query, message, start event)."""
    for name in _USER_ARGS:
        if name in arguments:
            return _text(arguments[name])
    start = arguments.get("start_event")
    if start is not None:
        return _text(_field(start, "user_msg"))
    return _text((arguments.get("kwargs") or {}).get("user_msg"))


def answer_text(result: Any) -> str:
    """The answer's text in what a root span returned (``Response``, ``StopEvent``, …)."""
    if isinstance(result, str):
        return result
    inner = _field(result, "result")  # a workflow's StopEvent holds the agent's output
    if inner is not None and not isinstance(result, Mapping):
        result = inner
    response = _field(result, "response")
    if response is None:
        return ""
    return response if isinstance(response, str) else _text(response)


def _int(counts: Any, *names: str) -> int | None:
    for name in names:
        value = _field(counts, name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def response_usage(response: Any) -> tuple[int, int, str | None] | None:
    """``(input_tokens, output_tokens, raw model)`` an LLM response reports, if any."""
    raw = _field(response, "raw")
    for counts in (_field(response, "additional_kwargs"), _field(raw, "usage")):
        if counts is None:
            continue
        tokens_in = _int(counts, "prompt_tokens", "input_tokens")
        tokens_out = _int(counts, "completion_tokens", "output_tokens")
        if tokens_in is not None or tokens_out is not None:
            model = _field(raw, "model")
            return tokens_in or 0, tokens_out or 0, model if isinstance(model, str) else None
    return None


def drop_status(error: BaseException | None) -> str:
    """``"cancelled"`` or ``"error"`` for what ended a span (by class name: no workflows import
    is needed to recognise its cancellation)."""
    if any(cls.__name__ in _CANCELLED for cls in type(error).__mro__):
        return "cancelled"
    return "error"


# -- state shared by the two handlers --------------------------------------------------------
@dataclass
class Turn:
    """What one root span has gathered: its session (``None``: untracked) and usage."""

    session: TrackedSession | None
    user: str = ""
    is_turn: bool = False
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_calls: int = 0

    def usage(self) -> dict[str, Any] | None:
        """The summed usage, or ``None`` when no LLM call reported any."""
        if not self.usage_calls:
            return None
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass
class OpenSpan:
    """A span the handlers follow: its turn, what kind of span, when it started."""

    turn: Turn
    root: bool
    started: float
    tool: BaseTool | None = None
    args: Any = None
    llm: bool = False
    """An LLM call (it sent a start event): followed until its end event."""
    model: str | None = None
    exited: bool = False
    ended: bool = False
    cancelled: bool = False
    """A workflow run its user cancelled (``cancel_run``): it exits, without a result."""


class Spans:
    """Open spans by id, at most ``limit`` (the oldest dropped first, counted); thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spans: OrderedDict[str, OpenSpan] = OrderedDict()
        self.lock = threading.Lock()
        self.dropped = 0

    def add(self, span_id: str, span: OpenSpan) -> None:
        """Remember ``span``; the oldest is dropped when full."""
        with self.lock:
            self.spans[span_id] = span
            if len(self.spans) <= self.limit:
                return
            self.spans.popitem(last=False)
            self.dropped += 1
            dropped = self.dropped
        if dropped == 1:
            logger.warning(
                "llamaindex tracking: more than %d spans open; the oldest was dropped "
                "(counted in open_spans_dropped)",
                self.limit,
            )

    def get(self, span_id: str | None) -> OpenSpan | None:
        """The span ``span_id``, if followed."""
        if span_id is None:
            return None
        with self.lock:
            return self.spans.get(span_id)

    def pop(self, span_id: str) -> OpenSpan | None:
        """Forget ``span_id`` and return it, if followed."""
        with self.lock:
            return self.spans.pop(span_id, None)


class Recorder:
    """The mapping from spans and events to ``track_*`` calls (both handlers call it)."""

    def __init__(self, tracker: AnyTracker, product_id: str | None, max_open_spans: int) -> None:
        self.tracker = tracker
        self.product_id = product_id
        self.spans = Spans(max_open_spans)
        self.hook_errors = 0
        self.untracked_runs = 0

    def safely(self, hook: str, step: Callable[..., None], *args: Any) -> None:
        """Run one recording step; what it raises is counted and logged, never raised."""
        try:
            step(*args)
        except Exception as exc:
            self.failed(hook, exc)

    def failed(self, hook: str, exc: Exception) -> None:
        """A hook raised: counted, logged the first time (type name only)."""
        self.hook_errors += 1
        if self.hook_errors == 1:
            logger.warning(
                "llamaindex tracking: %s raised %s; tracking skipped it (counted in hook_errors)",
                hook,
                type(exc).__name__,
            )

    def _session(self, *, count: bool) -> TrackedSession | None:
        scope = current_session()
        product_id = (scope.product_id if scope is not None else None) or self.product_id
        if scope is None or product_id is None:
            if not count:
                return None
            self.untracked_runs += 1
            if self.untracked_runs == 1:
                logger.warning(
                    "llamaindex tracking: a call ran outside autoplay_session(...) or without a "
                    "product; not tracked (counted in untracked_runs)"
                )
            return None
        return self.tracker.session(scope.session_id, product_id=product_id)

    # -- spans -------------------------------------------------------------------------
    def enter(
        self, span_id: str, arguments: Mapping[str, Any], instance: Any, parent_id: str | None
    ) -> None:
        """A span starts: a new turn at a root, else it joins its parent's turn."""
        parent = self.spans.get(parent_id)
        tool = instance if isinstance(instance, BaseTool) else None
        if tool is not None and parent is not None and parent.tool is tool:
            tool = None  # acall delegating to call: one tool call, not two
        if tool is not None and not span_id.split("-", 1)[0].endswith(("call", "acall")):
            tool = None
        span = OpenSpan(
            parent.turn if parent is not None else self._root_turn(arguments, instance),
            parent is None,
            time.perf_counter(),
            tool=tool,
            args=dict(arguments.get("kwargs") or {}) if tool is not None else None,
        )
        self.spans.add(span_id, span)

    def _root_turn(self, arguments: Mapping[str, Any], instance: Any) -> Turn:
        is_turn = isinstance(instance, (BaseQueryEngine, BaseChatEngine, Workflow))
        # Only a conversation needs a session: an index build or an embedding call outside
        # any block is not a miss (but one inside a block still records its LLM usage).
        session = self._session(count=is_turn)
        return Turn(session, user_text(arguments) if is_turn else "", is_turn)

    def exit(self, span_id: str, result: Any) -> None:
        """A span returned: a tool call ends, a root span ends its turn."""
        span = self.spans.get(span_id)
        if span is None:
            return
        if span.llm and not span.ended:
            span.exited = True  # a stream: its end event comes later and forgets the span
        else:
            self.spans.pop(span_id)
        session = span.turn.session
        if session is None:
            return
        if span.tool is not None:
            error = _field(result, "content") if _field(result, "is_error") else None
            self._tool_call(session, span, _field(result, "content"), error)
        if span.root and span.turn.is_turn:
            turn = span.turn
            if span.cancelled:
                self._incomplete(session, turn, "cancelled", "WorkflowCancelledByUser")
                return
            session.track_turn(user=turn.user, assistant=answer_text(result), usage=turn.usage())

    def drop(self, span_id: str, error: BaseException | None) -> None:
        """A span raised: a tool call failed, or the turn did not complete."""
        span = self.spans.pop(span_id)
        if span is None or span.turn.session is None:
            return
        session = span.turn.session
        if span.tool is not None:
            self._tool_call(session, span, None, error)
        if span.root and span.turn.is_turn:
            self._incomplete(session, span.turn, drop_status(error), type(error).__name__)

    @staticmethod
    def _incomplete(session: TrackedSession, turn: Turn, status: str, error: str) -> None:
        properties: dict[str, Any] = {"status": status, "error": error}
        usage = turn.usage()
        if usage is not None:
            properties["usage"] = usage
        session.track_event(TURN_INCOMPLETE, properties)

    @staticmethod
    def _tool_call(session: TrackedSession, span: OpenSpan, result: Any, error: Any) -> None:
        assert span.tool is not None
        session.track_tool_call(
            name=span.tool.metadata.name or type(span.tool).__name__,
            args=span.args,
            result=result,
            runtime_ms=(time.perf_counter() - span.started) * 1000.0,
            error=error,
        )

    # -- events ------------------------------------------------------------------------
    def event(self, event: BaseEvent) -> None:
        """LLM start events name the model; end events report usage."""
        if isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            span = self.spans.get(event.span_id)
            if span is not None:
                span.llm = True  # its end event may come after the span returns (a stream)
                model = event.model_dict.get("model") or event.model_dict.get("model_name")
                span.model = model if isinstance(model, str) else None
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            self._llm_ended(event.span_id, event.response)
        elif event.class_name() == _SPAN_CANCELLED:  # by name: workflows may be absent
            span = self.spans.get(event.span_id)
            if span is not None:
                span.cancelled = True

    def _llm_ended(self, span_id: str | None, response: Any) -> None:
        span = self.spans.get(span_id)
        if span is None:
            return
        span.ended = True
        if span.exited and span_id is not None:
            self.spans.pop(span_id)
        usage = response_usage(response)
        turn = span.turn
        if usage is None or turn.session is None:
            return
        tokens_in, tokens_out, raw_model = usage
        model = span.model or raw_model
        turn.model = model or turn.model
        turn.input_tokens += tokens_in
        turn.output_tokens += tokens_out
        turn.usage_calls += 1
        turn.session.track_usage(model=model, input_tokens=tokens_in, output_tokens=tokens_out)


# -- the two handlers ------------------------------------------------------------------------
class TrackingSpanHandler(BaseSpanHandler[SimpleSpan]):
    """Turns and tool calls from spans. ``new_span`` returns ``None``, so the base class
    keeps no span of its own (its ``open_spans``/``completed_spans`` never grow)."""

    _recorder: Recorder = PrivateAttr()

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    @classmethod
    def class_name(cls) -> str:
        """The class name (LlamaIndex's convention)."""
        return "AutoplayTrackingSpanHandler"

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        """Follow the span (see the module docstring)."""
        self._recorder.safely(
            "new_span", self._recorder.enter, id_, bound_args.arguments, instance, parent_span_id
        )
        return None

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        """Record what the span returned."""
        self._recorder.safely("prepare_to_exit_span", self._recorder.exit, id_, result)
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        """Record that the span raised."""
        self._recorder.safely("prepare_to_drop_span", self._recorder.drop, id_, err)
        return None


class TrackingEventHandler(BaseEventHandler):
    """Model names and usage from LLM events."""

    _recorder: Recorder = PrivateAttr()

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    @classmethod
    def class_name(cls) -> str:
        """The class name (LlamaIndex's convention)."""
        return "AutoplayTrackingEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Record an LLM start or end event (others are ignored)."""
        self._recorder.safely("handle", self._recorder.event, event)


# -- installing ------------------------------------------------------------------------------
class TrackingInstrumentation:
    """What :func:`instrument_tracking` installed; :meth:`uninstrument` removes it."""

    def __init__(self, tracker: AnyTracker, dispatcher: Dispatcher, recorder: Recorder) -> None:
        self.tracker = tracker
        self.dispatcher = dispatcher
        self.recorder = recorder
        self.span_handler = TrackingSpanHandler(recorder)
        self.event_handler = TrackingEventHandler(recorder)
        self.installed = False

    def __repr__(self) -> str:
        state = "installed" if self.installed else "removed"
        return f"TrackingInstrumentation(tracker={self.tracker!r}, {state})"

    def stats(self) -> dict[str, int]:
        """Counters: ``hook_errors``, ``open_spans``, ``open_spans_dropped``, ``untracked_runs``."""
        recorder = self.recorder
        return {
            "hook_errors": recorder.hook_errors,
            "open_spans": len(recorder.spans.spans),
            "open_spans_dropped": recorder.spans.dropped,
            "untracked_runs": recorder.untracked_runs,
        }

    def uninstrument(self) -> None:
        """Remove both handlers from the dispatcher (idempotent)."""
        with _INSTALL_LOCK:
            if not self.installed:
                return
            dispatcher = self.dispatcher
            dispatcher.span_handlers = [
                h for h in dispatcher.span_handlers if h is not self.span_handler
            ]
            dispatcher.event_handlers = [
                h for h in dispatcher.event_handlers if h is not self.event_handler
            ]
            self.installed = False
            _INSTALLED.pop(id(self.tracker), None)


_INSTALL_LOCK = threading.Lock()
_INSTALLED: dict[int, TrackingInstrumentation] = {}


def instrument_tracking(
    tracker: AnyTracker,
    *,
    product_id: str | None = None,
    max_open_spans: int = DEFAULT_MAX_OPEN_SPANS,
) -> TrackingInstrumentation:
    """Track every LlamaIndex turn, tool call and LLM usage with ``tracker`` (see the module
    docstring); idempotent per tracker.

    Args:
        tracker: the :class:`~autoplay_base.tracking.Tracker` or
            :class:`~autoplay_base.tracking.AsyncTracker` to record with.
        product_id: the product when the ``autoplay_session`` block names none.
        max_open_spans: spans remembered at once (default :data:`DEFAULT_MAX_OPEN_SPANS`).

    Raises:
        ConfigError: ``max_open_spans`` is below 1.
    """
    if not max_open_spans >= 1:
        raise ConfigError(f"max_open_spans must be >= 1, got {max_open_spans!r}")
    with _INSTALL_LOCK:
        installed = _INSTALLED.get(id(tracker))
        if installed is not None:
            return installed
        dispatcher = get_dispatcher()
        handle = TrackingInstrumentation(
            tracker, dispatcher, Recorder(tracker, product_id, max_open_spans)
        )
        dispatcher.add_span_handler(handle.span_handler)
        dispatcher.add_event_handler(handle.event_handler)
        handle.installed = True
        _INSTALLED[id(tracker)] = handle
        return handle
