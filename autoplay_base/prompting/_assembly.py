"""The reply prompt and the conversation's history entries (pure: values in, text out).

:func:`assemble_prompt` lays out what ``POST /reply/{user_id}`` sends to the
model. Every section is omitted, header and all, when it has nothing to show;
no placeholder is ever left in the text (the published bridge sent eight
``{placeholders}`` unfilled)::

    <system text>

    [Activity since the user's last message]
    1. Opened billing settings — /settings/billing

    [Recent activity]
    Summary: …

    Recent activity:
    1. …

    [Conversation so far]
    User: …
    Assistant: …

    [Knowledge base]
    1. <excerpt>

    [Question]
    How do I add a seat?

Untrusted text (messages, excerpts, the question) is cleaned to one line each
(:func:`~autoplay_base.formatting.clean_text`), so nothing a user types can open
a section of its own (``"\\n[Question]\\n…"`` becomes one line of the message).

History entries are the shape ``langchain_autoplay.AutoplayChatMessageHistory``
stores (``{"at": <time.time()>, "message": message_to_dict(m)}``), so a LangChain
app reading the same key sees the bridge's turns as ``HumanMessage``/``AIMessage``.
The ``at`` of the last human entry is the conversation's inbound watermark:
"activity since the user's last message" is the context read with ``since=`` it.
Kept in the backend next to the messages, every worker sharing a Redis agrees on it.

Plain code over values (no Starlette): the bridge and
``langchain_autoplay.AutoplayPrompt`` share it without the ``serve`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from autoplay_base.agent_stream._history import human_entry
from autoplay_base.formatting import clean_text

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "HEADER_HISTORY",
    "HEADER_KNOWLEDGE",
    "HEADER_QUESTION",
    "HEADER_RECENT",
    "HEADER_SINCE_LAST",
    "MAX_EXCERPTS",
    "MAX_EXCERPT_CHARS",
    "MAX_HISTORY_TURNS",
    "MAX_MESSAGE_CHARS",
    "Turn",
    "assemble_prompt",
    "assistant_entry",
    "decode_history",
    "human_entry",
    "last_human_at",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are the in-app assistant of this product. Answer the user's question; use "
    "what they just did in the product when it helps, and say so when the context "
    "below does not answer it."
)
"""The first paragraph of every prompt unless ``build_app(system_prompt=...)`` says otherwise."""
HEADER_SINCE_LAST = "[Activity since the user's last message]"
HEADER_RECENT = "[Recent activity]"
HEADER_HISTORY = "[Conversation so far]"
HEADER_KNOWLEDGE = "[Knowledge base]"
HEADER_QUESTION = "[Question]"
MAX_MESSAGE_CHARS = 2000
"""One message of the history, or the question, is cut to this many characters."""
MAX_EXCERPT_CHARS = 2000
"""One knowledge-base excerpt is cut to this many characters."""
MAX_EXCERPTS = 10
"""Only the first excerpts enter the prompt (the request's, then the knowledge base's)."""
MAX_HISTORY_TURNS = 20
"""Only the newest turns of the history enter the prompt (the backend bounds what it keeps)."""

_ROLES = {"human": "User", "ai": "Assistant"}


class Turn(NamedTuple):
    """One message of the conversation: ``role`` is ``"human"`` or ``"ai"``."""

    role: str
    text: str
    at: float


def _section(header: str, body: str) -> str:
    return f"{header}\n{body}" if body else ""


def _numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{n}. {item}" for n, item in enumerate(items, 1))


def assemble_prompt(
    question: str,
    *,
    since_last_message: str = "",
    recent_activity: str = "",
    history: Sequence[Turn] = (),
    knowledge: Sequence[str] = (),
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> str:
    """The prompt text (see the module docstring); empty sections are left out.

    ``since_last_message`` and ``recent_activity`` are context bodies as
    ``store.get`` returns them (already clean); the other parts are cleaned here.
    """
    turns = [
        f"{_ROLES.get(turn.role, 'User')}: {clean_text(turn.text, MAX_MESSAGE_CHARS)}"
        for turn in history[-MAX_HISTORY_TURNS:]
        if turn.text
    ]
    excerpts = [clean_text(text, MAX_EXCERPT_CHARS) for text in knowledge]
    excerpts = [text for text in excerpts if text][:MAX_EXCERPTS]
    sections = (
        system_prompt.strip(),
        _section(HEADER_SINCE_LAST, since_last_message),
        _section(HEADER_RECENT, recent_activity),
        _section(HEADER_HISTORY, "\n".join(turns)),
        _section(HEADER_KNOWLEDGE, _numbered(excerpts)),
        _section(HEADER_QUESTION, clean_text(question, MAX_MESSAGE_CHARS)),
    )
    return "\n\n".join(part for part in sections if part)


def assistant_entry(text: str, *, at: float) -> str:
    """The model's answer as one stored history entry (an ``AIMessage`` for LangChain)."""
    data: dict[str, Any] = {
        "content": text,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "ai",
        "name": None,
        "id": None,
        "tool_calls": [],
        "invalid_tool_calls": [],
        "usage_metadata": None,
    }
    return json.dumps({"at": at, "message": {"type": "ai", "data": data}}, separators=(",", ":"))


def decode_history(entries: Sequence[str]) -> tuple[list[Turn], int]:
    """The turns of stored entries, oldest first, and how many could not be read.

    Entries of other kinds (system, tool messages) are skipped without counting:
    they are valid, just not part of what the prompt shows.
    """
    turns: list[Turn] = []
    bad = 0
    for entry in entries:
        try:
            data = json.loads(entry)
            message = data["message"]
            role = message["type"]
            content = message["data"]["content"]
            at = float(data["at"])
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        role = _CHUNK_ROLES.get(role, role)
        text = content if isinstance(content, str) else _block_text(content)
        if role in _ROLES and text is not None:
            turns.append(Turn(role, text, at))
    return turns, bad


_CHUNK_ROLES = {"AIMessageChunk": "ai", "HumanMessageChunk": "human"}
"""How LangChain's ``message_to_dict`` names a stored chunk's type: the role it stands for."""


def _block_text(content: Any) -> str | None:
    """The text blocks of a list content (Anthropic, OpenAI Responses, Gemini, multimodal
    input), joined; reasoning, tool and image blocks are not what was said. ``None``
    when ``content`` is not a list or holds no text (a turn that only called a tool)."""
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts) if parts else None


def last_human_at(turns: Sequence[Turn]) -> float | None:
    """The inbound watermark: when the user last wrote (``None`` before their first message)."""
    for turn in reversed(turns):
        if turn.role == "human":
            return turn.at
    return None
