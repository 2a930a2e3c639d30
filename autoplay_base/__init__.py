"""autoplay_base: live user-session context for LLM apps.

The public surface in one namespace: typed events, the context stores, the
summarizers, the user index, the backends and the error tree. Submodules keep
the names ``autoplay-sdk`` documents (``autoplay_base.context_store``,
``autoplay_base.summarizer``, ``autoplay_base.user_index``).
"""

from autoplay_base._version import __version__
from autoplay_base.backends.base import (
    Backend,
    BackendStats,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
)
from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import (
    AmbiguousSessionError,
    AutoplayError,
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorNotFoundError,
    ConnectorRetriesExhaustedError,
    EventDecodeError,
    MissingDependencyError,
    SessionLookupError,
    SummarizerError,
)
from autoplay_base.events import (
    ActionsPayload,
    AnyPayload,
    Event,
    SlimAction,
    SummaryPayload,
    UnknownEvent,
    decode_event,
)
from autoplay_base.summarizer import AsyncSessionSummarizer, SessionSummarizer
from autoplay_base.user_index import SessionRef, UserSessionIndex

__all__ = [
    "ActionsPayload",
    "AmbiguousSessionError",
    "AnyPayload",
    "AsyncContextStore",
    "AsyncSessionSummarizer",
    "AutoplayError",
    "Backend",
    "BackendError",
    "BackendStats",
    "BackendUnavailableError",
    "ConfigError",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorNotFoundError",
    "ConnectorRetriesExhaustedError",
    "ContextStore",
    "Event",
    "EventDecodeError",
    "InMemoryBackend",
    "MissingDependencyError",
    "ReadOptions",
    "SessionKey",
    "SessionLookupError",
    "SessionRef",
    "SessionSummarizer",
    "SessionView",
    "SlimAction",
    "SummarizerError",
    "SummaryPayload",
    "UnknownEvent",
    "UserSessionIndex",
    "UserSessionRef",
    "__version__",
    "decode_event",
]
