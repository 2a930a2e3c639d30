"""What both connector clients share: callback registration, counters and options.

:class:`ClientBase` validates the options both clients take, builds the
:class:`~autoplay_base._connection.StreamCore` they read through, keeps the
registered callbacks (several per kind, all run, in registration order) and
turns what the reader and the buffers report (a dropped event, a bad frame, a
connection opened or closed) into notifications. How a notification is
delivered, and everything about running, is each client's own
(:mod:`autoplay_base.stream`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypedDict

from typing_extensions import Self

from autoplay_base._connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT_TIMEOUT,
    ClientCounters,
    StreamCore,
    http_timeout,
)
from autoplay_base._reconnect import (
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_JITTER,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_SEEN_IDS,
    Backoff,
    ResumeState,
)
from autoplay_base._secret import log_exception, resolve_token, scrub_error
from autoplay_base.errors import ConfigError
from autoplay_base.events import (
    DEFAULT_MAX_EVENT_BYTES,
    ActionsPayload,
    Event,
    SummaryPayload,
    UnknownEvent,
)
from autoplay_base.metrics import MetricsHooks

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_QUEUE_SIZE",
    "Callback",
    "ClientBase",
    "ClientOptions",
]

logger = logging.getLogger("autoplay_base.stream")

DEFAULT_MAX_QUEUE_SIZE = 500
"""Events buffered between the reader and the callbacks before drops start."""
DEFAULT_DRAIN_TIMEOUT = 5.0
"""On ``stop()``, seconds spent delivering already-buffered events before dropping them."""

Callback = Callable[..., Any]


def _raw_payload(event: Event) -> dict[str, Any]:
    """The JSON object an event came from (for ``on_drop``)."""
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return event.model_dump(mode="json")


class ClientOptions(TypedDict, total=False):
    """Keyword options both clients take (see :class:`~autoplay_base.stream.ConnectorClient`)."""

    heartbeat_timeout: float | None
    connect_timeout: float
    initial_backoff: float
    max_backoff: float
    backoff_jitter: float
    max_retries: int | None
    drain_timeout: float
    max_event_bytes: int
    seen_ids: int
    rng: Callable[[], float] | None
    metrics: object | None


class ClientBase:
    """Registration, counters and configuration shared by both clients."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        backoff_jitter: float = DEFAULT_JITTER,
        max_retries: int | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        seen_ids: int = DEFAULT_SEEN_IDS,
        rng: Callable[[], float] | None = None,
        metrics: object | None = None,
    ) -> None:
        if max_queue_size < 1:
            raise ConfigError(f"max_queue_size must be >= 1, got {max_queue_size!r}")
        if heartbeat_timeout is not None and heartbeat_timeout <= 0:
            raise ConfigError(f"heartbeat_timeout must be > 0, got {heartbeat_timeout!r}")
        if connect_timeout <= 0:
            raise ConfigError(f"connect_timeout must be > 0, got {connect_timeout!r}")
        if drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        backoff = (
            Backoff(initial_backoff, max_backoff, jitter=backoff_jitter)
            if rng is None
            else Backoff(initial_backoff, max_backoff, jitter=backoff_jitter, rng=rng)
        )
        self._core = StreamCore(
            url,
            resolve_token(token),
            ResumeState(backoff, max_retries=max_retries, seen_ids=seen_ids),
            max_event_bytes=max_event_bytes,
            heartbeat_timeout=heartbeat_timeout,
            on_bad_frame=self._bad_frame,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
        )
        self._metrics = MetricsHooks.of(metrics)
        self._max_queue_size = max_queue_size
        self._timeout = http_timeout(connect_timeout, heartbeat_timeout)
        self._drain_timeout = drain_timeout
        self._actions: list[Callback] = []
        self._summary: list[Callback] = []
        self._unknown: list[Callback] = []
        self._drop: list[Callback] = []
        self._error: list[Callback] = []
        self._connect: list[Callback] = []
        self._disconnect: list[Callback] = []
        self._running = False

    # -- registration (chainable) -------------------------------------------------------
    def on_actions(self, fn: Callable[[ActionsPayload], Any]) -> Self:
        """Call ``fn(payload)`` for every ``actions`` event; returns ``self``."""
        self._actions.append(fn)
        return self

    def on_summary(self, fn: Callable[[SummaryPayload], Any]) -> Self:
        """Call ``fn(payload)`` for every ``summary`` event; returns ``self``."""
        self._summary.append(fn)
        return self

    def on_event(self, fn: Callable[[UnknownEvent], Any]) -> Self:
        """Call ``fn(event)`` for events of other types (``usertour_trigger``, …)."""
        self._unknown.append(fn)
        return self

    def on_drop(self, fn: Callable[[dict[str, Any], int], Any]) -> Self:
        """Call ``fn(raw_payload, total_dropped)`` for every event that is not delivered."""
        self._drop.append(fn)
        return self

    def on_error(self, fn: Callable[[Exception], Any]) -> Self:
        """Call ``fn(error)`` for bad frames, callback exceptions and the fatal error."""
        self._error.append(fn)
        return self

    def on_connect(self, fn: Callable[[], Any]) -> Self:
        """Call ``fn()`` every time a stream opens (including reconnects)."""
        self._connect.append(fn)
        return self

    def on_disconnect(self, fn: Callable[[], Any]) -> Self:
        """Call ``fn()`` every time an open stream ends."""
        self._disconnect.append(fn)
        return self

    # -- observability ------------------------------------------------------------------
    @property
    def counters(self) -> ClientCounters:
        """Live counters (received, delivered, dropped, decode_errors, reconnects, …)."""
        return self._core.counters

    @property
    def metrics_hook_errors(self) -> int:
        """Calls of the ``metrics=`` hook that raised (each swallowed; logged once per method)."""
        return self._metrics.errors

    @property
    def dropped_count(self) -> int:
        """Events dropped so far (buffer full, or not delivered before stop)."""
        return self._core.counters.dropped

    @property
    def last_event_id(self) -> str | None:
        """Id of the last frame received; the next connection resumes after it."""
        return self._core.resume.last_event_id

    @property
    def url(self) -> str:
        """The stream URL (without query string or user info)."""
        return self._core.safe_url

    def __repr__(self) -> str:
        token = "set" if self._core.token else "none"
        return (
            f"{type(self).__name__}(url={self._core.safe_url!r}, token={token}, "
            f"running={self._running}, received={self.counters.received}, "
            f"dropped={self.counters.dropped})"
        )

    def _callbacks_for(self, event: Event) -> list[Callback]:
        if isinstance(event, ActionsPayload):
            return self._actions
        if isinstance(event, SummaryPayload):
            return self._summary
        return self._unknown

    def _log_callback_error(self, what: str, exc: BaseException) -> None:
        self._core.counters.callback_errors += 1
        log_exception(
            logger,
            logging.ERROR,
            f"stream: {what} callback raised {type(exc).__name__}: {str(exc)[:200]}",
            exc,
            self._core.token,
        )

    def _callback_failed(self, event: Event, exc: Exception) -> None:
        """An event callback raised: count, log, and hand the scrubbed error to ``on_error``."""
        self._log_callback_error(event.type, exc)
        self._notice(self._error, self._safe(exc))

    def _notice_failed(self, exc: BaseException) -> None:
        # Not handed to on_error: an on_error that raises would feed itself.
        self._log_callback_error("notification", exc)

    def _safe(self, exc: Exception) -> Exception:
        """``exc``, or a stand-in without the token, for ``on_error`` and ``raise``."""
        return scrub_error(exc, self._core.token)

    # Hooks from the reader and the buffer; each client's ``_notice`` delivers them.
    def _notice(self, fns: list[Callback], *args: Any) -> None:
        raise NotImplementedError

    def _dropped(self, event: Event, why: str) -> None:
        counters = self._core.counters
        counters.dropped += 1
        logger.warning(
            "stream: dropped a %s event (%s; session=%r, total dropped=%d)",
            event.type,
            why,
            event.session_id,
            counters.dropped,
        )
        if self._drop:
            self._notice(self._drop, _raw_payload(event), counters.dropped)
        if self._metrics:
            self._metrics.emit("record_drop", "stream", 1)

    def _bad_frame(self, exc: Exception) -> None:
        self._notice(self._error, exc)
        if self._metrics:
            self._metrics.emit("record_counter", "bad_frames", 1)

    def _connected(self) -> None:
        self._notice(self._connect)
        if self._metrics:
            self._metrics.emit("record_counter", "connects", 1)

    def _disconnected(self) -> None:
        self._notice(self._disconnect)
        if self._metrics:
            self._metrics.emit("record_counter", "disconnects", 1)
