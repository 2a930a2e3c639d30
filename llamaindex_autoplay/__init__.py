"""LlamaIndex adapters for autoplay live context (extra ``llamaindex``).

* :class:`AutoplayNodePostprocessor`: the user's live context as a node in
  every retrieval, and optional boosting of nodes about the pages they just
  visited (the drop-in piece for query and chat engines).
* :func:`autoplay_session`: ``with autoplay_session(session_id, product_id=...)``
  scopes every query inside it, even through chat engines and ``RetrieverTool``;
  :class:`AutoplayQueryBundle` carries a session on one query.
* :class:`AutoplayReader`: documents from a recording, a store snapshot or a
  live stream window.
* :class:`AutoplayMemoryBlock`: live activity as a block of LlamaIndex ``Memory``.
* :func:`astream_workflow`: a workflow's or ``FunctionAgent``'s events streamed
  live into an agent run stream (cancel calls ``handler.cancel_run()``).
* :func:`instrument_tracking`: record turns, tool calls and usage of query engines,
  chat engines and agents with an :mod:`autoplay_base.tracking` tracker.
"""

from autoplay_base._version import __version__
from autoplay_base.errors import missing_extra

try:
    from llamaindex_autoplay.agent_stream import WorkflowEvents, astream_workflow
    from llamaindex_autoplay.memory import AutoplayMemoryBlock
    from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor, AutoplayQueryBundle
    from llamaindex_autoplay.readers import AutoplayReader
    from llamaindex_autoplay.session import SessionScope, autoplay_session, current_session
    from llamaindex_autoplay.tracking import TrackingInstrumentation, instrument_tracking
except ImportError as exc:  # pragma: no cover - exercised by test_missing_extras
    raise missing_extra("llama-index-core", "llamaindex") from exc

__all__ = [
    "AutoplayMemoryBlock",
    "AutoplayNodePostprocessor",
    "AutoplayQueryBundle",
    "AutoplayReader",
    "SessionScope",
    "TrackingInstrumentation",
    "WorkflowEvents",
    "__version__",
    "astream_workflow",
    "autoplay_session",
    "current_session",
    "instrument_tracking",
]
