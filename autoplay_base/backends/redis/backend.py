"""``RedisBackend``: the :class:`~autoplay_base.backends.base.Backend` protocol over Redis."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from threading import Event, Lock
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

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
from autoplay_base.backends.redis._cluster import (
    ClusterPlan,
    command_key,
    describe_cluster,
    group_replies,
    slot_groups,
    verdict,
)
from autoplay_base.backends.redis._commands import (
    Settings,
    activity,
    append_command,
    f,
    forget_user_commands,
    get_messages_commands,
    ids,
    messages_commands,
    read_commands,
    read_view,
    reset_commands,
    sessions_command,
    summary_command,
    user_refs,
    user_sessions_commands,
    write_counts,
)
from autoplay_base.backends.redis._layout import (
    _STREAM,
    Layout,
    parse_member,
)
from autoplay_base.backends.redis._outage import OutageBuffer, Pending
from autoplay_base.backends.redis._scripts import (
    _LOAD_SCRIPTS,
    CLUSTER_LOAD_SCRIPTS,
)
from autoplay_base.backends.redis._wire import (
    _LISTEN_GRACE_SECONDS,
    Command,
    _acheckout,
    _aread_reply,
    _cancellable,
    _checkout,
    _describe_pool,
    _entries,
    _import_redis,
    _no_retry,
    _pack,
    _raise_errors,
    _read_reply,
    _tail,
    node_pool,
)
from autoplay_base.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailableError,
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
_BATCH = 256  # commands per pipeline when writing many events or replaying the buffer


# -- public values ------------------------------------------------------------------------
NOT_APPLIED = "not_applied"
""":attr:`DroppedWrite.outcome`: Redis never received the write (it was only buffered)."""
UNKNOWN = "unknown"
""":attr:`DroppedWrite.outcome`: the write was sent but its answer was lost (a timeout, a
connection that died mid-reply), so Redis may have applied it."""


@dataclass(frozen=True, slots=True)
class DroppedWrite:
    """A buffered write that was given up (buffer overflow or close during an outage).

    ``reason`` says why it was given up (``"buffer_full"``, ``"closed"``); ``outcome``
    whether it is certainly lost (:data:`NOT_APPLIED`) or may have been applied
    (:data:`UNKNOWN`: it had been sent once and its reply never came).
    """

    kind: str
    key: SessionKey | None
    event_id: str | None
    reason: str
    outcome: str = NOT_APPLIED


# -- pure core ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Op:
    """A write as commands, packed once when it is built; what to count once it ran.

    ``packed`` is the RESP of the commands (wrapped in MULTI/EXEC when there are
    several) and ``replies`` how many replies it yields. Packing at build time
    means a write that cannot be encoded fails in the caller, never later in the
    buffer, where it would block every write queued behind it.
    """

    kind: str
    commands: tuple[Command, ...]
    packed: bytes
    replies: int
    key: SessionKey | None = None
    event_id: str | None = None
    lines: int = 0
    user_id: str | None = None
    now: str = ""


class _Progress:
    """How far a cluster flow got: the first step's replies once answered, the index
    steps' counts, and the commands of the step in flight (what a failure leaves to do)."""

    __slots__ = ("errors", "evicted", "expired", "first", "pending", "sent")

    def __init__(self) -> None:
        self.sent = False  # some request went out: a lost answer leaves its fate unknown
        self.first: list[Any] | None = None
        self.pending: tuple[Command, ...] = ()
        self.expired = 0
        self.evicted = 0
        self.errors: list[Exception] = []


_T = TypeVar("_T")
Flow = Generator[Any, Any, _T]
"""A flow: yields I/O requests, receives their results, returns its value."""


class _Send(NamedTuple):
    """Request: write ``packed`` and read ``expect`` replies into ``exchange`` (on ``node``'s
    connection in a cluster, else the client's pool)."""

    packed: bytes
    expect: int
    exchange: _Exchange
    node: Any = None


class _Stream(NamedTuple):
    """Request: pipeline ``ops`` in chunks on one connection (``append_actions_many``)."""

    ops: list[_Op]
    exchange: _Exchange


class _Nodes(NamedTuple):
    """Request: the cluster client's nodes manager (its slot map loaded)."""


class _Refresh(NamedTuple):
    """Request: reload the slot map after a ``MOVED``."""

    manager: Any


class _Exchange:
    """One round trip's progress: the replies read so far, and what went out.

    ``sent`` turns true just before the request is written (a failure after it
    leaves the request's fate unknown); ``sent_ops`` counts the writes of a
    pipelined ``append_actions_many`` handed to the socket so far.
    """

    __slots__ = ("replies", "sent", "sent_ops")

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.sent = False
        self.sent_ops = 0


_AUTH_CODES = ("WRONGPASS", "NOAUTH", "NOPERM")
_CLUSTER_CODES = ("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN")
_CLUSTER_SCRIPT_ERROR = "non local key in a cluster node"


def _error_code(exc: BaseException) -> str:
    """The error code of a redis-py error (``status_code`` when it parsed one, else the text)."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    text = str(exc)
    return text.split(" ", 1)[0] if text else ""


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
class RedisBackend:
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
        self._redis = _import_redis()
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
        # Internal calls go through untyped aliases: redis-py's execute_command is untyped.
        self._client: Any = client
        self._aclient: Any = aclient
        self.prefix = prefix
        self.stream_maxlen = stream_maxlen
        self.max_buffered_writes = max_buffered_writes
        self.retry_interval_seconds = retry_interval_seconds
        self.strict = strict
        self.on_error = on_error
        self.on_drop = on_drop
        # The contract's dedupe counters exist from the start, as in the in-memory backend.
        self.stats = BackendStats(extra=dict.fromkeys(CONTRACT_COUNTERS, 0))
        self._clock = clock
        self._keys = Layout(prefix, cluster=self._cluster)
        self._ttl = "" if idle_ttl_seconds is None else f(idle_ttl_seconds)
        self._ttl_ms = "" if idle_ttl_seconds is None else str(math.ceil(idle_ttl_seconds * 1000))
        self._history_ttl_ms = (
            None if history_ttl_seconds is None else math.ceil(history_ttl_seconds * 1000)
        )
        exceptions = self._redis.exceptions
        self._transient: tuple[type[BaseException], ...] = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            TimeoutError,
            OSError,
        )
        self._connection_error: type[Exception] = exceptions.ConnectionError
        self._response_error: type[Exception] = exceptions.ResponseError
        self._no_script: type[Exception] = exceptions.NoScriptError
        # Credentials refused: AuthenticationError and AuthorizationError subclass
        # ConnectionError, so they are told apart before anything counts as an outage.
        self._auth_errors: tuple[type[Exception], ...] = (
            exceptions.AuthenticationError,
            exceptions.AuthorizationError,
            exceptions.NoPermissionError,
            exceptions.AuthenticationWrongNumberOfArgsError,
        )
        self._cluster_errors: tuple[type[Exception], ...] = (
            exceptions.AskError,  # MovedError too
            exceptions.ClusterDownError,
            exceptions.ClusterCrossSlotError,
            exceptions.TryAgainError,
        )
        if self._cluster:
            # A slot whose node is gone, failing over or migrating is an outage of its keys.
            self._transient += (
                exceptions.ClusterDownError,
                exceptions.TryAgainError,
                exceptions.RedisClusterException,
            )
        # A listener on a cluster whose slot moved away (MOVED) resumes like after an outage.
        self._listen_errors = self._transient + ((exceptions.AskError,) if self._cluster else ())
        self._plan = ClusterPlan(
            self._keys,
            ttl=self._ttl,
            max_sessions=max_sessions,
            max_users=self.bounds.users,
            per_user=max_sessions_per_user,
        )
        self._cfg = Settings(
            self._keys,
            self._plan,
            self.bounds,
            self._ttl,
            self._ttl_ms,
            self._history_ttl_ms,
            stream_maxlen,
        )
        self._lock = Lock()
        self._buffer: OutageBuffer[_Op] = OutageBuffer(
            max_buffered_writes, lock=self._lock, count=self._count, report_drop=self._dropped
        )
        self._down_until = 0.0
        self._down = False
        self._last_failure: BaseException | None = None
        self._where = describe_cluster(client) if self._cluster else _describe_pool(client)
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
        module = _import_redis()
        check_bounds(socket_timeout=socket_timeout)
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout or socket_timeout,
            "max_connections": max_connections,
        }
        client = module.Redis.from_url(url, retry=_no_retry(module, is_async=False), **common)
        aclient = module.asyncio.Redis.from_url(
            url, retry=_no_retry(module, is_async=True), **common
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
        Commands go to the node that owns each key's slot; ``MOVED``/``ASK`` refresh
        the slot map and retry once; ``CLUSTERDOWN``/``TRYAGAIN`` are an outage (reads
        empty, writes buffered and replayed). The sync client connects at once: no
        node answering raises :class:`BackendUnavailableError`.
        """
        module = _import_redis()
        check_bounds(socket_timeout=socket_timeout)
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout or socket_timeout,
        }
        if max_connections is not None:
            common["max_connections"] = max_connections
        sync_cls, async_cls = module.cluster.RedisCluster, module.asyncio.cluster.RedisCluster
        try:
            if isinstance(startup_nodes, str):
                client = sync_cls.from_url(startup_nodes, **common)
                aclient = async_cls.from_url(startup_nodes, **common)
            else:
                nodes = [(host, int(port)) for host, port in startup_nodes]
                if not nodes:
                    raise ConfigError("from_cluster needs a URL or at least one (host, port)")
                client = sync_cls(
                    startup_nodes=[module.cluster.ClusterNode(h, p) for h, p in nodes], **common
                )
                aclient = async_cls(
                    startup_nodes=[module.asyncio.cluster.ClusterNode(h, p) for h, p in nodes],
                    **common,
                )
        except module.exceptions.RedisClusterException as exc:
            raise BackendUnavailableError(
                f"no Redis Cluster node answered ({type(exc).__name__})"
            ) from None
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
        module = _import_redis()
        check_bounds(socket_timeout=socket_timeout)
        if not sentinels:
            raise ConfigError("from_sentinel needs at least one (host, port) sentinel")
        timeouts: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout or socket_timeout,
        }
        primary: dict[str, Any] = {
            **timeouts,
            "decode_responses": True,
            "max_connections": max_connections,
            "db": db,
            "username": username,
            "password": password,
        }
        nodes = [(host, int(port)) for host, port in sentinels]

        def own(is_async: bool) -> dict[str, Any]:
            # Without ``retry`` an unreachable sentinel is tried 3 more times (redis-py's
            # default) before the next one, on every new connection to the primary.
            return {
                **timeouts,
                "retry": _no_retry(module, is_async=is_async),
                **(sentinel_kwargs or {}),
            }

        managers = (
            module.sentinel.Sentinel(nodes, sentinel_kwargs=own(False)),
            module.asyncio.sentinel.Sentinel(nodes, sentinel_kwargs=own(True)),
        )
        client = managers[0].master_for(
            service_name, retry=_no_retry(module, is_async=False), **primary
        )
        aclient = managers[1].master_for(
            service_name, retry=_no_retry(module, is_async=True), **primary
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
        exchange = _Exchange()
        try:
            self._send(_pack([("INFO", "cluster")]), 1, exchange)
        except self._transient:
            logger.debug("redis backend: %s not reachable at start", self._where)
            return
        info = exchange.replies[0]
        self._found_cluster = isinstance(info, str) and "cluster_enabled:1" in info
        self._recovered()

    def __repr__(self) -> str:
        return f"RedisBackend({self._where}, prefix={self.prefix!r})"

    # -- command builders (pure but for counting what cannot be encoded) ------------------------
    def _packed(self, commands: Sequence[Command], what: str) -> bytes:
        """``commands`` in RESP; text that is not valid Unicode is a :class:`ConfigError`.

        A lone surrogate (``"\\ud800"`` is valid for ``json.loads``) cannot be sent
        to Redis: it is refused here, counted in ``redis_invalid_text`` and logged
        without the offending value, before any state changes or anything is buffered.
        """
        try:
            return _pack(commands)
        except UnicodeEncodeError as exc:
            with self._lock:
                self.stats.errors += 1
                self._count("redis_invalid_text")
            logger.warning(
                "redis backend: refused a %s holding text that is not valid Unicode", what
            )
            raise ConfigError(
                f"cannot send the {what} to Redis: an id or text holds a lone surrogate "
                f"(not valid Unicode) at position {exc.start}"
            ) from None

    def _op(
        self,
        kind: str,
        commands: tuple[Command, ...],
        key: SessionKey | None = None,
        event_id: str | None = None,
        lines: int = 0,
        *,
        user_id: str | None = None,
        now: str = "",
    ) -> _Op:
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else list(commands)
        packed = self._packed(wire, f"{kind} write")
        return _Op(kind, commands, packed, len(wire), key, event_id, lines, user_id, now)

    def _append_op(
        self,
        key: SessionKey,
        lines: Sequence[str],
        at: float,
        *,
        event_id: str | None,
        user_id: str | None,
        sent_at: float | None,
    ) -> _Op:
        command = append_command(
            self._cfg, key, lines, at, event_id=event_id, user_id=user_id, sent_at=sent_at
        )
        return self._op("append", (command,), key, event_id, len(lines), user_id=user_id, now=f(at))

    def _summary_op(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None,
        sent_at: float | None,
    ) -> _Op:
        command = summary_command(
            self._cfg, key, summary, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
        )
        return self._op("summary", (command,), key, event_id, now=f(at))

    # -- bookkeeping (pure, under the lock) --------------------------------------------------------
    @property
    def _in_flight(self) -> int:
        """Buffered writes at the head that the replay under way has sent."""
        return self._buffer.in_flight

    def _count(self, name: str, n: int = 1) -> None:
        extra = self.stats.extra
        extra[name] = extra.get(name, 0) + n

    def _after_write(self, op: _Op, replies: Sequence[Any]) -> bool:
        """Account one executed write from its replies; ``False`` for a duplicate or an error."""
        failure = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failure is not None:
            self._rejected(op.kind, failure)
            return False
        if op.kind not in ("append", "summary"):
            return True
        stored, trimmed, expired, evicted, reused, resets = write_counts(replies[0])
        with self._lock:
            self.stats.sessions_expired += expired
            self.stats.sessions_evicted += evicted
            if not stored:
                self.stats.duplicate_events += 1
                return False
            self.stats.actions_trimmed += trimmed
            if reused:
                self._count("reused_ids")
            if resets:
                self._count("dedupe_resets")
            if op.kind == "append":
                self.stats.actions_stored += op.lines
            else:
                self.stats.summaries_stored += 1
        return True

    def _report(self, error: BackendError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                logger.exception("redis backend: on_error callback raised")

    def _tripped(self) -> bool:
        return time.monotonic() < self._down_until

    def _trip(self, exc: BaseException) -> None:
        """Open the breaker: calls skip Redis for ``retry_interval_seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + self.retry_interval_seconds
            self._last_failure = exc
            first = not self._down
            self._down = True
        if first:
            logger.warning(
                "redis backend: %s unreachable (%s); reads return empty, writes are buffered",
                self._where,
                type(exc).__name__,
            )

    def _failed(
        self, what: str, exc: BaseException | None, *, trip: bool = True
    ) -> BackendUnavailableError:
        """Count one operation that could not reach Redis and build the error to surface."""
        if exc is None:
            exc = self._last_failure
        elif trip:
            self._trip(exc)
        detail = type(exc).__name__ if exc is not None else "unknown"
        error = BackendUnavailableError(
            f"redis at {self._where} unavailable during {what}: {detail}"
        )
        error.__cause__ = exc
        kind = "write" if what == "write" else "read"
        with self._lock:
            self.stats.errors += 1
            self._count(f"redis_{kind}_errors")
        logger.debug("redis backend: %s", error)
        self._report(error)
        return error

    def _rejected(self, what: str, exc: Exception) -> BackendError:
        """Redis refused a command (a script error, a foreign key of the wrong type)."""
        error = BackendError(f"redis at {self._where} rejected the {what}: {exc}")
        error.__cause__ = exc
        with self._lock:
            self.stats.errors += 1
            self._count("redis_rejected")
        logger.error("redis backend: %s", error)
        self._report(error)
        return error

    def _is_auth_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._auth_errors) or (
            isinstance(exc, self._response_error) and _error_code(exc) in _AUTH_CODES
        )

    def _is_cluster_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._cluster_errors) or (
            isinstance(exc, self._response_error)
            and (_error_code(exc) in _CLUSTER_CODES or _CLUSTER_SCRIPT_ERROR in str(exc))
        )

    def _auth_failed(self, exc: BaseException) -> BackendAuthError:
        """Redis refused the credentials: a configuration error, never an outage.

        The message names the server (no credentials: ``_describe_pool`` drops
        them) and the error class, never redis-py's text or the URL.
        """
        error = BackendAuthError(
            f"redis at {self._where} refused the credentials ({type(exc).__name__}): "
            "check the user, password and ACL permissions of the URL"
        )
        error.__cause__ = exc
        with self._lock:
            self.stats.errors += 1
            self._count("redis_auth_errors")
        logger.error("redis backend: %s", error)
        self._report(error)
        return error

    def _cluster_refused(self, detail: str) -> ConfigError:
        error = ConfigError(
            f"redis at {self._where} is a Redis Cluster node ({detail}) but the backend "
            "has standalone clients: use RedisBackend.from_url / from_cluster, or pass "
            "redis.cluster.RedisCluster clients"
        )
        with self._lock:
            self.stats.errors += 1
            self._count("redis_cluster_refused")
        logger.error("redis backend: %s", error)
        return error

    def _check_reply(self, reply: Any) -> Any:
        """An error reply that means misconfiguration raises; any other reply is returned.

        Refused credentials and a Cluster node are not outages: buffering or
        logging them would lose every write in silence.
        """
        if isinstance(reply, Exception):
            if self._is_auth_error(reply):
                raise self._auth_failed(reply) from reply
            if not self._cluster and self._is_cluster_error(reply):
                raise self._cluster_refused(_error_code(reply) or "cluster error") from reply
        return reply

    def _buffered(
        self, op: _Op, exc: BaseException | None, *, trip: bool = True, sent: bool = False
    ) -> bool:
        """A write Redis did not take: buffer it (or raise in strict mode)."""
        error = self._failed("write", exc, trip=trip)
        if self.strict:
            raise error
        return self._enqueue(op, sent=sent)

    def _read_failed(self, exc: BaseException | None) -> None:
        """A read Redis did not answer: empty result (or raise in strict mode)."""
        error = self._failed("read", exc)
        if self.strict:
            raise error

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.info("redis backend: %s reachable again", self._where)

    def _enqueue(self, op: _Op, *, sent: bool = False) -> bool:
        """Buffer a write (see :class:`~._outage.OutageBuffer` for what overflows)."""
        self._buffer.enqueue(op, sent=sent)
        return True

    def _dropped(self, pending: Pending[_Op], reason: str) -> None:
        op = pending.op
        outcome = UNKNOWN if pending.sent else NOT_APPLIED
        logger.warning(
            "redis backend: dropped a buffered %s write (%s, %s, product=%r)",
            op.kind,
            reason,
            outcome,
            op.key.product_id if op.key else None,
        )
        if self.on_drop is not None:
            try:
                self.on_drop(DroppedWrite(op.kind, op.key, op.event_id, reason, outcome))
            except Exception:
                logger.exception("redis backend: on_drop callback raised")

    def _replayed(self, batch: list[Pending[_Op]], exchange: _Exchange) -> None:
        """Account the writes of ``batch`` that were answered and take them off the buffer.

        Replies start with one per SCRIPT LOAD, then each write's replies in order.
        When the replay broke off after it was sent, the writes without their
        full answer stay buffered, marked as sent: Redis may have applied them.
        """
        replies = exchange.replies
        position = len(_LOAD_SCRIPTS)
        done = 0
        for pending in batch:
            op = pending.op
            chunk = replies[position : position + op.replies]
            if len(chunk) < op.replies:
                break
            position += op.replies
            if op.replies > 1:
                exec_reply = chunk[-1]
                chunk = exec_reply if isinstance(exec_reply, list) else [exec_reply]
            self._after_write(op, chunk)
            done += 1
        self._buffer.replayed(batch, done, sent=exchange.sent)

    def _replay_packed(self, batch: list[Pending[_Op]]) -> tuple[bytes, int]:
        # Scripts are loaded first: a restarted server has an empty script cache.
        packed = _pack(_LOAD_SCRIPTS) + b"".join(pending.op.packed for pending in batch)
        return packed, len(_LOAD_SCRIPTS) + sum(pending.op.replies for pending in batch)

    @property
    def buffered_writes(self) -> int:
        """Writes waiting for Redis to come back."""
        return len(self._buffer)

    # -- cluster flows (pure: yield a step's commands, receive one reply per command) ----------
    def _cluster_flow(
        self, op: _Op, progress: _Progress
    ) -> Generator[tuple[Command, ...], list[Any], None]:
        """One write as cluster steps: the op's own commands, then what its replies call for."""
        if op.kind == "index":
            yield from self._index_steps(op.commands, progress)
            return
        replies = yield op.commands
        progress.first = replies
        if op.kind == "forget_user":
            products = replies[0] if isinstance(replies[0], list) else []
            follow = self._plan.forget_user(op.user_id or "", products)
            if follow:
                yield from self._index_steps(follow, progress)
            return
        reply = replies[0]
        if op.kind not in ("append", "summary") or not isinstance(reply, list) or op.key is None:
            return  # not a session write, a duplicate (0) or an error reply
        yield from self._index_steps(self._plan.after_write(op.key, op.now, op.user_id), progress)

    def _index_steps(
        self, commands: tuple[Command, ...], progress: _Progress
    ) -> Generator[tuple[Command, ...], list[Any], None]:
        """Index updates, then the drops of the victims they name (each in its own slot)."""
        replies = yield commands
        progress.errors += [reply for reply in replies if isinstance(reply, Exception)]
        outcome = self._plan.outcome(commands, replies)
        progress.expired += outcome.expired
        progress.evicted += outcome.evicted
        if outcome.drops:
            replies = yield outcome.drops
            progress.errors += [reply for reply in replies if isinstance(reply, Exception)]

    def _after_cluster(self, op: _Op, progress: _Progress) -> bool:
        """Account a cluster flow as the standalone script's reply would be accounted."""
        for error in progress.errors:
            self._rejected(f"{op.kind} index update", error)
        first = progress.first
        if op.kind == "index" or first is None:
            with self._lock:
                self.stats.sessions_expired += progress.expired
                self.stats.sessions_evicted += progress.evicted
            return not progress.errors
        reply = first[0]
        if op.kind in ("append", "summary") and isinstance(reply, list):
            _, trimmed, expired, _created, reused, resets = reply
            shaped = [1, trimmed, expired + progress.expired, progress.evicted, reused, resets]
            return self._after_write(op, [shaped])
        return self._after_write(op, first)

    def _cluster_broken(self, op: _Op, progress: _Progress, exc: BaseException) -> bool:
        """A flow cut by an outage: buffer what is left (the whole write, or its index steps)."""
        if progress.first is None:
            return self._buffered(op, exc, sent=progress.sent)
        stored = self._after_cluster(op, progress)
        self._buffered(self._op("index", progress.pending), exc)
        return stored

    def _replay_broken(self, pending: Pending[_Op], progress: _Progress) -> None:
        """A replayed flow cut by an outage: it stays at the head, as what is left of it."""
        if progress.first is not None:
            self._after_cluster(pending.op, progress)
            rest = self._op("index", progress.pending)
        else:
            rest = pending.op
        self._buffer.replace_head(pending, rest, sent=progress.sent)

    def _slot(self, command: Command) -> int:
        key = command_key(command)
        return 0 if key is None else int(self._client.keyslot(key))

    def _redirect(self, what: str, exc: Any, slot: int, manager: Any) -> tuple[Any, bool]:
        """The node to try next after a redirect, and whether it needs ``ASKING``."""
        if what == "ask":
            node = manager.get_node(host=exc.host, port=exc.port)
            if node is not None:
                return node, True
        return manager.get_node_from_slot(slot), False

    # -- flows: each multi-step operation written once ------------------------------------------
    # A flow is a generator that yields I/O requests (``_Send``, ``_Stream``, ``_Nodes``,
    # ``_Refresh``) and receives their results, or has their exception thrown in at the
    # ``yield``; :meth:`_run` and :meth:`_arun` perform the requests, so the breaker,
    # buffer, replay and routing decisions exist once for both clients (httpx's auth flows).
    def _execute(self, packed: bytes, count: int, exchange: _Exchange) -> Flow[list[Any]]:
        """One command, or several in MULTI/EXEC (``count`` > 1); raises the first error reply."""
        yield _Send(packed, count, exchange)
        if count > 1:
            return _raise_errors(exchange.replies[-1])
        if isinstance(exchange.replies[0], self._no_script):
            yield _Send(_pack(_LOAD_SCRIPTS), len(_LOAD_SCRIPTS), _Exchange())
            exchange.replies.clear()  # NOSCRIPT: nothing ran, the same request goes again
            yield _Send(packed, count, exchange)
        return _raise_errors(exchange.replies)

    def _drain(self) -> Flow[bool | None]:
        """Replay buffered writes in order; ``True`` when the buffer is empty afterwards."""
        if not self._buffer.begin_drain():
            return None if self._buffer else True
        try:
            if self._cluster:
                return (yield from self._cluster_drain())
            while batch := self._buffer.take_batch(_BATCH):
                packed, count = self._replay_packed(batch)
                exchange = _Exchange()
                try:
                    yield _Send(packed, count, exchange)
                except self._transient as exc:
                    # Not an operation of its own: the call that triggered it counts.
                    self._replayed(batch, exchange)
                    self._trip(exc)
                    return False
                self._replayed(batch, exchange)
            self._recovered()
            return True
        finally:
            self._buffer.end_drain()

    def _ready(self) -> Flow[bool | None]:
        """Replay the buffer first so writes land in order.

        ``False`` while Redis is down; ``None`` while another caller replays the
        buffer (a write then queues behind it, a read goes ahead).
        """
        if self._tripped():
            with self._lock:
                self._count("redis_calls_skipped")
            return False
        if not self._buffer:
            return True
        return (yield from self._drain())

    def _write(self, op: _Op) -> Flow[bool]:
        """One write: replay first, then send it, or buffer it (or raise in strict mode)."""
        ready = yield from self._ready()
        if ready is None:
            return self._enqueue(op)
        if not ready:
            return self._buffered(op, None)
        if self._cluster:
            return (yield from self._cluster_write(op))
        exchange = _Exchange()
        try:
            replies = yield from self._execute(op.packed, op.replies, exchange)
        except self._transient as exc:
            # Once sent, its answer never came: if it is dropped later, say so.
            return self._buffered(op, exc, sent=exchange.sent)
        except self._response_error as exc:
            self._rejected(op.kind, exc)
            return False
        self._recovered()
        return self._after_write(op, replies)

    def _write_many(self, ops: list[_Op]) -> Flow[list[bool]]:
        """Many writes, pipelined in chunks (in a cluster each one its own flow)."""
        if self._cluster:
            results = []
            for op in ops:
                results.append((yield from self._write(op)))
            return results
        ready = yield from self._ready()
        if ready is None:
            return [self._enqueue(op) for op in ops]
        if not ready:
            return [self._buffered(op, None) for op in ops]
        exchange = _Exchange()
        try:
            yield _Stream(ops, exchange)
        except self._transient as exc:
            self._trip(exc)
            return self._settle(ops, exchange, exc)
        self._recovered()
        return self._settle(ops, exchange, None)

    def _query(self, commands: Sequence[Command]) -> Flow[list[Any] | None]:
        """A read: its replies, or ``None`` while Redis is down (or raise in strict mode)."""
        packed, count = self._query_packed(commands)
        if (yield from self._ready()) is False:
            self._read_failed(None)
            return None
        try:
            if self._cluster:
                replies = _raise_errors((yield from self._route(commands)))
            else:
                replies = yield from self._execute(packed, count, _Exchange())
        except self._transient as exc:
            self._read_failed(exc)
            return None
        except self._response_error as exc:
            raise self._rejected("read", exc) from exc
        self._recovered()
        return replies

    def _flush(self) -> Flow[int]:
        with self._lock:
            self._down_until = 0.0
        yield from self._drain()
        return len(self._buffer)

    def _ping(self) -> Flow[None]:
        try:
            if self._cluster:
                yield from self._route([("PING",)])
            else:
                yield _Send(_pack([("PING",)]), 1, _Exchange())
        except self._transient as exc:
            raise self._failed("ping", exc) from exc
        self._recovered()

    def _sessions(self) -> Flow[list[SessionKey]]:
        command = sessions_command(self._cfg, self._clock())
        live, drops = self._account_sessions(command, (yield from self._query((command,))))
        if drops is not None:
            yield from self._write(drops)
        return live

    # -- cluster: routing and the write flow's runner ----------------------------------------
    def _route(
        self, commands: Sequence[Command], progress: _Progress | None = None
    ) -> Flow[list[Any]]:
        """Send each command to its slot's node (one MULTI per slot); replies in order."""
        replies: list[Any] = [None] * len(commands)
        for slot, indexes in slot_groups([self._slot(c) for c in commands]):
            group = [commands[i] for i in indexes]
            answers = yield from self._route_slot(slot, group, progress)
            for index, answer in zip(indexes, answers, strict=True):
                replies[index] = answer
        return replies

    def _route_slot(
        self, slot: int, commands: list[Command], progress: _Progress | None
    ) -> Flow[list[Any]]:
        """One slot's commands on its node; MOVED/ASK refresh or redirect, NOSCRIPT loads."""
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else commands
        packed = _pack(wire)
        manager = yield _Nodes()
        node, asking = manager.get_node_from_slot(slot), False
        for _ in range(3):
            exchange = _Exchange()
            request = _pack([("ASKING",)]) + packed if asking else packed
            try:
                yield _Send(request, len(wire) + asking, exchange, node)
            finally:
                if progress is not None:
                    progress.sent = progress.sent or exchange.sent
            seen, results = group_replies(exchange.replies, len(commands), asking=asking)
            what, exc = verdict(seen, self._redis.exceptions)
            if what == "ok":
                return results
            if what == "down":
                raise exc
            if what == "noscript":
                yield _Send(
                    _pack(CLUSTER_LOAD_SCRIPTS), len(CLUSTER_LOAD_SCRIPTS), _Exchange(), node
                )
                continue
            if what == "moved":
                yield _Refresh(manager)
            node, asking = self._redirect(what, exc, slot, manager)
        raise self._redis.exceptions.TryAgainError(f"slot {slot} kept moving")

    def _run_cluster(self, op: _Op, progress: _Progress) -> Flow[None]:
        """Drive :meth:`_cluster_flow`: each step's commands routed, its replies sent back."""
        flow = self._cluster_flow(op, progress)
        try:
            commands = next(flow)
            while True:
                progress.pending = commands
                replies = yield from self._route(commands, progress)
                commands = flow.send(replies)
        except StopIteration:
            progress.pending = ()

    def _cluster_write(self, op: _Op) -> Flow[bool]:
        progress = _Progress()
        try:
            yield from self._run_cluster(op, progress)
        except self._transient as exc:
            return self._cluster_broken(op, progress, exc)
        self._recovered()
        return self._after_cluster(op, progress)

    def _cluster_drain(self) -> Flow[bool]:
        """Replay buffered writes one flow at a time, in order (each goes to its nodes)."""
        while batch := self._buffer.take_batch(1):  # one flow in flight at a time
            for pending in batch:
                progress = _Progress()
                try:
                    yield from self._run_cluster(pending.op, progress)
                except self._transient as exc:
                    self._replay_broken(pending, progress)
                    self._trip(exc)
                    return False
                self._after_cluster(pending.op, progress)
                self._buffer.replayed([pending], 1, sent=False)
        self._recovered()
        return True

    # -- the runners: perform a flow's requests (sync, then the same with ``await``) --------
    def _run(self, flow: Flow[_T]) -> _T:
        try:
            request = next(flow)
            while True:
                try:
                    result = self._perform(request)
                except BaseException as exc:
                    request = flow.throw(exc)
                else:
                    request = flow.send(result)
        except StopIteration as done:
            value: _T = done.value
            return value

    async def _arun(self, flow: Flow[_T]) -> _T:
        try:
            request = next(flow)
            while True:
                try:
                    result = await self._aperform(request)
                except BaseException as exc:
                    request = flow.throw(exc)
                else:
                    request = flow.send(result)
        except StopIteration as done:
            value: _T = done.value
            return value

    def _perform(self, request: Any) -> Any:
        if isinstance(request, _Send):
            node = request.node
            pool = self._client.connection_pool if node is None else node_pool(node, is_async=False)
            return self._send(request.packed, request.expect, request.exchange, pool)
        if isinstance(request, _Stream):
            return self._stream_writes(request.ops, request.exchange)
        if isinstance(request, _Nodes):
            return self._client.nodes_manager
        return request.manager.initialize()  # _Refresh

    async def _aperform(self, request: Any) -> Any:
        if isinstance(request, _Send):
            node = request.node
            pool = self._aclient.connection_pool if node is None else node_pool(node, is_async=True)
            return await self._asend(request.packed, request.expect, request.exchange, pool)
        if isinstance(request, _Stream):
            return await self._astream_writes(request.ops, request.exchange)
        if isinstance(request, _Nodes):
            return (await self._aclient.initialize()).nodes_manager
        return await request.manager.initialize()  # _Refresh

    def _do_write(self, op: _Op) -> bool:
        return self._run(self._write(op))

    async def _ado_write(self, op: _Op) -> bool:
        return await self._arun(self._write(op))

    def _do_query(self, commands: Sequence[Command]) -> list[Any] | None:
        return self._run(self._query(commands))

    async def _ado_query(self, commands: Sequence[Command]) -> list[Any] | None:
        return await self._arun(self._query(commands))

    # -- the I/O below the flows: one round trip on one pooled connection -------------------
    def _send(self, packed: bytes, count: int, exchange: _Exchange, pool: Any = None) -> None:
        """Write ``packed`` at once and read ``count`` replies into ``exchange``: one round trip.

        Error replies come back in place as exception objects, except refused
        credentials (:class:`BackendAuthError`) and a Cluster node
        (:class:`ConfigError`), which raise. On any other failure the connection
        is dropped rather than returned half-read, and ``exchange`` holds what was
        answered before it. A connection error before any answer is tried once
        more on a fresh connection: after a server restart every pooled connection
        is dead, though Redis is back.
        """
        pool = self._client.connection_pool if pool is None else pool
        try:
            try:
                self._send_once(pool, packed, count, exchange)
            except self._connection_error as exc:
                if exchange.replies or self._is_auth_error(exc):
                    raise
                pool.disconnect(inuse_connections=False)
                self._send_once(pool, packed, count, exchange)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc

    def _send_once(self, pool: Any, packed: bytes, count: int, exchange: _Exchange) -> None:
        conn = _checkout(pool)  # a refused connection fails here: nothing was sent
        replies = exchange.replies
        try:
            exchange.sent = True
            conn.send_packed_command([packed])
            for _ in range(count):
                replies.append(self._check_reply(_read_reply(conn, self._response_error)))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _query_packed(self, commands: Sequence[Command]) -> tuple[bytes, int]:
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else list(commands)
        return self._packed(wire, "read"), len(wire)

    async def _asend(
        self, packed: bytes, count: int, exchange: _Exchange, pool: Any = None
    ) -> None:
        """Async twin of :meth:`_send`."""
        pool = self._aclient.connection_pool if pool is None else pool
        try:
            try:
                await self._asend_once(pool, packed, count, exchange)
            except self._connection_error as exc:
                if exchange.replies or self._is_auth_error(exc):
                    raise
                await pool.disconnect(inuse_connections=False)
                await self._asend_once(pool, packed, count, exchange)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc

    async def _asend_once(self, pool: Any, packed: bytes, count: int, exchange: _Exchange) -> None:
        conn = await _acheckout(pool)
        replies = exchange.replies
        try:
            exchange.sent = True
            await conn.send_packed_command([packed])
            for _ in range(count):
                replies.append(self._check_reply(await _aread_reply(conn, self._response_error)))
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

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
        return self._run(self._write_many([self._many_op(w) for w in writes]))

    def _stream_writes(self, ops: list[_Op], exchange: _Exchange) -> None:
        """Send ``ops`` in pipelined chunks, reading each chunk's answers while the next runs."""
        pool = self._client.connection_pool
        try:
            conn = _checkout(pool)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc
        replies = exchange.replies
        try:
            # The scripts are loaded first so no EVALSHA can miss a restarted server's cache.
            discard, in_flight = len(_LOAD_SCRIPTS), 0
            for start in range(0, len(ops), _BATCH):
                chunk = ops[start : start + _BATCH]
                packed = b"".join(op.packed for op in chunk)
                if start == 0:
                    packed = _pack(_LOAD_SCRIPTS) + packed
                exchange.sent_ops = start + len(chunk)
                conn.send_packed_command([packed])
                for _ in range(in_flight):  # the previous chunk's answers
                    replies.append(self._check_reply(_read_reply(conn, self._response_error)))
                in_flight = len(chunk)
                if start == 0:
                    for _ in range(discard):
                        self._check_reply(_read_reply(conn, self._response_error))
            for _ in range(in_flight):
                replies.append(self._check_reply(_read_reply(conn, self._response_error)))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    async def aappend_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Async twin of :meth:`append_actions_many`."""
        if not writes:
            return []
        return await self._arun(self._write_many([self._many_op(w) for w in writes]))

    async def _astream_writes(self, ops: list[_Op], exchange: _Exchange) -> None:
        """Async twin of :meth:`_stream_writes`."""
        pool = self._aclient.connection_pool
        try:
            conn = await _acheckout(pool)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc
        replies = exchange.replies
        try:
            discard, in_flight = len(_LOAD_SCRIPTS), 0
            for start in range(0, len(ops), _BATCH):
                chunk = ops[start : start + _BATCH]
                packed = b"".join(op.packed for op in chunk)
                if start == 0:
                    packed = _pack(_LOAD_SCRIPTS) + packed
                exchange.sent_ops = start + len(chunk)
                await conn.send_packed_command([packed])
                for _ in range(in_flight):
                    replies.append(
                        self._check_reply(await _aread_reply(conn, self._response_error))
                    )
                in_flight = len(chunk)
                if start == 0:
                    for _ in range(discard):
                        self._check_reply(await _aread_reply(conn, self._response_error))
            for _ in range(in_flight):
                replies.append(self._check_reply(await _aread_reply(conn, self._response_error)))
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    def _many_op(self, write: ActionsWrite) -> _Op:
        return self._append_op(
            write.key,
            write.lines,
            write.at,
            event_id=write.event_id,
            user_id=write.user_id,
            sent_at=write.sent_at,
        )

    def _settle(self, ops: list[_Op], exchange: _Exchange, exc: BaseException | None) -> list[bool]:
        """Account what Redis answered; buffer the rest (those sent as of unknown fate)."""
        replies = exchange.replies
        answered = zip(ops[: len(replies)], replies, strict=False)
        results = [self._after_write(op, [reply]) for op, reply in answered]
        return results + [
            self._buffered(op, exc, trip=False, sent=index < exchange.sent_ops)
            for index, op in enumerate(ops[len(replies) :], start=len(replies))
        ]

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

    def _account_read(self, replies: list[Any] | None, options: ReadOptions) -> SessionView | None:
        if replies is None:
            return None
        expired, view = read_view(replies[0], options)
        if expired:
            with self._lock:
                self.stats.sessions_expired += expired
        return view

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

    def _account_sessions(
        self, command: Command, replies: list[Any] | None
    ) -> tuple[list[SessionKey], _Op | None]:
        """The live sessions, and in a cluster the drops of the expired ones (a write)."""
        if replies is None:
            return [], None
        if self._cluster:
            outcome = self._plan.outcome((command,), replies)
            expired, members = outcome.expired, replies[0][1]
            drops = self._op("index", outcome.drops) if outcome.drops else None
        else:
            (expired, members), drops = replies[0], None
        if expired:
            with self._lock:
                self.stats.sessions_expired += expired
        return [parse_member(m) for m in members], drops

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

    def _messages_op(self, key: SessionKey, messages: Sequence[str]) -> _Op:
        return self._op("messages", messages_commands(self._cfg, key, messages), key)

    def _clear_messages_op(self, key: SessionKey) -> _Op:
        return self._op("clear_messages", (("DEL", self._keys.history(key)),), key)

    def _forget_user_op(self, user_id: str, product_id: str | None) -> _Op:
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
        kwargs["socket_timeout"] = block_ms / 1000 + _LISTEN_GRACE_SECONDS
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
        stream = self._keys.session(key, _STREAM)
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
                cursor = last_id if last_id != "$" else _tail(client.xrevrange(stream, count=1))
                while stop is None or not stop.is_set():
                    reply = client.xread({stream: cursor}, count=count, block=block_ms)
                    for entry_id, fields in _entries(reply):
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
        stream = self._keys.session(key, _STREAM)
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
                    cursor = _tail(await _cancellable(client.xrevrange(stream, count=1)))
                else:
                    cursor = last_id
                while True:
                    reply = await _cancellable(
                        client.xread({stream: cursor}, count=count, block=block_ms)
                    )
                    for entry_id, fields in _entries(reply):
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
