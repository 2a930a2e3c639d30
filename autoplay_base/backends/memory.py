"""The default backend: bounded, thread-safe, in this process's memory.

Everything is bounded (see the constructor); what a bound pushes out is counted
in :attr:`InMemoryBackend.stats`:

* sessions: least recently used first past ``max_sessions`` (touched on read and
  write), and idle ones after ``idle_ttl_seconds`` (sliding);
* actions: the oldest past ``max_actions_per_session`` in a session;
* users: ``max_sessions_per_user`` recent sessions each, ``max_users`` users;
* chat histories: ``max_messages`` each, idle ones after ``history_ttl_seconds``;
* duplicate detection: the last ``dedupe_window`` event ids.

One ``threading.Lock`` guards all state. Critical sections are short dict/deque
operations with no I/O, so holding it from a coroutine never stalls an event
loop, and the async twins simply call the sync methods.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import islice
from threading import Lock

from autoplay_base._recent import RecentKeys
from autoplay_base.backends.base import (
    ActionsWrite,
    BackendStats,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
    check_bounds,
)
from autoplay_base.formatting import BATCH_SEPARATOR

__all__ = [
    "DEFAULT_DEDUPE_WINDOW",
    "DEFAULT_HISTORY_TTL_SECONDS",
    "DEFAULT_IDLE_TTL_SECONDS",
    "DEFAULT_MAX_ACTIONS_PER_SESSION",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_USER",
    "InMemoryBackend",
]

DEFAULT_MAX_SESSIONS = 100_000
DEFAULT_MAX_ACTIONS_PER_SESSION = 200
DEFAULT_IDLE_TTL_SECONDS = 4 * 3600.0
DEFAULT_MAX_SESSIONS_PER_USER = 20
DEFAULT_MAX_MESSAGES = 200
DEFAULT_HISTORY_TTL_SECONDS = 24 * 3600.0
DEFAULT_DEDUPE_WINDOW = 10_000


class _Session:
    """One session, stored compactly: memory per session is a benchmarked feature.

    Each appended batch of lines is kept as one string joined by ``BATCH_SEPARATOR``
    (a control character that cleaned text cannot contain), with its arrival time
    in a parallel array: one object per batch instead of three per action. ``skip``
    counts the lines of the oldest batch already dropped (trimmed or summarised).
    """

    __slots__ = (
        "batches",
        "count",
        "last_activity_at",
        "skip",
        "summary",
        "summary_at",
        "times",
        "touched",
    )

    def __init__(self, now: float) -> None:
        self.batches: list[str] = []
        self.times = array("d")
        self.skip = 0
        self.count = 0
        self.summary: str | None = None
        self.summary_at: float | None = None
        self.last_activity_at: float | None = None
        self.touched = now

    def drop_oldest(self, n: int) -> int:
        """Drop up to ``n`` of the oldest lines; returns how many went."""
        batches = self.batches
        if n == 1 and not self.skip and BATCH_SEPARATOR not in batches[0]:
            # A full session streaming one action at a time: the usual case by far.
            del batches[0]
            del self.times[0]
            self.count -= 1
            return 1
        n = min(n, self.count)
        left = n
        while left:
            live = batches[0].count(BATCH_SEPARATOR) + 1 - self.skip
            if live > left:
                self.skip += left
                break
            del batches[0]
            del self.times[0]
            self.skip = 0
            left -= live
        self.count -= n
        return n

    def lines_from(self, first_batch: int) -> list[str]:
        """The live lines of ``batches[first_batch:]``, oldest first."""
        if not self.batches[first_batch:]:
            return []
        lines = BATCH_SEPARATOR.join(self.batches[first_batch:]).split(BATCH_SEPARATOR)
        return lines[self.skip :] if first_batch == 0 and self.skip else lines


class _History:
    __slots__ = ("messages", "touched")

    def __init__(self, cap: int, now: float) -> None:
        self.messages: deque[str] = deque(maxlen=cap)
        self.touched = now


class InMemoryBackend:
    """Bounded in-process storage for session context, user indexes and chat histories."""

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_actions_per_session: int = DEFAULT_MAX_ACTIONS_PER_SESSION,
        idle_ttl_seconds: float | None = DEFAULT_IDLE_TTL_SECONDS,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
        max_users: int | None = None,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        history_ttl_seconds: float | None = DEFAULT_HISTORY_TTL_SECONDS,
        dedupe_window: int = DEFAULT_DEDUPE_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_bounds(
            max_sessions=max_sessions,
            max_actions_per_session=max_actions_per_session,
            idle_ttl_seconds=idle_ttl_seconds,
            max_sessions_per_user=max_sessions_per_user,
            max_users=max_users,
            max_messages=max_messages,
            history_ttl_seconds=history_ttl_seconds,
            dedupe_window=dedupe_window,
        )
        self.max_sessions = max_sessions
        self.max_actions_per_session = max_actions_per_session
        self.idle_ttl_seconds = idle_ttl_seconds
        self.max_sessions_per_user = max_sessions_per_user
        self.max_users = max_users if max_users is not None else max_sessions
        self.max_messages = max_messages
        self.history_ttl_seconds = history_ttl_seconds
        self.dedupe_window = dedupe_window
        self._clock = clock
        self.stats = BackendStats()
        self._lock = Lock()
        self._sessions: OrderedDict[SessionKey, _Session] = OrderedDict()
        # session id -> its products: a bare product id in the usual one-product case.
        self._products: dict[str, str | list[str]] = {}
        # user id -> {session key: last seen}; recency by re-insertion (dicts keep order).
        self._users: OrderedDict[str, dict[SessionKey, float]] = OrderedDict()
        self._histories: OrderedDict[SessionKey, _History] = OrderedDict()
        self._seen: RecentKeys[tuple[str, str]] = RecentKeys(dedupe_window)  # (product, event id)
        self._next_sweep_at = 0.0

    def __repr__(self) -> str:
        return f"InMemoryBackend(sessions={len(self._sessions)}, max_sessions={self.max_sessions})"

    # -- helpers (call with the lock held) ------------------------------------------
    def _is_duplicate(self, product_id: str, event_id: str | None) -> bool:
        if event_id is None or self._seen.add((product_id, event_id)):
            return False
        self.stats.duplicate_events += 1
        return True

    def _drop(self, key: SessionKey) -> None:
        del self._sessions[key]
        products = self._products.get(key.session_id)
        if isinstance(products, list):
            products.remove(key.product_id)
            if len(products) == 1:
                self._products[key.session_id] = products[0]
        elif products is not None:
            del self._products[key.session_id]

    def _expired(self, touched: float, now: float) -> bool:
        ttl = self.idle_ttl_seconds
        return ttl is not None and now - touched > ttl

    def _sweep(self, now: float) -> None:
        # At most once a second: expiry is a memory bound, not a visibility rule
        # (reads check each session's own idle time), so it need not run per write.
        if now < self._next_sweep_at:
            return
        self._next_sweep_at = now + 1.0
        # The LRU head is the least recently touched session: stop at the first live one.
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if not self._expired(session.touched, now):
                break
            self._drop(key)
            self.stats.sessions_expired += 1

    def _live(self, key: SessionKey, now: float) -> _Session | None:
        session = self._sessions.get(key)
        if session is None:
            return None
        if self._expired(session.touched, now):
            self._drop(key)
            self.stats.sessions_expired += 1
            return None
        session.touched = now
        self._sessions.move_to_end(key)
        return session

    def _session_for_write(self, key: SessionKey, now: float) -> _Session:
        if now >= self._next_sweep_at:
            self._sweep(now)
        session = self._sessions.get(key)
        if session is None or self._expired(session.touched, now):
            return self._new_session(key, now)
        session.touched = now
        self._sessions.move_to_end(key)
        return session

    def _new_session(self, key: SessionKey, now: float) -> _Session:
        if key in self._sessions:  # idle past its TTL: it starts over
            self._drop(key)
            self.stats.sessions_expired += 1
        session = self._sessions[key] = _Session(now)
        known = self._products.get(key.session_id)
        if known is None:
            self._products[key.session_id] = key.product_id
        elif isinstance(known, list):
            known.append(key.product_id)
        else:
            self._products[key.session_id] = [known, key.product_id]
        if len(self._sessions) > self.max_sessions:
            self._drop(next(iter(self._sessions)))
            self.stats.sessions_evicted += 1
        return session

    def _index_user(self, user_id: str, key: SessionKey, at: float) -> None:
        users = self._users
        refs = users.get(user_id)
        if refs is None:
            users[user_id] = {key: at}
            if len(users) > self.max_users:
                users.popitem(last=False)
            return
        users.move_to_end(user_id)
        if next(reversed(refs)) != key:  # refs is never empty; its last key is the newest
            refs.pop(key, None)
        refs[key] = at
        if len(refs) > self.max_sessions_per_user:
            del refs[next(iter(refs))]

    # -- context ----------------------------------------------------------------------
    def append_actions(
        self,
        key: SessionKey,
        lines: Sequence[str],
        *,
        at: float,
        event_id: str | None = None,
        user_id: str | None = None,
    ) -> bool:
        """Append cleaned action lines to a session (trimmed to the per-session cap)."""
        with self._lock:
            if self._is_duplicate(key.product_id, event_id):
                return False
            session = self._session_for_write(key, at)
            if lines:
                batch = lines[0] if len(lines) == 1 else BATCH_SEPARATOR.join(lines)
                session.batches.append(batch)
                session.times.append(at)
                session.count += len(lines)
                overflow = session.count - self.max_actions_per_session
                if overflow > 0:
                    self.stats.actions_trimmed += session.drop_oldest(overflow)
            session.last_activity_at = at
            self.stats.actions_stored += len(lines)
            if user_id:
                self._index_user(user_id, key, at)
            return True

    async def aappend_actions(
        self,
        key: SessionKey,
        lines: Sequence[str],
        *,
        at: float,
        event_id: str | None = None,
        user_id: str | None = None,
    ) -> bool:
        """Async twin of :meth:`append_actions` (memory only: nothing to await)."""
        return self.append_actions(key, lines, at=at, event_id=event_id, user_id=user_id)

    def append_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Many :meth:`append_actions`, in order (in memory there is nothing to batch)."""
        return [
            self.append_actions(w.key, w.lines, at=w.at, event_id=w.event_id, user_id=w.user_id)
            for w in writes
        ]

    async def aappend_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Async twin of :meth:`append_actions_many`."""
        return self.append_actions_many(writes)

    def apply_summary(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None = None,
    ) -> bool:
        """Set the summary and drop the ``replaces`` oldest pending actions, atomically."""
        with self._lock:
            if self._is_duplicate(key.product_id, event_id):
                return False
            session = self._session_for_write(key, at)
            session.drop_oldest(replaces)
            session.summary = summary
            session.summary_at = at
            session.last_activity_at = at
            self.stats.summaries_stored += 1
            return True

    async def aapply_summary(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None = None,
    ) -> bool:
        """Async twin of :meth:`apply_summary`."""
        return self.apply_summary(key, summary, replaces=replaces, at=at, event_id=event_id)

    def read(self, key: SessionKey, options: ReadOptions, *, now: float) -> SessionView | None:
        """The session filtered by ``options``; ``None`` when it is unknown or expired."""
        with self._lock:
            session = self._live(key, now)
            if session is None:
                return None
            summary = session.summary if options.include_summary else None
            if summary is not None and options.since is not None:
                assert session.summary_at is not None
                if session.summary_at <= options.since:
                    summary = None
            lines = _select(session, options, now) if options.include_actions else []
            return SessionView(summary, lines, session.summary_at, session.last_activity_at)

    async def aread(
        self, key: SessionKey, options: ReadOptions, *, now: float
    ) -> SessionView | None:
        """Async twin of :meth:`read`."""
        return self.read(key, options, now=now)

    def products_for(self, session_id: str) -> list[str]:
        """Product ids under which ``session_id`` has state; O(1), no scan."""
        with self._lock:
            products = self._products.get(session_id)
            if products is None:
                return []
            named = list(products) if isinstance(products, list) else [products]
            # Only live state counts: an idle-expired, not yet swept session must not
            # make a read ambiguous.
            now = self._clock()
            return [
                product
                for product in named
                if not self._expired(self._sessions[SessionKey(product, session_id)].touched, now)
            ]

    async def aproducts_for(self, session_id: str) -> list[str]:
        """Async twin of :meth:`products_for`."""
        return self.products_for(session_id)

    def reset(self, key: SessionKey) -> None:
        """Forget a session's context."""
        with self._lock:
            if key in self._sessions:
                self._drop(key)

    async def areset(self, key: SessionKey) -> None:
        """Async twin of :meth:`reset`."""
        self.reset(key)

    def sessions(self) -> list[SessionKey]:
        """Every live session, least recently touched first."""
        with self._lock:
            self._sweep(self._clock())
            return list(self._sessions)

    async def asessions(self) -> list[SessionKey]:
        """Async twin of :meth:`sessions`."""
        return self.sessions()

    # -- users ------------------------------------------------------------------------
    def user_sessions(self, user_id: str, *, limit: int) -> list[UserSessionRef]:
        """A user's most recent sessions, newest first."""
        with self._lock:
            refs = self._users.get(user_id)
            if not refs:
                return []
            newest = islice(reversed(list(refs.items())), limit)
            return [UserSessionRef(k.session_id, k.product_id, at) for k, at in newest]

    async def auser_sessions(self, user_id: str, *, limit: int) -> list[UserSessionRef]:
        """Async twin of :meth:`user_sessions`."""
        return self.user_sessions(user_id, limit=limit)

    def forget_user(self, user_id: str) -> None:
        """Drop a user's session index."""
        with self._lock:
            self._users.pop(user_id, None)

    async def aforget_user(self, user_id: str) -> None:
        """Async twin of :meth:`forget_user`."""
        self.forget_user(user_id)

    # -- chat message histories --------------------------------------------------------
    def _history(self, key: SessionKey, now: float, *, create: bool) -> _History | None:
        ttl = self.history_ttl_seconds
        while self._histories and ttl is not None:
            oldest_key, oldest = next(iter(self._histories.items()))
            if now - oldest.touched <= ttl:
                break
            del self._histories[oldest_key]
        history = self._histories.get(key)
        if history is None and create:
            history = self._histories[key] = _History(self.max_messages, now)
            if len(self._histories) > self.max_sessions:
                self._histories.popitem(last=False)
        if history is not None:
            history.touched = now
            self._histories.move_to_end(key)
        return history

    def append_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Append serialized chat messages (the oldest fall off past ``max_messages``)."""
        with self._lock:
            history = self._history(key, self._clock(), create=True)
            assert history is not None
            history.messages.extend(messages)

    async def aappend_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Async twin of :meth:`append_messages`."""
        self.append_messages(key, messages)

    def get_messages(self, key: SessionKey) -> list[str]:
        """A session's serialized chat messages, oldest first."""
        with self._lock:
            history = self._history(key, self._clock(), create=False)
            return list(history.messages) if history is not None else []

    async def aget_messages(self, key: SessionKey) -> list[str]:
        """Async twin of :meth:`get_messages`."""
        return self.get_messages(key)

    def clear_messages(self, key: SessionKey) -> None:
        """Delete a session's chat history."""
        with self._lock:
            self._histories.pop(key, None)

    async def aclear_messages(self, key: SessionKey) -> None:
        """Async twin of :meth:`clear_messages`."""
        self.clear_messages(key)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _select(session: _Session, options: ReadOptions, now: float) -> list[str]:
    """The lines a read wants: whole batches at or after the cutoff, then the newest cap."""
    cutoff = None
    if options.lookback_seconds is not None:
        cutoff = now - options.lookback_seconds
    if options.since is not None and (cutoff is None or options.since >= cutoff):
        # ``since`` is exclusive: nudge it so the comparison below stays ``>=``.
        cutoff = math.nextafter(options.since, math.inf)
    first = 0
    if cutoff is not None:
        times = session.times
        first = len(times)
        while first and times[first - 1] >= cutoff:
            first -= 1
    lines = session.lines_from(first)
    limit = options.max_actions
    if limit is not None and limit < len(lines):
        return lines[len(lines) - limit :]
    return lines
