"""``ContextStore`` and ``AsyncContextStore``: the live context of every session.

Wire a client to the store and ask it for context at query time::

    store = ContextStore(lookback_seconds=300, max_actions=20)
    client.on_actions(store.add).on_summary(store.add)
    enriched = store.enrich(session_id, user_message, product_id=product_id)

The store is keyed by ``(product_id, session_id)`` and never answers one
product's read with another's context. It delegates storage to a backend
(:class:`~autoplay_base.backends.memory.InMemoryBackend` by default, bounded;
``RedisBackend`` to share context between processes) and formatting to
:mod:`autoplay_base.formatting`.

Differences from ``autoplay-sdk`` (same call shapes):

* ``lookback_seconds`` is measured against local arrival time, not the
  connector's ``forwarded_at``, so clock skew cannot empty the context;
* a summary replaces the ``replaces`` oldest pending actions it covers;
* ``product_id`` may be omitted only when the session id is unambiguous;
  otherwise :class:`~autoplay_base.errors.AmbiguousSessionError` says which
  products it exists under (the reference silently read an empty bucket);
* memory is bounded by default (sessions, actions per session, idle TTL, and
  bytes: ``max_bytes``, 512 MiB of stored text by default);
* a summary whose ``replaces`` exceeds the pending actions is stored (it drops
  what is there); ``replaces`` is clamped to :data:`MAX_REPLACES` first, so
  every backend sees the same value (and the same dedupe digest);
* dedupe is ordered by the connector's ``forwarded_at`` (``sent_at``), so a long
  replay costs only its part outside the window and a reused id is stored;
* payloads without a ``session_id`` are counted and skipped rather than pooled
  under a shared ``"unknown"`` session that would leak between users.

Longer than the ~600-line guide, on purpose: it holds the two public twin classes
and the base they share, whose bodies differ by ``await`` only and are reviewed
side by side; everything else (storage, text, summaries) already lives elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from autoplay_base._counters import Counters
from autoplay_base._recent import RecentKeys
from autoplay_base.backends.base import (
    DEFAULT_IDLE_TTL_SECONDS,
    DEFAULT_MAX_ACTIONS_PER_SESSION,
    DEFAULT_MAX_SESSIONS,
    ActionsWrite,
    Activity,
    ActivityListener,
    Backend,
    ReadOptions,
    SessionKey,
    SessionView,
)
from autoplay_base.backends.memory import DEFAULT_MAX_BYTES, InMemoryBackend
from autoplay_base.errors import (
    AmbiguousSessionError,
    ConfigError,
    EventDecodeError,
    InvalidPayloadError,
)
from autoplay_base.events import (
    ActionsPayload,
    AnyPayload,
    SummaryPayload,
    UnknownEvent,
    decode_object,
)
from autoplay_base.formatting import (
    action_lines,
    clean_summary,
    display_line,
    display_lines,
    format_enriched,
    view_text,
)
from autoplay_base.summarizer import (
    DEFAULT_CLOSE_TIMEOUT,
    AsyncSessionSummarizer,
    SessionSummarizer,
)

__all__ = [
    "DEFAULT_PRODUCT_ID",
    "MAX_REPLACES",
    "AsyncContextStore",
    "ContextStore",
    "StoreCounters",
]

logger = logging.getLogger(__name__)

DEFAULT_PRODUCT_ID = ""
"""Product used by ``on_summary`` for a session the store has never seen under any product."""

MAX_REPLACES = 2**31 - 1
"""The largest ``replaces`` a backend is handed. More than any per-session cap (so
clamping changes nothing a backend could drop), small enough for every backend's
integers (a Lua number, ``LTRIM``); a server may send any int >= 0."""

_BACKEND_COUNTERS = (
    "actions_stored",
    "summaries_stored",
    "duplicate_events",
    "sessions_evicted",
    "sessions_expired",
    "actions_trimmed",
    "errors",
)
"""The store counter that is mirrored into ``backend.stats.extra`` (its former home)."""
_CONTRACT_EXTRA = ("reused_ids", "dedupe_resets")
"""Extra counters every backend's dedupe may keep; ``stats()`` always shows them."""

CONTEXT_OPTIONS = frozenset(
    {"include_summary", "include_actions", "lookback_seconds", "max_actions", "since"}
)
"""The per-call read options ``get``/``view``/``enrich`` (and their async twins) take as
keywords. Every adapter passes them on under one name, ``context_options``."""
OVERRIDES = CONTEXT_OPTIONS
"""Former name of :data:`CONTEXT_OPTIONS`, kept as an alias."""

NOT_FOUND_LOG_KEYS = 1024
"""How many distinct unknown sessions a store logs (once each, at debug level) before it
forgets the oldest: the log stays bounded however many wrong ids callers send."""


class StoreCounters(Counters):
    """Counters the store keeps itself (the backend's are in ``store.backend.stats``)."""

    __slots__ = (
        "chat_history_entries_undecodable",
        "duplicates_skipped",
        "payloads_rejected",
        "payloads_without_session",
        "reads",
        "replaces_clamped",
        "sessions_not_found",
        "unknown_events_ignored",
        "writes",
    )
    chat_history_entries_undecodable: int
    """Stored chat-history entries a reader could not decode (skipped, logged)."""
    duplicates_skipped: int
    payloads_rejected: int
    payloads_without_session: int
    reads: int
    replaces_clamped: int
    """Summaries whose ``replaces`` exceeded :data:`MAX_REPLACES` (stored, clamped)."""
    sessions_not_found: int
    """Reads of a session the store does not know (unknown id, wrong product, expired):
    the read answered "no context". A steady rise usually means a misconfigured caller."""
    unknown_events_ignored: int
    writes: int


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - CONTEXT_OPTIONS
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(CONTEXT_OPTIONS))}"
        )
    lookback = options.get("lookback_seconds")
    if lookback is not None and lookback <= 0:
        raise ConfigError(f"lookback_seconds must be > 0, got {lookback!r}")
    max_actions = options.get("max_actions")
    if max_actions is not None and (not isinstance(max_actions, int) or max_actions < 1):
        raise ConfigError(f"max_actions must be an int >= 1, got {max_actions!r}")


def _displayed(view: SessionView | None, key: SessionKey | None) -> SessionView | None:
    if view is None:
        return None
    lines = display_lines(view.actions)
    return SessionView(view.summary, lines, view.summary_at, view.last_activity_at, key)


SummarizerT = TypeVar("SummarizerT", SessionSummarizer, AsyncSessionSummarizer)


def _shown(activity: Activity) -> Activity:
    return replace(activity, lines=tuple(display_line(line) for line in activity.lines))


async def _ashown(followed: AsyncIterator[Activity]) -> AsyncIterator[Activity]:
    async for activity in followed:
        yield _shown(activity)


class _ContextStoreBase(Generic[SummarizerT]):
    """Everything but the write side, shared by the sync and async stores.

    Args:
        summarizer: optional summarizer (``SessionSummarizer`` for the sync
            store, ``AsyncSessionSummarizer`` for the async one). Actions added
            to the store reach it, and its summaries come back and replace the
            actions they cover.
        include_summary, include_actions, lookback_seconds, max_actions: read
            defaults, each overridable per ``get``/``enrich`` call.
        backend: where state lives (default: a new bounded ``InMemoryBackend``).
        max_sessions, max_actions_per_session, idle_ttl_seconds, max_bytes: bounds
            of the default in-memory backend (``max_bytes``: 512 MiB of stored
            strings, ``None`` for no byte bound); with your own ``backend``, set
            them on it instead (``ConfigError`` otherwise, except ``idle_ttl_seconds``).
        clock: the local clock (``time.time``); tests pass their own.
    """

    def __init__(
        self,
        summarizer: SummarizerT | None = None,
        *,
        include_summary: bool = True,
        include_actions: bool = True,
        lookback_seconds: float | None = None,
        max_actions: int | None = None,
        backend: Backend | None = None,
        max_sessions: int | None = None,
        max_actions_per_session: int | None = None,
        idle_ttl_seconds: float | None = DEFAULT_IDLE_TTL_SECONDS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._defaults = ReadOptions(
            include_summary=include_summary,
            include_actions=include_actions,
            lookback_seconds=lookback_seconds,
            max_actions=max_actions,
        )
        _check_options({"lookback_seconds": lookback_seconds, "max_actions": max_actions})
        if backend is None:
            backend = InMemoryBackend(
                max_sessions=max_sessions or DEFAULT_MAX_SESSIONS,
                max_actions_per_session=max_actions_per_session or DEFAULT_MAX_ACTIONS_PER_SESSION,
                idle_ttl_seconds=idle_ttl_seconds,
                max_bytes=max_bytes,
                clock=clock,
            )
        elif max_sessions or max_actions_per_session or max_bytes != DEFAULT_MAX_BYTES:
            raise ConfigError(
                "max_sessions / max_actions_per_session / max_bytes configure the default "
                "in-memory backend; set them on the backend you pass instead"
            )
        self.backend: Backend = backend
        self.counters = StoreCounters()
        self._not_found_logged: RecentKeys[tuple[str | None, str]] = RecentKeys(NOT_FOUND_LOG_KEYS)
        self._clock = clock
        self.summarizer: SummarizerT | None = summarizer
        if summarizer is not None:
            self._bind(summarizer)

    def _bind(self, summarizer: SummarizerT) -> None:
        raise NotImplementedError

    # -- option and key resolution (pure, no I/O) -------------------------------------
    def _options(self, context_options: Mapping[str, Any]) -> ReadOptions:
        if not context_options:
            return self._defaults
        _check_options(context_options)
        return replace(self._defaults, **context_options)

    @staticmethod
    def _pick_product(session_id: str, products: list[str]) -> SessionKey | None:
        if not products:
            return None
        if len(products) > 1:
            raise AmbiguousSessionError(session_id, products)
        # ``tuple.__new__`` as in ``_read_key``: this is the read path without a product.
        return tuple.__new__(SessionKey, (products[0], session_id))

    def _read_key(self, session_id: str, product_id: str | None) -> SessionKey | None:
        if product_id is not None:
            # ``tuple.__new__`` skips the named tuple's Python-level constructor (per read).
            return tuple.__new__(SessionKey, (product_id, session_id))
        return self._pick_product(session_id, self.backend.products_for(session_id))

    async def _aread_key(self, session_id: str, product_id: str | None) -> SessionKey | None:
        if product_id is not None:
            return tuple.__new__(SessionKey, (product_id, session_id))
        return self._pick_product(session_id, await self.backend.aproducts_for(session_id))

    def _accept(self, payload: object) -> tuple[AnyPayload, SessionKey] | None:
        """The typed payload and its session, or ``None`` when there is nothing to store."""
        if not isinstance(payload, (ActionsPayload, SummaryPayload)):
            typed = self._typed(payload)
            if typed is None:
                return None
            payload = typed
        key = self._payload_key(payload)
        return None if key is None else (payload, key)

    def _typed(self, payload: object) -> AnyPayload | None:
        """A payload from what is not one yet: a JSON object is validated, anything else refused."""
        if isinstance(payload, UnknownEvent):
            # on_event(store.add) is harmless: such events carry no context to keep.
            self.counters.unknown_events_ignored += 1
            logger.debug("context_store: ignored an event of unmodelled type %r", payload.type)
            return None
        if isinstance(payload, Mapping):
            try:
                event = decode_object(payload)
            except EventDecodeError as exc:
                self.counters.payloads_rejected += 1
                logger.warning("context_store: rejected a payload object: %s", exc)
                raise
            return self._typed(event) if isinstance(event, UnknownEvent) else event
        self.counters.payloads_rejected += 1
        logger.warning("context_store: rejected a %s: not a payload", type(payload).__name__)
        raise InvalidPayloadError(
            "add() takes an ActionsPayload or a SummaryPayload (or its JSON object), "
            f"not {type(payload).__name__}"
        )

    def _actions_write(self, key: SessionKey, payload: ActionsPayload) -> ActionsWrite:
        lines = action_lines(payload.actions)
        return ActionsWrite(
            key, lines, self._clock(), payload.event_id, payload.user_id, payload.forwarded_at
        )

    def _payload_key(self, payload: AnyPayload) -> SessionKey | None:
        if not payload.session_id:
            self.counters.payloads_without_session += 1
            logger.warning(
                "context_store: skipped a %s payload without session_id (product_id=%r)",
                payload.type,
                payload.product_id,
            )
            return None
        # ``tuple.__new__`` skips the named tuple's Python-level constructor (per write).
        return tuple.__new__(SessionKey, (payload.product_id, payload.session_id))

    def _summary_key(self, session_id: str, product_id: str | None) -> SessionKey:
        key = self._read_key(session_id, product_id)
        return key if key is not None else SessionKey(DEFAULT_PRODUCT_ID, session_id)

    async def _asummary_key(self, session_id: str, product_id: str | None) -> SessionKey:
        key = await self._aread_key(session_id, product_id)
        return key if key is not None else SessionKey(DEFAULT_PRODUCT_ID, session_id)

    def _summary_write(self, payload: SummaryPayload) -> tuple[str, int]:
        """The summary as stored (cleaned) and its ``replaces`` clamped to :data:`MAX_REPLACES`."""
        replaces = payload.replaces
        if replaces > MAX_REPLACES:
            self.counters.replaces_clamped += 1
            logger.warning(
                "context_store: a summary's replaces (%d digits) exceeds %d; clamped",
                len(str(replaces)),
                MAX_REPLACES,
            )
            replaces = MAX_REPLACES
        return clean_summary(payload.summary), replaces

    def _wrote(self, stored: bool) -> None:
        if stored:
            self.counters.writes += 1
        else:
            self.counters.duplicates_skipped += 1

    # -- reads ------------------------------------------------------------------------
    def _not_found(self, session_id: str, product_id: str | None) -> tuple[None, None]:
        """Count a read of an unknown session; log it once per ``(product_id, session_id)``.

        The read itself answers "no context" as before: an unknown session is normal
        for a user who has not done anything yet, so this is visible (counter, debug
        log) without being an error; the adapters' ``strict=True`` makes it one.
        """
        self.counters.sessions_not_found += 1
        if self._not_found_logged.add((product_id, session_id)):
            logger.debug(
                "context_store: no live context for session_id=%r product_id=%r "
                "(unknown session, wrong product_id, or expired); counted in sessions_not_found",
                session_id,
                product_id,
            )
        return None, None

    def _read(
        self, session_id: str, product_id: str | None, context_options: Mapping[str, Any]
    ) -> tuple[SessionKey | None, SessionView | None]:
        """The resolved key and the backend's view (lines still in stored form)."""
        # The defaults without a call: no options is the per-query case.
        options = self._options(context_options) if context_options else self._defaults
        key = self._read_key(session_id, product_id)
        if key is None:
            return self._not_found(session_id, product_id)
        self.counters.reads += 1
        view = self.backend.read(key, options, now=self._clock())
        return (key, view) if view is not None else self._not_found(session_id, product_id)

    async def _aread(
        self, session_id: str, product_id: str | None, context_options: Mapping[str, Any]
    ) -> tuple[SessionKey | None, SessionView | None]:
        # The defaults without a call: no options is the per-query case.
        options = self._options(context_options) if context_options else self._defaults
        key = await self._aread_key(session_id, product_id)
        if key is None:
            return self._not_found(session_id, product_id)
        self.counters.reads += 1
        view = await self.backend.aread(key, options, now=self._clock())
        return (key, view) if view is not None else self._not_found(session_id, product_id)

    def view(
        self, session_id: str, product_id: str | None = None, **context_options: Any
    ) -> SessionView | None:
        """The session's summary and ``<description> — <url>`` lines, or ``None`` if unknown.

        For adapters that need the parts rather than the formatted text; takes
        the same context options as :meth:`get`.
        """
        key, view = self._read(session_id, product_id, context_options)
        return _displayed(view, key)

    async def aview(
        self, session_id: str, product_id: str | None = None, **context_options: Any
    ) -> SessionView | None:
        """Async twin of :meth:`view`."""
        key, view = await self._aread(session_id, product_id, context_options)
        return _displayed(view, key)

    def get(self, session_id: str, product_id: str | None = None, **context_options: Any) -> str:
        """The formatted context (``Summary: …`` / ``Recent activity:``), or ``""``.

        Context options (:data:`CONTEXT_OPTIONS`, per call, over the constructor's
        defaults): ``include_summary``, ``include_actions``, ``lookback_seconds``,
        ``max_actions`` (applied after lookback) and ``since`` (a local
        ``time.time()`` moment; only activity after it).
        """
        _, view = self._read(session_id, product_id, context_options)
        return view_text(view)

    async def aget(
        self, session_id: str, product_id: str | None = None, **context_options: Any
    ) -> str:
        """Async twin of :meth:`get`."""
        _, view = await self._aread(session_id, product_id, context_options)
        return view_text(view)

    def enrich(
        self, session_id: str, query: str, product_id: str | None = None, **context_options: Any
    ) -> str:
        """``[Session context]``, context, ``[Query]``, query; the bare query without context."""
        # Straight to ``_read`` rather than through ``get``: the per-query hot path,
        # and a second call would repack the keywords.
        _, view = self._read(session_id, product_id, context_options)
        return format_enriched(view_text(view), query)

    async def aenrich(
        self, session_id: str, query: str, product_id: str | None = None, **context_options: Any
    ) -> str:
        """Async twin of :meth:`enrich`."""
        _, view = await self._aread(session_id, product_id, context_options)
        return format_enriched(view_text(view), query)

    def reset(self, session_id: str, product_id: str | None = None) -> None:
        """Forget a session's context (and its summarizer state)."""
        key = self._read_key(session_id, product_id)
        if key is not None:
            self.backend.reset(key)
            self._reset_summarizer(key)

    async def areset(self, session_id: str, product_id: str | None = None) -> None:
        """Async twin of :meth:`reset`."""
        key = await self._aread_key(session_id, product_id)
        if key is not None:
            await self.backend.areset(key)
            self._reset_summarizer(key)

    def _reset_summarizer(self, key: SessionKey) -> None:
        if self.summarizer is not None:
            self.summarizer.reset(key.session_id, product_id=key.product_id)

    def _listener(
        self, key: SessionKey | None, session_id: str
    ) -> tuple[ActivityListener, SessionKey]:
        backend = self.backend
        if not isinstance(backend, ActivityListener):
            raise ConfigError(
                f"{type(backend).__name__} cannot follow live activity; use RedisBackend"
            )
        if key is None:
            raise ConfigError(f"session {session_id!r} is not known yet: pass product_id=")
        return backend, key

    def listen(
        self, session_id: str, product_id: str | None = None, **options: Any
    ) -> Iterator[Activity]:
        """Iterate over the session's new activity as it is written, from any process.

        Needs a backend that can follow activity (``RedisBackend``: Redis Streams);
        ``options`` go to its ``listen`` (``last_id`` to resume, ``block_ms``, ``stop``).
        Action lines come as people read them (``<description> — <url>``).
        """
        backend, key = self._listener(self._read_key(session_id, product_id), session_id)
        return map(_shown, backend.listen(key, **options))

    async def alisten(
        self, session_id: str, product_id: str | None = None, **options: Any
    ) -> AsyncIterator[Activity]:
        """Async twin of :meth:`listen`: ``async for activity in await store.alisten(...)``."""
        backend, key = self._listener(await self._aread_key(session_id, product_id), session_id)
        return _ashown(backend.alisten(key, **options))

    @property
    def active_sessions(self) -> list[str]:
        """Session ids with live context, sorted (``active_keys`` keeps the products)."""
        return sorted({key.session_id for key in self.backend.sessions()})

    @property
    def active_keys(self) -> list[SessionKey]:
        """``(product_id, session_id)`` of every live session, least recently used first."""
        return self.backend.sessions()

    def count_undecodable_history_entry(self) -> None:
        """Count one stored chat-history entry that could not be decoded (it was skipped).

        Called by the chat-history adapters, which log the entry's position; shown
        by :meth:`stats` as ``chat_history_entries_undecodable``. The store counts
        it, not the backend: a backend shared by several stores keeps only its own
        figures.
        """
        self.counters.chat_history_entries_undecodable += 1

    def stats(self) -> dict[str, int]:
        """Store and backend counters in one flat dict.

        Besides the store's own and the :class:`BackendStats` fields, it holds the
        backend's ``extra`` counters: always ``reused_ids`` (an event id seen
        again with other content, stored) and ``dedupe_resets`` (a dedupe window
        started over after its source's clock went back), 0 where a backend keeps
        no such count; the in-memory backend adds ``bytes`` (its current size, the
        one figure that also shrinks), ``sessions_evicted_bytes`` and
        ``histories_evicted_bytes`` (evicted for ``max_bytes``) and
        ``dedupe_windows_evicted``.
        """
        backend = self.backend.stats
        merged = self.counters.as_dict()
        for name in _BACKEND_COUNTERS:
            merged[name] = getattr(backend, name)
        merged.update(dict.fromkeys(_CONTRACT_EXTRA, 0))
        merged.update(backend.extra)
        return merged


class ContextStore(_ContextStoreBase[SessionSummarizer]):
    """Thread-safe live context for query-time enrichment (sync writes).

    ``ContextStore(summarizer=None, *, include_summary=True, include_actions=True,
    lookback_seconds=None, max_actions=None, backend=None, max_sessions=None,
    max_actions_per_session=None, idle_ttl_seconds=4 h, max_bytes=512 MiB,
    clock=time.time)``;
    the options are described on the shared base.
    """

    def _bind(self, summarizer: SessionSummarizer) -> None:
        summarizer.bind(self._add_own_summary)

    def __repr__(self) -> str:
        return f"ContextStore(backend={self.backend!r})"

    def add(self, payload: AnyPayload | UnknownEvent | Mapping[str, Any]) -> bool:
        """Store an actions or summary payload (wire to ``on_actions`` and ``on_summary``).

        A JSON object (a dict) is validated first; an :class:`UnknownEvent` is
        ignored and counted. Anything else raises :class:`InvalidPayloadError`.
        Returns whether it was stored: ``False`` for a duplicate (an event id seen
        with the same content) or a payload with nothing to store.
        """
        accepted = self._accept(payload)
        if accepted is None:
            return False
        payload, key = accepted
        if not isinstance(payload, ActionsPayload):
            return self._store_summary(key, payload)
        # Written inline rather than through add_many's batch path: once per event.
        stored = self.backend.append_actions(
            key,
            action_lines(payload.actions),
            at=self._clock(),
            event_id=payload.event_id,
            user_id=payload.user_id,
            sent_at=payload.forwarded_at,
        )
        self._wrote(stored)
        if stored and self.summarizer is not None:
            self.summarizer.add(payload)
        return stored

    def add_many(self, payloads: Iterable[AnyPayload | UnknownEvent | Mapping[str, Any]]) -> int:
        """Store many payloads in order; returns how many were stored.

        Consecutive actions payloads go to the backend in one batch
        (``append_actions_many``: one pipelined round trip per 256 with Redis), so
        importing a recording or a replayed burst costs a fraction of one ``add``
        per payload. A summary first flushes the actions before it, so it covers
        exactly what it would have covered one by one.
        """
        stored = 0
        run: list[tuple[ActionsPayload, ActionsWrite]] = []
        for item in payloads:
            accepted = self._accept(item)
            if accepted is None:
                continue
            payload, key = accepted
            if isinstance(payload, ActionsPayload):
                run.append((payload, self._actions_write(key, payload)))
                continue
            stored += self._flush_actions(run)
            run = []
            stored += self._store_summary(key, payload)
        return stored + self._flush_actions(run)

    def _flush_actions(self, run: list[tuple[ActionsPayload, ActionsWrite]]) -> int:
        if not run:
            return 0
        results = self.backend.append_actions_many([write for _, write in run])
        for (payload, _), stored in zip(run, results, strict=True):
            self._wrote(stored)
            if stored and self.summarizer is not None:
                self.summarizer.add(payload)
        return sum(results)

    def _store_summary(self, key: SessionKey, payload: SummaryPayload) -> bool:
        stored = self._write_summary(key, payload, self._clock())
        if stored and self.summarizer is not None:
            self.summarizer.observe_summary(payload)
        self._wrote(stored)
        return stored

    def _write_summary(self, key: SessionKey, payload: SummaryPayload, now: float) -> bool:
        summary, replaces = self._summary_write(payload)
        return self.backend.apply_summary(
            key,
            summary,
            replaces=replaces,
            at=now,
            event_id=payload.event_id,
            sent_at=payload.forwarded_at,
        )

    def _add_own_summary(self, payload: SummaryPayload) -> None:
        """The summarizer's sink: its bookkeeping already covers this summary."""
        key = self._payload_key(payload)
        if key is not None:
            self._wrote(self._write_summary(key, payload, self._clock()))

    def on_summary(
        self,
        session_id: str,
        summary_text: str,
        *,
        product_id: str | None = None,
        replaces: int = 0,
    ) -> None:
        """Store a summary by hand (``autoplay-sdk`` shape); ``replaces`` drops covered actions."""
        key = self._summary_key(session_id, product_id)
        self.add(
            SummaryPayload(
                product_id=key.product_id,
                session_id=session_id,
                summary=summary_text,
                replaces=replaces,
                forwarded_at=self._clock(),
            )
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for summaries already being written; ``False`` if ``timeout`` ran out first."""
        return self.summarizer.flush(timeout) if self.summarizer is not None else True

    def close(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Finish the summarizer's work (at most ``timeout`` seconds), release the backend."""
        if self.summarizer is not None:
            self.summarizer.close(timeout)
        self.backend.close()

    def __enter__(self) -> ContextStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncContextStore(_ContextStoreBase[AsyncSessionSummarizer]):
    """The asyncio twin of :class:`ContextStore`: ``add`` and ``on_summary`` are coroutines.

    ``get``/``enrich`` stay synchronous for ``autoplay-sdk`` compatibility (cheap
    with the in-memory backend); use ``aget``/``aenrich`` in coroutines so a
    remote backend never blocks the event loop.
    """

    def _bind(self, summarizer: AsyncSessionSummarizer) -> None:
        summarizer.bind(self._add_own_summary)

    def __repr__(self) -> str:
        return f"AsyncContextStore(backend={self.backend!r})"

    async def add(self, payload: AnyPayload | UnknownEvent | Mapping[str, Any]) -> bool:
        """Store an actions or summary payload (wire to ``on_actions`` and ``on_summary``).

        A JSON object (a dict) is validated first; an :class:`UnknownEvent` is
        ignored and counted. Anything else raises :class:`InvalidPayloadError`.
        Returns whether it was stored (see :meth:`ContextStore.add`).
        """
        accepted = self._accept(payload)
        if accepted is None:
            return False
        payload, key = accepted
        if not isinstance(payload, ActionsPayload):
            return await self._store_summary(key, payload)
        # Written inline rather than through add_many's batch path: once per event.
        stored = await self.backend.aappend_actions(
            key,
            action_lines(payload.actions),
            at=self._clock(),
            event_id=payload.event_id,
            user_id=payload.user_id,
            sent_at=payload.forwarded_at,
        )
        self._wrote(stored)
        if stored and self.summarizer is not None:
            await self.summarizer.add(payload)
        return stored

    async def add_many(
        self, payloads: Iterable[AnyPayload | UnknownEvent | Mapping[str, Any]]
    ) -> int:
        """Async twin of :meth:`ContextStore.add_many`."""
        stored = 0
        run: list[tuple[ActionsPayload, ActionsWrite]] = []
        for item in payloads:
            accepted = self._accept(item)
            if accepted is None:
                continue
            payload, key = accepted
            if isinstance(payload, ActionsPayload):
                run.append((payload, self._actions_write(key, payload)))
                continue
            stored += await self._flush_actions(run)
            run = []
            stored += await self._store_summary(key, payload)
        return stored + await self._flush_actions(run)

    async def _flush_actions(self, run: list[tuple[ActionsPayload, ActionsWrite]]) -> int:
        if not run:
            return 0
        results = await self.backend.aappend_actions_many([write for _, write in run])
        for (payload, _), stored in zip(run, results, strict=True):
            self._wrote(stored)
            if stored and self.summarizer is not None:
                await self.summarizer.add(payload)
        return sum(results)

    async def _store_summary(self, key: SessionKey, payload: SummaryPayload) -> bool:
        stored = await self._write_summary(key, payload, self._clock())
        if stored and self.summarizer is not None:
            self.summarizer.observe_summary(payload)
        self._wrote(stored)
        return stored

    async def _write_summary(self, key: SessionKey, payload: SummaryPayload, now: float) -> bool:
        summary, replaces = self._summary_write(payload)
        return await self.backend.aapply_summary(
            key,
            summary,
            replaces=replaces,
            at=now,
            event_id=payload.event_id,
            sent_at=payload.forwarded_at,
        )

    async def _add_own_summary(self, payload: SummaryPayload) -> None:
        """The summarizer's sink: its bookkeeping already covers this summary."""
        key = self._payload_key(payload)
        if key is not None:
            self._wrote(await self._write_summary(key, payload, self._clock()))

    async def on_summary(
        self,
        session_id: str,
        summary_text: str,
        *,
        product_id: str | None = None,
        replaces: int = 0,
    ) -> None:
        """Store a summary by hand (``autoplay-sdk`` shape); ``replaces`` drops covered actions."""
        key = await self._asummary_key(session_id, product_id)
        await self.add(
            SummaryPayload(
                product_id=key.product_id,
                session_id=session_id,
                summary=summary_text,
                replaces=replaces,
                forwarded_at=self._clock(),
            )
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for summaries already being written; ``False`` if ``timeout`` ran out first."""
        return await self.summarizer.flush(timeout) if self.summarizer is not None else True

    async def aclose(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Cancel the summarizer's pending work (at most ``timeout``), release the backend."""
        if self.summarizer is not None:
            await self.summarizer.aclose(timeout)
        await self.backend.aclose()

    async def __aenter__(self) -> AsyncContextStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
