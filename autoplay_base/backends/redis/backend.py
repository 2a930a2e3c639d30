"""``RedisBackend``: the :class:`~autoplay_base.backends.base.Backend` protocol over Redis.

The public class only: its options and their validation, the factories (one
per topology), every protocol method with its async twin, ``listen`` and the
lifecycle. Over ~600 lines because each of the ~20 sync/async method pairs
carries the docstring users read; the machinery is extracted (``_engine``,
``_accounting``, ``_commands``, ``_cluster``, ``_outage``, ``_clients``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from threading import Event
from typing import TYPE_CHECKING, Any

from autoplay_base.backends.base import (
    DEFAULT_DEDUPE_WINDOW,
    DEFAULT_HISTORY_TTL_SECONDS,
    DEFAULT_IDLE_TTL_SECONDS,
    DEFAULT_MAX_ACTIONS_PER_SESSION,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_USER,
    ActionsWrite,
    Activity,
    BackendStats,
    Bounds,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
    check_bounds,
)
from autoplay_base.backends.redis._clients import (
    cluster_clients,
    sentinel_clients,
    timeouts,
    url_clients,
)
from autoplay_base.backends.redis._cluster import (
    ClusterPlan,
    describe_cluster,
)
from autoplay_base.backends.redis._commands import (
    Settings,
    activity,
    f,
    forget_user_commands,
    get_messages_commands,
    ids,
    messages_commands,
    read_commands,
    reset_commands,
    user_refs,
    user_sessions_commands,
)
from autoplay_base.backends.redis._engine import Engine, Exchange, Op
from autoplay_base.backends.redis._layout import (
    STREAM,
    Layout,
)
from autoplay_base.backends.redis._outage import NOT_APPLIED, UNKNOWN, DroppedWrite
from autoplay_base.backends.redis._scripts import Constants, scripts_for
from autoplay_base.backends.redis._wire import (
    LISTEN_GRACE_SECONDS,
    cancellable,
    describe_pool,
    import_redis,
    listen_start_id,
    node_pool,
    pack_commands,
    xread_entries,
)
from autoplay_base.errors import (
    BackendError,
    ConfigError,
)

if TYPE_CHECKING:
    import redis as redis_sync
    import redis.asyncio as redis_async
    import redis.asyncio.cluster
    import redis.cluster

__all__ = [
    "DEFAULT_LISTEN_BLOCK_MS",
    "DEFAULT_MAX_BUFFERED_WRITES",
    "DEFAULT_PREFIX",
    "DEFAULT_RETRY_INTERVAL_SECONDS",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_STREAM_MAXLEN",
    "NOT_APPLIED",
    "UNKNOWN",
    "ActionsWrite",
    "Activity",
    "DroppedWrite",
    "RedisBackend",
]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "autoplay"
DEFAULT_SOCKET_TIMEOUT = 0.05
"""Seconds a command may take before it counts as an outage (reads then return empty)."""
DEFAULT_MAX_BUFFERED_WRITES = 10_000
DEFAULT_RETRY_INTERVAL_SECONDS = 0.5
DEFAULT_STREAM_MAXLEN = 100
"""Approximate entries kept per session activity stream (``XADD MAXLEN ~``); 0 turns it off."""
DEFAULT_LISTEN_BLOCK_MS = 1000
CONTRACT_COUNTERS = ("reused_ids", "dedupe_resets")
"""``stats.extra`` counters every backend keeps: ids seen again with other content
(stored), and dedupe windows started over after their source's clock went back."""


def _is_cluster(module: Any, client: Any, aclient: Any) -> bool:
    """Whether the two clients are redis-py cluster clients (both or neither)."""
    sync = isinstance(client, module.cluster.RedisCluster)
    if sync != isinstance(aclient, module.asyncio.cluster.RedisCluster):
        raise ConfigError(
            "pass two cluster clients (redis.cluster.RedisCluster and "
            "redis.asyncio.cluster.RedisCluster) or two standalone ones, not one of each"
        )
    return sync


# -- the backend --------------------------------------------------------------------------------
class RedisBackend(Engine):
    """Session context, user indexes and chat histories in Redis, shared across processes.

    Build it with :meth:`from_url` (or :meth:`from_sentinel` behind Redis
    Sentinel, :meth:`from_cluster` on a Redis Cluster); the constructor takes
    ready clients (a sync ``redis.Redis`` and a ``redis.asyncio.Redis`` on the
    same server, created with ``decode_responses=True``, ``Sentinel.master_for``
    ones included, or the two cluster clients) for callers
    that manage their own pools. One instance serves threads and one event loop
    at a time (redis-py's async connections belong to the loop that opened them).

    Beyond the :class:`~autoplay_base.backends.base.Backend` protocol:
    :meth:`append_actions_many` (pipelined ingest), :meth:`listen` /
    :meth:`alisten` (follow a session live), :meth:`flush` / :meth:`aflush`
    (replay writes buffered during an outage), :meth:`ping` / :meth:`aping`
    and :attr:`buffered_writes`. ``stats.extra`` holds the contract's
    ``reused_ids`` and ``dedupe_resets`` (from the start), and the outage and
    misconfiguration counters: ``redis_read_errors``, ``redis_write_errors``,
    ``redis_calls_skipped``, ``redis_writes_buffered``, ``redis_writes_replayed``,
    ``redis_writes_dropped`` (never sent), ``redis_writes_dropped_unknown`` (sent,
    answer lost), ``redis_rejected``, ``redis_auth_errors``,
    ``redis_cluster_refused`` and ``redis_invalid_text``.

    Cluster clients (``redis.cluster.RedisCluster`` and its asyncio twin, as
    :meth:`from_cluster` builds them) run every operation as single-slot steps
    (see *Cluster* in :mod:`autoplay_base.backends.redis`).

    Raises :class:`ConfigError` for a cluster client beside a standalone one (and
    for standalone clients that meet a cluster node); every call raises
    :class:`~autoplay_base.errors.BackendAuthError` while Redis refuses the
    credentials, and :class:`ConfigError` for text that is not valid Unicode.

    Args:
        prefix: namespace of every key (several apps can share one database).
        max_sessions, max_actions_per_session, idle_ttl_seconds,
        max_sessions_per_user, max_users, max_messages, history_ttl_seconds,
        dedupe_window: the same bounds as :class:`InMemoryBackend` (``dedupe_window``
            counts event ids per product here, per session on a cluster).
        stream_maxlen: approximate entries kept per session activity stream for
            ``listen`` (0 turns the stream off).
        max_buffered_writes: writes kept locally while Redis is unreachable.
        retry_interval_seconds: after a failure, calls skip Redis this long.
        strict: raise :class:`BackendUnavailableError` instead of returning empty
            reads and buffering writes.
        on_error: called with each :class:`BackendError` (outage or script error).
        on_drop: called with each :class:`DroppedWrite` (its ``outcome`` says whether
            Redis may have applied it).
        clock: local clock for ``sessions()`` (the in-memory backend's ``clock``).
    """

    def __init__(
        self,
        client: redis_sync.Redis | redis_sync.cluster.RedisCluster,
        aclient: redis_async.Redis | redis_async.cluster.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_actions_per_session: int = DEFAULT_MAX_ACTIONS_PER_SESSION,
        idle_ttl_seconds: float | None = DEFAULT_IDLE_TTL_SECONDS,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
        max_users: int | None = None,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        history_ttl_seconds: float | None = DEFAULT_HISTORY_TTL_SECONDS,
        dedupe_window: int = DEFAULT_DEDUPE_WINDOW,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        max_buffered_writes: int = DEFAULT_MAX_BUFFERED_WRITES,
        retry_interval_seconds: float = DEFAULT_RETRY_INTERVAL_SECONDS,
        strict: bool = False,
        on_error: Callable[[BackendError], None] | None = None,
        on_drop: Callable[[DroppedWrite], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = import_redis()
        self._cluster = _is_cluster(self._redis, client, aclient)
        self.bounds = Bounds(
            max_sessions=max_sessions,
            max_actions_per_session=max_actions_per_session,
            idle_ttl_seconds=idle_ttl_seconds,
            max_sessions_per_user=max_sessions_per_user,
            max_users=max_users,
            max_messages=max_messages,
            history_ttl_seconds=history_ttl_seconds,
            dedupe_window=dedupe_window,
        )
        """The count and time bounds, the in-memory backend's (validated once)."""
        check_bounds(max_buffered_writes=max_buffered_writes)
        if stream_maxlen < 0 or retry_interval_seconds < 0:
            raise ConfigError("stream_maxlen and retry_interval_seconds must be >= 0")
        if not prefix or prefix.endswith(":"):
            raise ConfigError(f"prefix must be non-empty and not end with ':', got {prefix!r}")
        if self._cluster and ("{" in prefix or "}" in prefix):
            raise ConfigError(
                f"a cluster prefix cannot hold '{{' or '}}' (hash tags), got {prefix!r}"
            )
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self._keys = Layout(prefix, cluster=self._cluster)
        self._ttl = "" if idle_ttl_seconds is None else f(idle_ttl_seconds)
        self._ttl_ms = "" if idle_ttl_seconds is None else str(math.ceil(idle_ttl_seconds * 1000))
        self._history_ttl_ms = (
            None if history_ttl_seconds is None else math.ceil(history_ttl_seconds * 1000)
        )
        self._plan = ClusterPlan(
            self._keys,
            ttl=self._ttl,
            max_sessions=max_sessions,
            max_users=self.bounds.users,
            per_user=max_sessions_per_user,
        )
        scripts = scripts_for(
            Constants(
                self._ttl,
                self._ttl_ms,
                self.bounds.max_sessions,
                self.bounds.max_actions_per_session,
                self.bounds.dedupe_window,
                stream_maxlen,
                self.bounds.max_sessions_per_user,
                self.bounds.users,
                self._cluster,
            )
        )
        self._cfg = Settings(
            self._keys,
            self._plan,
            self.bounds,
            self._history_ttl_ms,
            stream_maxlen,
            scripts,
        )
        super().__init__(
            client,
            aclient,
            module=self._redis,
            cluster=self._cluster,
            cfg=self._cfg,
            # The contract's dedupe counters exist from the start, as in the in-memory backend.
            stats=BackendStats(extra=dict.fromkeys(CONTRACT_COUNTERS, 0)),
            where=describe_cluster(client) if self._cluster else describe_pool(client),
            max_buffered_writes=max_buffered_writes,
            retry_interval_seconds=retry_interval_seconds,
            strict=strict,
            on_error=on_error,
            on_drop=on_drop,
            clock=clock,
        )
        # A listener on a cluster whose slot moved away (MOVED) resumes like after an outage.
        moved = (self._redis.exceptions.AskError,) if self._cluster else ()
        self._listen_errors = self._transient + moved
        # The Sentinel managers ``from_sentinel`` made: their connections to the
        # sentinels are the backend's to close (clients passed in stay the caller's).
        self._sentinels: tuple[Any, Any] | None = None
        self._found_cluster = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        **options: Any,
    ) -> RedisBackend:
        """A backend with a sync and an async client for ``url`` (``redis://``, ``rediss://``).

        ``socket_timeout`` bounds every command (default 50 ms) and
        ``connect_timeout`` every connection attempt (default: ``socket_timeout``);
        redis-py's own retries are off because the backend buffers writes itself.
        ``options`` are the constructor's keyword options.

        When the server answers, one ``INFO cluster`` checks it at once: a node
        in cluster mode (``cluster_enabled:1``) gets cluster clients instead (as
        :meth:`from_cluster` builds them), refused credentials raise
        :class:`~autoplay_base.errors.BackendAuthError`. An unreachable server is
        no error here (the backend starts and buffers writes).
        """
        module = import_redis()
        check_bounds(socket_timeout=socket_timeout)
        client, aclient = url_clients(
            module, url, timeouts(socket_timeout, connect_timeout), max_connections
        )
        backend = cls._checked(client, aclient, None, prefix=prefix, **options)
        if not backend._found_cluster:
            return backend
        client.close()
        return cls.from_cluster(
            url,
            prefix=prefix,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            **options,
        )

    @classmethod
    def from_cluster(
        cls,
        startup_nodes: str | Sequence[tuple[str, int]],
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        **options: Any,
    ) -> RedisBackend:
        """A backend on a Redis (or Valkey) Cluster: a node's URL or ``(host, port)`` nodes.

        Builds ``redis.cluster.RedisCluster`` and ``redis.asyncio.cluster.RedisCluster``
        clients (the slot map comes from any node that answers; ``socket_timeout``,
        ``connect_timeout`` and ``max_connections``, per node, are :meth:`from_url`'s).
        Commands go to the node that owns each key's slot; ``MOVED`` refreshes the
        slot map and ``ASK`` redirects, then the command is retried (a ``NOSCRIPT``
        there loads the scripts first; a slot still moving after three attempts is
        an outage); ``CLUSTERDOWN``/``TRYAGAIN`` are an outage (reads empty, writes
        buffered and replayed). The sync client connects at once: no
        node answering raises :class:`BackendUnavailableError`.
        """
        module = import_redis()
        check_bounds(socket_timeout=socket_timeout)
        client, aclient = cluster_clients(
            module, startup_nodes, timeouts(socket_timeout, connect_timeout), max_connections
        )
        return cls(client, aclient, prefix=prefix, **options)

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float | None = None,
        max_connections: int | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        sentinel_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RedisBackend:
        """A backend on the primary that Redis Sentinel names ``service_name``.

        ``sentinels`` are ``(host, port)`` pairs of sentinel processes. Every new
        connection asks them for the current primary (redis-py's
        ``Sentinel.master_for``), so after a failover the backend writes to the
        promoted replica: a command that meets the dead or demoted primary fails
        like any outage (a write is buffered and replayed on the new primary).

        ``socket_timeout``, ``connect_timeout``, ``max_connections`` and the
        retries (off) are :meth:`from_url`'s, for the primary and the sentinels
        alike; ``db``, ``username`` and ``password`` log in to the primary.
        ``sentinel_kwargs`` are extra connection options for the sentinels
        themselves (their own ``password``, ``ssl``...), merged over those
        defaults. Anything else (TLS to the primary, a custom pool) goes through
        the constructor with the clients ``master_for`` builds.

        The server check of :meth:`from_url` runs too (refused credentials raise
        :class:`~autoplay_base.errors.BackendAuthError`); no sentinel answering
        is no error here, like an unreachable server. :meth:`close` /
        :meth:`aclose` also close the connections to the sentinels.
        """
        module = import_redis()
        check_bounds(socket_timeout=socket_timeout)
        primary: dict[str, Any] = {"max_connections": max_connections, "db": db}
        primary.update(username=username, password=password)
        client, aclient, managers = sentinel_clients(
            module,
            sentinels,
            service_name,
            timeouts(socket_timeout, connect_timeout),
            primary=primary,
            sentinel_kwargs=sentinel_kwargs,
        )
        return cls._checked(client, aclient, managers, prefix=prefix, **options)

    @classmethod
    def _checked(
        cls, client: Any, aclient: Any, sentinels: tuple[Any, Any] | None, **options: Any
    ) -> RedisBackend:
        """The backend on clients a factory built, after the server check (closed if it fails)."""
        backend = cls(client, aclient, **options)
        backend._sentinels = sentinels
        backend._found_cluster = False
        try:
            backend._check_server()
        except BaseException:
            client.close()
            if sentinels is not None:
                sentinels[0].close()
            raise
        return backend

    def _check_server(self) -> None:
        """Find a Cluster node and refuse bad credentials at once, if the server answers now.

        One ``INFO cluster`` (a cluster node sets ``_found_cluster``: ``from_url``
        then builds cluster clients). An unreachable server is not an error here
        (writes buffer until it comes up); a cluster node found later by standalone
        clients is refused by the first reply that names a slot (see :meth:`_check_reply`).
        """
        exchange = Exchange()
        try:
            self._send(pack_commands([("INFO", "cluster")]), 1, exchange)
        except self._transient:
            logger.debug("redis backend: %s not reachable at start", self._where)
            return
        info = exchange.replies[0]
        self._found_cluster = isinstance(info, str) and "cluster_enabled:1" in info
        self._recovered()

    @property
    def max_buffered_writes(self) -> int:
        """Writes kept locally while Redis is unreachable (the outage buffer's bound)."""
        return self._buffer.limit

    @max_buffered_writes.setter
    def max_buffered_writes(self, value: int) -> None:
        check_bounds(max_buffered_writes=value)
        self._buffer.limit = value

    def __repr__(self) -> str:
        return f"RedisBackend({self._where}, prefix={self.prefix!r})"

    # -- outage control ----------------------------------------------------------------------------
    def flush(self) -> int:
        """Replay buffered writes now (ignoring the retry interval); returns how many remain."""
        return self._run(self._flush())

    async def aflush(self) -> int:
        """Async twin of :meth:`flush`."""
        return await self._arun(self._flush())

    def ping(self) -> None:
        """Round-trip to Redis, raising :class:`BackendUnavailableError` when it cannot."""
        self._run(self._ping())

    async def aping(self) -> None:
        """Async twin of :meth:`ping`."""
        await self._arun(self._ping())

    # -- context -----------------------------------------------------------------------------------
    def append_actions(
        self,
        key: SessionKey,
        lines: Sequence[str],
        *,
        at: float,
        event_id: str | None = None,
        user_id: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Append action lines in one round trip (``True`` also when buffered during an outage)."""
        return self._do_write(
            self._append_op(key, lines, at, event_id=event_id, user_id=user_id, sent_at=sent_at)
        )

    async def aappend_actions(
        self,
        key: SessionKey,
        lines: Sequence[str],
        *,
        at: float,
        event_id: str | None = None,
        user_id: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Async twin of :meth:`append_actions`."""
        return await self._ado_write(
            self._append_op(key, lines, at, event_id=event_id, user_id=user_id, sent_at=sent_at)
        )

    def append_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Many :meth:`append_actions` in pipelined chunks of 256; results in order.

        For ingest processes that receive events in bursts (a replay after a
        reconnect, a batch from a queue): the same semantics at a fraction of the
        round trips. While Redis runs one chunk the next is built and sent, so
        client and server work overlap. If the connection fails midway, the
        events without an answer are buffered like any write during an outage
        (those already sent as of unknown fate, see :class:`DroppedWrite`).
        """
        if not writes:
            return []
        # Every write is encodable, or none is sent.
        return self._run(self._write_many(self._many_ops(writes)))

    async def aappend_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Async twin of :meth:`append_actions_many`."""
        if not writes:
            return []
        return await self._arun(self._write_many(self._many_ops(writes)))

    def apply_summary(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Set the summary and drop the ``min(replaces, pending)`` oldest actions atomically."""
        return self._do_write(
            self._summary_op(
                key, summary, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
            )
        )

    async def aapply_summary(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None = None,
        sent_at: float | None = None,
    ) -> bool:
        """Async twin of :meth:`apply_summary`."""
        return await self._ado_write(
            self._summary_op(
                key, summary, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
            )
        )

    def read(self, key: SessionKey, options: ReadOptions, *, now: float) -> SessionView | None:
        """The session filtered server-side in one round trip; ``None`` if unknown or down."""
        replies = self._do_query(read_commands(self._cfg, key, options, now))
        return self._account_read(replies, options)

    async def aread(
        self, key: SessionKey, options: ReadOptions, *, now: float
    ) -> SessionView | None:
        """Async twin of :meth:`read`."""
        replies = await self._ado_query(read_commands(self._cfg, key, options, now))
        return self._account_read(replies, options)

    def products_for(self, session_id: str) -> list[str]:
        """Product ids (sorted) with state for ``session_id``: one ``SMEMBERS``."""
        replies = self._do_query((("SMEMBERS", self._keys.products(session_id)),))
        return ids(replies[0]) if replies else []

    async def aproducts_for(self, session_id: str) -> list[str]:
        """Async twin of :meth:`products_for`."""
        replies = await self._ado_query((("SMEMBERS", self._keys.products(session_id)),))
        return ids(replies[0]) if replies else []

    def reset(self, key: SessionKey) -> None:
        """Forget a session's context (MULTI/EXEC; its chat history stays)."""
        self._do_write(self._op("reset", reset_commands(self._cfg, key), key))

    async def areset(self, key: SessionKey) -> None:
        """Async twin of :meth:`reset`."""
        await self._ado_write(self._op("reset", reset_commands(self._cfg, key), key))

    def sessions(self) -> list[SessionKey]:
        """Every live session, least recently touched first (expired ones swept first)."""
        return self._run(self._sessions())

    async def asessions(self) -> list[SessionKey]:
        """Async twin of :meth:`sessions`."""
        return await self._arun(self._sessions())

    # -- users -------------------------------------------------------------------------------------
    def user_sessions(self, user_id: str, *, product_id: str, limit: int) -> list[UserSessionRef]:
        """One product's user's most recent sessions, newest first (one ``ZREVRANGE``)."""
        if limit <= 0:
            return []
        replies = self._do_query(user_sessions_commands(self._cfg, user_id, product_id, limit))
        return user_refs(replies[0], product_id) if replies else []

    async def auser_sessions(
        self, user_id: str, *, product_id: str, limit: int
    ) -> list[UserSessionRef]:
        """Async twin of :meth:`user_sessions`."""
        if limit <= 0:
            return []
        replies = await self._ado_query(
            user_sessions_commands(self._cfg, user_id, product_id, limit)
        )
        return user_refs(replies[0], product_id) if replies else []

    def user_products(self, user_id: str) -> list[str]:
        """Product ids (sorted) under which ``user_id`` has indexed sessions: one ``SMEMBERS``."""
        replies = self._do_query((("SMEMBERS", self._keys.user_products(user_id)),))
        return ids(replies[0]) if replies else []

    async def auser_products(self, user_id: str) -> list[str]:
        """Async twin of :meth:`user_products`."""
        replies = await self._ado_query((("SMEMBERS", self._keys.user_products(user_id)),))
        return ids(replies[0]) if replies else []

    def forget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Drop a user's session index (under every product when ``product_id`` is None)."""
        self._do_write(self._forget_user_op(user_id, product_id))

    async def aforget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Async twin of :meth:`forget_user`."""
        await self._ado_write(self._forget_user_op(user_id, product_id))

    # -- chat message histories --------------------------------------------------------------------
    def append_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Append serialized chat messages (trimmed to ``max_messages``, TTL refreshed)."""
        if messages:
            self._do_write(self._messages_op(key, messages))

    async def aappend_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Async twin of :meth:`append_messages`."""
        if messages:
            await self._ado_write(self._messages_op(key, messages))

    def get_messages(self, key: SessionKey) -> list[str]:
        """A session's serialized chat messages, oldest first (refreshes the TTL)."""
        replies = self._do_query(get_messages_commands(self._cfg, key))
        return list(replies[0]) if replies else []

    async def aget_messages(self, key: SessionKey) -> list[str]:
        """Async twin of :meth:`get_messages`."""
        replies = await self._ado_query(get_messages_commands(self._cfg, key))
        return list(replies[0]) if replies else []

    def _messages_op(self, key: SessionKey, messages: Sequence[str]) -> Op:
        return self._op("messages", messages_commands(self._cfg, key, messages), key)

    def _clear_messages_op(self, key: SessionKey) -> Op:
        return self._op("clear_messages", (("DEL", self._keys.history(key)),), key)

    def _forget_user_op(self, user_id: str, product_id: str | None) -> Op:
        kind, commands = forget_user_commands(self._cfg, user_id, product_id)
        return self._op(kind, commands, user_id=user_id)

    def clear_messages(self, key: SessionKey) -> None:
        """Delete a session's chat history."""
        self._do_write(self._clear_messages_op(key))

    async def aclear_messages(self, key: SessionKey) -> None:
        """Async twin of :meth:`clear_messages`."""
        await self._ado_write(self._clear_messages_op(key))

    # -- listen ------------------------------------------------------------------------------------
    def _listen_kwargs(self, pool: Any, block_ms: int) -> dict[str, Any]:
        if block_ms <= 0:
            raise ConfigError(f"block_ms must be > 0, got {block_ms!r}")
        # A copy of the pool's own options: behind Sentinel they hold the pool's
        # ``connection_pool`` handle, so the listener's connection asks the same
        # sentinels for the primary (and follows a failover when it reconnects).
        kwargs = dict(pool.connection_kwargs)
        # The command blocks on purpose: the socket must outlive the block.
        kwargs["socket_timeout"] = block_ms / 1000 + LISTEN_GRACE_SECONDS
        return kwargs

    def _listen_failed(self, exc: BaseException) -> BackendError:
        """A listener's failure: refused credentials stay an auth error, the rest an outage."""
        if self._is_auth_error(exc):
            return self._auth_failed(exc)
        return self._failed("listen", exc)

    def listen(
        self,
        key: SessionKey,
        *,
        last_id: str = "$",
        block_ms: int = DEFAULT_LISTEN_BLOCK_MS,
        count: int = 100,
        stop: Event | None = None,
    ) -> Generator[Activity, None, None]:
        """Yield the session's new activity as it is written, from any process.

        ``last_id="$"`` starts with what arrives after the call; pass an
        :attr:`Activity.id` to resume right after that entry (``"0"`` replays what
        the stream still holds). Each ``XREAD BLOCK`` waits ``block_ms``; between
        blocks ``stop`` (a ``threading.Event``) is checked. Uses its own connection,
        closed when the iterator is closed or garbage-collected. Raises
        :class:`BackendUnavailableError` when Redis cannot be reached.
        """
        module = self._redis
        stream = self._keys.session(key, STREAM)
        if self._cluster:  # XREAD on the node that owns the stream's slot now
            slot = self._slot(("XREAD", stream))
            pool = node_pool(self._client.nodes_manager.get_node_from_slot(slot), is_async=False)
        else:
            pool = self._client.connection_pool
        client = module.Redis.from_pool(
            module.ConnectionPool(
                connection_class=pool.connection_class, **self._listen_kwargs(pool, block_ms)
            )
        )
        self._packed([("XREAD", stream)], "listen")  # a lone surrogate: ConfigError, here
        try:
            try:
                cursor = (
                    last_id
                    if last_id != "$"
                    else listen_start_id(client.xrevrange(stream, count=1))
                )
                while stop is None or not stop.is_set():
                    reply = client.xread({stream: cursor}, count=count, block=block_ms)
                    for entry_id, fields in xread_entries(reply):
                        cursor = entry_id
                        yield activity(entry_id, fields)
            except self._listen_errors as exc:
                raise self._listen_failed(exc) from exc
        finally:
            client.close()

    async def alisten(
        self,
        key: SessionKey,
        *,
        last_id: str = "$",
        block_ms: int = DEFAULT_LISTEN_BLOCK_MS,
        count: int = 100,
    ) -> AsyncGenerator[Activity, None]:
        """Async twin of :meth:`listen`; stop it with ``break`` or by cancelling the task."""
        module = self._redis
        stream = self._keys.session(key, STREAM)
        pool = self._aclient.connection_pool if not self._cluster else None
        if pool is None:  # XREAD on the node that owns the stream's slot now
            manager = (await self._aclient.initialize()).nodes_manager
            pool = manager.get_node_from_slot(self._slot(("XREAD", stream)))
        client = module.asyncio.Redis.from_pool(
            module.asyncio.ConnectionPool(
                connection_class=pool.connection_class, **self._listen_kwargs(pool, block_ms)
            )
        )
        self._packed([("XREAD", stream)], "listen")  # a lone surrogate: ConfigError, here
        try:
            try:
                if last_id == "$":
                    cursor = listen_start_id(await cancellable(client.xrevrange(stream, count=1)))
                else:
                    cursor = last_id
                while True:
                    reply = await cancellable(
                        client.xread({stream: cursor}, count=count, block=block_ms)
                    )
                    for entry_id, fields in xread_entries(reply):
                        cursor = entry_id
                        yield activity(entry_id, fields)
            except self._listen_errors as exc:
                raise self._listen_failed(exc) from exc
        finally:
            # Shielded so a cancelled listener still releases its connection.
            await asyncio.shield(client.aclose())

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Replay what is buffered if Redis answers, report the rest as dropped, disconnect.

        Closes the sync client; the async client needs a loop, so async code
        calls :meth:`aclose`, which closes both.
        """
        self.flush()
        self._buffer.drop_all("closed")
        self._client.close()
        if self._sentinels is not None:
            self._sentinels[0].close()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`; closes the async and the sync client."""
        await self.aflush()
        self._buffer.drop_all("closed")
        await self._aclient.aclose()
        self._client.close()
        if self._sentinels is not None:
            self._sentinels[0].close()
            await self._sentinels[1].aclose()
