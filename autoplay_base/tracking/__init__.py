"""Conversation tracking: what the chatbot said and did, recorded without slowing it,
delivered without losing it, and fed back into the live context.

Quick start (sync; ``AsyncTracker`` is the same with ``aflush``/``aclose``)::

    from autoplay_base.tracking import ContextStoreSink, HttpBatchSink, Tracker

    tracker = Tracker([HttpBatchSink("https://collector.example/v1/batch", token=TOKEN),
                       ContextStoreSink(store)])
    session = tracker.session("s1", product_id="acme", user_id="u1", conversation_id="c1")
    session.track_turn(user="How do I export?", assistant="Open Reports, then Export CSV.")
    session.track_tool_call(name="search_docs", args={"q": "export"}, result=["Reports"],
                            runtime_ms=12.5)
    session.track_usage(model="gpt-4o", input_tokens=134, output_tokens=237)
    session.track_event("Feedback", {"thumbs": "up"})
    session.end_conversation()
    result = tracker.flush(timeout=2.0)      # FlushResult(delivered=..., pending=..., ...)
    tracker.close()

The API (every ``track_*`` is a plain, non-blocking, O(1) call on both twins,
safe from any thread):

* ``Tracker(sinks, *, max_queue=10_000, redact=None, record_content=True,
  max_field_chars=4000, record_errors=False, on_error=None, on_drop=None,
  max_errors=100, flush_at_exit=True, exit_timeout=2.0)`` and ``AsyncTracker``
  (same options);
* ``tracker.session(session_id, *, product_id, user_id=None, device_id=None,
  conversation_id=None)`` → :class:`TrackedSession` with ``track_turn(user=,
  assistant=, usage=None)``, ``track_tool_call(name=, args=, result=,
  runtime_ms=, error=None)``, ``track_usage(model=, input_tokens=,
  output_tokens=, cost=None)``, ``track_event(name, properties)``,
  ``identify(user_id, traits=None)``, ``alias(user_id, previous_id)``,
  ``end_conversation()``, ``end_session()`` (each ``track_*`` also takes
  ``conversation_id=`` for one event); tracker-level ``identify(user_id, *,
  product_id, device_id=None, traits=None)`` and ``alias(user_id, previous_id,
  *, product_id)``;
* ``flush(timeout=5.0)`` / ``await aflush(timeout=5.0)`` and ``close`` /
  ``aclose`` always return by their deadline with a :class:`FlushResult`
  (``delivered``, ``pending``, ``dropped``, ``failed``, ``timed_out``, ``by_sink``);
* ``stats()`` (per sink ``enqueued == delivered + dropped + failed + pending``
  at every read), ``has_errors()``, ``get_errors()`` (:class:`DeliveryError`,
  bounded), ``on_error(DeliveryError)`` and ``on_drop(DropNotice)`` (sync or
  async; one that raises is counted in ``callback_errors``).

Sinks, each with its own lane (bounded outbox, own worker, order kept):
:class:`HttpBatchSink` (JSON batches, ``Idempotency-Key``, bearer token,
retries with backoff and ``Retry-After``, 413 splitting), :class:`RedisStreamSink`
(``XADD MAXLEN ~``), :class:`ContextStoreSink` (the assistant's answers become
activity lines in a ``ContextStore``, so the next ``enrich`` shows them) and
:class:`OTelSink` (GenAI semantic-convention spans). Events are
:class:`TrackingEvent` values; the rules of each part are in its module:
:mod:`~autoplay_base.tracking.tracker` (lifecycle, exit, fork),
:mod:`~autoplay_base.tracking._values` (JSON fallbacks, privacy),
:mod:`~autoplay_base.tracking.policy` (batching and retries, pure),
:mod:`~autoplay_base.tracking._lanes` (the workers).

For framework adapters (LangChain callback handler or middleware, LlamaIndex
instrumentation): hold one tracker per process, build a handle per call from
the call's own ids (``tracker.session(session_id, product_id=...,
conversation_id=...)`` is cheap: a tuple), and make exactly one ``track_*``
call per hook, with plain values:

* chat model / LLM end → ``track_usage(model=..., input_tokens=..., output_tokens=...)``;
* tool end / error → ``track_tool_call(name=..., args=..., result=..., runtime_ms=...,
  error=exc)`` (measure ``runtime_ms`` between the start and end hooks);
* the agent's final answer for a user message → ``track_turn(user=..., assistant=...)``;
* anything else worth a name → ``track_event(name, properties)``.

Never call ``flush`` from a hook; the application closes the tracker (or
relies on the exit flush).
"""

from autoplay_base.tracking.events import EVENT_TYPES, TrackingEvent
from autoplay_base.tracking.policy import BatchPolicy, Outcome, RetryPolicy
from autoplay_base.tracking.results import DeliveryError, DropNotice, FlushResult
from autoplay_base.tracking.session import TrackedSession
from autoplay_base.tracking.sinks import (
    ContextStoreSink,
    HttpBatchSink,
    OTelSink,
    RedisStreamSink,
    Sink,
)
from autoplay_base.tracking.tracker import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_EXIT_TIMEOUT,
    DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_QUEUE,
    AsyncTracker,
    Tracker,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_EXIT_TIMEOUT",
    "DEFAULT_FLUSH_TIMEOUT",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_QUEUE",
    "EVENT_TYPES",
    "AsyncTracker",
    "BatchPolicy",
    "ContextStoreSink",
    "DeliveryError",
    "DropNotice",
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
]
