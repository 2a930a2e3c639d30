"""Metrics hooks: the seed's ``SdkMetricsHook``, passed as ``metrics=`` to the clients,
the summarizers and the bridge (``metrics_hooks=``).

A hook is any object with some of these methods (each optional, duck-typed):

* ``record_counter(name, value)``: a counter moved by ``value``;
* ``record_drop(source, count)``: events lost;
* ``record_latency(name, seconds)``: how long an operation took;
* ``record_queue_depth(source, depth)``: events waiting.

What calls what:

* ``ConnectorClient`` / ``AsyncConnectorClient``: ``record_drop("stream", 1)`` for
  each event not delivered (queue full, or not delivered before ``stop``);
  ``record_counter("connects" | "disconnects" | "bad_frames", 1)``;
* ``SessionSummarizer`` / ``AsyncSessionSummarizer``: ``record_counter("summaries",
  1)`` for each summary delivered, ``record_counter("summary_failures", 1)`` for
  each failed LLM call;
* the bridge: see :mod:`autoplay_base.bridge`.

A hook never waits on anything the caller holds and never breaks it: one that
raises is counted (``metrics_hook_errors`` on a client or a summarizer, the bridge's
``hook_errors``) and logged once per method, by class name only.
Hooks are called on the thread (or loop) where the event happens, so they must be
cheap and thread-safe (a Prometheus or OpenTelemetry instrument is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["MetricsHooks", "SdkMetricsHook"]

logger = logging.getLogger("autoplay_base.metrics")


class SdkMetricsHook(Protocol):
    """What a metrics hook may implement; every method is optional (see the module)."""


class MetricsHooks:
    """Calls optional methods on each hook; a failure is counted, logged once, swallowed.

    ``on_error`` (if given) is called once per failure too (the bridge counts them in
    its own ``hook_errors``); ``owner`` and ``counted_in`` name them in the log line.
    """

    def __init__(
        self,
        hooks: Iterable[object],
        *,
        on_error: Callable[[], None] | None = None,
        owner: str = "autoplay",
        counted_in: str = "metrics_hook_errors",
    ) -> None:
        self._hooks = tuple(hooks)
        self._on_error = on_error
        self._message = (
            f"{owner}: metrics hook %s.%s raised %s (counted in {counted_in}; "
            "logged once per method)"
        )
        self._logged: set[str] = set()
        self.errors = 0
        """Hook calls that raised."""

    @classmethod
    def of(cls, metrics: object | None) -> MetricsHooks:
        """The hooks of a component's ``metrics=`` argument (one hook, or none)."""
        return cls(() if metrics is None else (metrics,))

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
                self.errors += 1
                if self._on_error is not None:
                    self._on_error()
                if method not in self._logged:
                    self._logged.add(method)
                    logger.warning(
                        self._message,
                        type(hook).__name__,
                        method,
                        type(exc).__name__,
                    )
