"""The storage interface every backend implements, and the values it speaks in.

A backend owns session state; it knows nothing of formatting, summarizers or
frameworks. Each operation has a sync form and an ``a``-prefixed async twin, so
one backend object serves ``ContextStore`` (sync callers, worker threads) and
``AsyncContextStore`` (coroutines) alike. The in-memory backend answers both
from memory; the Redis backend drives a sync and an async client.

Filtering (lookback, ``since``, ``max_actions``) happens inside :meth:`read`, so a
remote backend can answer a read in one round trip.

The contract every backend meets (``tests/autoplay_base/test_backend_contract.py``
checks it against each one, sync and async):

* **Dedupe.** A write with an ``event_id`` is a duplicate, skipped and counted,
  when the same ``(product_id, event_id)`` was stored before *with the same
  content* (:func:`content_digest` of its lines, or of its summary and
  ``replaces``). The same id with other content is a reused id (a connector that
  restarted its ids): stored. The window remembers the newest ``dedupe_window``
  ids per product by ``sent_at`` (the connector's ``forwarded_at``; arrival time
  when absent): an id older than all of them is stored but not remembered, so a
  long replay costs only its part outside the window. A write that fails (an
  error, an outage in strict mode) never marks its id as seen. A backend may
  document a narrower window: ``RedisBackend`` on a Redis Cluster keeps one per
  session (an event's replays always carry its session).
* **Summaries.** ``replaces`` is any integer ``>= 0``; it drops
  ``min(replaces, pending)`` actions, so a summary for a session with fewer
  pending actions (a client started mid-session, after a reset, an eviction or
  an expiry) is stored, never an error.
* **Users.** The user index is scoped by product like everything else:
  ``(product_id, user_id)`` names one user; :meth:`Backend.user_products` lists
  the products a user id has sessions under.
* **Reads.** :func:`read_cutoff` and :func:`visible_summary` are the read rules
  (lookback, the exclusive ``since``, summary visibility); every backend applies
  these two functions, so they cannot disagree.

The values every backend shares live here too: the default bounds (one name
each), :class:`Bounds` (validated once), and :class:`Activity` with the
:class:`ActivityListener` protocol of backends that can follow a session live.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from threading import Event
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_DEDUPE_WINDOW",
    "DEFAULT_HISTORY_TTL_SECONDS",
    "DEFAULT_IDLE_TTL_SECONDS",
    "DEFAULT_MAX_ACTIONS_PER_SESSION",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_USER",
    "ActionsWrite",
    "Activity",
    "ActivityListener",
    "Backend",
    "BackendStats",
    "Bounds",
    "ReadOptions",
    "SessionKey",
    "SessionView",
    "UserSessionRef",
    "check_bounds",
    "content_digest",
    "read_cutoff",
    "visible_summary",
]

# -- default bounds (every backend's; one name each) ----------------------------------
DEFAULT_MAX_SESSIONS = 100_000
DEFAULT_MAX_ACTIONS_PER_SESSION = 200
DEFAULT_IDLE_TTL_SECONDS = 4 * 3600.0
DEFAULT_MAX_SESSIONS_PER_USER = 20
DEFAULT_MAX_MESSAGES = 200
DEFAULT_HISTORY_TTL_SECONDS = 24 * 3600.0
DEFAULT_DEDUPE_WINDOW = 10_000


class SessionKey(NamedTuple):
    """A session's identity: context is never shared across products."""

    product_id: str
    session_id: str


class ActionsWrite(NamedTuple):
    """One ``append_actions`` call, for ``append_actions_many``."""

    key: SessionKey
    lines: Sequence[str]
    at: float
    event_id: str | None = None
    user_id: str | None = None
    sent_at: float | None = None


def content_digest(parts: Sequence[str]) -> str:
    """A short digest of a write's content, the same in every process (dedupe).

    Two writes with one event id are duplicates only if their digests match.
    """
    data = "\n".join(parts).encode("utf-8", "surrogatepass")
    return format(zlib.crc32(data), "08x")


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What a read returns; ``since`` and ``lookback_seconds`` are local-clock bounds."""

    include_summary: bool = True
    include_actions: bool = True
    lookback_seconds: float | None = None
    max_actions: int | None = None
    since: float | None = None


class SessionView(NamedTuple):
    """A session as read: the current summary and the pending action lines, oldest first.

    A named tuple rather than a frozen dataclass: it is built on every read, and
    tuple construction is several times cheaper.
    """

    summary: str | None
    actions: Sequence[str]
    summary_at: float | None = None
    last_activity_at: float | None = None
    key: SessionKey | None = None
    """Which session this is; ``ContextStore.view`` fills it in (so an omitted
    ``product_id`` can be read back), backends may leave it ``None``."""


@dataclass(frozen=True, slots=True)
class UserSessionRef:
    """One recent session of a user, newest first in listings (``last_seen_at`` is local time)."""

    session_id: str
    product_id: str
    last_seen_at: float


@dataclass(slots=True)
class BackendStats:
    """Counters a backend keeps; all only ever grow.

    ``extra`` holds a backend's further counters. Two names belong to the dedupe
    of the contract: ``reused_ids`` (an id seen again with other content, stored)
    and ``dedupe_resets`` (a window cleared after its source's clock went back).
    A backend may also publish gauges there and says so (``InMemoryBackend``'s
    ``bytes``, its current size, is the one figure that also shrinks).
    """

    actions_stored: int = 0
    summaries_stored: int = 0
    duplicate_events: int = 0
    sessions_evicted: int = 0
    sessions_expired: int = 0
    actions_trimmed: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def check_bounds(**bounds: float | None) -> None:
    """Raise :class:`ConfigError` for a bound that is not ``> 0`` (``None``: unbounded)."""
    for name, value in bounds.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bounds every backend enforces, validated once (a :class:`ConfigError` names the bad one).

    Attributes:
        max_sessions: live sessions; the least recently used is evicted past it.
        max_actions_per_session: pending action lines per session (oldest trimmed).
        idle_ttl_seconds: a session untouched this long expires (sliding; ``None``: never).
        max_sessions_per_user: recent sessions each user index keeps.
        max_users: users (``(product_id, user_id)`` pairs) indexed; ``None`` means
            ``max_sessions``, resolved here so a backend reads one number.
        max_messages: chat messages per session history.
        history_ttl_seconds: an untouched chat history expires (``None``: never).
        dedupe_window: event ids remembered per product for dedupe.
    """

    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_actions_per_session: int = DEFAULT_MAX_ACTIONS_PER_SESSION
    idle_ttl_seconds: float | None = DEFAULT_IDLE_TTL_SECONDS
    max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER
    max_users: int | None = None
    max_messages: int = DEFAULT_MAX_MESSAGES
    history_ttl_seconds: float | None = DEFAULT_HISTORY_TTL_SECONDS
    dedupe_window: int = DEFAULT_DEDUPE_WINDOW

    def __post_init__(self) -> None:
        check_bounds(
            max_sessions=self.max_sessions,
            max_actions_per_session=self.max_actions_per_session,
            idle_ttl_seconds=self.idle_ttl_seconds,
            max_sessions_per_user=self.max_sessions_per_user,
            max_users=self.max_users,
            max_messages=self.max_messages,
            history_ttl_seconds=self.history_ttl_seconds,
            dedupe_window=self.dedupe_window,
        )
        if self.max_users is None:
            object.__setattr__(self, "max_users", self.max_sessions)

    @property
    def users(self) -> int:
        """``max_users`` as resolved (never ``None`` once built)."""
        assert self.max_users is not None
        return self.max_users


# -- the read rules (every backend applies these, so they cannot disagree) --------------
def read_cutoff(options: ReadOptions, now: float) -> float | None:
    """The oldest ``at`` a read keeps (``None``: everything).

    ``lookback_seconds`` counts back from ``now``; ``since`` is exclusive, so it is
    nudged to the next float and every backend compares ``at >= cutoff``.
    """
    cutoff = None
    if options.lookback_seconds is not None:
        cutoff = now - options.lookback_seconds
    if options.since is not None and (cutoff is None or options.since >= cutoff):
        cutoff = math.nextafter(options.since, math.inf)
    return cutoff


def visible_summary(
    summary: str | None, summary_at: float | None, options: ReadOptions
) -> str | None:
    """The summary a read shows: none when not asked for, or not newer than ``since``."""
    if summary is None or not options.include_summary:
        return None
    if options.since is not None and summary_at is not None and summary_at <= options.since:
        return None
    return summary


# -- following a session live -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Activity:
    """One entry of a session's activity stream, as yielded by ``listen``/``alisten``.

    Pass ``id`` as ``last_id`` to resume right after this entry.
    """

    id: str
    kind: Literal["actions", "summary"]
    at: float
    lines: tuple[str, ...] = ()
    summary: str | None = None
    replaces: int = 0
    event_id: str | None = None


@runtime_checkable
class ActivityListener(Protocol):
    """A backend that can follow one session's activity as it is written (``RedisBackend``)."""

    def listen(
        self,
        key: SessionKey,
        *,
        last_id: str = "$",
        block_ms: int = ...,
        count: int = ...,
        stop: Event | None = None,
    ) -> Iterator[Activity]:
        """Yield the session's new activity; ``last_id`` resumes after an :attr:`Activity.id`."""
        ...

    def alisten(
        self, key: SessionKey, *, last_id: str = "$", block_ms: int = ..., count: int = ...
    ) -> AsyncIterator[Activity]:
        """Async twin of :meth:`listen` (an async generator)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Session state storage. ``at`` values are local ``time.time()`` arrival times.

    ``event_id`` makes writes idempotent: a write whose ``(product_id, event_id)``
    was already stored is skipped and the method returns ``False``.
    """

    stats: BackendStats

    # -- context ------------------------------------------------------------------
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
        """Append cleaned action lines to a session (trimmed to the per-session cap).

        Lines are single lines: the store cleans them, so they never hold a newline
        (a backend may pack several lines into one string on that basis).
        ``sent_at`` is the connector's ``forwarded_at`` (dedupe order, see above).
        """
        ...

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
        ...

    def append_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Many :meth:`append_actions` in order, batched where the backend can; results in order."""
        ...

    async def aappend_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Async twin of :meth:`append_actions_many`."""
        ...

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
        """Set the summary and drop the ``min(replaces, pending)`` oldest actions, atomically."""
        ...

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
        ...

    def read(self, key: SessionKey, options: ReadOptions, *, now: float) -> SessionView | None:
        """The session filtered by ``options``; ``None`` when it is unknown or expired."""
        ...

    async def aread(
        self, key: SessionKey, options: ReadOptions, *, now: float
    ) -> SessionView | None:
        """Async twin of :meth:`read`."""
        ...

    def products_for(self, session_id: str) -> list[str]:
        """Product ids under which ``session_id`` has live state (for an omitted ``product_id``)."""
        ...

    async def aproducts_for(self, session_id: str) -> list[str]:
        """Async twin of :meth:`products_for`."""
        ...

    def reset(self, key: SessionKey) -> None:
        """Forget a session's context (its chat history is separate and stays)."""
        ...

    async def areset(self, key: SessionKey) -> None:
        """Async twin of :meth:`reset`."""
        ...

    def sessions(self) -> list[SessionKey]:
        """Every live session, least recently touched first."""
        ...

    async def asessions(self) -> list[SessionKey]:
        """Async twin of :meth:`sessions`."""
        ...

    # -- users --------------------------------------------------------------------
    def user_sessions(self, user_id: str, *, product_id: str, limit: int) -> list[UserSessionRef]:
        """One product's user's most recent sessions, newest first (from :meth:`append_actions`)."""
        ...

    async def auser_sessions(
        self, user_id: str, *, product_id: str, limit: int
    ) -> list[UserSessionRef]:
        """Async twin of :meth:`user_sessions`."""
        ...

    def user_products(self, user_id: str) -> list[str]:
        """Product ids (sorted) under which ``user_id`` has indexed sessions."""
        ...

    async def auser_products(self, user_id: str) -> list[str]:
        """Async twin of :meth:`user_products`."""
        ...

    def forget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Drop a user's session index (under every product when ``product_id`` is None)."""
        ...

    async def aforget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Async twin of :meth:`forget_user`."""
        ...

    # -- chat message histories -----------------------------------------------------
    def append_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Append serialized chat messages to a session's history (bounded, sliding TTL)."""
        ...

    async def aappend_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Async twin of :meth:`append_messages`."""
        ...

    def get_messages(self, key: SessionKey) -> list[str]:
        """A session's serialized chat messages, oldest first."""
        ...

    async def aget_messages(self, key: SessionKey) -> list[str]:
        """Async twin of :meth:`get_messages`."""
        ...

    def clear_messages(self, key: SessionKey) -> None:
        """Delete a session's chat history."""
        ...

    async def aclear_messages(self, key: SessionKey) -> None:
        """Async twin of :meth:`clear_messages`."""
        ...

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        """Release connections; the in-memory backend has none."""
        ...

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        ...
