"""Where loaders and readers get events from, and the metadata they attach.

The LangChain loader and the LlamaIndex reader both turn connector activity into
documents; the plumbing they share lives here so each adapter is only a
conversion into its framework's document type. Three sources:

* a recorded JSONL file (the format of :mod:`autoplay_base.recording`);
* a live stream, read for a bounded window (``max_events`` and/or ``timeout``);
* a snapshot of a store's sessions (one record per session, not per event).

Both adapters describe what to read with one :class:`SourceOptions`, validated
when it is built, so the loader and the reader accept and reject exactly the same
values with the same :class:`~autoplay_base.errors.ConfigError` messages.

Copies and pickles of a loader or a reader follow one rule, here
(:func:`check_picklable`, :func:`share_store`): the configuration (source,
bounds, product, read options, token) travels; a store does not. A store is a
live resource (locks, worker threads, maybe a Redis connection): a copy
(``copy.copy``/``copy.deepcopy``) shares the original's store, and pickling an
adapter that holds one raises ``TypeError`` (build it where it runs instead).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from autoplay_base._store_ref import pickle_refused, share_store
from autoplay_base.backends.base import SessionKey, SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.events import ActionsPayload, Event, SummaryPayload
from autoplay_base.formatting import view_text
from autoplay_base.recording import iter_recording
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events

__all__ = [
    "LIVE_CONTEXT_SOURCE",
    "SessionSnapshot",
    "SourceOptions",
    "aiter_events",
    "asnapshot_sessions",
    "check_picklable",
    "event_metadata",
    "iter_events",
    "session_metadata",
    "share_store",
    "snapshot_sessions",
]

LIVE_CONTEXT_SOURCE = "autoplay_live_context"


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """One session's context at the moment of a snapshot."""

    key: SessionKey
    view: SessionView

    @property
    def text(self) -> str:
        """The formatted context body (as ``ContextStore.get`` returns it)."""
        return view_text(self.view)


def _known(metadata: dict[str, Any]) -> dict[str, Any]:
    # Several vector stores (Chroma, Pinecone, ...) reject None metadata values.
    return {key: value for key, value in metadata.items() if value is not None}


def event_metadata(event: Event) -> dict[str, Any]:
    """The metadata of an event document.

    Keys: ``session_id``, ``product_id``, ``user_id``, ``event_id``, ``type``,
    ``forwarded_at``; a key whose value is unknown is left out rather than set
    to ``None``, because several vector stores reject ``None`` values.
    """
    user_id = event.user_id if isinstance(event, ActionsPayload) else None
    forwarded_at = (
        event.forwarded_at if isinstance(event, (ActionsPayload, SummaryPayload)) else None
    )
    return _known(
        {
            "session_id": event.session_id,
            "product_id": event.product_id,
            "user_id": user_id,
            "event_id": event.event_id,
            "type": event.type,
            "forwarded_at": forwarded_at,
        }
    )


def session_metadata(snapshot: SessionSnapshot) -> dict[str, Any]:
    """The metadata of a per-session document (unknown values left out, as for events)."""
    return _known(
        {
            "session_id": snapshot.key.session_id,
            "product_id": snapshot.key.product_id,
            "type": "session",
            "source": LIVE_CONTEXT_SOURCE,
            "last_activity_at": snapshot.view.last_activity_at,
        }
    )


def _check_one_source(path: str | Path | None, url: str | None) -> None:
    if (path is None) == (url is None):
        raise ConfigError("pass exactly one event source: path= (a recording) or url= (a stream)")


def iter_events(
    *,
    path: str | Path | None = None,
    url: str | None = None,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
) -> Iterator[Event]:
    """Events from a recording (``path``) or from a live stream window (``url``).

    A live window ends after ``max_events`` events or ``timeout`` seconds,
    whichever comes first; at least one of them is required for a stream.
    """
    _check_one_source(path, url)
    if path is not None:
        for count, event in enumerate(iter_recording(path), 1):
            yield event
            if max_events is not None and count >= max_events:
                return
        return
    assert url is not None
    yield from iter_stream_events(url, token=token, max_events=max_events, timeout=timeout)


async def aiter_events(
    *,
    path: str | Path | None = None,
    url: str | None = None,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
) -> AsyncIterator[Event]:
    """Async twin of :func:`iter_events` (the stream is read natively with httpx's async client).

    A recording is a local file read line by line; its lines are short, so it is
    read without a thread.
    """
    _check_one_source(path, url)
    if path is not None:
        for event in iter_events(path=path, max_events=max_events):
            yield event
        return
    assert url is not None
    async for event in aiter_stream_events(
        url, token=token, max_events=max_events, timeout=timeout
    ):
        yield event


def _wanted(keys: Sequence[SessionKey], product_id: str | None) -> list[SessionKey]:
    return [key for key in keys if product_id is None or key.product_id == product_id]


def snapshot_sessions(
    store: ContextStore | AsyncContextStore,
    *,
    product_id: str | None = None,
    **context_options: Any,
) -> list[SessionSnapshot]:
    """Every live session of ``store`` (of one product, if given), least recently used first.

    ``context_options`` are the store's per-call read options (``lookback_seconds``, …).
    """
    snapshots = []
    for key in _wanted(store.backend.sessions(), product_id):
        view = store.view(key.session_id, key.product_id, **context_options)
        if view is not None and (view.summary or view.actions):
            snapshots.append(SessionSnapshot(key, view))
    return snapshots


async def asnapshot_sessions(
    store: ContextStore | AsyncContextStore,
    *,
    product_id: str | None = None,
    **context_options: Any,
) -> list[SessionSnapshot]:
    """Async twin of :func:`snapshot_sessions`."""
    snapshots = []
    for key in _wanted(await store.backend.asessions(), product_id):
        view = await store.aview(key.session_id, key.product_id, **context_options)
        if view is not None and (view.summary or view.actions):
            snapshots.append(SessionSnapshot(key, view))
    return snapshots


def check_picklable(owner: object, store: object | None) -> None:
    """Refuse to pickle ``owner`` (a loader or a reader) while it holds a store.

    The one refusal every adapter gives (:func:`autoplay_base._store_ref.pickle_refused`);
    LlamaIndex's components would otherwise drop the field with a warning, leaving an
    adapter without a source.
    """
    if store is not None:
        raise pickle_refused(owner, instead="path= or url=")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_source(options: SourceOptions) -> None:
    """The one set of rules for what a loader or a reader reads (``ConfigError`` naming it)."""
    sources = [name for name in ("path", "url", "store") if getattr(options, name) is not None]
    if len(sources) != 1:
        raise ConfigError(
            "pass exactly one source: path= (a recording), url= (a live stream) "
            f"or store= (a snapshot); got {', '.join(sources) or 'none'}"
        )
    max_events = options.max_events
    # Zero events is no window at all: the loader always refused it, the reader now does too.
    if max_events is not None and (not _is_int(max_events) or max_events < 1):
        raise ConfigError(f"max_events must be >= 1 or None (an int), got {max_events!r}")
    timeout = options.timeout
    # ``not timeout > 0`` also refuses NaN, which compares false with everything.
    if timeout is not None and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0
    ):
        raise ConfigError(f"timeout must be > 0 or None (seconds), got {timeout!r}")
    if options.product_id is not None and options.store is None:
        # A stream URL is already one product's; a recording is read as recorded.
        raise ConfigError(
            "product_id= filters store snapshots; it needs store= (a stream URL names its product)"
        )
    if options.url is not None and max_events is None and timeout is None:
        # An unbounded read of a live stream would never return.
        raise ConfigError(
            "a live stream needs a bound, it is read for a bounded window: "
            "pass max_events= or timeout="
        )


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """What a loader or a reader reads, validated when built (``ConfigError`` otherwise).

    Exactly one source: ``path`` (a recording), ``url`` (a live stream, with its
    bearer ``token``; empty: ``AUTOPLAY_APP_UNKEY_TOKEN``) or ``store`` (a
    snapshot). ``max_events`` (an int >= 1) and ``timeout`` (seconds > 0) bound a
    recording or a stream, and a stream needs at least one of them;
    ``product_id`` filters a store snapshot (and needs ``store``);
    ``context_options`` are the store's read options for snapshots
    (``lookback_seconds``, ``max_actions``, …). :meth:`with_call_options` gives
    the options of one call, validated by the same rules.
    """

    path: str | Path | None = None
    url: str | None = None
    token: str = field(default="", repr=False)
    store: ContextStore | AsyncContextStore | None = field(default=None, repr=False)
    max_events: int | None = None
    timeout: float | None = None
    product_id: str | None = None
    context_options: Mapping[str, Any] = field(default_factory=dict)

    PER_CALL: ClassVar[frozenset[str]] = frozenset({"max_events", "timeout", "product_id"})
    """What one call may override (:meth:`with_call_options`)."""

    def __post_init__(self) -> None:
        _check_source(self)
        # Read-only: the options are shared by every call of the adapter that holds them.
        object.__setattr__(self, "context_options", MappingProxyType(dict(self.context_options)))

    @classmethod
    def from_attributes(cls, holder: object, **given: Any) -> SourceOptions:
        """The options named by ``holder``'s attributes of the same names; ``given`` wins.

        How an adapter builds them for each load from its own (reassignable) fields.
        """
        values = {f.name: getattr(holder, f.name) for f in fields(cls) if f.name not in given}
        return cls(**values, **given)

    def with_call_options(self, **overrides: Any) -> SourceOptions:
        """These options with one call's ``max_events``/``timeout``/``product_id``, validated."""
        unknown = set(overrides) - self.PER_CALL
        if unknown:
            raise ConfigError(
                f"unknown load option(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(self.PER_CALL))}"
            )
        return replace(self, **overrides) if overrides else self

    def _window(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "url": self.url,
            "token": self.token,
            "max_events": self.max_events,
            "timeout": self.timeout,
        }

    def events(self) -> Iterator[Event]:
        """The events of the recording or the stream window (:func:`iter_events`)."""
        return iter_events(**self._window())

    def aevents(self) -> AsyncIterator[Event]:
        """Async twin of :meth:`events` (:func:`aiter_events`)."""
        return aiter_events(**self._window())

    def snapshots(self, store: ContextStore | AsyncContextStore) -> list[SessionSnapshot]:
        """:func:`snapshot_sessions` of ``store`` with these options' product and read options.

        ``store`` is this source's store, or one the caller filled from its events.
        """
        return snapshot_sessions(store, product_id=self.product_id, **self.context_options)

    async def asnapshots(self, store: ContextStore | AsyncContextStore) -> list[SessionSnapshot]:
        """Async twin of :meth:`snapshots`."""
        return await asnapshot_sessions(store, product_id=self.product_id, **self.context_options)

    def gathered(self, events: Iterable[Event]) -> list[SessionSnapshot]:
        """Per-session snapshots of ``events``, gathered first in a private in-memory store.

        So a summary replaces the actions it covers exactly as it does live. Unmodelled
        events carry no context: the private store ignores them (callers that want
        them counted or logged filter them out first).
        """
        with ContextStore() as store:
            for event in events:
                store.add(event)
            return self.snapshots(store)

    async def agathered(self, events: AsyncIterable[Event]) -> list[SessionSnapshot]:
        """Async twin of :meth:`gathered`."""
        store = AsyncContextStore()
        try:
            async for event in events:
                await store.add(event)
            return await self.asnapshots(store)
        finally:
            await store.aclose()
