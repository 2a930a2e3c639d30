"""Push-mode deliveries: signature, freshness and replay checks (pure: bytes and clock in).

A delivery is ``POST /webhook`` with one event as a JSON object. The bridge
fails closed: push mode needs a secret, and a delivery is verified before its
body is even parsed.

Two signature schemes, both HMAC-SHA256 with the shared secret, compared in
constant time (:func:`hmac.compare_digest`), header ``X-Connector-Signature:
sha256=<hex>``:

* **timestamped** (replay-protected): ``X-Connector-Timestamp: <unix seconds>``
  and the signature over ``f"{timestamp}.".encode() + body``; a timestamp more
  than ``tolerance`` seconds (default 300) away from the local clock is stale;
* **plain** (the published connector's): the signature over the raw body. Refused
  when the verifier is built with ``require_timestamp=True``.

Replays: a verified delivery's signature is remembered once it was *stored*
(bounded window); the same signature again is acknowledged as a duplicate and
not applied. A retry after a failure (503) is therefore applied exactly once.
Across workers, the store's own dedupe makes it idempotent too: the event id is
derived from the signed body (:func:`event_id_for`), so a replay anywhere carries
the same id and content and is skipped as a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import NamedTuple

from autoplay_base._counters import Counters
from autoplay_base._recent import RecentKeys
from autoplay_base._secret import Secret
from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REPLAY_WINDOW",
    "DEFAULT_TIMESTAMP_TOLERANCE",
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "Rejection",
    "WebhookCounters",
    "WebhookVerifier",
    "event_id_for",
    "sign",
]

SIGNATURE_HEADER = "x-connector-signature"
TIMESTAMP_HEADER = "x-connector-timestamp"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TIMESTAMP_TOLERANCE = 300.0
"""Seconds a timestamped delivery may be away from the local clock, either way."""
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""A larger body is refused with 413 while it is read (never buffered whole)."""
DEFAULT_REPLAY_WINDOW = 10_000
"""Signatures of stored deliveries remembered per process (oldest forgotten first)."""
_MAX_TIMESTAMP_CHARS = 20
_EVENT_ID_PREFIX = "webhook-"


class WebhookCounters(Counters):
    """What happened to deliveries; each refusal has its own counter."""

    __slots__ = (
        "accepted",
        "duplicates",
        "ignored",
        "received",
        "rejected_invalid",
        "rejected_signature",
        "rejected_stale",
        "rejected_too_large",
        "store_failures",
    )
    received: int
    accepted: int
    duplicates: int
    ignored: int
    """Verified deliveries of an event type this version does not know: acknowledged."""
    rejected_signature: int
    rejected_stale: int
    rejected_too_large: int
    rejected_invalid: int
    store_failures: int


class Rejection(NamedTuple):
    """Why a delivery is refused: the HTTP status and a fixed message (never the input)."""

    status: int
    message: str


BAD_SIGNATURE = Rejection(401, "missing or invalid signature")
TIMESTAMP_REQUIRED = Rejection(401, "a signed X-Connector-Timestamp is required")
STALE = Rejection(401, "stale or malformed timestamp")
TOO_LARGE = Rejection(413, "body too large")


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The ``X-Connector-Signature`` value for ``body`` (what a connector or a test sends)."""
    message = body if timestamp is None else timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def event_id_for(body: bytes) -> str:
    """The event id of a delivery: a digest of its signed body (the same in every worker)."""
    return _EVENT_ID_PREFIX + hashlib.sha256(body).hexdigest()[:32]


class WebhookVerifier:
    """Checks deliveries against one secret (see the module docstring).

    Args:
        secret: the shared secret (non-empty; never logged nor shown).
        tolerance: seconds a timestamp may be off, either way.
        require_timestamp: refuse the plain (untimestamped) scheme.
        max_body_bytes: the body size cap (413 beyond it).
        replay_window: signatures of stored deliveries remembered.
        clock: ``time.time`` (tests pass their own).
    """

    def __init__(
        self,
        secret: str,
        *,
        tolerance: float = DEFAULT_TIMESTAMP_TOLERANCE,
        require_timestamp: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret or not secret.strip():
            raise ConfigError("webhook_secret must be a non-empty string (the value is not shown)")
        if not tolerance > 0:
            raise ConfigError(f"webhook tolerance must be > 0 seconds, got {tolerance!r}")
        if max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {max_body_bytes!r}")
        self._secret = Secret(secret.strip())
        self.tolerance = tolerance
        self.require_timestamp = require_timestamp
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._stored: RecentKeys[str] = RecentKeys(replay_window)
        self.counters = WebhookCounters()

    def __repr__(self) -> str:
        return (
            f"WebhookVerifier(secret={self._secret!r}, require_timestamp={self.require_timestamp})"
        )

    def check(self, body: bytes, signature: str | None, timestamp: str | None) -> Rejection | None:
        """``None`` when the delivery is authentic and fresh, else why not (counted)."""
        if timestamp is None and self.require_timestamp:
            self.counters.rejected_signature += 1
            return TIMESTAMP_REQUIRED
        if timestamp is not None and not self._fresh(timestamp):
            self.counters.rejected_stale += 1
            return STALE
        if signature is None or not self._matches(body, signature, timestamp):
            self.counters.rejected_signature += 1
            return BAD_SIGNATURE
        return None

    def _fresh(self, timestamp: str) -> bool:
        if len(timestamp) > _MAX_TIMESTAMP_CHARS or not timestamp.isascii():
            return False
        try:
            sent = float(timestamp)
        except ValueError:
            return False
        return math.isfinite(sent) and abs(self._clock() - sent) <= self.tolerance

    def _matches(self, body: bytes, signature: str, timestamp: str | None) -> bool:
        expected = sign(self._secret.reveal(), body, timestamp)
        # Compared as bytes: compare_digest refuses non-ASCII str, and a header may hold any.
        given = signature.strip().encode("utf-8", "replace")
        return hmac.compare_digest(expected.encode("ascii"), given)

    def is_replay(self, signature: str) -> bool:
        """Whether this (verified) signature belongs to a delivery already stored."""
        return signature.strip() in self._stored

    def stored(self, signature: str) -> None:
        """Remember a delivery the store accepted, so a replay is not applied again."""
        self._stored.add(signature.strip())
