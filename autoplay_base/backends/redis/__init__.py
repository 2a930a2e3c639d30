"""Redis backend: one live context shared by every process that points at the same server.

Use it with one constructor argument::

    backend = RedisBackend.from_url("redis://localhost:6379/0", prefix="autoplay")
    store = ContextStore(backend=backend)          # or AsyncContextStore(backend=backend)

It answers the :class:`~autoplay_base.backends.base.Backend` protocol with the
same semantics as :class:`~autoplay_base.backends.memory.InMemoryBackend` (a
contract test suite runs against both, on a standalone server and on a 3-node
cluster): idempotent writes keyed by
``(product_id, event_id)``, a per-session action cap, LRU and idle expiry of
sessions measured against the caller's ``at``/``now`` values, a bounded user
index and bounded chat histories. Sync methods drive a ``redis.Redis`` client,
``a``-prefixed twins a ``redis.asyncio.Redis`` client (or the two cluster
clients); both build their commands with the same pure helpers and run the same
flows (each multi-step operation is a generator of I/O requests, performed by
one sync and one async runner), so the bodies differ by ``await`` only. Works with
Redis >= 6.2 and Valkey: standalone, a primary managed by Redis Sentinel (see
*Sentinel* below) or a Redis / Valkey Cluster (see *Cluster* below).

Data model (described here; ``_layout.py`` spells it, and nothing else does)
---------------------------------------------------------------------------
Ids are escaped before they enter a key (``%`` -> ``%25``, ``:`` -> ``%3A``), so an
id containing ``:`` can never collide with another key, and no two tenants' ids
can meet in one name. ``P``, ``S`` and ``U`` are the escaped product, session and
user ids; ``M`` = ``P:S`` names one session, ``PU`` = ``P:U`` one product's user::

    {prefix}:s:M:m      hash    l=last_activity_at, s=summary, st=summary_at
    {prefix}:s:M:a      list    "<at> <line>" per action, oldest first, LTRIM'd to the cap
    {prefix}:s:M:x      stream  activity feed for listen(): XADD MAXLEN ~ stream_maxlen
    {prefix}:sessions   zset    M scored by when it was last touched: LRU, sweep, max_sessions
    {prefix}:p:S        set     P of every product that has state for session S
    {prefix}:e:P        zset    seen event ids of product P scored by sent_at (else at):
                                the newest dedupe_window, trimmed by rank
    {prefix}:ed:P       hash    event id -> content digest, for exactly the ids in e:P
    {prefix}:er:P       string  events in a row older than the whole window (clock reset)
    {prefix}:u:PU       zset    S of one product's user's sessions scored by last_seen_at,
                                the newest max_sessions_per_user
    {prefix}:up:U       set     P of every product under which user U is indexed
    {prefix}:users      zset    PU scored by its latest activity (max_users LRU)
    {prefix}:h:M        list    serialized chat messages, oldest first, LTRIM'd to max_messages
    {prefix}:r:M:R:x    stream  one agent run's events, ids 0-<seq>, MAXLEN ~ max_events
    {prefix}:r:M:R:l    string  the run producer's lease (PX lease_seconds)
    {prefix}:r:M:R:c    string  a cancel request for the run
    {prefix}:rs:M       zset    the session's runs by start time (ms), capped
    {prefix}:rl:M       zset    the session's live runs by lease deadline (ms)
    {prefix}:ul:PU      zset    the user's live runs "S:R" by lease deadline
                                (on a cluster: r:P:{S}:R:*, rs:P:{S}, rl:P:{S}, ul:P:{U};
                                see autoplay_base.agent_stream)

In a cluster the same names carry hash tags (ids also have ``{``/``}`` encoded as
``%7B``/``%7D`` inside key names, so no id can move a tag): ``s:P:{S}:*``, ``p:{S}``,
``h:P:{S}``, ``u:P:{U}``, ``up:{U}``, the meta hash has two more fields, ``t`` (when
the session was last touched) and ``w`` (when its window's expiry was last set),
and the dedupe window is the session's own:
``e:P:{S}``, ``ed:P:{S}``, ``er:P:{S}`` (see *Cluster*).

Dedupe follows the contract of :mod:`autoplay_base.backends.base`: a write is a
duplicate only when ``ed:P`` holds its id with the same digest (computed in
Python with :func:`~autoplay_base.backends.base.content_digest`); the same id
with another digest is stored and counted in ``stats.extra["reused_ids"]``. An
id older than every remembered one is added and trimmed at once (stored, not
remembered); more than ``4 * dedupe_window`` of those in a row clear the window
(``stats.extra["dedupe_resets"]``), as the in-memory backend does. The write
script reads before it writes and marks the id seen last, after every command
that can fail (scripts are not rolled back): a failed write never marks its id.
``replaces`` is clamped in Python to ``[0, max_actions_per_session]`` (nothing
more can be pending, and Redis takes no integer ``>= 2**63``).

Recency is the caller's ``at``/``now`` (a sorted-set score) where the in-memory
backend uses call order; the two agree whenever those values do not go backwards
(``time.time()`` in one process), and ties sort by key name.

Session keys (``s:M:*``, ``p:S``) carry a sliding TTL of
``idle_ttl_seconds``: the first write or read of a session in each grain of
min(TTL / 16, 60 s) sets them to expire after TTL + one grain, so later touches in
that grain need no ``PEXPIRE`` (a write that made a key again sets it too); chat histories one of
``history_ttl_seconds`` refreshed on every append and get. Expiry decisions
themselves compare the caller's clock values (``now - touched > idle_ttl``) inside
the scripts, exactly as the in-memory backend does; the TTL only reclaims memory.

Round trips: ``append_actions``/``apply_summary`` are one ``EVALSHA`` of a write
script (dedupe, sweep, trim, user index and stream in one atomic step), ``read``
one ``EVALSHA`` of a read script that filters server-side and answers a flat array
of bulk strings (decoded by hiredis, no JSON), every other call one command or one
MULTI/EXEC. The session scripts carry the backend's TTL and bounds in their source,
so a call sends only its prefix and what changes; each such configuration has its
own scripts (shared by every prefix), loaded on first use.
:meth:`RedisBackend.append_actions_many` pipelines bursts of writes, building each
chunk while Redis runs the previous one. Commands are packed
(``_wire.py``, hiredis's C packer when installed) and sent on a pooled connection in one
socket write (redis-py supplies connections, the wire protocol and its errors).

Listening: every stored write is also appended to the session's stream, so
:meth:`RedisBackend.listen` / :meth:`RedisBackend.alisten` (``XREAD BLOCK`` on a
connection of their own) yield activity from any process as it arrives, and
resume from the id of the last :class:`Activity` seen.

Outages: commands use a short socket timeout (``socket_timeout``, default 50 ms).
A failed read returns ``None``/empty and counts an error; a failed write goes to a
bounded local buffer and is replayed in order before the next command once Redis
answers again (or by :meth:`RedisBackend.flush`). What overflows the buffer is
counted and handed to ``on_drop`` as a :class:`DroppedWrite` whose ``outcome`` is
``"not_applied"`` (never sent: counted in ``redis_writes_dropped``) or
``"unknown"`` (sent, its answer lost: Redis may have applied it; counted in
``redis_writes_dropped_unknown``). A replay in flight holds the head of the
buffer, and an overflow never drops those writes (when every buffered write is in
flight, the new write is the one given up); a replay that breaks off keeps what
was answered and marks the rest as sent. ``strict=True`` raises
:class:`~autoplay_base.errors.BackendUnavailableError` instead. After a failure the
backend skips Redis for ``retry_interval_seconds`` so an outage costs nothing per
call; a connection error before any answer is retried once at once on a fresh
connection, because after a server restart every pooled connection is dead while
Redis is fine. A write whose answer was lost may be replayed although Redis
applied it: writes with an event id are deduplicated, writes without one may then
apply twice.

Sentinel: :meth:`RedisBackend.from_sentinel` (sentinel addresses and a service
name, the same timeouts and retries as ``from_url``), or the constructor with
the clients ``Sentinel.master_for`` builds (sync and asyncio). Each new
connection asks the sentinels for the primary, listeners' connections too. A
failover is an outage like any other: while the old primary is gone, reads are
empty and writes buffer; once the sentinels name the promoted replica, the next
call reconnects to it and replays the buffer. A listener whose primary goes
raises :class:`~autoplay_base.errors.BackendUnavailableError`; resume it with
the last :class:`Activity` id (stream ids survive replication). What the old
primary acknowledged but had not yet replicated is lost: Redis replication is
asynchronous. ``repr`` and logs name the sentinels and the service
(``redis+sentinel://host:port/mymaster/0``), never credentials.

Cluster: :meth:`RedisBackend.from_cluster` (a node's URL or ``(host, port)``
startup nodes), :meth:`RedisBackend.from_url` on any cluster node (one ``INFO
cluster`` says ``cluster_enabled:1``), or the constructor with a
``redis.cluster.RedisCluster`` and a ``redis.asyncio.cluster.RedisCluster``.
Every key one script touches is in one hash slot and arrives in ``KEYS``: a
session's keys, its product index and its dedupe window are tagged with the
session id, a user's index keys with the user id; the sessions and users
indexes are one key each. A write is a short flow: the session's script (dedupe
check, append or summary, trim, stream, sliding TTL, id marked seen last), then,
only when it stored something, the index updates in their own slots (sessions
index: touch, sweep of idle sessions, LRU eviction past ``max_sessions``; users
index; the user's index), then each victim's keys dropped in its own slot (a
victim touched again in between stays). A read is the session's read script and
the sessions index touch. Each step sends one round trip per slot it touches,
one slot after the other: a stored write costs one for the session, one for the
sessions index (plus two with a user: the users index and the user's own), and
one per victim's slot; a read two (the session's slot, then the index's), where
standalone pays one each. Commands go to the node that owns
each slot (redis-py's slot map); ``MOVED`` refreshes the map and ``ASK``
redirects, then the command is retried; ``NOSCRIPT`` loads the scripts on that
node (three attempts in all, then the slot counts as an outage). ``CLUSTERDOWN``,
``TRYAGAIN`` (a slot mid-migration) and a node that does not answer are an
outage like any other: reads are empty, writes are buffered
and replayed in order, each replay a flow of its own (the breaker is the
backend's: one unreachable node pauses every call for
``retry_interval_seconds``). A flow cut after the session's script ran buffers
only its remaining index steps. ``listen`` reads the stream on the node that
owns it when it starts (a slot that moves away ends it with
:class:`~autoplay_base.errors.BackendUnavailableError`: resume from the last id).

Cluster rules that differ from standalone: the dedupe window is per session
(``dedupe_window`` ids of each session, not of each product: an event id's
replays always carry the same session) and it expires with the session's TTL
(kept by ``reset``); the indexes are updated after the session's write, not in
the same atomic step, so another process may see a write before its index entry
for that short while; ``append_actions_many`` runs each write's flow in turn
(no pipelining across nodes); the prefix may not hold ``{`` or ``}``; a cluster
backend needs a node answering when it is built (``from_cluster`` raises
:class:`~autoplay_base.errors.BackendUnavailableError` otherwise); in
``strict`` mode a write whose session step ran but whose index step failed
raises, and its index steps are not buffered.

Misconfiguration is not an outage. Refused credentials (``WRONGPASS``, ``NOAUTH``,
``NOPERM``; redis-py's ``AuthenticationError`` is a ``ConnectionError``) raise
:class:`~autoplay_base.errors.BackendAuthError` from every call, ``from_url``
included when the server answers: never buffered, counted in
``redis_auth_errors``, handed to ``on_error``, logged, and never carrying the
password or the URL's credentials. Standalone clients pointed at a cluster node
raise :class:`~autoplay_base.errors.ConfigError` on the first reply that names a
slot (``MOVED``, ``ASK``, ``CROSSSLOT``, ``CLUSTERDOWN``), counted in
``redis_cluster_refused``; a cluster client beside a standalone one is refused
by the constructor. Text that is not valid Unicode (a lone
surrogate, which ``json.loads`` accepts) cannot be sent: the call raises
:class:`~autoplay_base.errors.ConfigError` before anything is written or
buffered, counted in ``redis_invalid_text`` (each write is packed once, when it
is built, so nothing unencodable can reach the outage buffer).

Modules: ``_layout`` (key names), ``_scripts`` (Lua), ``_commands`` (command
builders and reply decoders), ``_cluster`` (slot routing and the cluster write
flow's steps), ``_outage`` (the outage buffer), ``_accounting`` (counters,
breaker, errors), ``_engine`` (flows, runners, I/O), ``_clients`` (clients per
topology), ``_wire`` (RESP packing, connections); ``backend`` is the public class.
"""

from autoplay_base.backends.base import ActionsWrite, Activity
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
    NOT_APPLIED,
    UNKNOWN,
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
    "NOT_APPLIED",
    "UNKNOWN",
    "ActionsWrite",
    "Activity",
    "DroppedWrite",
    "RedisBackend",
    "escape_id",
    "parse_member",
    "session_member",
    "unescape_id",
]
