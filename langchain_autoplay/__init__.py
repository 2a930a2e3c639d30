"""LangChain adapters for autoplay live context (extra ``langchain``).

* :class:`AutoplayRetriever`: wraps any retriever; the query it sends carries
  the user's live context (the drop-in piece for RAG chains).
* :class:`AutoplayChatMessageHistory`: chat history in the store's backend, with
  what the user did since their previous message.
* :class:`AutoplayLoader`: one document per event or per session, from a
  recording, a store snapshot or a live stream window.
* :class:`AutoplayContextMiddleware`: LangChain v1 agents see the live context
  in their system message.
* :func:`create_session_activity_tool`: the ``get_session_activity`` tool.
* :func:`astream_agent` / :func:`stream_agent` and :class:`AutoplayRunStreamHandler`:
  an agent's answer streamed live into an agent run stream (tokens, tool calls,
  steps; cancel, interrupt).
* :class:`AutoplayTrackingHandler` / :func:`tracking_session` /
  :class:`AutoplayTrackingMiddleware`: record the agent's turns, tool calls and
  usage with an :mod:`autoplay_base.tracking` tracker.

Session and product always come from the call (``config["configurable"]``,
keyword arguments or an agent's runtime context), never from the instance.
"""

import importlib
from typing import TYPE_CHECKING, Any

from autoplay_base._version import __version__
from autoplay_base.errors import missing_extra

try:
    from langchain_autoplay.agent_stream import (
        AutoplayRunStreamHandler,
        astream_agent,
        stream_agent,
    )
    from langchain_autoplay.chat_message_histories import (
        AutoplayChatMessageHistory,
        LiveContextMode,
    )
    from langchain_autoplay.document_loaders import AutoplayLoader, LoadUnit
    from langchain_autoplay.prompt import AutoplayPrompt
    from langchain_autoplay.retrievers import AutoplayRetriever
    from langchain_autoplay.tools import (
        SessionActivityInput,
        SessionActivityTool,
        create_session_activity_tool,
    )
    from langchain_autoplay.tracking import AutoplayTrackingHandler, tracking_session
except ImportError as exc:  # pragma: no cover - exercised by test_missing_extras
    raise missing_extra("langchain-core", "langchain") from exc

if TYPE_CHECKING:
    from langchain_autoplay.middleware import AutoplayContextMiddleware
    from langchain_autoplay.tracking_middleware import AutoplayTrackingMiddleware

__all__ = [
    "AutoplayChatMessageHistory",
    "AutoplayContextMiddleware",
    "AutoplayLoader",
    "AutoplayPrompt",
    "AutoplayRetriever",
    "AutoplayRunStreamHandler",
    "AutoplayTrackingHandler",
    "AutoplayTrackingMiddleware",
    "LiveContextMode",
    "LoadUnit",
    "SessionActivityInput",
    "SessionActivityTool",
    "__version__",
    "astream_agent",
    "create_session_activity_tool",
    "stream_agent",
    "tracking_session",
]


_NEEDS_LANGCHAIN = {
    "AutoplayContextMiddleware": "langchain_autoplay.middleware",
    "AutoplayTrackingMiddleware": "langchain_autoplay.tracking_middleware",
}
"""Names that need the full ``langchain`` package (agent middleware), not just langchain-core."""


def __getattr__(name: str) -> Any:
    # Imported on first use so core-only installs can use everything else.
    module = _NEEDS_LANGCHAIN.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_autoplay' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra("langchain", "langchain") from exc
    return getattr(loaded, name)
