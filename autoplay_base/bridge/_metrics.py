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

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from autoplay_base._counters import Counters

__all__ = [
    "CONTENT_TYPE",
    "GAUGES",
    "BridgeCounters",
    "Hooks",
    "SdkMetricsHook",
    "render_prometheus",
]

logger = logging.getLogger("autoplay_base.bridge")

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


class SdkMetricsHook(Protocol):
    """What a metrics hook may implement; every method is optional (duck-typed).

    * ``record_counter(name, value)``: a counter moved by ``value`` (webhook
      deliveries, replies, refusals: ``"webhook_accepted"``, ``"reply"``, …);
    * ``record_drop(source, count)``: events lost (``"stream"``: the client's queue);
    * ``record_latency(name, seconds)``: how long an operation took (``"reply"``,
      ``"webhook"``);
    * ``record_queue_depth(source, depth)``: events waiting, sampled on each scrape.
    """


class Hooks:
    """Calls optional methods on each hook; a failure is counted, logged once, swallowed."""

    def __init__(self, hooks: Iterable[object], counters: BridgeCounters) -> None:
        self._hooks = tuple(hooks)
        self._counters = counters
        self._logged: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def emit(self, method: str, name: str, value: float) -> None:
        """``hook.<method>(name, value)`` on every hook that has it."""
        for hook in self._hooks:
            fn = getattr(hook, method, None)
            if fn is None:
                continue
            try:
                fn(name, value)
            except Exception as exc:
                self._counters.hook_errors += 1
                if method not in self._logged:
                    self._logged.add(method)
                    logger.warning(
                        "bridge: metrics hook %s.%s raised %s (counted in hook_errors; "
                        "logged once per method)",
                        type(hook).__name__,
                        method,
                        type(exc).__name__,
                    )


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
