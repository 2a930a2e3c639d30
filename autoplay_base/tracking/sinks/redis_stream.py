"""``RedisStreamSink``: one Redis Stream entry per event (``XADD … MAXLEN ~``).

Each batch is one pipelined round trip (no transaction). Every entry has the
fields ``event_id``, ``type``, ``product_id``, ``session_id`` and ``event``
(the event's JSON), so consumers can filter without parsing and dedupe on
``event_id``: delivery is at least once, because a pipeline cut by an outage
may have been applied in part before it is retried. A connection failure or a
timeout is retried like an HTTP 5xx; a refused password fails at once.

Works with a sync ``redis.Redis`` (``Tracker``; ``AsyncTracker`` runs it in a
thread), a ``redis.asyncio.Redis`` (``AsyncTracker`` only), or a URL (the sink
opens the client each tracker kind needs, and closes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from autoplay_base._reconnect import Backoff, safe_url
from autoplay_base.errors import ConfigError, missing_extra
from autoplay_base.tracking.policy import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_RETRIES,
    OK,
    BatchPolicy,
    Outcome,
    RetryPolicy,
)
from autoplay_base.tracking.sinks.base import Encoded, Sink

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

__all__ = ["DEFAULT_STREAM", "DEFAULT_STREAM_MAXLEN", "RedisStreamSink"]

DEFAULT_STREAM = "autoplay:tracking"
"""The stream key written by default."""
DEFAULT_STREAM_MAXLEN = 100_000
"""Entries the stream keeps (``MAXLEN ~``: trimmed by whole nodes, so about this many)."""


class RedisStreamSink(Sink):
    """Append events to a Redis Stream (see the module docstring).

    Args:
        client_or_url: a ``redis.Redis``, a ``redis.asyncio.Redis`` or a ``redis://`` URL.
        stream: the stream key.
        maxlen: approximate cap on the stream's length.
        batch_size, max_batch_bytes, flush_interval, max_retries, max_batch_events, backoff: as
            :class:`~autoplay_base.tracking.sinks.http.HttpBatchSink`.
        name: the sink's key in ``stats()``.
    """

    name = "redis"

    def __init__(
        self,
        client_or_url: redis.Redis | aioredis.Redis | str,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int = DEFAULT_STREAM_MAXLEN,
        batch_size: int | None = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        max_batch_events: int | None = None,
        backoff: Backoff | None = None,
        name: str = "redis",
    ) -> None:
        try:
            import redis  # noqa: PLC0415 - optional extra, imported when used
            import redis.asyncio as aioredis  # noqa: PLC0415
        except ImportError:
            raise missing_extra("redis", "redis") from None
        self._redis = redis
        if not maxlen >= 1:
            raise ConfigError(f"maxlen must be >= 1, got {maxlen!r}")
        if not stream:
            raise ConfigError("stream must be a non-empty key")
        self.stream = stream
        self.maxlen = maxlen
        self.name = name
        self.batching = BatchPolicy(batch_size, max_batch_bytes, flush_interval, max_batch_events)
        self.retry = RetryPolicy(max_retries, backoff)
        self._url: str | None = None
        self._client: redis.Redis | None = None
        self._aclient: aioredis.Redis | None = None
        if isinstance(client_or_url, str):
            self._url = client_or_url
            self._owned = True
        elif isinstance(client_or_url, aioredis.Redis):
            self._aclient = client_or_url
            self._owned = False
            self.sync_capable = False
        elif isinstance(client_or_url, redis.Redis):
            self._client = client_or_url
            self._owned = False
        else:
            raise ConfigError(
                "client_or_url must be a redis.Redis, a redis.asyncio.Redis or a URL, "
                f"not {type(client_or_url).__name__}"
            )

    def __repr__(self) -> str:
        where = safe_url(self._url) if self._url else type(self._client or self._aclient).__name__
        return f"RedisStreamSink({where!r}, stream={self.stream!r})"

    def _fields(self, event_data: Encoded) -> dict[Any, Any]:
        event, data = event_data
        return {
            "event_id": event.event_id,
            "type": event.type,
            "product_id": event.product_id,
            "session_id": event.session_id or "",
            "event": data,
        }

    def outcome(self, exc: redis.RedisError) -> Outcome:
        """A Redis error as an outcome: outages retried, refusals and bad replies failed."""
        redis = self._redis
        kind = type(exc).__name__
        if isinstance(exc, redis.AuthenticationError):
            return Outcome(error=f"Redis refused the credentials ({kind})")
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return Outcome(network_error=True, error=f"Redis unreachable ({kind})")
        return Outcome(error=f"Redis error ({kind})")

    def send(self, events: Sequence[Encoded]) -> Outcome:
        """XADD every event in one pipelined round trip."""
        client = self._client
        if client is None:
            assert self._url is not None, "an asyncio client is driven by asend"
            client = self._client = self._redis.Redis.from_url(self._url)
        try:
            with client.pipeline(transaction=False) as pipe:
                for item in events:
                    pipe.xadd(self.stream, self._fields(item), maxlen=self.maxlen, approximate=True)
                pipe.execute()
        except self._redis.RedisError as exc:
            return self.outcome(exc)
        return OK

    async def asend(self, events: Sequence[Encoded]) -> Outcome:
        """XADD every event with the asyncio client (or the sync one, in a thread)."""
        if self._aclient is None and self._url is None:
            return await super().asend(events)
        client = self._aclient
        if client is None:
            assert self._url is not None
            client = self._aclient = self._redis.asyncio.Redis.from_url(self._url)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for item in events:
                    pipe.xadd(self.stream, self._fields(item), maxlen=self.maxlen, approximate=True)
                await pipe.execute()
        except self._redis.RedisError as exc:
            return self.outcome(exc)
        return OK

    def close(self) -> None:
        """Close the sync client if the sink opened it."""
        if self._owned and self._client is not None:
            client, self._client = self._client, None
            client.close()

    async def aclose(self) -> None:
        """Close the clients the sink opened."""
        self.close()
        if self._owned and self._aclient is not None:
            client, self._aclient = self._aclient, None
            await client.aclose()

    def after_fork(self) -> None:
        """Forget clients the sink opened (redis-py also resets a pool it finds in another pid)."""
        if self._owned:
            self._client = None
            self._aclient = None
