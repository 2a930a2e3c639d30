"""Pure pieces of LangChain tracking: usage, the user's and the assistant's text, statuses.

Shared by :class:`~langchain_autoplay.tracking.AutoplayTrackingHandler` and
:class:`~langchain_autoplay.tracking_middleware.AutoplayTrackingMiddleware`, so both
read a model call's usage and a run's text the same way. Values in, values out:
no tracker, no clock, nothing stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.outputs import LLMResult
from langchain_core.prompt_values import PromptValue

__all__ = [
    "TURN_INCOMPLETE",
    "Guard",
    "Usage",
    "incomplete_status",
    "input_text",
    "last_text",
    "message_usage",
    "output_text",
    "result_usage",
    "tool_output",
]

logger = logging.getLogger("langchain_autoplay")

TURN_INCOMPLETE = "turn_incomplete"
"""The custom event recorded for a turn that did not complete (``status`` says why)."""


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
        # One call per prompt: with ``n > 1`` every choice carries the whole call's usage
        # (langchain-openai copies it), so the first choice that has some counts, once.
        for generation in generations:
            message = getattr(generation, "message", None)
            usage = message_usage(message) if isinstance(message, BaseMessage) else Usage()
            if usage.calls:
                total.add(usage)
                break
            total.model = total.model or usage.model
    output = response.llm_output or {}
    if not total.calls:
        counts = output.get("token_usage") or output.get("usage")
        if isinstance(counts, Mapping):
            total.input_tokens = int(counts.get("prompt_tokens") or counts.get("input_tokens") or 0)
            total.output_tokens = int(
                counts.get("completion_tokens") or counts.get("output_tokens") or 0
            )
            total.calls = 1
    named = output.get("model_name") or output.get("model")
    total.model = total.model or (named if isinstance(named, str) else None) or model
    return total


def _as_message(item: Any) -> BaseMessage | None:
    """One item of a ``messages`` input as LangChain reads it: a message, a string (the
    user's), a ``(role, content)`` pair or a ``{"role" | "type", "content"}`` dict."""
    if isinstance(item, BaseMessage):
        return item
    try:
        return convert_to_messages([item])[0]
    except Exception:  # not a message shape (LangChain raises several kinds): not one
        return None


def last_text(messages: Sequence[Any], kind: type[BaseMessage]) -> str | None:
    """The text of the last message of type ``kind``, in any shape a graph takes."""
    for item in reversed(messages):
        message = _as_message(item)
        if isinstance(message, kind):
            return message.text
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
        if isinstance(messages, str):  # LangGraph takes one string as the user's message
            return messages
        if isinstance(messages, Sequence):
            return last_text(messages, HumanMessage) or ""
        for key in ("input", "question", "query"):
            if isinstance(inputs.get(key), str):
                return str(inputs[key])
        return ""
    if isinstance(inputs, Sequence):
        return last_text(inputs, HumanMessage) or ""
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
            return last_text(messages, AIMessage) or ""
        for key in ("output", "answer", "text", "result"):
            if isinstance(outputs.get(key), str):
                return str(outputs[key])
    return ""


def tool_output(output: Any) -> Any:
    """A tool's result as recorded: a ``ToolMessage``'s content, else the value."""
    if isinstance(output, ToolMessage):
        return output.content
    return output


def tool_result(output: Any) -> tuple[Any, str | None]:
    """``(result, error)`` as recorded for a tool's output.

    A ``ToolMessage`` with ``status="error"`` (how LangGraph's ``ToolNode`` and a tool's
    ``handle_tool_error`` hand a failure to the model, instead of raising) is a failure:
    no result, its text as the error (kept only where the tracker records errors).
    """
    if isinstance(output, ToolMessage) and output.status == "error":
        return None, output.text or "error"
    return tool_output(output), None


def incomplete_status(error: BaseException) -> str:
    """``"interrupted"``, ``"cancelled"`` or ``"error"`` for what ended a run."""
    # By name: LangGraph is not installed with langchain-core alone, and its
    # ``GraphInterrupt`` (``NodeInterrupt`` a subclass) is the only interrupt it raises.
    if any(cls.__name__ == "GraphInterrupt" for cls in type(error).__mro__):
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
