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

Session and product always come from the call (``config["configurable"]``,
keyword arguments or an agent's runtime context), never from the instance.
"""

from typing import TYPE_CHECKING, Any

from autoplay_base._version import __version__
from autoplay_base.errors import missing_extra

try:
    from langchain_autoplay.chat_message_histories import (
        AutoplayChatMessageHistory,
        LiveContextMode,
    )
    from langchain_autoplay.document_loaders import AutoplayLoader, LoadUnit
    from langchain_autoplay.retrievers import AutoplayRetriever
    from langchain_autoplay.tools import (
        SessionActivityInput,
        SessionActivityTool,
        create_session_activity_tool,
    )
except ImportError as exc:  # pragma: no cover - exercised by test_missing_extras
    raise missing_extra("langchain-core", "langchain") from exc

if TYPE_CHECKING:
    from langchain_autoplay.middleware import AutoplayContextMiddleware

__all__ = [
    "AutoplayChatMessageHistory",
    "AutoplayContextMiddleware",
    "AutoplayLoader",
    "AutoplayRetriever",
    "LiveContextMode",
    "LoadUnit",
    "SessionActivityInput",
    "SessionActivityTool",
    "__version__",
    "create_session_activity_tool",
]


def __getattr__(name: str) -> Any:
    # The middleware needs the full ``langchain`` package, not just langchain-core:
    # import it on first use so core-only installs can use everything else.
    if name == "AutoplayContextMiddleware":
        try:
            from langchain_autoplay.middleware import AutoplayContextMiddleware  # noqa: PLC0415
        except ImportError as exc:
            raise missing_extra("langchain", "langchain") from exc
        return AutoplayContextMiddleware
    raise AttributeError(f"module 'langchain_autoplay' has no attribute {name!r}")
