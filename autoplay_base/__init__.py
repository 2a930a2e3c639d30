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
from autoplay_base.backends.redis import RedisBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import (
    AmbiguousSessionError,
    AmbiguousUserError,
    AutoplayError,
    BackendAuthError,
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorNotFoundError,
    ConnectorRedirectError,
    ConnectorRetriesExhaustedError,
    ConnectorUnavailableError,
    EventDecodeError,
    InvalidPayloadError,
    MissingDependencyError,
    RunCancelledError,
    RunLiveError,
    SessionLookupError,
    SessionNotFoundError,
    SummarizerError,
    SummarizerTimeoutError,
)
from autoplay_base.events import (
    ActionsPayload,
    AnyPayload,
    Event,
    SlimAction,
    SummaryPayload,
    UnknownEvent,
    decode_event,
    decode_object,
)
from autoplay_base.metrics import SdkMetricsHook
from autoplay_base.recording import (
    RecordingWriter,
    arecord_stream,
    iter_recording,
    record_stream,
)
from autoplay_base.stream import AsyncConnectorClient, ClientCounters, ConnectorClient
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events
from autoplay_base.summarizer import AsyncSessionSummarizer, SessionSummarizer
from autoplay_base.tracking import (
    AsyncTracker,
    ContextStoreSink,
    FlushResult,
    HttpBatchSink,
    OTelSink,
    RedisStreamSink,
    TrackedSession,
    Tracker,
)
from autoplay_base.user_index import SessionRef, UserSessionIndex

__all__ = [
    "ActionsPayload",
    "AmbiguousSessionError",
    "AmbiguousUserError",
    "AnyPayload",
    "AsyncConnectorClient",
    "AsyncContextStore",
    "AsyncSessionSummarizer",
    "AsyncTracker",
    "AutoplayError",
    "Backend",
    "BackendAuthError",
    "BackendError",
    "BackendStats",
    "BackendUnavailableError",
    "ClientCounters",
    "ConfigError",
    "ConnectorAuthError",
    "ConnectorClient",
    "ConnectorError",
    "ConnectorNotFoundError",
    "ConnectorRedirectError",
    "ConnectorRetriesExhaustedError",
    "ConnectorUnavailableError",
    "ContextStore",
    "ContextStoreSink",
    "Event",
    "EventDecodeError",
    "FlushResult",
    "HttpBatchSink",
    "InMemoryBackend",
    "InvalidPayloadError",
    "MissingDependencyError",
    "OTelSink",
    "ReadOptions",
    "RecordingWriter",
    "RedisBackend",
    "RedisStreamSink",
    "RunCancelledError",
    "RunLiveError",
    "SdkMetricsHook",
    "SessionKey",
    "SessionLookupError",
    "SessionNotFoundError",
    "SessionRef",
    "SessionSummarizer",
    "SessionView",
    "SlimAction",
    "SummarizerError",
    "SummarizerTimeoutError",
    "SummaryPayload",
    "TrackedSession",
    "Tracker",
    "UnknownEvent",
    "UserSessionIndex",
    "UserSessionRef",
    "__version__",
    "aiter_stream_events",
    "arecord_stream",
    "decode_event",
    "decode_object",
    "iter_recording",
    "iter_stream_events",
    "record_stream",
]
