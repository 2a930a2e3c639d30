"""``HttpBatchSink``: batches of events POSTed as JSON with ``httpx``.

Each request is ``POST <url>`` with the body ``{"events": [...]}`` (each event
as :meth:`~autoplay_base.tracking.events.TrackingEvent.to_dict`), the header
``Idempotency-Key`` (derived from the batch's event ids, so every retry of a
batch carries the same key and each half of a split batch its own) and
``Authorization: Bearer <token>`` when a token is set. Retries, 413 splitting
and ``Retry-After`` follow :mod:`autoplay_base.tracking.policy`. Redirects are
not followed (the token must not travel to another address): a 3xx fails the
batch. The token never appears in a log, a repr or an error; URLs are shown
without user info, query or fragment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from autoplay_base._reconnect import Backoff, parse_retry_after, safe_url
from autoplay_base._tls import atls_context_for, tls_context_for
from autoplay_base.errors import ConfigError
from autoplay_base.tracking.policy import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RETRIES,
    OK,
    BatchPolicy,
    Outcome,
    RetryPolicy,
    idempotency_key,
)
from autoplay_base.tracking.sinks.base import Encoded, Sink

__all__ = ["DEFAULT_HTTP_TIMEOUT", "HttpBatchSink", "encode_body"]

DEFAULT_HTTP_TIMEOUT = 10.0
"""Seconds one request may take (connect, write, read) before it counts as a network error."""


def encode_body(events: Sequence[Encoded]) -> bytes:
    """The request body ``{"events": [...]}`` from already-encoded events."""
    return b'{"events":[' + b",".join(data for _, data in events) + b"]}"


def _check_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        # The message never shows the token.
        raise ConfigError("token must be non-empty printable ASCII without spaces")
    return token


class HttpBatchSink(Sink):
    """POST batches of events to ``url`` (see the module docstring).

    Args:
        url: where to POST (``http://`` or ``https://``).
        token: sent as ``Authorization: Bearer <token>``; never logged.
        batch_size: events waiting that make a batch worth sending at once
            (default 100; given alone, also the exact size of every batch).
        max_batch_bytes: encoded bytes per request (a larger batch is cut).
        flush_interval: seconds the oldest event waits for a full batch.
        timeout: seconds per request.
        max_retries: retries after the first attempt; ``None`` (the default)
            retries retryable failures (network, 408, 425, 429, 5xx) until they
            succeed or the tracker closes, the outbox bound dropping (counted)
            what does not fit meanwhile.
        max_batch_events: the most events one batch takes when more than
            ``batch_size`` wait, so a backed-up queue drains in fewer round
            trips (default 1,000 with the default ``batch_size``, else
            ``batch_size``).
        backoff: the delays between retries (default 0.5 s doubling to 30 s, 20 % jitter).
        headers: extra headers sent with every request.
        name: the sink's key in ``stats()``.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        batch_size: int | None = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        max_batch_events: int | None = None,
        backoff: Backoff | None = None,
        headers: Mapping[str, str] | None = None,
        name: str = "http",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"url must start with http:// or https://, got {safe_url(url)!r}")
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0, got {timeout!r}")
        self.url = url
        self._token = _check_token(token)
        self.name = name
        self.timeout = timeout
        self.batching = BatchPolicy(batch_size, max_batch_bytes, flush_interval, max_batch_events)
        self.retry = RetryPolicy(max_retries, backoff)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if self._token is not None:
            self._headers["Authorization"] = f"Bearer {self._token}"
        self._shown = safe_url(url)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        token = "***" if self._token else None
        return f"HttpBatchSink(url={self._shown!r}, token={token!r})"

    def request_headers(self, events: Sequence[Encoded]) -> dict[str, str]:
        """The headers of the request carrying ``events``."""
        key = idempotency_key([event.event_id for event, _ in events])
        return {**self._headers, "Idempotency-Key": key}

    def outcome(self, response: httpx.Response) -> Outcome:
        """What a response means for the batch (the body is never shown)."""
        status = response.status_code
        if 200 <= status < 300:
            return OK
        return Outcome(
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            error=f"POST {self._shown} answered {status}",
        )

    def network_error(self, exc: httpx.TransportError) -> Outcome:
        """A transport failure, named by its type (its text may carry the URL's query)."""
        return Outcome(network_error=True, error=f"POST {self._shown} failed: {type(exc).__name__}")

    def send(self, events: Sequence[Encoded]) -> Outcome:
        """POST ``events`` once."""
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout, follow_redirects=False, verify=tls_context_for(self.url)
            )
        try:
            response = self._client.post(
                self.url, content=encode_body(events), headers=self.request_headers(events)
            )
        except httpx.TransportError as exc:
            return self.network_error(exc)
        return self.outcome(response)

    async def asend(self, events: Sequence[Encoded]) -> Outcome:
        """POST ``events`` once, with ``httpx.AsyncClient``."""
        if self._aclient is None:
            verify = await atls_context_for(self.url)
            if self._aclient is None:  # another send may have made it during the await
                self._aclient = httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, verify=verify
                )
        try:
            response = await self._aclient.post(
                self.url, content=encode_body(events), headers=self.request_headers(events)
            )
        except httpx.TransportError as exc:
            return self.network_error(exc)
        return self.outcome(response)

    def close(self) -> None:
        """Close the sync client."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both clients."""
        self.close()
        client, self._aclient = self._aclient, None
        if client is not None:
            await client.aclose()

    def after_fork(self) -> None:
        """Forget the parent's clients (their sockets are the parent's)."""
        self._client = None
        self._aclient = None
