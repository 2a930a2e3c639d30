"""The reconnect policy of the connector clients, without any I/O.

Everything that decides *whether*, *when* and *from where* to reconnect lives
here as plain values in, values out, so it is tested without sockets or clocks
(the clock and the randomness are injected) and shared by
:class:`~autoplay_base.stream.ConnectorClient` and
:class:`~autoplay_base.stream.AsyncConnectorClient`:

* :class:`Backoff` — exponential delay (1 s → 30 s by default) with jitter from
  an injectable random source;
* :func:`classify_status` — 3xx, 401/403 and 404 are fatal, everything else retries;
* :func:`parse_retry_after` — a ``Retry-After`` header as bounded seconds;
* :class:`ResumeState` — ties it together: the ``Last-Event-ID`` to send, the
  dedupe window (:class:`~autoplay_base._recent.DedupeWindow`), the server's
  hints, consecutive failures against ``max_retries``, and the delay before the
  next attempt.

Rules (the ones the reference client gets wrong are marked *):

* a connection is *healthy* once it delivered an event (a new one, not a
  replayed duplicate) or stayed open :data:`HEALTHY_CONNECTION_SECONDS`; only
  then does the failure streak end* (a status 200 alone does not: a server
  that answers and hangs up at once is backed off, not hammered);
* after a clean close of a healthy connection, reconnect at once* (or after
  the server's ``retry:`` hint, if it sent one);
* after an error — network failure, read timeout, 5xx, 429, a clean close of a
  connection that was not healthy (nothing, or only heartbeats, before it
  ended)* — wait ``Backoff.delay(n)`` for the n-th consecutive failure, never
  less than the server's ``retry:`` hint or the response's ``Retry-After``*;
* every server hint is capped at ``Backoff.maximum``*: no ``retry:`` or
  ``Retry-After`` value makes a client wait longer than its own maximum
  backoff, and none makes it raise;
* 3xx is never followed (the bearer token must not travel to another address)
  nor retried*: :class:`~autoplay_base.errors.ConnectorRedirectError` names
  the status and the target without user info, query or fragment; 401/403 and
  404 are fatal too;
* ``max_retries`` consecutive failures raise
  :class:`~autoplay_base.errors.ConnectorRetriesExhaustedError` (the only
  error the policy ever raises);
* on reconnect, ``Last-Event-ID`` carries the id of the last frame received*
  (always a valid header value: the decoder keeps only printable-ASCII ids of
  bounded length, and an invalid one set by hand is dropped, counted and
  logged); replayed events already delivered are dropped*, a replay longer
  than the window costs only the part outside it, and an id the server reuses
  for other content is delivered*.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import timezone
from enum import Enum
from urllib.parse import quote, urlsplit, urlunsplit

from autoplay_base._recent import DedupeWindow
from autoplay_base._sse import MAX_EVENT_ID_CHARS, is_valid_event_id
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorNotFoundError,
    ConnectorRedirectError,
    ConnectorRetriesExhaustedError,
)

__all__ = [
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_SEEN_IDS",
    "HEALTHY_CONNECTION_SECONDS",
    "MAX_RETRY_AFTER_SECONDS",
    "Backoff",
    "ResumeState",
    "StatusAction",
    "classify_status",
    "fatal_status_error",
    "parse_retry_after",
    "safe_url",
]

logger = logging.getLogger("autoplay_base.stream")

DEFAULT_INITIAL_BACKOFF = 1.0
"""Seconds before the first retry after an error."""
DEFAULT_MAX_BACKOFF = 30.0
"""Cap on the delay between retries, in seconds (and on every server hint)."""
DEFAULT_JITTER = 0.2
"""Fraction of each delay that is randomised, to spread reconnect storms."""
DEFAULT_SEEN_IDS = 4096
"""How many recent event ids are remembered to drop replayed duplicates."""
HEALTHY_CONNECTION_SECONDS = 5.0
"""A connection open this long (by the injected clock) is healthy even without events."""
MAX_RETRY_AFTER_SECONDS = 86_400.0
"""Largest value :func:`parse_retry_after` returns (one day; the policy caps it lower)."""

_MAX_DATE_CHARS = 64  # an HTTP-date is 29 characters; longer text is not parsed
_MAX_RETRY_AFTER_DIGITS = len(str(int(MAX_RETRY_AFTER_SECONDS)))
_MAX_URL_CHARS = 512
# Characters kept as they are in a URL shown in a log or an error; anything else
# (controls, spaces, non-ASCII: log injection, confusables) is percent-encoded.
_URL_SAFE = "/:@!$&'()*+,;=-._~%[]"
_INF = float("inf")


class Backoff:
    """Exponential backoff with jitter.

    The n-th consecutive failure (n >= 1) waits
    ``base = min(maximum, initial * 2 ** (n - 1))`` scaled into
    ``[base * (1 - jitter), base]`` by ``rng()`` (a float in ``[0, 1)``), so
    the delay never exceeds ``maximum`` and never drops below
    ``(1 - jitter) * base``.

    Args:
        initial: delay of the first retry, seconds (> 0).
        maximum: cap on any delay and on every server hint, seconds
            (>= initial, <= ``threading.TIMEOUT_MAX``).
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
        # Written as "not (valid)" so that NaN is rejected too.
        if not initial > 0:
            raise ConfigError(f"initial backoff must be > 0, got {initial!r}")
        if not maximum >= initial:
            raise ConfigError(f"max backoff ({maximum!r}) must be >= initial ({initial!r})")
        if not maximum <= threading.TIMEOUT_MAX:
            # Every delay ends in Event.wait / asyncio.sleep: beyond this they raise.
            raise ConfigError(
                f"max backoff must be <= {threading.TIMEOUT_MAX} seconds, got {maximum!r}"
            )
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


class StatusAction(Enum):
    """What to do with an HTTP status."""

    OK = "ok"
    REDIRECT = "redirect"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RETRY = "retry"


def classify_status(status_code: int) -> StatusAction:
    """200 streams; 3xx, 401/403 and 404 are fatal; any other status is retried."""
    if status_code == 200:
        return StatusAction.OK
    if 300 <= status_code <= 399:
        return StatusAction.REDIRECT
    if status_code in (401, 403):
        return StatusAction.AUTH
    if status_code == 404:
        return StatusAction.NOT_FOUND
    return StatusAction.RETRY


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (where secrets hide), for logs and errors.

    Never raises, whatever the text (a ``Location`` header is server input): an
    unparseable URL gives ``"<unparseable URL>"``. Characters that do not belong
    in a URL are percent-encoded (no line breaks reach a log) and the result is
    at most 512 characters.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if port is not None:
        host = f"{host}:{port}"
    text = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return quote(text, safe=_URL_SAFE)[:_MAX_URL_CHARS]


def fatal_status_error(
    status_code: int, url: str, *, location: str | None = None
) -> ConnectorError | None:
    """The error to raise for a fatal status, or ``None`` for a status worth retrying.

    ``url`` should already be free of secrets (the clients pass it through
    :func:`safe_url`; it is passed through it again here). ``location`` is the
    ``Location`` header of a 3xx answer, as sent or resolved against ``url``;
    only its :func:`safe_url` form reaches the message and the error.
    """
    action = classify_status(status_code)
    shown = safe_url(url)
    if action is StatusAction.REDIRECT:
        target = safe_url(location) if location else None
        where = f"to {target}" if target else "without a Location"
        return ConnectorRedirectError(
            f"connector answered {status_code} for {shown}: redirected {where}; redirects "
            "are not followed (the token must not travel to another address): update the "
            "URL (not retried)",
            status_code=status_code,
            location=target,
        )
    if action is StatusAction.AUTH:
        return ConnectorAuthError(
            f"connector answered {status_code} for {shown}: the token is missing or wrong "
            "(not retried)",
            status_code=status_code,
        )
    if action is StatusAction.NOT_FOUND:
        return ConnectorNotFoundError(
            f"connector answered 404 for {shown}: check the URL and product id (not retried)"
        )
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or ``None`` when it says nothing usable.

    Accepts delta-seconds (ASCII digits; any number of them, clamped) or an
    HTTP-date (compared with ``now``, a UNIX time; default ``time.time()``).
    A negative delta or a date in the past gives ``0.0``; the result is never
    above :data:`MAX_RETRY_AFTER_SECONDS`. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # str.isdigit accepts other scripts' digits ("٣"): ASCII only.
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0")
        if len(digits) > _MAX_RETRY_AFTER_DIGITS:  # int() of thousands of digits raises
            return MAX_RETRY_AFTER_SECONDS
        return min(float(int(digits or "0")), MAX_RETRY_AFTER_SECONDS)
    if text[0] == "-" and text[1:].isascii() and text[1:].isdigit():
        return 0.0
    if len(text) > _MAX_DATE_CHARS:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=timezone.utc)
        delta = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, IndexError, OSError):
        # Not a date (3.10 raises TypeError, later versions ValueError), or a year
        # datetime cannot hold.
        return None
    return min(max(delta, 0.0), MAX_RETRY_AFTER_SECONDS)


class ResumeState:
    """Where to resume and when to retry, for one client across all its connections.

    Drive it with :meth:`connected` when a stream opens; :meth:`accept` for
    every decoded event (or :meth:`advance` for a frame that failed to decode),
    :meth:`frame` for keep-alives; :meth:`note_retry` for a ``retry:`` hint;
    then :meth:`closed_cleanly` or :meth:`failed`. Read :meth:`request_headers`
    for the next request. Not thread-safe: one I/O loop owns it.

    Args:
        backoff: the delay policy after errors; its ``maximum`` caps every hint.
        max_retries: consecutive failures allowed before giving up
            (``None``: retry forever).
        seen_ids: size of the dedupe window.
        clock: monotonic seconds (tests pass a fake); measures how long a
            connection stayed open.

    Attributes:
        last_event_id: the id sent as ``Last-Event-ID`` next time.
        server_retry: the server's ``retry:`` hint, seconds, already capped.
        failures: consecutive failures so far.
        dropped_resume_ids: invalid ``last_event_id`` values dropped instead of sent.
    """

    __slots__ = (
        "_clock",
        "_connected_at",
        "_healthy",
        "_previous_id",
        "backoff",
        "dropped_resume_ids",
        "failures",
        "last_event_id",
        "max_retries",
        "seen",
        "server_retry",
    )

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        max_retries: int | None = None,
        seen_ids: int = DEFAULT_SEEN_IDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0 or None, got {max_retries!r}")
        self.backoff = backoff if backoff is not None else Backoff()
        self.max_retries = max_retries
        self.seen: DedupeWindow[str] = DedupeWindow(seen_ids)
        self.last_event_id: str | None = None
        self.server_retry: float | None = None
        self.failures = 0
        self.dropped_resume_ids = 0
        self._clock = clock
        self._connected_at: float | None = None  # None: no connection open
        self._healthy = False
        self._previous_id: str | None = None

    @property
    def ids_reused(self) -> int:
        """Ids the server sent again with other content (delivered as new events)."""
        return self.seen.reused

    @property
    def id_resets(self) -> int:
        """Times the dedupe window started over because the server's clock went back."""
        return self.seen.resets

    @property
    def healthy(self) -> bool:
        """Whether the open connection has delivered an event or lasted long enough."""
        return self._check_healthy()

    def request_headers(self, token: str) -> dict[str, str]:
        """Headers for the next ``GET``: SSE accept, bearer token, ``Last-Event-ID``."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        last = self.last_event_id
        if last:
            if is_valid_event_id(last):
                headers["Last-Event-ID"] = last
            else:
                # The decoder never yields such an id; one set by hand (or by a
                # future caller) must not make every reconnect raise in httpx.
                self.last_event_id = None
                self.dropped_resume_ids += 1
                logger.warning(
                    "stream: dropped an invalid Last-Event-ID (%d characters; ids must be "
                    "printable ASCII of at most %d)",
                    len(last),
                    MAX_EVENT_ID_CHARS,
                )
        return headers

    def connected(self) -> None:
        """The server answered 200 with an event stream (the streak goes on until healthy)."""
        self._connected_at = self._clock()
        self._healthy = False
        self._previous_id = None

    def note_retry(self, retry_ms: int | None) -> None:
        """Remember the server's ``retry:`` hint (milliseconds), capped at the maximum backoff."""
        if retry_ms is None or not retry_ms >= 0:
            return
        maximum = self.backoff.maximum
        # Compare before dividing: a huge int cannot be converted to float.
        self.server_retry = maximum if retry_ms >= maximum * 1000 else retry_ms / 1000.0

    def frame(self) -> None:
        """A keep-alive or field-only frame arrived.

        Not an event: it does not make the connection healthy by itself, but
        it is a moment to notice that the connection has lasted long enough.
        """
        self._check_healthy()

    def accept(
        self, event_id: str, order: float | None = None, digest: float | str | None = None
    ) -> bool:
        """Record a decoded event's SSE id; ``False`` if it is a replayed duplicate to drop.

        ``""`` (the server sends no ids) is always accepted. Per the SSE spec a
        frame without an ``id:`` line inherits the previous id, so a repeat of
        the id just seen on *this* connection is an inherited id, not a
        replay, and is accepted too. Otherwise the dedupe window decides:
        ``order`` is when the connector sent the event (``forwarded_at``),
        ``digest`` a digest of its content (the same id with another digest is
        a reused id: a new event). An accepted event makes the connection healthy.
        """
        if event_id and event_id != self._previous_id:
            self._previous_id = event_id
            self.last_event_id = event_id
            # The window itself treats an order that cannot be compared (NaN, inf) as None.
            if not self.seen.check(event_id, order, digest):
                return False
        if not self._healthy:
            self._healthy = True
            self.failures = 0
        return True

    def advance(self, event_id: str) -> None:
        """Move the resume point past a frame that failed to decode, without remembering it.

        A replay of that frame would fail again, so it is not asked for again;
        it was not delivered, so its id does not enter the dedupe window.
        """
        if event_id:
            self._previous_id = event_id
            self.last_event_id = event_id

    def closed_cleanly(self) -> float:
        """The server ended the stream; seconds to wait before reconnecting.

        A healthy connection reconnects at once, or after the server's
        ``retry:`` hint. One that was not healthy counts as a failure (see
        :meth:`failed`), so a server that keeps hanging up is backed off.

        Raises:
            ConnectorRetriesExhaustedError: after ``max_retries`` consecutive failures.
        """
        if not self._check_healthy():
            return self.failed()
        self._connected_at = None
        self._healthy = False
        return min(self.server_retry or 0.0, self.backoff.maximum)

    def failed(
        self, exc: BaseException | None = None, *, retry_after: float | None = None
    ) -> float:
        """A connection attempt or a live connection failed; seconds to wait.

        The delay is the backoff for this many consecutive failures, raised to
        the server's ``retry:`` hint and to ``retry_after`` (a parsed
        ``Retry-After``), each capped at ``backoff.maximum``; it is never above
        ``backoff.maximum``. ``exc`` is what failed; the rules do not depend on
        it today (it is accepted so callers hand over what they have).

        Raises:
            ConnectorRetriesExhaustedError: after ``max_retries`` consecutive failures.
        """
        del exc
        if self._connected_at is not None:
            # A connection that was healthy ended the old streak: this failure starts anew.
            self._check_healthy()
            self._connected_at = None
            self._healthy = False
        self.failures += 1
        if self.max_retries is not None and self.failures > self.max_retries:
            raise ConnectorRetriesExhaustedError(
                f"gave up after {self.failures} consecutive failed connection attempts "
                f"(max_retries={self.max_retries})"
            )
        maximum = self.backoff.maximum
        delay = self.backoff.delay(self.failures)
        for hint in (self.server_retry, retry_after):
            if hint is not None and hint >= 0:  # (False for NaN)
                delay = max(delay, min(hint, maximum))
        return min(max(delay, 0.0), maximum)

    def _check_healthy(self) -> bool:
        if self._healthy:
            return True
        started = self._connected_at
        if started is not None and self._clock() - started >= HEALTHY_CONNECTION_SECONDS:
            self._healthy = True
            self.failures = 0
            return True
        return False
