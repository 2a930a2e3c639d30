"""``OTelMetricsHook``: the bridge's figures as OpenTelemetry metrics (extra ``otel``).

Pass it in ``build_app(metrics_hooks=[OTelMetricsHook()])``. It implements every
:class:`~autoplay_base.bridge.SdkMetricsHook` method on instruments of the given
meter (default: ``metrics.get_meter("autoplay_base.bridge")``):

* ``record_counter`` / ``record_drop`` → counters ``autoplay.bridge.events`` and
  ``autoplay.bridge.dropped`` (attribute ``name`` / ``source``);
* ``record_latency`` → histogram ``autoplay.bridge.latency`` (seconds, attribute ``name``);
* ``record_queue_depth`` → gauge-like ``autoplay.bridge.queue_depth`` (up-down counter
  moved to the sampled value).

``observe(figures)``, called once by ``build_app``, registers one observable
counter per group (``autoplay.store``, ``autoplay.client``, ``autoplay.webhook``, …,
attribute ``counter``) and one observable gauge beside it (``autoplay.store.current``, …)
for the figures that also go down (``bytes``, ``queue_size``, ``stream_connected``, …):
the same numbers ``/metrics`` shows, read at collection time, typed as it types them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from autoplay_base.bridge._metrics import GAUGES
from autoplay_base.errors import missing_extra

__all__ = ["OTelMetricsHook"]

Figures = Callable[[], Mapping[str, Mapping[str, object]]]


class OTelMetricsHook:
    """A metrics hook writing to an OpenTelemetry meter (see the module docstring).

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (extra ``otel``).
    """

    GROUPS = ("bridge", "store", "client", "summarizer", "webhook")

    def __init__(self, meter: Any = None) -> None:
        try:
            from opentelemetry import metrics  # noqa: PLC0415 - optional extra
        except ImportError:
            raise missing_extra("opentelemetry-api", "otel") from None
        self._metrics = metrics
        self.meter = meter if meter is not None else metrics.get_meter("autoplay_base.bridge")
        self._events = self.meter.create_counter("autoplay.bridge.events")
        self._dropped = self.meter.create_counter("autoplay.bridge.dropped")
        self._latency = self.meter.create_histogram("autoplay.bridge.latency", unit="s")
        self._depth = self.meter.create_up_down_counter("autoplay.bridge.queue_depth")
        self._depths: dict[str, float] = {}

    def record_counter(self, name: str, value: float) -> None:
        """A bridge counter moved."""
        self._events.add(value, {"name": name})

    def record_drop(self, source: str, count: float) -> None:
        """Events were dropped."""
        self._dropped.add(count, {"source": source})

    def record_latency(self, name: str, seconds: float) -> None:
        """An operation took ``seconds``."""
        self._latency.record(seconds, {"name": name})

    def record_queue_depth(self, source: str, depth: float) -> None:
        """The queue holds ``depth`` events (the up-down counter moves to it)."""
        previous = self._depths.get(source, 0.0)
        self._depths[source] = depth
        self._depth.add(depth - previous, {"source": source})

    def observe(self, figures: Figures) -> None:
        """Register observable instruments reading ``figures()`` at collection time: a
        monotonic counter per group, and a gauge per group for the figures that also go
        down (:data:`~autoplay_base.bridge._metrics.GAUGES`, as ``/metrics`` types them)."""
        observation = self._metrics.Observation

        def reader(group: str, gauges: bool) -> Callable[[Any], Iterable[Any]]:
            def callback(_options: Any) -> Iterable[Any]:
                values = figures().get(group, {})
                return [
                    observation(value, {"counter": name})
                    for name, value in values.items()
                    if isinstance(value, int) and (name in GAUGES) == gauges
                ]

            return callback

        for group in self.GROUPS:
            name = f"autoplay.{group}"
            self.meter.create_observable_counter(name, callbacks=[reader(group, False)])
            self.meter.create_observable_gauge(f"{name}.current", callbacks=[reader(group, True)])
