"""Which session a call is about: read from the agent's runtime context, then the config.

Pure lookups shared by the middleware and the tool; nothing is stored anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from langchain_core.runnables import RunnableConfig

__all__ = ["LANGGRAPH_RUNTIME_KEY", "CallScope", "call_scope", "runtime_context"]

LANGGRAPH_RUNTIME_KEY = "__pregel_runtime"
"""Where LangGraph puts the ``Runtime`` in ``config["configurable"]`` (what
``langgraph.runtime.get_runtime()`` reads); read from the config a tool is given so it
works on Python 3.10 event loops too, where ``get_runtime()`` cannot find the config."""


class CallScope(NamedTuple):
    """The session of one call; ``session_id`` is ``None`` when the call names none."""

    session_id: str | None
    product_id: str | None


def _field(source: Any, name: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def runtime_context(config: RunnableConfig) -> Any:
    """The LangGraph runtime context of the run ``config`` belongs to, if any."""
    runtime = (config.get("configurable") or {}).get(LANGGRAPH_RUNTIME_KEY)
    return getattr(runtime, "context", None)


def call_scope(context: Any, config: RunnableConfig) -> CallScope:
    """``session_id``/``product_id`` from a runtime context (dict, dataclass, pydantic model),
    else from ``config["configurable"]``.

    Both come from the same source, so a session named by the context is never paired
    with a product named elsewhere. Empty strings count as absent.
    """
    session_id = _field(context, "session_id")
    if session_id:
        return CallScope(session_id, _field(context, "product_id") or None)
    configurable = config.get("configurable") or {}
    return CallScope(configurable.get("session_id") or None, configurable.get("product_id") or None)
