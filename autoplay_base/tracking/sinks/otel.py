"""``OTelSink``: tracking events as OpenTelemetry spans (GenAI semantic conventions).

Needs ``opentelemetry-api`` (extra ``otel``); spans go to the given tracer
provider, or to the global one. :func:`span_spec` is the pure mapping:

* ``turn`` → span ``chat`` (``chat <model>`` with usage), ``gen_ai.operation.name``
  ``chat``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` /
  ``gen_ai.usage.output_tokens``, and the messages as ``gen_ai.input.messages`` /
  ``gen_ai.output.messages`` (JSON text) when content is recorded;
* ``tool_call`` → span ``execute_tool <name>``, ``gen_ai.operation.name``
  ``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.tool.call.arguments`` /
  ``gen_ai.tool.call.result`` (JSON text), starting ``runtime_ms`` before the
  event; a failed call sets ``error.type`` ``tool_error`` and the ERROR status;
* ``usage`` → span ``chat <model>`` with the token counts (and ``autoplay.cost``);
* any other type → span ``autoplay.<type>`` (custom events add ``autoplay.event.name``).

Every span has ``gen_ai.conversation.id`` (when known), ``session.id``,
``user.id`` (when known), ``autoplay.product_id``, ``autoplay.event_id`` and
``autoplay.event_type``. Spans are INTERNAL: they record what happened, they
do not wrap the call. Give the provider a ``BatchSpanProcessor`` in
production: exporting happens in the provider, not in this sink's lane.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoplay_base.errors import missing_extra
from autoplay_base.tracking import events as ev
from autoplay_base.tracking._values import json_text
from autoplay_base.tracking.events import TrackingEvent
from autoplay_base.tracking.policy import OK, BatchPolicy, Outcome
from autoplay_base.tracking.sinks.base import Encoded, Sink

__all__ = ["INSTRUMENTATION_NAME", "OTelSink", "SpanSpec", "span_spec"]

INSTRUMENTATION_NAME = "autoplay_base.tracking"
"""The tracer's instrumentation scope."""

AttributeValue = str | bool | int | float
SpanSpec = tuple[str, dict[str, AttributeValue], int, int, bool]
"""``(name, attributes, start_ns, end_ns, failed)``."""


def _put(attributes: dict[str, AttributeValue], name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, bool, int, float)):
        attributes[name] = value
    else:
        attributes[name] = json_text(value)


def _messages(role: str, text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return json_text([{"role": role, "parts": [{"type": "text", "content": text}]}])


def _usage(attributes: dict[str, AttributeValue], usage: Any) -> str | None:
    if not isinstance(usage, dict):
        return None
    model = usage.get("model")
    _put(attributes, "gen_ai.request.model", model)
    _put(attributes, "gen_ai.usage.input_tokens", usage.get("input_tokens"))
    _put(attributes, "gen_ai.usage.output_tokens", usage.get("output_tokens"))
    _put(attributes, "autoplay.cost", usage.get("cost"))
    return model if isinstance(model, str) else None


def span_spec(event: TrackingEvent) -> SpanSpec:
    """The span that records ``event`` (see the module docstring)."""
    attributes: dict[str, AttributeValue] = {}
    _put(attributes, "gen_ai.conversation.id", event.conversation_id)
    _put(attributes, "session.id", event.session_id)
    _put(attributes, "user.id", event.user_id)
    attributes["autoplay.product_id"] = event.product_id
    attributes["autoplay.event_id"] = event.event_id
    attributes["autoplay.event_type"] = event.type
    end = int(event.at * 1e9)
    start = end
    failed = False
    data = event.data
    if event.type in (ev.TURN, ev.USAGE):
        attributes["gen_ai.operation.name"] = "chat"
        model = _usage(attributes, data.get("usage") if event.type == ev.TURN else data)
        _put(attributes, "gen_ai.input.messages", _messages("user", data.get("user")))
        _put(attributes, "gen_ai.output.messages", _messages("assistant", data.get("assistant")))
        name = f"chat {model}" if model else "chat"
    elif event.type == ev.TOOL_CALL:
        tool = str(data.get("name"))
        attributes["gen_ai.operation.name"] = "execute_tool"
        attributes["gen_ai.tool.name"] = tool
        _put(attributes, "gen_ai.tool.call.arguments", data.get("args"))
        _put(attributes, "gen_ai.tool.call.result", data.get("result"))
        runtime = data.get("runtime_ms")
        if isinstance(runtime, (int, float)) and runtime > 0:
            start = end - int(runtime * 1e6)
        if data.get("error"):
            failed = True
            attributes["error.type"] = "tool_error"
        name = f"execute_tool {tool}"
    else:
        if event.type == ev.CUSTOM:
            _put(attributes, "autoplay.event.name", data.get("name"))
        name = f"autoplay.{event.type}"
    return name, attributes, start, end, failed


class OTelSink(Sink):
    """Record events as spans on ``tracer_provider`` (default: the global provider).

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (extra ``otel``).
    """

    name = "otel"

    def __init__(self, tracer_provider: Any = None, *, name: str = "otel") -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - optional extra
        except ImportError:
            raise missing_extra("opentelemetry-api", "otel") from None
        self._trace = trace
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        self.name = name
        self.batching = BatchPolicy(flush_interval=0.2)

    def __repr__(self) -> str:
        return "OTelSink()"

    def send(self, events: Sequence[Encoded]) -> Outcome:
        """Start and end one span per event."""
        trace = self._trace
        for event, _ in events:
            name, attributes, start, end, failed = span_spec(event)
            span = self._tracer.start_span(
                name, kind=trace.SpanKind.INTERNAL, attributes=attributes, start_time=start
            )
            if failed:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end(end_time=end)
        return OK

    async def asend(self, events: Sequence[Encoded]) -> Outcome:
        """:meth:`send`: spans are handed to the provider's processor, which does the I/O."""
        return self.send(events)
