"""Redis backend: one live context shared by every process that points at the same server.

Use it with one constructor argument::

    backend = RedisBackend.from_url("redis://localhost:6379/0", prefix="autoplay")
    store = ContextStore(backend=backend)          # or AsyncContextStore(backend=backend)

It answers the :class:`~autoplay_base.backends.base.Backend` protocol with the
same semantics as :class:`~autoplay_base.backends.memory.InMemoryBackend` (a
contract test suite runs against both): idempotent writes keyed by
``(product_id, event_id)``, a per-session action cap, LRU and idle expiry of
sessions measured against the caller's ``at``/``now`` values, a bounded user
index and bounded chat histories. Sync methods drive a ``redis.Redis`` client,
``a``-prefixed twins a ``redis.asyncio.Redis`` client; both build their commands
with the same pure helpers, so the bodies differ by ``await`` only. Works with
Redis >= 6.2 and Valkey (standalone; scripts build key names, so not Cluster).

Data model (described here; ``_layout.py`` spells it, and nothing else does)
---------------------------------------------------------------------------
Ids are escaped before they enter a key (``%`` -> ``%25``, ``:`` -> ``%3A``), so an
id containing ``:`` can never collide with another key. ``P``, ``S`` and ``U`` are
the escaped product, session and user ids; ``M`` = ``P:S`` names one session::

    {prefix}:s:M:m      hash    l=last_activity_at, s=summary, st=summary_at
    {prefix}:s:M:a      list    "<at> <line>" per action, oldest first, LTRIM'd to the cap
    {prefix}:s:M:x      stream  activity feed for listen(): XADD MAXLEN ~ stream_maxlen
    {prefix}:sessions   zset    M scored by when it was last touched: LRU, sweep, max_sessions
    {prefix}:p:S        set     P of every product that has state for session S
    {prefix}:e:P        zset    seen event ids of product P (score = at), last dedupe_window
    {prefix}:u:U        zset    M of user U's sessions scored by last_seen_at
    {prefix}:users      zset    U scored by its latest activity (max_users LRU)
    {prefix}:h:M        list    serialized chat messages, oldest first, LTRIM'd to max_messages

Recency is the caller's ``at``/``now`` (a sorted-set score) where the in-memory
backend uses call order; the two agree whenever those values do not go backwards
(``time.time()`` in one process), and ties sort by key name.

Session keys (``s:M:*``, ``p:S``) carry a sliding TTL of
``idle_ttl_seconds`` refreshed on every write and read; chat histories one of
``history_ttl_seconds`` refreshed on every append and get. Expiry decisions
themselves compare the caller's clock values (``now - touched > idle_ttl``) inside
the scripts, exactly as the in-memory backend does; the TTL only reclaims memory.

Round trips: ``append_actions``/``apply_summary`` are one ``EVALSHA`` of a write
script (dedupe, sweep, trim, user index and stream in one atomic step), ``read``
one ``EVALSHA`` of a read script that filters server-side, every other call one
command or one MULTI/EXEC. :meth:`RedisBackend.append_actions_many` pipelines
bursts of writes. Commands are packed (``_wire.py``) and sent on a pooled connection in one
socket write (redis-py supplies connections, the wire protocol and its errors).

Listening: every stored write is also appended to the session's stream, so
:meth:`RedisBackend.listen` / :meth:`RedisBackend.alisten` (``XREAD BLOCK`` on a
connection of their own) yield activity from any process as it arrives, and
resume from the id of the last :class:`Activity` seen.

Outages: commands use a short socket timeout (``socket_timeout``, default 50 ms).
A failed read returns ``None``/empty and counts an error; a failed write goes to a
bounded local buffer and is replayed in order before the next command once Redis
answers again (or by :meth:`RedisBackend.flush`). What overflows the buffer is
counted and handed to ``on_drop``. ``strict=True`` raises
:class:`~autoplay_base.errors.BackendUnavailableError` instead. After a failure the
backend skips Redis for ``retry_interval_seconds`` so an outage costs nothing per
call; a connection error is retried once at once on a fresh connection, because
after a server restart every pooled connection is dead while Redis is fine. A
write whose answer was lost may be replayed although Redis applied it: writes
with an event id are deduplicated, writes without one may then apply twice.
"""

from autoplay_base.backends.redis._layout import (
    escape_id,
    parse_member,
    session_member,
    unescape_id,
)
from autoplay_base.backends.redis.backend import (
    DEFAULT_LISTEN_BLOCK_MS,
    DEFAULT_MAX_BUFFERED_WRITES,
    DEFAULT_PREFIX,
    DEFAULT_RETRY_INTERVAL_SECONDS,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_STREAM_MAXLEN,
    ActionsWrite,
    Activity,
    DroppedWrite,
    RedisBackend,
)

__all__ = [
    "DEFAULT_LISTEN_BLOCK_MS",
    "DEFAULT_MAX_BUFFERED_WRITES",
    "DEFAULT_PREFIX",
    "DEFAULT_RETRY_INTERVAL_SECONDS",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_STREAM_MAXLEN",
    "ActionsWrite",
    "Activity",
    "DroppedWrite",
    "RedisBackend",
    "escape_id",
    "parse_member",
    "session_member",
    "unescape_id",
]
