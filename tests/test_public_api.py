"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import autoplay_base
from autoplay_base import errors

EXPECTED_BASE = {
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
    "SessionKey",
    "SessionLookupError",
    "SessionNotFoundError",
    "SessionRef",
    "SessionSummarizer",
    "SessionView",
    "SdkMetricsHook",
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
}


def test_autoplay_base_all_is_pinned() -> None:
    assert set(autoplay_base.__all__) == EXPECTED_BASE
    for name in autoplay_base.__all__:
        assert hasattr(autoplay_base, name), name


@pytest.mark.parametrize(
    "module",
    [
        "autoplay_base.context_store",
        "autoplay_base.summarizer",
        "autoplay_base.metrics",
        "autoplay_base.user_index",
        "autoplay_base.events",
        "autoplay_base.errors",
        "autoplay_base.formatting",
        "autoplay_base.sources",
        "autoplay_base.stream",
        "autoplay_base.stream_window",
        "autoplay_base.recording",
        "autoplay_base.emulator",
        "autoplay_base.emulator.generators",
        "autoplay_base.emulator.server",
        "autoplay_base.cli",
        "autoplay_base.demo",
        "autoplay_base.demo.app",
        "autoplay_base.backends.base",
        "autoplay_base.backends.memory",
        "autoplay_base.backends.redis",
        "autoplay_base.tracking",
        "autoplay_base.tracking.events",
        "autoplay_base.tracking.policy",
        "autoplay_base.tracking.results",
        "autoplay_base.tracking.session",
        "autoplay_base.tracking.tracker",
        "autoplay_base.tracking.sinks",
        "autoplay_base.emulator.receiver",
        "autoplay_base.emulator.push",
        "autoplay_base.bridge",
        "autoplay_base.bridge.otel",
    ],
)
def test_every_module_exports_what_it_names(module: str) -> None:
    loaded = importlib.import_module(module)
    for name in loaded.__all__:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_seed_import_paths_work() -> None:
    from autoplay_base.context_store import AsyncContextStore, ContextStore
    from autoplay_base.summarizer import AsyncSessionSummarizer, SessionSummarizer
    from autoplay_base.user_index import UserSessionIndex

    assert ContextStore is autoplay_base.ContextStore
    assert AsyncContextStore is autoplay_base.AsyncContextStore
    assert SessionSummarizer is autoplay_base.SessionSummarizer
    assert AsyncSessionSummarizer is autoplay_base.AsyncSessionSummarizer
    # "implement SdkMetricsHook (autoplay_sdk.metrics) and pass metrics= into the clients,
    # summarizer" (seed 000): the same names here.
    from autoplay_base.metrics import SdkMetricsHook

    assert SdkMetricsHook is autoplay_base.SdkMetricsHook
    assert UserSessionIndex is autoplay_base.UserSessionIndex


def test_every_error_derives_from_autoplay_error() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.AutoplayError), name
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.EventDecodeError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    assert issubclass(errors.BackendUnavailableError, errors.BackendError)
    assert issubclass(errors.ConnectorAuthError, errors.ConnectorError)


def test_missing_extra_names_the_extra() -> None:
    error = errors.missing_extra("redis", "redis")
    assert isinstance(error, ImportError)
    assert str(error) == (
        "redis is required for this feature; install it with "
        "pip install 'autoplay-live-context[redis]'"
    )


EXPECTED_LANGCHAIN = {
    "AutoplayRunStreamHandler",
    "astream_agent",
    "stream_agent",
    "AutoplayTrackingHandler",
    "AutoplayTrackingMiddleware",
    "tracking_session",
    "__version__",
    "AutoplayChatMessageHistory",
    "AutoplayContextMiddleware",
    "AutoplayLoader",
    "AutoplayPrompt",
    "AutoplayRetriever",
    "LiveContextMode",
    "LoadUnit",
    "SessionActivityInput",
    "SessionActivityTool",
    "create_session_activity_tool",
}


def test_langchain_autoplay_all_is_pinned() -> None:
    import langchain_autoplay

    assert set(langchain_autoplay.__all__) == EXPECTED_LANGCHAIN
    for name in langchain_autoplay.__all__:
        assert getattr(langchain_autoplay, name) is not None, name


@pytest.mark.parametrize(
    ("blocked", "package", "extra"),
    [
        ("langchain_core", "langchain_autoplay", "langchain"),
        ("llama_index", "llamaindex_autoplay", "llamaindex"),
        ("starlette", "autoplay_base.bridge", "serve"),
    ],
)
def test_a_missing_extra_names_what_to_install(blocked: str, package: str, extra: str) -> None:
    # A fresh interpreter where the framework cannot be imported, as if it were not installed.
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None\n"
        "try:\n"
        f"    import {package}\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("MissingDependencyError ")
    assert f"pip install 'autoplay-live-context[{extra}]'" in done.stdout


EXPECTED_LLAMAINDEX = {
    "WorkflowEvents",
    "astream_workflow",
    "TrackingInstrumentation",
    "instrument_tracking",
    "__version__",
    "AutoplayMemoryBlock",
    "AutoplayNodePostprocessor",
    "AutoplayQueryBundle",
    "AutoplayReader",
    "SessionScope",
    "autoplay_session",
    "current_session",
}


def test_llamaindex_autoplay_all_is_pinned() -> None:
    import llamaindex_autoplay

    assert set(llamaindex_autoplay.__all__) == EXPECTED_LLAMAINDEX
    for name in llamaindex_autoplay.__all__:
        assert getattr(llamaindex_autoplay, name) is not None, name


@pytest.mark.parametrize(
    "module",
    [
        "langchain_autoplay.retrievers",
        "langchain_autoplay.chat_message_histories",
        "langchain_autoplay.document_loaders",
        "langchain_autoplay.middleware",
        "langchain_autoplay.tools",
        "langchain_autoplay.demo",
        "langchain_autoplay.agent_stream",
        "langchain_autoplay.tracking",
        "langchain_autoplay.tracking_middleware",
        "langchain_autoplay.prompt",
        "llamaindex_autoplay.agent_stream",
        "llamaindex_autoplay.tracking",
        "llamaindex_autoplay.postprocessors",
        "llamaindex_autoplay.readers",
        "llamaindex_autoplay.memory",
        "llamaindex_autoplay.session",
    ],
)
def test_every_adapter_module_exports_what_it_names(module: str) -> None:
    loaded = importlib.import_module(module)
    for name in loaded.__all__:
        assert hasattr(loaded, name), f"{module}.{name}"


PINNED_MODULES = {
    "autoplay_base.emulator.push": {
        "DEFAULT_PUSH_ATTEMPTS",
        "DEFAULT_PUSH_BACKOFF",
        "DEFAULT_PUSH_TIMEOUT",
        "EMULATOR_WEBHOOK_SECRET_ENV_VAR",
        "PushFaults",
        "PushStats",
        "WebhookPusher",
    },
    "autoplay_base.tracking.policy": {
        "DEFAULT_BATCH_SIZE",
        "DEFAULT_FLUSH_INTERVAL",
        "DEFAULT_INITIAL_BACKOFF",
        "DEFAULT_MAX_BACKOFF",
        "DEFAULT_MAX_BATCH_BYTES",
        "DEFAULT_MAX_BATCH_EVENTS",
        "DEFAULT_MAX_RETRIES",
        "RETRYABLE_STATUSES",
        "Action",
        "BatchPolicy",
        "Decision",
        "DeliveryFlow",
        "Outcome",
        "RetryPolicy",
        "Send",
        "Settled",
        "Wait",
        "chunk_by_bytes",
        "delivery_flow",
        "idempotency_key",
    },
    "langchain_autoplay.prompt": {"AutoplayPrompt", "PromptInput"},
    "autoplay_base.prompting": {
        "CONVERSATION_PREFIX",
        "DEFAULT_SYSTEM_PROMPT",
        "Turn",
        "assemble_prompt",
        "conversation_key",
    },
    "langchain_autoplay.agent_stream": {
        "AutoplayRunStreamHandler",
        "astream_agent",
        "stream_agent",
    },
    "llamaindex_autoplay.agent_stream": {"WorkflowEvents", "astream_workflow"},
    "autoplay_base.bridge": {
        "DEFAULT_MAX_BODY_BYTES",
        "DEFAULT_SYSTEM_PROMPT",
        "DEFAULT_TIMESTAMP_TOLERANCE",
        "SIGNATURE_HEADER",
        "TIMESTAMP_HEADER",
        "SdkMetricsHook",
        "Turn",
        "WebhookVerifier",
        "assemble_prompt",
        "build_app",
        "render_prometheus",
        "sign",
    },
    "autoplay_base.agent_stream": {
        "AsyncRunStream",
        "DroppedEvents",
        "IfLive",
        "LiveRun",
        "Run",
        "RunCancelledError",
        "RunEvent",
        "RunLiveError",
        "RunStream",
        "RunStreamStats",
    },
    "autoplay_base.agent_stream.sse": {
        "VERCEL_HEADERS",
        "VercelEncoder",
        "anative_frames",
        "avercel_frames",
        "comment",
        "frame",
        "native_frame",
        "native_frames",
        "split_vercel_cursor",
        "vercel_frames",
    },
    "autoplay_base.agent_stream.starlette": {
        "DEFAULT_HEARTBEAT_SECONDS",
        "PEEK_SECONDS",
        "RunEventsResponse",
        "event_source_response",
    },
    "autoplay_base.agent_stream.stream": {
        "AsyncRunStream",
        "DEFAULT_CLOSE_TIMEOUT_SECONDS",
        "DEFAULT_HEARTBEAT_SECONDS",
        "DEFAULT_LEASE_SECONDS",
        "DEFAULT_MAX_BLOCKING_LISTENERS",
        "DEFAULT_MAX_BUFFERED_EVENTS",
        "DEFAULT_MAX_EVENTS",
        "DEFAULT_MAX_EVENT_BYTES",
        "DEFAULT_MAX_RUNS",
        "DEFAULT_MAX_TEXT_CHARS",
        "DEFAULT_POLL_SECONDS",
        "DEFAULT_RETENTION_SECONDS",
        "DroppedEvents",
        "IfLive",
        "LiveRun",
        "Run",
        "RunStream",
        "RunStreamStats",
    },
    "autoplay_base.tracking": {
        "AsyncTracker",
        "BatchPolicy",
        "ContextStoreSink",
        "DEFAULT_CLOSE_TIMEOUT",
        "DEFAULT_EXIT_TIMEOUT",
        "DEFAULT_FLUSH_TIMEOUT",
        "DEFAULT_MAX_ERRORS",
        "DEFAULT_MAX_QUEUE",
        "DeliveryError",
        "DropNotice",
        "EVENT_TYPES",
        "FlushResult",
        "HttpBatchSink",
        "OTelSink",
        "Outcome",
        "RedisStreamSink",
        "RetryPolicy",
        "Sink",
        "TrackedSession",
        "Tracker",
        "TrackingEvent",
    },
    "autoplay_base.tracking.sinks": {
        "ContextStoreSink",
        "Encoded",
        "HttpBatchSink",
        "OTelSink",
        "RedisStreamSink",
        "Sink",
    },
}
"""Every public name of the run-stream, tracking and bridge packages (a rename is deliberate)."""


@pytest.mark.parametrize("module", sorted(PINNED_MODULES))
def test_new_capability_names_are_pinned(module: str) -> None:
    loaded = importlib.import_module(module)
    assert set(loaded.__all__) == PINNED_MODULES[module]
    for name in loaded.__all__:
        assert hasattr(loaded, name), f"{module}.{name}"
