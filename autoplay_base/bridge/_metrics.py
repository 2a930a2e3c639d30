"""The bridge's figures: Prometheus text, and metrics hooks that can never break a request.

:func:`render_prometheus` turns the package's counters (``store.stats()``,
``client.counters``, the summarizer's and the webhook's, the bridge's own) into
the Prometheus text exposition format (version 0.0.4) by hand: the format is a
few lines of text and the package does not depend on ``prometheus_client``.
Each group's counters become ``autoplay_<group>_<name>_total`` counters; the few
figures that go down too (:data:`GAUGES`) are gauges without the suffix.

:class:`SdkMetricsHook` keeps ``autoplay-sdk``'s name for "implement this to get
drops, latency and queue depth". Every method is optional; :class:`Hooks` calls
the ones a hook has, and a hook that raises is counted (``hook_errors``) and
logged once per method with the exception's class only, never its text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from autoplay_base._counters import Counters
from autoplay_base.metrics import MetricsHooks, SdkMetricsHook

__all__ = [
    "CONTENT_TYPE",
    "GAUGES",
    "BridgeCounters",
    "Hooks",
    "SdkMetricsHook",
    "render_prometheus",
]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of ``/metrics`` (the Prometheus text format)."""
GAUGES = frozenset({"bytes", "queue_size", "ready", "stream_connected", "backend_reachable"})
"""Figures that can go down: exported as gauges, every other one as a counter."""
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


class BridgeCounters(Counters):
    """The bridge's own counters (requests refused, replies, LLM and hook failures)."""

    __slots__ = (
        "bad_requests",
        "forbidden",
        "hook_errors",
        "knowledge_errors",
        "replies",
        "reply_errors",
        "unauthorized",
    )
    unauthorized: int
    forbidden: int
    replies: int
    reply_errors: int
    bad_requests: int
    hook_errors: int
    knowledge_errors: int


class Hooks(MetricsHooks):
    """The bridge's metrics hooks: a failure is also counted in its ``hook_errors``."""

    def __init__(self, hooks: Iterable[object], counters: BridgeCounters) -> None:
        def failed() -> None:
            counters.hook_errors += 1

        super().__init__(hooks, on_error=failed, owner="bridge", counted_in="hook_errors")


def _metric(group: str, name: str) -> tuple[str, str]:
    base = _NOT_NAME.sub("_", f"autoplay_{group}_{name}")
    return (base, "gauge") if name in GAUGES else (f"{base}_total", "counter")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")


def render_prometheus(groups: Mapping[str, Mapping[str, object]]) -> str:
    """``{group: {name: number}}`` as Prometheus text; non-numbers (``last_event_id``) skipped."""
    lines: list[str] = []
    for group, figures in groups.items():
        for name, value in figures.items():
            if not isinstance(value, (int, float)):
                continue
            metric, kind = _metric(group, name)
            lines.append(f"# TYPE {metric} {kind}")
            lines.append(f"{metric} {_value(value)}")
    return "\n".join(lines) + "\n"
