"""LangChain / LangGraph runs streamed live into an agent run stream.

* :class:`AutoplayRunStreamHandler` maps a LangChain run's callbacks onto one
  :class:`~autoplay_base.agent_stream.Run`: chat model chunks become
  ``text_delta`` / ``reasoning_delta`` / ``tool_input_delta``, each model call a
  ``step_started`` / ``step_finished(usage=...)`` pair with the complete tool
  calls (``tool_input``, parsed arguments) before its end, each tool call
  ``tool_started`` then ``tool_output`` or ``tool_error``.
* :func:`astream_agent` / :func:`stream_agent` open ``stream.run(...)``, drive a
  ``create_agent`` graph, any LangGraph graph or an LCEL runnable *streaming*, and
  return its final state (a graph) or its folded output (a runnable).

The handler is LangGraph's own streaming handler's shape: ``run_inline`` (called
on the agent's thread, in order), no I/O (every ``Run`` helper is an O(1) append),
and a ``tap_output_*`` pair, which makes it a ``_StreamingCallbackHandler``: a
chat model called under ``invoke`` streams when it is attached, so tokens flow
even where the agent does not stream itself (a ``create_agent`` graph under
``invoke`` fires no token callback otherwise). A bug in a hook never aborts the
user's agent: it is counted (``handler.errors``) and logged once, without its
text. The only exception the handler raises on purpose is
:class:`~autoplay_base.agent_stream.RunCancelledError`, from a model's next token
or next call once the run was cancelled (``stop_on_cancel=True``, the default):
that is what stops a synchronous agent within one token.

Ending: the block of the run ends ``success`` normally, ``interrupted`` on a
LangGraph ``interrupt()`` (its values first, as a ``custom`` event ``interrupt``),
``cancelled`` on ``stream.cancel`` (the async driver cancels the agent's task at
once; the sync one stops at the next token or chunk) or on ``asyncio``
cancellation (which still propagates), ``error`` with the safe message on an
exception (re-raised).

The drivers attach the handler twice over, on purpose: in the config's callbacks and
as the current run's handler in a context variable that LangChain's callback
configuration reads (a configure hook; the same handler is never added twice). The
second reaches model calls made without the config in hand: ``create_agent`` calls
its model with no config, and on Python 3.10 LangGraph cannot hand the node's config
to it through the context (``asyncio.create_task(context=)`` is 3.11+), so tokens and
steps would be lost there without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tracers.context import register_configure_hook

from autoplay_base.agent_stream import AsyncRunStream, IfLive, Run, RunCancelledError, RunStream
from autoplay_base.agent_stream._drive import until_cancelled
from autoplay_base.errors import ConfigError

__all__ = ["AutoplayRunStreamHandler", "astream_agent", "stream_agent"]

logger = logging.getLogger("langchain_autoplay.agent_stream")

T = TypeVar("T")

INTERRUPT_EVENT = "interrupt"
"""The ``custom`` event name carrying a LangGraph ``interrupt()``'s values (before ``finished``)."""
TOOL_ERROR_TEXT = "the tool reported an error"
"""The ``tool_error`` text of a tool whose result is a ``ToolMessage`` with ``status="error"``."""
NOSTREAM_TAG = "nostream"
"""A model call tagged so stays out of the stream (LangGraph's own ``messages`` mode rule)."""


@dataclass
class _Step:
    """One model call: the tool calls its chunks announced, by chunk index, and whether
    it streamed (a call that did not, its answer comes whole at its end)."""

    calls: dict[int, tuple[str, str]] = field(default_factory=dict)
    streamed: bool = False


class AutoplayRunStreamHandler(BaseCallbackHandler):
    """Stream a LangChain run's tokens, tool calls and steps into ``run`` (see the module).

    Pass it in ``config["callbacks"]``; one handler per run. ``errors`` counts hook
    failures (each swallowed; the first logged).
    """

    run_inline = True
    raise_error = True  # only RunCancelledError escapes: every hook catches its own bugs

    def __init__(self, run: Run, *, stop_on_cancel: bool = True) -> None:
        self.run = run
        self.stop_on_cancel = stop_on_cancel
        self.errors = 0
        self._steps: dict[UUID, _Step] = {}
        self._tools: dict[UUID, str] = {}
        self._nodes: dict[UUID, str] = {}
        self._lock = threading.Lock()

    # -- making chat models stream under invoke (LangGraph's _StreamingCallbackHandler) ----
    def tap_output_aiter(self, run_id: UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pass the output through (the marker that makes ``invoke`` stream)."""
        return output

    def tap_output_iter(self, run_id: UUID, output: Iterator[T]) -> Iterator[T]:
        """Pass the output through (the marker that makes ``invoke`` stream)."""
        return output

    # -- failure policy ---------------------------------------------------------------------
    def _failed(self, hook: str, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            first = self.errors == 1
        if first:  # the class only: the text may quote a tool's input or a key
            logger.warning(
                "run stream handler: %s in %s ignored (run %s; later ones counted only)",
                type(exc).__name__,
                hook,
                self.run.run_id,
            )

    def _check_cancelled(self) -> None:
        if self.stop_on_cancel:
            self.run.raise_if_cancelled()

    # -- graph nodes (a step's name where the model call does not carry it) -------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note an open LangGraph node (its runs carry ``langgraph_node`` in their metadata)."""
        node = metadata.get("langgraph_node") if isinstance(metadata, Mapping) else None
        if isinstance(node, str):
            self._nodes[run_id] = node

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """A node (or any chain) ended."""
        self._nodes.pop(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """A node (or any chain) failed."""
        self._nodes.pop(run_id, None)

    def _open_node(self) -> str | None:
        """The one node running now, if exactly one is (parallel nodes are ambiguous)."""
        names = set(self._nodes.values())
        return names.pop() if len(names) == 1 else None

    # -- model calls --------------------------------------------------------------------------
    def _step_start(self, run_id: UUID, tags: list[str] | None, metadata: Any, name: Any) -> None:
        self._check_cancelled()
        if tags and NOSTREAM_TAG in tags:
            return
        try:
            node = metadata.get("langgraph_node") if isinstance(metadata, Mapping) else None
            # A model called without the node's config (create_agent's, on Python 3.10)
            # carries no node name: the node that is running is its step.
            node = node or self._open_node()
            self._steps[run_id] = _Step()
            self.run.step_started(str(node or name or "model"))
        except Exception as exc:
            self._failed("on_chat_model_start", exc)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A chat model call begins: ``step_started``."""
        self._step_start(run_id, tags, metadata, kwargs.get("name") or _name(serialized))

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A (text) LLM call begins: ``step_started``."""
        self._step_start(run_id, tags, metadata, kwargs.get("name") or _name(serialized))

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: Any = None,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """One streamed chunk: its text, reasoning and tool-call argument pieces."""
        if self.stop_on_cancel:  # _check_cancelled, inlined: this is the per-token path
            self.run.raise_if_cancelled()
        step = self._steps.get(run_id)
        if step is None:
            return  # a nostream call, or a model whose start we did not see
        step.streamed = True
        try:
            if isinstance(chunk, ChatGenerationChunk):
                self._chunk(step, chunk.message)
            elif isinstance(token, str) and token:
                self.run.text_delta(token)
        except Exception as exc:
            self._failed("on_llm_new_token", exc)

    def _chunk(self, step: _Step, message: BaseMessage) -> None:
        run = self.run
        _message_text(run, message)
        for piece in getattr(message, "tool_call_chunks", None) or ():
            index = piece.get("index")
            key = index if isinstance(index, int) else len(step.calls)
            call = step.calls.get(key)
            if call is None or (piece.get("id") and piece.get("id") != call[0]):
                call = (str(piece.get("id") or ""), str(piece.get("name") or ""))
                step.calls[key] = call
            run.tool_input_delta(call[0], call[1], piece.get("args") or "")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """A model call ends: its complete tool calls (``tool_input``), then ``step_finished``."""
        step = self._steps.pop(run_id, None)
        if step is None:
            return
        try:
            usage: Any = None
            for generations in response.generations:
                for generation in generations:
                    message = getattr(generation, "message", None)
                    if message is None:
                        continue
                    if not step.streamed:  # no token came (not streaming, or a cache hit)
                        _message_text(self.run, message)
                    for call in getattr(message, "tool_calls", None) or ():
                        self.run.tool_input(str(call.get("id")), call["name"], call["args"])
                    for call in getattr(message, "invalid_tool_calls", None) or ():
                        self.run.tool_error(str(call.get("id")), "invalid tool call arguments")
                    usage = getattr(message, "usage_metadata", None) or usage
            if usage is None and response.llm_output:
                usage = response.llm_output.get("token_usage")
            self.run.step_finished(usage=usage)
        except Exception as exc:
            self._failed("on_llm_end", exc)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """A model call failed: its step still ends (the run's end says how)."""
        if self._steps.pop(run_id, None) is not None:
            try:
                self.run.step_finished(usage=None)
            except Exception as exc:
                self._failed("on_llm_error", exc)

    # -- tools --------------------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """``tool_started``, under the model's tool call id (the tool's run id without one)."""
        try:
            call_id = str(kwargs.get("tool_call_id") or run_id)
            self._tools[run_id] = call_id
            name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
            self.run.tool_started(call_id, str(name))
        except Exception as exc:
            self._failed("on_tool_start", exc)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """``tool_output``: a ``ToolMessage``'s content, or the value itself."""
        call_id = self._tools.pop(run_id, None)
        if call_id is None:
            return
        try:
            if isinstance(output, ToolMessage) and output.status == "error":
                # A failure the tool (or LangGraph's ToolNode) handled into a message for the
                # model: an error here too, without its text (it quotes the exception).
                self.run.tool_error(call_id, TOOL_ERROR_TEXT)
                return
            value = output.content if isinstance(output, ToolMessage) else output
            self.run.tool_output(call_id, value)
        except Exception as exc:
            self._failed("on_tool_end", exc)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """``tool_error`` with the exception's class name (its text may hold secrets)."""
        call_id = self._tools.pop(run_id, None)
        if call_id is None:
            return
        try:
            self.run.tool_error(call_id, error)
        except Exception as exc:
            self._failed("on_tool_error", exc)


def _name(serialized: Any) -> Any:
    """A model's name from its serialized form (``name``, else the class in ``id``)."""
    if not isinstance(serialized, Mapping):
        return None
    ids = serialized.get("id")
    return serialized.get("name") or (ids[-1] if isinstance(ids, list) and ids else None)


def _message_text(run: Run, message: BaseMessage) -> None:
    """A message's (or chunk's) text and reasoning as deltas, in content order."""
    content = message.content
    reasoned = False
    if isinstance(content, str):
        if content:
            run.text_delta(content)
    else:
        for block in content:
            reasoned = _content_block(run, block) or reasoned
    # Providers that keep reasoning beside the content (DeepSeek, Ollama, Groq, xAI); with
    # ``output_version="v1"`` LangChain copies it into a reasoning block too: sent once.
    reasoning = message.additional_kwargs.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning and not reasoned:
        run.reasoning_delta(reasoning)


def _reasoning_text(block: Mapping[str, Any]) -> str:
    """The text of a reasoning block, in each provider's shape."""
    kind = block.get("type")
    if kind == "reasoning_content":  # Bedrock Converse: {"reasoning_content": {"text"}}
        inner = block.get("reasoning_content")
        return str(inner.get("text") or "") if isinstance(inner, Mapping) else ""
    text = block.get("reasoning", block.get("thinking"))
    if isinstance(text, str):  # standard (v1), Anthropic, Gemini
        return text
    if isinstance(text, list):  # Mistral: {"thinking": [{"type": "text", "text"}]}
        return "".join(str(part.get("text") or "") for part in text if isinstance(part, Mapping))
    # OpenAI Responses: {"type": "reasoning", "summary": [{"text"}]}
    return "".join(str(s.get("text", "")) for s in block.get("summary") or ())


def _content_block(run: Run, block: str | dict[str, Any]) -> bool:
    """One content block of a chunk: text, or reasoning (True: it was a reasoning block)."""
    if isinstance(block, str):
        if block:
            run.text_delta(block)
        return False
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if isinstance(text, str) and text:
            run.text_delta(text)
    elif kind in ("reasoning", "thinking", "reasoning_content"):
        text = _reasoning_text(block)
        if text:
            run.reasoning_delta(text)
        return True
    return False


# -- drivers ----------------------------------------------------------------------------------
class _Fold:
    """How one agent is streamed and what its stream folds to (one value per driver call).

    A LangGraph graph streams ``["updates", "values"]``: the last ``values`` is the
    final state, an ``__interrupt__`` update marks the run interrupted. Any other
    runnable streams its output chunks, folded with ``+`` where they add up (what
    LangChain's own ``invoke``-from-``stream`` does), else the last one.
    """

    def __init__(self, agent: Runnable[Any, Any], run: Run) -> None:
        self.graph = _is_graph(agent)
        self.run = run
        self.result: Any = None
        self._started = False

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"stream_mode": ["updates", "values"]} if self.graph else {}

    def add(self, chunk: Any) -> None:
        if not self.graph:
            self._add_output(chunk)
            return
        mode, value = chunk
        if mode == "values":
            self.result = value
        elif isinstance(value, Mapping) and "__interrupt__" in value:
            self.run.custom(INTERRUPT_EVENT, _interrupts(value["__interrupt__"]))
            self.run.interrupt()

    def _add_output(self, chunk: Any) -> None:
        if not self._started:
            self.result, self._started = chunk, True
            return
        try:
            self.result = self.result + chunk
        except TypeError:
            self.result = chunk


def _is_graph(agent: Any) -> bool:
    try:
        from langgraph.pregel import Pregel  # noqa: PLC0415 - optional: plain LCEL needs none
    except ImportError:  # pragma: no cover - langgraph comes with langchain 1.x
        return False
    return isinstance(agent, Pregel)


def _interrupts(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return [{"id": getattr(i, "id", None), "value": getattr(i, "value", i)} for i in items]


_current_handler: ContextVar[AutoplayRunStreamHandler | None] = ContextVar(
    "autoplay_run_stream_handler", default=None
)
register_configure_hook(_current_handler, inheritable=True)


@contextmanager
def _handler_in_context(handler: AutoplayRunStreamHandler) -> Iterator[None]:
    """Make ``handler`` part of every callback manager configured inside the block."""
    token = _current_handler.set(handler)
    try:
        yield
    finally:
        _current_handler.reset(token)


def _with_handler(config: RunnableConfig | None, handler: AutoplayRunStreamHandler) -> Any:
    """``config`` with the handler added to its callbacks (a list, or a manager's handlers)."""
    merged: dict[str, Any] = dict(config or {})
    callbacks = merged.get("callbacks")
    if callbacks is None:
        merged["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        merged["callbacks"] = [*callbacks, handler]
    else:  # a callback manager: a copy, so the caller's keeps its handlers
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        merged["callbacks"] = manager
    return merged


async def astream_agent(
    stream: AsyncRunStream,
    agent: Runnable[Any, Any],
    input: Any,
    *,
    session_id: str,
    product_id: str,
    user_id: str | None = None,
    config: RunnableConfig | None = None,
    if_live: IfLive = "reject",
    user_message: str | None = None,
) -> Any:
    """Run ``agent`` on ``input`` streaming into a new run of the session; its final value.

    A graph (``create_agent``, any compiled LangGraph) returns its final state, a
    runnable its folded output; a cancelled run returns what was reached. The
    agent's task is cancelled as soon as ``stream.cancel`` reaches the run.
    """
    if not isinstance(stream, AsyncRunStream):
        raise ConfigError("astream_agent needs an AsyncRunStream (stream_agent takes a RunStream)")
    async with stream.run(
        session_id=session_id,
        product_id=product_id,
        user_id=user_id,
        if_live=if_live,
        user_message=user_message,
    ) as run:
        fold = _Fold(agent, run)
        handler = AutoplayRunStreamHandler(run)
        cfg = _with_handler(config, handler)

        async def consume() -> None:
            async for chunk in agent.astream(input, cfg, **fold.kwargs):
                fold.add(chunk)
                run.raise_if_cancelled()

        # The agent never outlives its run; its exception ends the run as an error.
        # Its task copies the context here, the handler included.
        with _handler_in_context(handler):
            await until_cancelled(run, consume())
    return fold.result


def stream_agent(
    stream: RunStream,
    agent: Runnable[Any, Any],
    input: Any,
    *,
    session_id: str,
    product_id: str,
    user_id: str | None = None,
    config: RunnableConfig | None = None,
    if_live: IfLive = "reject",
    user_message: str | None = None,
) -> Any:
    """Sync twin of :func:`astream_agent`: a cancel stops the agent at its next token or chunk."""
    if not isinstance(stream, RunStream):
        raise ConfigError("stream_agent needs a RunStream (astream_agent takes an AsyncRunStream)")
    with stream.run(
        session_id=session_id,
        product_id=product_id,
        user_id=user_id,
        if_live=if_live,
        user_message=user_message,
    ) as run:
        fold = _Fold(agent, run)
        handler = AutoplayRunStreamHandler(run)
        cfg = _with_handler(config, handler)
        # Unlike the async twin there is no task to cancel from outside: the handler
        # raises RunCancelledError at the model's next token or call, and the loop
        # checks between chunks (a tool blocking in between finishes first).
        try:
            with _handler_in_context(handler):
                for chunk in agent.stream(input, cfg, **fold.kwargs):
                    fold.add(chunk)
                    run.raise_if_cancelled()
        except RunCancelledError:
            pass  # the block ends as cancelled; the caller gets what was reached
    return fold.result
