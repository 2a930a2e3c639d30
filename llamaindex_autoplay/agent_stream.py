"""LlamaIndex agent workflows streamed live into an agent run stream.

:func:`astream_workflow` consumes a workflow handler's events (what
``FunctionAgent.run(...)``, ``AgentWorkflow.run(...)`` or any ``Workflow.run(...)``
returns) inside a new run of the session, and maps the agent events onto it:

=====================================  =============================================
``AgentInput``                          ``step_started(name=<agent name>)``
``AgentStream``                         ``text_delta(delta)``, ``reasoning_delta(thinking_delta)``;
                                        a ``ReActAgent``'s ``Thought: …`` text is
                                        reasoning, what follows ``Answer:`` the text
``AgentOutput``                         ``tool_input`` per tool call (parsed), then
                                        ``step_finished(usage=raw["usage"])``
``ToolCall``                            ``tool_started``
``ToolCallResult``                      ``tool_output`` (its content), or ``tool_error``
                                        (the exception's class name) when ``is_error``
=====================================  =============================================

LlamaIndex hands a tool call's arguments over parsed, never as the model's raw
argument text, so there is no ``tool_input_delta`` here. Other workflow events
are not streamed (an application emits its own with ``run.custom``).

``stream.cancel`` reaching the run calls ``handler.cancel_run()`` at once: the
workflow stops and the run ends ``cancelled``. An exception of the workflow ends
it ``error`` (re-raised), ``asyncio`` cancellation ``cancelled`` (the workflow is
cancelled too; the ``CancelledError`` propagates). Mapping is pure and O(1) per
event; a bug in it is counted and logged once, never the workflow's end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from llama_index.core.agent.workflow import (
    AgentInput,
    AgentOutput,
    AgentStream,
    ToolCall,
    ToolCallResult,
)

from autoplay_base.agent_stream import AsyncRunStream, IfLive, Run
from autoplay_base.agent_stream._drive import until_cancelled
from autoplay_base.errors import ConfigError
from llamaindex_autoplay._react_text import Piece, ReActText

__all__ = ["WorkflowEvents", "astream_workflow"]

logger = logging.getLogger("llamaindex_autoplay.agent_stream")

CANCEL_TIMEOUT_SECONDS = 2.0
"""How long a cancelled run waits for its workflow to stop (``cancel_run(timeout=...)``)."""


class WorkflowEvents:
    """Maps one workflow's events onto ``run`` (see the module); ``errors`` counts bugs."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.errors = 0
        self._text = ReActText()  # the current step's text: a ReAct scratchpad is reasoning

    def add(self, event: Any) -> None:
        """Emit what ``event`` means for the run (nothing for events it does not map)."""
        try:
            self._add(event)
        except Exception as exc:
            self.errors += 1
            if self.errors == 1:  # the class only: the text may quote a tool's input
                logger.warning(
                    "run stream workflow events: %s on %s ignored (run %s; later ones counted)",
                    type(exc).__name__,
                    type(event).__name__,
                    self.run.run_id,
                )

    def _add(self, event: Any) -> None:
        run = self.run
        if isinstance(event, AgentStream):
            if event.thinking_delta:
                run.reasoning_delta(event.thinking_delta)
            if event.delta:
                self._say(self._text.feed(event.delta))
        elif isinstance(event, AgentInput):
            self._text = ReActText()
            run.step_started(event.current_agent_name)
        elif isinstance(event, AgentOutput):
            self._say(self._text.flush())
            self._text = ReActText()
            for call in event.tool_calls:
                # An early-stopping answer lists the calls already made (their results):
                # their input went out when they were called.
                if not isinstance(call, ToolCallResult):
                    run.tool_input(call.tool_id, call.tool_name, call.tool_kwargs)
            raw = event.raw  # a provider's response: a dict, or an object (kept unparsed)
            usage = raw.get("usage") if isinstance(raw, Mapping) else getattr(raw, "usage", None)
            run.step_finished(usage=usage)
        elif isinstance(event, ToolCallResult):
            output = event.tool_output
            if output.is_error:
                run.tool_error(event.tool_id, output.exception or "tool error")
            else:
                run.tool_output(event.tool_id, output.content)
        elif isinstance(event, ToolCall):
            run.tool_started(event.tool_id, event.tool_name)

    def _say(self, pieces: list[Piece]) -> None:
        for kind, text in pieces:
            if kind == "text":
                self.run.text_delta(text)
            else:
                self.run.reasoning_delta(text)


async def astream_workflow(
    stream: AsyncRunStream,
    handler: Any,
    *,
    session_id: str,
    product_id: str,
    user_id: str | None = None,
    if_live: IfLive = "reject",
    user_message: str | None = None,
) -> Any:
    """Stream a running workflow (``handler``) into a new run of the session; its result.

    ``handler`` is what ``agent.run(...)`` returned (a ``WorkflowHandler``); the
    result is ``await handler`` (a ``FunctionAgent``'s ``AgentOutput``), or None
    when the run was cancelled.
    """
    if not isinstance(stream, AsyncRunStream):
        raise ConfigError("astream_workflow needs an AsyncRunStream")
    async with stream.run(
        session_id=session_id,
        product_id=product_id,
        user_id=user_id,
        if_live=if_live,
        user_message=user_message,
    ) as run:
        events = WorkflowEvents(run)

        async def consume() -> Any:
            async for event in handler.stream_events():
                if run.cancelled:
                    break
                events.add(event)
            return None if run.cancelled else await handler

        # The workflow never outlives its run (cancel_run stops it first); its
        # exception ends the run as an error.
        return await until_cancelled(
            run, consume(), on_cancel=lambda: handler.cancel_run(timeout=CANCEL_TIMEOUT_SECONDS)
        )
