"""The default backend: bounded, thread-safe, in this process's memory.

Everything is bounded (see the constructor); what a bound pushes out is counted
in :attr:`InMemoryBackend.stats`:

* sessions: least recently used first past ``max_sessions`` (touched on read and
  write), and idle ones after ``idle_ttl_seconds`` (sliding);
* actions: the oldest past ``max_actions_per_session`` in a session;
* users: ``max_sessions_per_user`` recent sessions each, ``max_users`` users
  (a user is a ``(product_id, user_id)`` pair: tenants' ids never mix);
* chat histories: ``max_messages`` each, idle ones after ``history_ttl_seconds``;
* bytes: ``max_bytes`` (default 512 MiB) over every stored string (chunks
  of action lines, summaries, chat messages), enforced on every write by evicting the
  least recently used session or history (``sessions_evicted_bytes`` /
  ``histories_evicted_bytes`` in ``stats.extra``, apart from the count-based
  ``sessions_evicted``); the current figure is ``stats.extra["bytes"]``;
* duplicate detection: the newest ``dedupe_window`` event ids of each product
  (a :class:`~autoplay_base._recent.DedupeWindow` per product, at most
  ``MAX_DEDUPE_PRODUCTS`` products, least recently written dropped first and
  counted in ``dedupe_windows_evicted``); reused ids and clock resets are
  counted in ``reused_ids`` and ``dedupe_resets``.

Writes are all-or-nothing: everything that can raise (joining the lines, the
content digest) runs before any state changes, and an event id is remembered
only after its write is in place, so a write that failed is never a duplicate
when it is retried.

One ``threading.Lock`` guards all state. Critical sections are short dict/deque
operations with no I/O, so holding it from a coroutine never stalls an event
loop, and the async twins simply call the sync methods.

Longer than the ~600-line guide, on purpose: one lock guards sessions, user
indexes, histories, dedupe windows and the byte budget together (a write
touches all of them atomically), so they stay in one class; about a quarter
of the lines are the protocol's one-line async twins and their docstrings.
"""

from __future__ import annotations

import logging
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import islice
from threading import Lock
from typing import cast

from autoplay_base._recent import DedupeWindow
from autoplay_base.backends.base import (
    DEFAULT_DEDUPE_WINDOW,
    DEFAULT_HISTORY_TTL_SECONDS,
    DEFAULT_IDLE_TTL_SECONDS,
    DEFAULT_MAX_ACTIONS_PER_SESSION,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_USER,
    ActionsWrite,
    BackendStats,
    Bounds,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
    check_bounds,
    read_cutoff,
    visible_summary,
)
from autoplay_base.formatting import BATCH_SEPARATOR

__all__ = [
    "DEFAULT_DEDUPE_WINDOW",
    "DEFAULT_HISTORY_TTL_SECONDS",
    "DEFAULT_IDLE_TTL_SECONDS",
    "DEFAULT_MAX_ACTIONS_PER_SESSION",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_USER",
    "MAX_DEDUPE_PRODUCTS",
    "InMemoryBackend",
]

logger = logging.getLogger(__name__)

# The shared bounds' defaults live in ``backends.base``; they stay importable from here.
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
"""512 MiB of stored strings: a few thousand full sessions of 4-byte characters,
far more of ordinary ASCII activity (``None``: bounded by the counts alone)."""
MAX_DEDUPE_PRODUCTS = 256
"""Products whose dedupe windows are kept (each holds up to ``dedupe_window`` ids)."""

_CHUNK_CHARS = 448
"""A write joins its lines to the session's newest chunk while that stays under this many
characters (see ``_Session``): few string headers per session, a bounded copy per write.
An ASCII chunk this long is under 512 bytes, so it stays in CPython's small-object
allocator: twice the size (a system ``malloc`` and ``free`` per write) made an append
about 0.35 µs dearer for no memory worth having (one header saved per six lines)."""

_getsizeof = str.__sizeof__
"""``sys.getsizeof`` of a string (a str is not GC-tracked, so the two agree), without
its generic dispatch: several times cheaper, and it runs on every write."""
_EXTRA = (
    "bytes",
    "sessions_evicted_bytes",
    "histories_evicted_bytes",
    "reused_ids",
    "dedupe_resets",
    "dedupe_windows_evicted",
)


_digest: Callable[[str | tuple[str, int]], int] = hash
"""The content digest of a write, as this process's dedupe compares it.

The contract's :func:`~autoplay_base.backends.base.content_digest` (CRC-32)
exists so that processes sharing a Redis agree; memory is one process, so
the built-in ``hash`` serves: cached on the string, about ten times cheaper
on the per-event path, and 64 bits wide. A batch is its lines joined on a
separator no line contains, so equal batches mean equal lines. It is ``hash``
itself, not a function calling it: a Python call less on every write.
"""


def _multi_add(index: dict[str, str | list[str]], name: str, value: str) -> None:
    """Add ``value`` under ``name``: a bare string in the usual one-value case (memory)."""
    known = index.get(name)
    if known is None:
        index[name] = value
    elif isinstance(known, list):
        known.append(value)
    else:
        index[name] = [known, value]


def _multi_remove(index: dict[str, str | list[str]], name: str, value: str) -> None:
    known = index.get(name)
    if isinstance(known, list):
        known.remove(value)
        if len(known) == 1:
            index[name] = known[0]
    elif known is not None:
        del index[name]


def _multi_get(index: dict[str, str | list[str]], name: str) -> list[str]:
    known = index.get(name)
    if known is None:
        return []
    return list(known) if isinstance(known, list) else [known]


class _Session:
    """One session, stored compactly: memory per session is a benchmarked feature.

    The pending lines live in a few **chunks**: strings of lines joined by
    ``BATCH_SEPARATOR`` (a newline, which a cleaned line cannot contain). A write
    joins its batch to the newest chunk while that stays under ``_CHUNK_CHARS``
    characters, else starts a new one, so a session of 50 one-line events holds
    about nine strings rather than fifty (each str costs 49 bytes before its
    first character, a third of a typical line); joining copies at most one chunk,
    so a write's cost does not grow with the session. ``skip`` counts the lines of
    the oldest chunk already dropped (trimmed or summarised); a chunk's bytes go
    when its last line does. ``times`` holds each live line's arrival time, oldest
    first, and ``ordered`` says whether they never go back (a local clock that
    stepped back clears it until the session empties): then a read finds its
    lookback boundary by bisection. ``nbytes`` is ``sys.getsizeof`` of every
    string held (the chunks and the summary). ``head`` is the oldest chunk's live
    line count once a trim counted it (0: not counted yet), so a session at its cap,
    trimmed one line per write, counts each chunk's newlines once rather than once per
    write (that count was a twentieth of a write's instructions). It is only kept
    while the oldest chunk is not also the newest, the one a write joins lines to.
    """

    __slots__ = (
        "chunks",
        "head",
        "last_activity_at",
        "nbytes",
        "ordered",
        "skip",
        "summary",
        "summary_at",
        "times",
        "touched",
    )

    def __init__(self, now: float) -> None:
        self.chunks: list[str] = []
        self.times = array("d")
        self.ordered = True
        self.skip = 0
        self.head = 0
        self.nbytes = 0
        self.summary: str | None = None
        self.summary_at: float | None = None
        self.last_activity_at: float | None = None
        self.touched = now

    def append(self, batch: str, lines: int, at: float) -> int:
        """Add ``lines`` lines (``batch``, joined) that arrived at ``at``; returns bytes added."""
        chunks, times = self.chunks, self.times
        if times and at < times[-1]:  # the local clock stepped back
            self.ordered = False
        if lines == 1:
            times.append(at)
        else:
            times.fromlist([at] * lines)
        if chunks and len(chunks[-1]) + len(batch) < _CHUNK_CHARS:
            newest = chunks[-1]
            joined = chunks[-1] = f"{newest}{BATCH_SEPARATOR}{batch}"
            added = _getsizeof(joined) - _getsizeof(newest)
        else:
            chunks.append(batch)
            added = _getsizeof(batch)
        self.nbytes += added
        return added

    def drop_oldest(self, n: int) -> int:
        """Drop ``min(n, pending)`` of the oldest lines (any ``n``; none if ``n <= 0``).

        Returns how many went. Clamping first is what makes a summary whose
        ``replaces`` exceeds the pending actions (a client started mid-session,
        after a reset, an eviction or an expiry) an ordinary write.
        """
        times = self.times
        if n > len(times):  # noqa: PLR1730 - min() costs ~100 ns more per event
            n = len(times)
        if n <= 0:
            return 0
        del times[:n]
        if not times:
            self.ordered = True  # nothing left out of order
        chunks = self.chunks
        left = n
        while left:
            oldest = chunks[0]
            live = self.head or oldest.count(BATCH_SEPARATOR) + 1 - self.skip
            if live > left:
                self.skip += left
                # Not kept for a lone chunk: the next write may join lines to it.
                self.head = live - left if len(chunks) > 1 else 0
                break
            del chunks[0]
            self.nbytes -= _getsizeof(oldest)
            self.skip = self.head = 0
            left -= live
        return n

    def newest_chunks(self, cutoff: float | None, limit: int | None) -> tuple[list[str], int]:
        """The chunks a read splits, and how many of their newest lines it keeps.

        Of the newest ``limit`` lines, the read keeps those after the last one older
        than ``cutoff`` (walking back from the newest, as the Redis read script does,
        so the two agree even when the local clock stepped back and the times are
        not sorted). The chunks are immutable strings, so the caller splits them
        (:func:`_newest_lines`) after releasing the lock. They are handed over whole
        (a copy of a few references) rather than narrowed to the ones the lines span:
        finding those meant counting the newlines of every chunk spanned, character by
        character, and the split scans the same characters again; joining them all
        instead copies a few kilobytes at most (``max_actions_per_session`` lines),
        which costs far fewer instructions than one scan.
        """
        times = self.times
        count = len(times)
        first = 0 if limit is None or limit >= count else count - limit
        if cutoff is not None:
            first = (
                bisect_left(times, cutoff, first)
                if self.ordered
                else _first_kept_unordered(times, cutoff, first)
            )
        want = count - first
        return (self.chunks[:], want) if want else ([], 0)


class _History:
    __slots__ = ("messages", "nbytes", "touched")

    def __init__(self, cap: int, now: float) -> None:
        self.messages: deque[str] = deque(maxlen=cap)
        self.nbytes = 0
        self.touched = now


class InMemoryBackend:
    """Bounded in-process storage for session context, user indexes and chat histories.

    ``max_bytes`` bounds the stored strings (``sys.getsizeof`` of each, counted
    in O(1) as they come and go; object overhead per session is bounded by
    ``max_sessions`` instead). It is enforced after every write by evicting the
    least recently used session or chat history, whichever was touched longer
    ago, until the total fits; a budget smaller than one session at its caps can
    evict the session just written (counted like any other).
    """

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
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        """The count and time bounds (validated); ``max_bytes`` is this backend's own."""
        check_bounds(max_bytes=max_bytes)
        self.max_bytes = max_bytes
        self._clock = clock
        self.stats = BackendStats(extra=dict.fromkeys(_EXTRA, 0))
        """Counters; ``extra["bytes"]`` is the one current figure (it also shrinks)."""
        self._lock = Lock()
        self._sessions: OrderedDict[SessionKey, _Session] = OrderedDict()
        # session id -> its products: a bare product id in the usual one-product case.
        self._products: dict[str, str | list[str]] = {}
        # (product, user) -> {session key: last seen}; recency by re-insertion (dicts keep order).
        self._users: OrderedDict[tuple[str, str], dict[SessionKey, float]] = OrderedDict()
        # user id -> its products (as ``_products``), so user_products needs no scan.
        self._user_products: dict[str, str | list[str]] = {}
        self._histories: OrderedDict[SessionKey, _History] = OrderedDict()
        # product -> the dedupe window of its event ids, least recently written first.
        self._seen: OrderedDict[str, DedupeWindow[str]] = OrderedDict()
        self._bytes = 0
        self._budget_logged = False
        self._next_sweep_at = 0.0

    def __repr__(self) -> str:
        sessions, limit = len(self._sessions), self.bounds.max_sessions
        return f"InMemoryBackend(sessions={sessions}, max_sessions={limit})"

    # -- helpers (call with the lock held) ------------------------------------------
    def _dedupe(
        self, product_id: str, event_id: str | None, digest: int
    ) -> tuple[bool, DedupeWindow[str] | None]:
        """Whether the write is a duplicate, and the window to remember its id in.

        The id is remembered only once the write is in place (by the caller), so a
        write that fails is never taken for a duplicate when it is retried.
        """
        if event_id is None:
            return False, None
        # The product's window, least recently written first (written out here, its
        # one caller: a call less per write).
        seen = self._seen
        window = seen.get(product_id)
        if window is None:
            window = seen[product_id] = DedupeWindow(
                self.bounds.dedupe_window, on_reused=self._reused_id, on_reset=self._dedupe_reset
            )
            if len(seen) > MAX_DEDUPE_PRODUCTS:
                seen.popitem(last=False)
                self.stats.extra["dedupe_windows_evicted"] += 1
        else:
            seen.move_to_end(product_id)
        if window.is_duplicate(event_id, digest):
            self.stats.duplicate_events += 1
            return True, None
        return False, window

    def _reused_id(self) -> None:
        self.stats.extra["reused_ids"] += 1

    def _dedupe_reset(self) -> None:
        self.stats.extra["dedupe_resets"] += 1
        logger.warning(
            "InMemoryBackend: a product's event times went back past its whole "
            "dedupe window; the window starts over (dedupe_resets)"
        )

    def _drop(self, key: SessionKey) -> None:
        session = self._sessions.pop(key)
        self._bytes -= session.nbytes
        _multi_remove(self._products, key.session_id, key.product_id)

    def _drop_history(self, key: SessionKey) -> None:
        self._bytes -= self._histories.pop(key).nbytes

    def _shed(self) -> None:
        """Publish the byte figure and evict least recently used state past ``max_bytes``."""
        limit = self.max_bytes
        if limit is not None and self._bytes > limit:
            sessions, histories, extra = self._sessions, self._histories, self.stats.extra
            while self._bytes > limit:
                session = next(iter(sessions.items()), None)
                history = next(iter(histories.items()), None)
                if session is not None and (
                    history is None or session[1].touched <= history[1].touched
                ):
                    self._drop(session[0])
                    extra["sessions_evicted_bytes"] += 1
                elif history is not None:
                    self._drop_history(history[0])
                    extra["histories_evicted_bytes"] += 1
                else:  # pragma: no cover - every counted byte belongs to one of the two
                    break
            if not self._budget_logged:
                self._budget_logged = True
                logger.warning(
                    "InMemoryBackend: max_bytes=%d reached; evicting the least recently used "
                    "sessions and histories (sessions_evicted_bytes, histories_evicted_bytes)",
                    limit,
                )
        self.stats.extra["bytes"] = self._bytes

    def _expired(self, touched: float, now: float) -> bool:
        ttl = self.bounds.idle_ttl_seconds
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
        ttl = self.bounds.idle_ttl_seconds  # ``_expired`` inline: once per read
        if ttl is not None and now - session.touched > ttl:
            self._drop(key)
            self.stats.sessions_expired += 1
            self._shed()  # publishes the smaller byte figure
            return None
        session.touched = now
        self._sessions.move_to_end(key)
        return session

    def _session_for_write(self, key: SessionKey, now: float) -> _Session:
        if now >= self._next_sweep_at:
            self._sweep(now)
        session = self._sessions.get(key)
        ttl = self.bounds.idle_ttl_seconds  # ``_expired`` inline, as in ``_live``: per write
        if session is None or (ttl is not None and now - session.touched > ttl):
            return self._new_session(key, now)
        session.touched = now
        self._sessions.move_to_end(key)
        return session

    def _new_session(self, key: SessionKey, now: float) -> _Session:
        if key in self._sessions:  # idle past its TTL: it starts over
            self._drop(key)
            self.stats.sessions_expired += 1
        session = self._sessions[key] = _Session(now)
        _multi_add(self._products, key.session_id, key.product_id)
        if len(self._sessions) > self.bounds.max_sessions:
            self._drop(next(iter(self._sessions)))
            self.stats.sessions_evicted += 1
        return session

    def _index_user(self, user_id: str, key: SessionKey, at: float) -> None:
        users = self._users
        scope = (key.product_id, user_id)
        refs = users.get(scope)
        if refs is None:
            users[scope] = {key: at}
            _multi_add(self._user_products, user_id, key.product_id)
            if len(users) > self.bounds.users:
                self._forget_scope(next(iter(users)))
            return
        users.move_to_end(scope)
        if next(reversed(refs)) == key:  # refs is never empty; its last key is the newest
            refs[key] = at  # the usual write: the user's newest session again, no cap to check
            return
        refs.pop(key, None)
        refs[key] = at
        if len(refs) > self.bounds.max_sessions_per_user:
            del refs[next(iter(refs))]

    def _forget_scope(self, scope: tuple[str, str]) -> None:
        if self._users.pop(scope, None) is not None:
            _multi_remove(self._user_products, scope[1], scope[0])

    # -- context ----------------------------------------------------------------------
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

        ``sent_at`` orders the dedupe window (``at`` when absent).
        """
        # What can raise runs before any state changes: the join refuses a line
        # that is no string (even a lone one), and its result is the batch as stored.
        batch = BATCH_SEPARATOR.join(lines)
        digest = _digest(batch) if event_id is not None else 0
        with self._lock:
            duplicate, window = self._dedupe(key.product_id, event_id, digest)
            if duplicate:
                return False
            session = self._session_for_write(key, at)
            if lines:
                self._bytes += session.append(batch, len(lines), at)
                overflow = len(session.times) - self.bounds.max_actions_per_session
                if overflow > 0:
                    before = session.nbytes
                    self.stats.actions_trimmed += session.drop_oldest(overflow)
                    self._bytes += session.nbytes - before
            session.last_activity_at = at
            self.stats.actions_stored += len(lines)
            if user_id:
                self._index_user(user_id, key, at)
            if window is not None and event_id is not None:  # event_id: for the type checker
                # Marked seen last, once the write is in place.
                window.remember(event_id, at if sent_at is None else sent_at, digest)
            self._shed()
            return True

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
        """Async twin of :meth:`append_actions` (memory only: nothing to await)."""
        return self.append_actions(
            key, lines, at=at, event_id=event_id, user_id=user_id, sent_at=sent_at
        )

    def append_actions_many(self, writes: Sequence[ActionsWrite]) -> list[bool]:
        """Many :meth:`append_actions`, in order (in memory there is nothing to batch)."""
        return [
            self.append_actions(
                w.key, w.lines, at=w.at, event_id=w.event_id, user_id=w.user_id, sent_at=w.sent_at
            )
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
        sent_at: float | None = None,
    ) -> bool:
        """Set the summary and drop the ``min(replaces, pending)`` oldest actions, atomically.

        Any ``replaces >= 0`` is accepted (a negative one drops nothing).
        """
        # Checked before any state changes (see append_actions).
        if not isinstance(summary, str):
            raise TypeError(f"summary must be a str, not {type(summary).__name__}")
        size = _getsizeof(summary)
        digest = _digest((summary, replaces)) if event_id is not None else 0
        with self._lock:
            duplicate, window = self._dedupe(key.product_id, event_id, digest)
            if duplicate:
                return False
            session = self._session_for_write(key, at)
            before = session.nbytes
            session.drop_oldest(replaces)
            if session.summary is not None:
                session.nbytes -= _getsizeof(session.summary)
            session.summary = summary
            session.nbytes += size
            self._bytes += session.nbytes - before
            session.summary_at = at
            session.last_activity_at = at
            self.stats.summaries_stored += 1
            if window is not None and event_id is not None:  # event_id: for the type checker
                # Marked seen last, once the write is in place.
                window.remember(event_id, at if sent_at is None else sent_at, digest)
            self._shed()
            return True

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
        return self.apply_summary(
            key, summary, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
        )

    def read(self, key: SessionKey, options: ReadOptions, *, now: float) -> SessionView | None:
        """The session filtered by ``options``; ``None`` when it is unknown or expired."""
        with self._lock:
            session = self._live(key, now)
            if session is None:
                return None
            # The shared rule's call only when there is a summary to show or hide.
            summary = session.summary
            if summary is not None:
                summary = visible_summary(summary, session.summary_at, options)
            picked, want = (
                session.newest_chunks(read_cutoff(options, now), options.max_actions)
                if options.include_actions
                else ([], 0)
            )
            summary_at, last_activity_at = session.summary_at, session.last_activity_at
        # Joined and split outside the lock: a writer never waits on a long read.
        lines = _newest_lines(picked, want)
        # ``tuple.__new__`` skips the named tuple's Python-level constructor (per read).
        return tuple.__new__(SessionView, (summary, lines, summary_at, last_activity_at, None))

    async def aread(
        self, key: SessionKey, options: ReadOptions, *, now: float
    ) -> SessionView | None:
        """Async twin of :meth:`read`."""
        return self.read(key, options, now=now)

    def products_for(self, session_id: str) -> list[str]:
        """Product ids under which ``session_id`` has state; O(1), no scan."""
        with self._lock:
            named = self._products.get(session_id)
            if named is None:
                return []
            # Only live state counts: an idle-expired, not yet swept session must not
            # make a read ambiguous. The usual one-product case builds no list to filter.
            # A plain tuple finds a SessionKey (a named tuple: equal, same hash) without
            # running the named tuple's Python-level constructor.
            now, sessions = self._clock(), cast("dict[tuple[str, str], _Session]", self._sessions)
            if isinstance(named, str):
                ttl = self.bounds.idle_ttl_seconds  # ``_expired`` inline, as in ``_live``
                live = ttl is None or now - sessions[named, session_id].touched <= ttl
                return [named] if live else []
            return [
                product
                for product in named
                if not self._expired(sessions[product, session_id].touched, now)
            ]

    async def aproducts_for(self, session_id: str) -> list[str]:
        """Async twin of :meth:`products_for`."""
        return self.products_for(session_id)

    def reset(self, key: SessionKey) -> None:
        """Forget a session's context (its event ids stay seen: a replay is still a duplicate)."""
        with self._lock:
            if key in self._sessions:
                self._drop(key)
            self._shed()

    async def areset(self, key: SessionKey) -> None:
        """Async twin of :meth:`reset`."""
        self.reset(key)

    def sessions(self) -> list[SessionKey]:
        """Every live session, least recently touched first."""
        with self._lock:
            self._sweep(self._clock())
            self._shed()
            return list(self._sessions)

    async def asessions(self) -> list[SessionKey]:
        """Async twin of :meth:`sessions`."""
        return self.sessions()

    # -- users ------------------------------------------------------------------------
    def user_sessions(self, user_id: str, *, product_id: str, limit: int) -> list[UserSessionRef]:
        """One product's user's most recent sessions, newest first."""
        with self._lock:
            refs = self._users.get((product_id, user_id))
            if not refs:
                return []
            newest = islice(reversed(list(refs.items())), limit)
            return [UserSessionRef(k.session_id, k.product_id, at) for k, at in newest]

    async def auser_sessions(
        self, user_id: str, *, product_id: str, limit: int
    ) -> list[UserSessionRef]:
        """Async twin of :meth:`user_sessions`."""
        return self.user_sessions(user_id, product_id=product_id, limit=limit)

    def user_products(self, user_id: str) -> list[str]:
        """Product ids (sorted) under which ``user_id`` has indexed sessions; O(1), no scan."""
        with self._lock:
            return sorted(_multi_get(self._user_products, user_id))

    async def auser_products(self, user_id: str) -> list[str]:
        """Async twin of :meth:`user_products`."""
        return self.user_products(user_id)

    def forget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Drop a user's session index (under every product when ``product_id`` is None)."""
        with self._lock:
            if product_id is not None:
                self._forget_scope((product_id, user_id))
                return
            for product in _multi_get(self._user_products, user_id):
                self._forget_scope((product, user_id))

    async def aforget_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Async twin of :meth:`forget_user`."""
        self.forget_user(user_id, product_id=product_id)

    # -- chat message histories --------------------------------------------------------
    def _history(self, key: SessionKey, now: float, *, create: bool) -> _History | None:
        ttl = self.bounds.history_ttl_seconds
        while self._histories and ttl is not None:
            oldest_key, oldest = next(iter(self._histories.items()))
            if now - oldest.touched <= ttl:
                break
            self._drop_history(oldest_key)
        history = self._histories.get(key)
        if history is None and create:
            history = self._histories[key] = _History(self.bounds.max_messages, now)
            if len(self._histories) > self.bounds.max_sessions:
                self._drop_history(next(iter(self._histories)))
        if history is not None:
            history.touched = now
            self._histories.move_to_end(key)
        return history

    def append_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Append serialized chat messages (the oldest fall off past ``max_messages``)."""
        sizes = [_getsizeof(message) for message in messages]
        with self._lock:
            history = self._history(key, self._clock(), create=True)
            assert history is not None
            stored, cap = history.messages, self.bounds.max_messages
            before = history.nbytes
            for message, size in zip(messages, sizes, strict=True):
                if len(stored) == cap:  # the append pushes the oldest out
                    history.nbytes -= _getsizeof(stored[0])
                stored.append(message)
                history.nbytes += size
            self._bytes += history.nbytes - before
            self._shed()

    async def aappend_messages(self, key: SessionKey, messages: Sequence[str]) -> None:
        """Async twin of :meth:`append_messages`."""
        self.append_messages(key, messages)

    def get_messages(self, key: SessionKey) -> list[str]:
        """A session's serialized chat messages, oldest first."""
        with self._lock:
            history = self._history(key, self._clock(), create=False)
            self._shed()
            return list(history.messages) if history is not None else []

    async def aget_messages(self, key: SessionKey) -> list[str]:
        """Async twin of :meth:`get_messages`."""
        return self.get_messages(key)

    def clear_messages(self, key: SessionKey) -> None:
        """Delete a session's chat history."""
        with self._lock:
            if key in self._histories:
                self._drop_history(key)
            self._shed()

    async def aclear_messages(self, key: SessionKey) -> None:
        """Async twin of :meth:`clear_messages`."""
        self.clear_messages(key)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _first_kept_unordered(times: array[float], cutoff: float, first: int) -> int:
    """The index of the oldest line a read keeps when the times are not in order: of
    ``times[first:]``, after the last one older than ``cutoff`` (the walk back from the
    newest that the Redis script makes). In order, that is where ``cutoff`` bisects
    them (``newest_chunks`` does it in C); only a session whose clock stepped back
    is walked line by line.
    """
    kept = len(times)
    while kept > first and times[kept - 1] >= cutoff:
        kept -= 1
    return kept


def _newest_lines(chunks: list[str], want: int) -> list[str]:
    """The last ``want`` lines of ``chunks``, oldest first (none for ``want == 0``).

    One join and one ``rsplit`` from the end, which stops scanning at the oldest line
    wanted; the oldest chunk's already dropped lines (``skip``) are never wanted.
    """
    lines = BATCH_SEPARATOR.join(chunks).rsplit(BATCH_SEPARATOR, want)
    if len(lines) > want:
        del lines[0]
    return lines
