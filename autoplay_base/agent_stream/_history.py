"""Chat history entries of a run (pure): the user's message and the assistant's answer.

The shape is the one :class:`langchain_autoplay.AutoplayChatMessageHistory` stores
(``{"at": <time.time()>, "message": message_to_dict(m)}``), written here without
importing LangChain, so that history reads them back as a ``HumanMessage`` and an
``AIMessage``. An answer cut short keeps its partial text, and its status rides in
``response_metadata["autoplay_run"]`` (``{"run_id", "status"}``), never in the text.
"""

from __future__ import annotations

from typing import Any

from autoplay_base.agent_stream._events import dumps

__all__ = ["ai_entry", "human_entry"]


def _message(kind: str, content: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "content": content,
        "additional_kwargs": {},
        "response_metadata": {},
        "type": kind,
        "name": None,
        "id": None,
    }
    data.update(extra)
    return {"type": kind, "data": data}


def human_entry(text: str, *, at: float) -> str:
    """The user's message as one stored history entry."""
    return dumps({"at": at, "message": _message("human", text)})


def ai_entry(text: str, *, at: float, run_id: str, status: str) -> str:
    """The assistant's (possibly partial) answer as one stored history entry."""
    message = _message(
        "ai",
        text,
        response_metadata={"autoplay_run": {"run_id": run_id, "status": status}},
        tool_calls=[],
        invalid_tool_calls=[],
        usage_metadata=None,
    )
    return dumps({"at": at, "message": message})
