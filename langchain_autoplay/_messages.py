"""Pure placements of a live-context block into LangChain messages (no I/O, no state).

Shared by the middleware and the chat history, so both put the block where every
provider's message formatting accepts it: Anthropic's rejects a system message
anywhere but at the start ("multiple non-consecutive system messages"), while
consecutive human messages are merged into one user turn there and accepted as they
are by OpenAI and Mistral. The messages passed in are never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from autoplay_base.formatting import append_block

__all__ = ["append_to_system_message", "merge_into_leading_system", "prepend_to_human_message"]

M = TypeVar("M", bound=BaseMessage)


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


def prepend_to_human_message(messages: list[M], block: str) -> list[M]:
    """``messages`` with ``block`` put first in the latest human message (a copy of it).

    A string content becomes ``block``, a blank line, the text; a content-block list
    gets a text block first. Without a human message the list comes back unchanged.
    """
    if not block:
        return messages
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, HumanMessage):
            if isinstance(message.content, str):
                content: str | list[str | dict[Any, Any]] = append_block(block, message.content)
            else:
                content = [{"type": "text", "text": block}, *message.content]
            copy = message.model_copy(update={"content": content})
            return [*messages[:index], copy, *messages[index + 1 :]]
    return messages


def merge_into_leading_system(messages: Sequence[BaseMessage], block: str) -> list[BaseMessage]:
    """``messages`` with ``block`` appended to their leading system message (a new one first
    when they do not start with one): still one system message, at the start."""
    if not block:
        return list(messages)
    if messages and isinstance(messages[0], SystemMessage):
        merged = append_to_system_message(messages[0], block)
        assert merged is not None
        return [merged, *messages[1:]]
    return [SystemMessage(content=block), *messages]
