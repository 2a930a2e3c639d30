"""The reconnect policy of the connector clients, without any I/O.

Everything that decides *whether*, *when* and *from where* to reconnect lives
here as plain values in, values out, so it is tested without sockets or clocks
and shared by :class:`~autoplay_base.stream.ConnectorClient` and
:class:`~autoplay_base.stream.AsyncConnectorClient`:

* :class:`Backoff` — exponential delay (1 s → 30 s by default) with jitter from
  an injectable random source;
* :class:`SeenIds` — a bounded window of recently delivered event ids, so a
  frame the server replays after a reconnect is dropped, not delivered twice;
* :func:`classify_status` — 401/403 and 404 are fatal, everything else retries;
* :class:`ResumeState` — ties it together: the ``Last-Event-ID`` to send, the
  server's ``retry:`` hint, consecutive failures against ``max_retries``, and
  the delay before the next attempt.

Rules (the ones the reference client gets wrong are marked *):

* after a clean close that delivered at least one frame, reconnect at once*
  (or after the server's ``retry:`` hint, if it sent one);
* after an error — network failure, read timeout, 5xx, a clean close that
  delivered nothing — wait ``Backoff.delay(n)`` for the n-th consecutive
  failure, never less than the server's ``retry:`` hint;
* a response with status 200 resets the failure count;
* ``max_retries`` consecutive failures raise
  :class:`~autoplay_base.errors.ConnectorRetriesExhaustedError`;
* on reconnect, ``Last-Event-ID`` carries the id of the last frame received*,
  and ids already seen are dropped*.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import Enum

from autoplay_base._recent import RecentKeys
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorNotFoundError,
    ConnectorRetriesExhaustedError,
)

__all__ = [
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_SEEN_IDS",
    "Backoff",
    "ResumeState",
    "SeenIds",
    "StatusAction",
    "classify_status",
    "fatal_status_error",
]

DEFAULT_INITIAL_BACKOFF = 1.0
"""Seconds before the first retry after an error."""
DEFAULT_MAX_BACKOFF = 30.0
"""Cap on the delay between retries, in seconds."""
DEFAULT_JITTER = 0.2
"""Fraction of each delay that is randomised, to spread reconnect storms."""
DEFAULT_SEEN_IDS = 4096
"""How many recent event ids are remembered to drop replayed duplicates."""


class Backoff:
    """Exponential backoff with jitter.

    The n-th consecutive failure (n >= 1) waits
    ``base = min(maximum, initial * 2 ** (n - 1))`` scaled into
    ``[base * (1 - jitter), base]`` by ``rng()`` (a float in ``[0, 1)``), so
    the delay never exceeds ``maximum`` and never drops below
    ``(1 - jitter) * base``.

    Args:
        initial: delay of the first retry, seconds (> 0).
        maximum: cap on any delay, seconds (>= initial).
        jitter: fraction of the delay that is random, in ``[0, 1]``.
        rng: source of randomness; tests pass a constant.
    """

    __slots__ = ("initial", "jitter", "maximum", "rng")

    def __init__(
        self,
        initial: float = DEFAULT_INITIAL_BACKOFF,
        maximum: float = DEFAULT_MAX_BACKOFF,
        *,
        jitter: float = DEFAULT_JITTER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0:
            raise ConfigError(f"initial backoff must be > 0, got {initial!r}")
        if maximum < initial:
            raise ConfigError(f"max backoff ({maximum!r}) must be >= initial ({initial!r})")
        if not 0 <= jitter <= 1:
            raise ConfigError(f"jitter must be within [0, 1], got {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 means no wait)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent: 2**1000 would overflow to inf long after the cap applies.
        base = min(self.maximum, self.initial * 2.0 ** min(failures - 1, 64))
        return base * (1.0 - self.jitter * self.rng())


class SeenIds(RecentKeys[str]):
    """A bounded set of the most recent event ids (oldest forgotten first)."""

    __slots__ = ()


class StatusAction(Enum):
    """What to do with an HTTP status."""

    OK = "ok"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RETRY = "retry"


def classify_status(status_code: int) -> StatusAction:
    """200 streams; 401/403 and 404 are fatal; any other status is retried."""
    if status_code == 200:
        return StatusAction.OK
    if status_code in (401, 403):
        return StatusAction.AUTH
    if status_code == 404:
        return StatusAction.NOT_FOUND
    return StatusAction.RETRY


def fatal_status_error(status_code: int, url: str) -> ConnectorError | None:
    """The error to raise for a fatal status, or ``None`` for a status worth retrying.

    ``url`` must already be free of secrets (the clients pass it without query string).
    """
    action = classify_status(status_code)
    if action is StatusAction.AUTH:
        return ConnectorAuthError(
            f"connector answered {status_code} for {url}: the token is missing or wrong "
            "(not retried)",
            status_code=status_code,
        )
    if action is StatusAction.NOT_FOUND:
        return ConnectorNotFoundError(
            f"connector answered 404 for {url}: check the URL and product id (not retried)"
        )
    return None


class ResumeState:
    """Where to resume and when to retry, for one client across all its connections.

    Drive it with :meth:`connected` / :meth:`accept` for every frame /
    :meth:`closed_cleanly` or :meth:`failed`; read :attr:`last_event_id` for
    the ``Last-Event-ID`` header of the next request.

    Args:
        backoff: the delay policy after errors.
        max_retries: consecutive failures allowed before giving up
            (``None``: retry forever).
        seen_ids: size of the window of remembered ids.
    """

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        max_retries: int | None = None,
        seen_ids: int = DEFAULT_SEEN_IDS,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0 or None, got {max_retries!r}")
        self.backoff = backoff if backoff is not None else Backoff()
        self.max_retries = max_retries
        self.seen = SeenIds(seen_ids)
        self.last_event_id: str | None = None
        self.server_retry: float | None = None
        self.failures = 0
        self.connections = 0
        self._frames_this_connection = 0
        self._previous_id: str | None = None

    def request_headers(self, token: str) -> dict[str, str]:
        """Headers for the next ``GET``: SSE accept, bearer token, ``Last-Event-ID``."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def connected(self) -> None:
        """The server answered 200 with an event stream: the failure streak ends."""
        self.failures = 0
        self.connections += 1
        self._frames_this_connection = 0
        self._previous_id = None

    def note_retry(self, retry_ms: int | None) -> None:
        """Remember the server's ``retry:`` hint (milliseconds)."""
        if retry_ms is not None and retry_ms >= 0:
            self.server_retry = retry_ms / 1000.0

    def frame(self) -> None:
        """Any frame arrived (heartbeats included): the connection is alive and useful."""
        self._frames_this_connection += 1

    def accept(self, event_id: str) -> bool:
        """Record a data frame's SSE id; ``False`` if it is a replayed duplicate to drop.

        ``""`` (the server sends no ids) is always accepted. Per the SSE spec a
        frame without an ``id:`` line inherits the previous id, so a repeat of
        the id just accepted on *this* connection is an inherited id, not a
        replay, and is accepted too.
        """
        self._frames_this_connection += 1  # self.frame(), inlined: this runs per event
        if not event_id:
            return True
        if event_id == self._previous_id:
            return True
        self._previous_id = event_id
        self.last_event_id = event_id
        return self.seen.add(event_id)

    def closed_cleanly(self) -> float:
        """The server ended the stream; seconds to wait before reconnecting.

        A clean close right after connecting, with no frame at all, counts as a
        failure so that a server that keeps hanging up is not hammered.
        """
        if self._frames_this_connection == 0:
            return self.failed()
        return self.server_retry or 0.0

    def failed(self) -> float:
        """A connection attempt or a live connection failed; seconds to wait.

        Raises:
            ConnectorRetriesExhaustedError: after ``max_retries`` consecutive failures.
        """
        self.failures += 1
        if self.max_retries is not None and self.failures > self.max_retries:
            raise ConnectorRetriesExhaustedError(
                f"gave up after {self.failures} consecutive failed connection attempts "
                f"(max_retries={self.max_retries})"
            )
        delay = self.backoff.delay(self.failures)
        if self.server_retry is not None:
            delay = max(delay, min(self.server_retry, self.backoff.maximum))
        return delay
