"""Push mode: the emulator POSTs each published event as a signed webhook.

What a connector in push mode does, for the bridge's ``POST /webhook`` (and any
other receiver) to be tested against: one delivery per event, one at a time, in
publish order per product (products take turns),
the body the event's JSON object, signed the way
:mod:`autoplay_base.bridge._webhook` verifies (HMAC-SHA256 with the shared
secret, ``X-Connector-Signature: sha256=<hex>``):

* **timestamped** (the default): ``X-Connector-Timestamp: <unix seconds>`` and
  the signature over ``f"{timestamp}.".encode() + body``, re-signed on every attempt;
* **plain** (``timestamped=False``, the published connector's scheme): the
  signature over the raw body.

Written here, not imported from the bridge: the emulator stands for the other
side of the wire, and the push tests check it against the bridge's verifier.

Deliveries answered 5xx or 429, timed out or cut are retried with exponential
backoff up to ``max_attempts``; any other 4xx is a refusal and is not retried.
Fault injection (:class:`PushFaults`, changeable while running) adds deliveries
and never replaces the genuine one, so no event is lost to a fault:

* ``duplicate_every=K`` — every Kth event is delivered twice, byte for byte
  (same headers, same signature), once the first was accepted;
* ``bad_signature_every=K`` — every Kth event is first sent signed with a wrong key;
* ``stale_every=K`` — every Kth event is first sent with a correctly signed
  timestamp ``stale_by`` seconds old.

A receiver must refuse both forged kinds: one that accepts them is counted in
:attr:`PushStats.forged_accepted`. Every outcome has a counter in
:class:`PushStats`; log lines name the status or error, never the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from autoplay_base._counters import Counters
from autoplay_base._secret import Secret
from autoplay_base._tls import atls_context_for
from autoplay_base.emulator._channels import Channel, Frame
from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_PUSH_ATTEMPTS",
    "DEFAULT_PUSH_BACKOFF",
    "DEFAULT_PUSH_TIMEOUT",
    "EMULATOR_WEBHOOK_SECRET_ENV_VAR",
    "PushFaults",
    "PushStats",
    "WebhookPusher",
]

logger = logging.getLogger(__name__)

EMULATOR_WEBHOOK_SECRET_ENV_VAR = "AUTOPLAY_EMULATOR_WEBHOOK_SECRET"
"""Where ``autoplay-live emulator --push-url`` reads its secret when ``--webhook-secret``
is not given (the bridge's own variable is ``AUTOPLAY_BRIDGE_WEBHOOK_SECRET``)."""
DEFAULT_PUSH_ATTEMPTS = 5
"""Attempts per delivery before it is given up (counted in ``gave_up``)."""
DEFAULT_PUSH_BACKOFF = 0.05
"""Seconds before the first retry; doubled each time, up to :data:`MAX_PUSH_BACKOFF`."""
MAX_PUSH_BACKOFF = 2.0
"""The longest wait between two attempts."""
DEFAULT_PUSH_TIMEOUT = 5.0
"""Seconds one attempt may take."""
SIGNATURE_HEADER = "X-Connector-Signature"
TIMESTAMP_HEADER = "X-Connector-Timestamp"
DEFAULT_STALE_BY = 600.0
"""How old a ``stale_every`` timestamp is: twice the bridge's default tolerance."""
_BATCH = 512
_RETRIED_STATUSES = frozenset({429})


@dataclass
class PushFaults:
    """Fault injection for push mode (plain attribute writes while running; ``None``: off).

    Attributes:
        duplicate_every: deliver every Kth event twice, identically.
        bad_signature_every: send every Kth event first with a wrong signature.
        stale_every: send every Kth event first with a timestamp ``stale_by`` seconds old.
        stale_by: the age of a stale timestamp, in seconds.
    """

    duplicate_every: int | None = None
    bad_signature_every: int | None = None
    stale_every: int | None = None
    stale_by: float = DEFAULT_STALE_BY


class PushStats(Counters):
    """What push mode did; read it through :attr:`WebhookPusher.stats`. All only grow."""

    # Not sorted: as_dict() lists the counters in this order (deliveries, then faults).
    __slots__ = (  # noqa: RUF023
        "delivered",
        "attempts",
        "retries",
        "rejected",
        "gave_up",
        "lost",
        "duplicates_sent",
        "bad_signatures_sent",
        "stale_sent",
        "forged_accepted",
    )
    delivered: int
    """Events a receiver accepted (2xx)."""
    attempts: int
    """Genuine POSTs made, retries included (not the duplicates nor the forged ones)."""
    retries: int
    rejected: int
    """Events refused with a 4xx other than 429 (not retried)."""
    gave_up: int
    """Events still failing after ``max_attempts``."""
    lost: int
    """Events that fell out of the replay ring before they could be pushed."""
    duplicates_sent: int
    bad_signatures_sent: int
    stale_sent: int
    forged_accepted: int
    """Forged deliveries (bad signature, stale) the receiver answered 2xx: its bug."""


def _every(count: int, k: int | None) -> bool:
    return k is not None and k > 0 and count % k == 0


class WebhookPusher:
    """Delivers the events of an emulator's channels to ``url`` (see the module docstring).

    Built by :class:`~autoplay_base.emulator.EmulatorServer` from its ``push_url=``
    and ``webhook_secret=``; it runs on the server's loop while the server runs.

    Args:
        url: where deliveries are POSTed.
        secret: the shared HMAC secret (never logged nor shown).
        timestamped: sign with ``X-Connector-Timestamp`` (else the plain scheme).
        max_attempts: attempts per delivery (>= 1).
        backoff: seconds before the first retry (doubled per retry).
        timeout: seconds per attempt.
        faults: fault injection (also reachable as :attr:`faults`).
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timestamped: bool = True,
        max_attempts: int = DEFAULT_PUSH_ATTEMPTS,
        backoff: float = DEFAULT_PUSH_BACKOFF,
        timeout: float = DEFAULT_PUSH_TIMEOUT,
        faults: PushFaults | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("push_url must be an http:// or https:// URL")
        if not secret or not secret.strip():
            raise ConfigError("push mode needs a non-empty webhook secret (the value is not shown)")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if backoff < 0 or not timeout > 0:
            raise ConfigError("backoff must be >= 0 and timeout > 0 seconds")
        self.url = url
        self._secret = Secret(secret.strip())
        self.timestamped = timestamped
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.faults = faults if faults is not None else PushFaults()
        self.stats = PushStats()
        self.waker = asyncio.Event()
        self._cursors: dict[str, int] = {}
        self._count = 0

    def __repr__(self) -> str:
        return f"WebhookPusher({self.url!r}, secret={self._secret!r})"

    def headers(
        self, body: bytes, timestamp: str | None, secret: str | None = None
    ) -> dict[str, str]:
        """The headers of a delivery of ``body`` (signed with ``secret``, default the real one)."""
        key = secret if secret is not None else self._secret.reveal()
        message = body if timestamp is None else timestamp.encode("ascii") + b"." + body
        digest = hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: "sha256=" + digest}
        if timestamp is not None:
            headers[TIMESTAMP_HEADER] = timestamp
        return headers

    async def run(
        self, channels: Callable[[], Mapping[str, Channel]], changed: Callable[[], None]
    ) -> None:
        """Push every frame of ``channels()`` from the first, in order, until cancelled.

        ``changed`` is called after each event's outcome (the server's stats waiters).
        """
        verify = await atls_context_for(self.url)
        async with httpx.AsyncClient(timeout=self.timeout, verify=verify) as client:
            while True:
                # Cleared before the scan, not after: a wake during the scan is kept.
                self.waker.clear()
                pushed = 0
                for product, channel in list(channels().items()):
                    with channel.lock:
                        frames, gap = channel.since(self._cursors.get(product, 0), _BATCH)
                    if gap:
                        self.stats.lost += gap
                        logger.warning("emulator push: %d events fell out of the replay ring", gap)
                    for frame in frames:
                        await self._deliver(client, frame)
                        self._cursors[product] = frame.id
                        changed()
                    pushed += len(frames)
                if not pushed:
                    await self.waker.wait()

    async def _deliver(self, client: httpx.AsyncClient, frame: Frame) -> None:
        body = frame.body()
        self._count += 1
        faults = self.faults
        if _every(self._count, faults.bad_signature_every):
            self.stats.bad_signatures_sent += 1
            wrong = "not-" + self._secret.reveal()
            await self._forged(client, body, self.headers(body, self._timestamp(), wrong))
        if _every(self._count, faults.stale_every):
            self.stats.stale_sent += 1
            stale = str(int(time.time() - faults.stale_by))
            await self._forged(client, body, self.headers(body, stale))
        headers = await self._send(client, body, frame.id)
        if headers is not None and _every(self._count, faults.duplicate_every):
            self.stats.duplicates_sent += 1
            await self._post(client, body, headers)

    def _timestamp(self) -> str | None:
        return str(int(time.time())) if self.timestamped else None

    async def _post(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> int | str:
        """One POST: its status, or the name of the error that ended it."""
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return response.status_code

    async def _forged(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> None:
        outcome = await self._post(client, body, headers)
        if isinstance(outcome, int) and outcome < 300:
            self.stats.forged_accepted += 1
            logger.warning("emulator push: a forged delivery was accepted (%d)", outcome)

    async def _send(
        self, client: httpx.AsyncClient, body: bytes, frame_id: int
    ) -> dict[str, str] | None:
        """Deliver ``body`` with retries; the headers of the accepted attempt, else ``None``."""
        for attempt in range(1, self.max_attempts + 1):
            headers = self.headers(body, self._timestamp())  # a fresh timestamp per attempt
            self.stats.attempts += 1
            outcome = await self._post(client, body, headers)
            if isinstance(outcome, int) and outcome < 300:
                self.stats.delivered += 1
                return headers
            if isinstance(outcome, int) and outcome < 500 and outcome not in _RETRIED_STATUSES:
                self.stats.rejected += 1
                logger.warning(
                    "emulator push: event %d refused (%d), not retried", frame_id, outcome
                )
                return None
            if attempt == self.max_attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_PUSH_BACKOFF))
        self.stats.gave_up += 1
        logger.warning(
            "emulator push: event %d given up after %d attempts (%s)",
            frame_id,
            self.max_attempts,
            outcome,
        )
        return None
