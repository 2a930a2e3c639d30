"""The tracking sinks: where a :class:`~autoplay_base.tracking.Tracker` delivers events.

``HttpBatchSink`` and ``RedisStreamSink`` need nothing beyond the package's own
dependencies; ``OTelSink`` imports ``opentelemetry-api`` when built (extra
``otel``); ``ContextStoreSink`` writes into a ``ContextStore``.
"""

from autoplay_base.tracking.sinks.base import Encoded, Sink
from autoplay_base.tracking.sinks.context_store import ContextStoreSink
from autoplay_base.tracking.sinks.http import HttpBatchSink
from autoplay_base.tracking.sinks.otel import OTelSink
from autoplay_base.tracking.sinks.redis_stream import RedisStreamSink

__all__ = [
    "ContextStoreSink",
    "Encoded",
    "HttpBatchSink",
    "OTelSink",
    "RedisStreamSink",
    "Sink",
]
