"""``AutoplayLoader``: connector activity as LangChain documents, for ingestion pipelines.

This is the path ``autoplay-sdk`` calls ``RagPipeline``: loader → splitter → any
vector store::

    docs = AutoplayLoader(path="session.jsonl").load()                 # a recording
    docs = AutoplayLoader(url=STREAM_URL, token=TOKEN, max_events=500).load()  # a live window
    docs = AutoplayLoader(store=store, product_id="acme").load()      # a store snapshot
    vectorstore.add_documents(splitter.split_documents(docs))

Per event (the default for recordings and streams) each document's
``page_content`` is the payload's ``to_text()`` and its metadata is
``session_id, product_id, user_id, event_id, type, forwarded_at``. Per session
(``per="session"``, the only choice for a store snapshot) each document is a
session's context as ``ContextStore.get`` formats it, with ``session_id,
product_id, type="session", source, last_activity_at``; for a recording or a
stream the events are first gathered in a private in-memory store, so a summary
replaces the actions it covers exactly as it does live (and the documents come
once the source is exhausted).

Connector text is untrusted: ``page_content`` is laid out and cleaned by
:mod:`autoplay_base.formatting` (each field stays on its line), and every string
metadata value is cleaned the same way, since a ``document_prompt`` may show it.
Documents carry no ``id``; the ids in the metadata are separate keys.

Event types this package does not model (``usertour_trigger``, …) are skipped
unless ``include_unknown=True``; skips are counted in :attr:`AutoplayLoader.skipped`
and logged. A live window needs ``max_events`` or ``timeout``.

A connector that is down is an error, not an empty load: when a window ends by
its ``timeout`` and the connector never answered 200 with an event stream
(connection refused, no answer, 5xx throughout), loading raises
:class:`~autoplay_base.errors.ConnectorError`, so an ingestion job cannot
"succeed" with zero documents; 401/403/404 raise at once. A connector that
answered but sent nothing within the window is a quiet stream: the load is
``[]``.

``pickle`` and ``copy.deepcopy`` carry a loader's configuration and token; a copy
shares the original's store, and pickling a loader that holds a store raises
``TypeError`` (a store is a live resource; the rule is :mod:`autoplay_base.sources`').
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document
from typing_extensions import override

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError, MissingDependencyError
from autoplay_base.events import Event, UnknownEvent
from autoplay_base.sources import SessionSnapshot, SourceOptions, check_picklable, share_store
from langchain_autoplay._documents import event_document, snapshot_document

__all__ = ["AutoplayLoader", "LoadUnit"]

logger = logging.getLogger(__name__)

LoadUnit = Literal["event", "session"]
"""What one document stands for."""


class _Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> None: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


class _Bar:
    """A progress bar around one load (tqdm, imported only when asked for)."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self._bar: _Progress = _NoProgress()
        if enabled:
            try:
                # Imported by name: optional, and untyped (no stubs needed for mypy).
                tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError as exc:
                raise MissingDependencyError(
                    "show_progress=True needs tqdm; install it with pip install tqdm"
                ) from exc
            self._bar = tqdm(total=total, desc="autoplay documents", unit="doc")

    def __enter__(self) -> _Bar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()

    def tick(self, doc: Document) -> Document:
        self._bar.update(1)
        return doc


def _unit(per: LoadUnit | None, *, has_store: bool) -> LoadUnit:
    """The document unit; the source options themselves are :class:`SourceOptions`' to check."""
    unit: LoadUnit = per if per is not None else ("session" if has_store else "event")
    if unit not in ("event", "session"):
        raise ConfigError(f"per must be 'event' or 'session', got {per!r}")
    if has_store and unit == "event":
        raise ConfigError("a store snapshot holds sessions, not events: use per='session'")
    return unit


class AutoplayLoader(BaseLoader):
    """Load connector events or session contexts as documents (see the module docstring).

    Exactly one source:

    Args:
        path: a recorded ``.jsonl`` stream (:mod:`autoplay_base.recording` format).
        url: a connector stream URL (``GET /stream/{product_id}``), read for a
            bounded window; ``token`` is its bearer token (empty: the
            ``AUTOPLAY_APP_UNKEY_TOKEN`` environment variable).
        store: a :class:`~autoplay_base.context_store.ContextStore` or
            :class:`~autoplay_base.context_store.AsyncContextStore` to snapshot.

    Options:
        per: ``"event"`` or ``"session"`` (default: ``"session"`` for a store,
            ``"event"`` otherwise).
        max_events: stop after this many events, an int >= 1 (recordings and streams).
        timeout: stop a live window after this many seconds (> 0).
        product_id: only this product's sessions (store snapshots).
        context_options: the store's read options for per-session documents
            (``lookback_seconds``, ``max_actions``, …).

    The source options are checked by :class:`~autoplay_base.sources.SourceOptions`,
    the same rules as ``llamaindex_autoplay.AutoplayReader``'s (``ConfigError``).
        include_unknown: also yield events of unmodelled types (their raw JSON).
        show_progress: show a tqdm progress bar (needs ``tqdm``).
    """

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        token: str = "",
        store: ContextStore | AsyncContextStore | None = None,
        per: LoadUnit | None = None,
        max_events: int | None = None,
        timeout: float | None = None,
        product_id: str | None = None,
        context_options: Mapping[str, Any] | None = None,
        include_unknown: bool = False,
        show_progress: bool = False,
    ) -> None:
        self.path = path
        self.url = url
        self._token = token
        self.store = store
        self.max_events = max_events
        self.timeout = timeout
        self.product_id = product_id
        self.context_options = dict(context_options or {})
        self._source()  # the same checks as the LlamaIndex reader's (ConfigError)
        self.per: LoadUnit = _unit(per, has_store=store is not None)
        self.include_unknown = include_unknown
        self.show_progress = show_progress
        self.skipped = 0
        """Events not turned into documents (unmodelled types), over every load."""

    def __repr__(self) -> str:
        source = (
            f"path={self.path!r}"
            if self.path is not None
            else (f"url={self.url!r}" if self.url is not None else f"store={self.store!r}")
        )
        return f"AutoplayLoader({source}, per={self.per!r})"

    # -- copies and pickles (the rule: autoplay_base.sources) ---------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration; a loader holding a store refuses (``TypeError``)."""
        check_picklable(self, self.store)
        return self.__dict__.copy()

    def __copy__(self) -> AutoplayLoader:
        """A shallow copy (the store is shared); not through pickling's ``__getstate__``."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> AutoplayLoader:
        """A deep copy of the configuration that shares the original's store."""
        share_store(memo, self.store)
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

    # -- pure steps ---------------------------------------------------------------------
    def _source(self) -> SourceOptions:
        # Built from the attributes on every load (they may have been reassigned since).
        return SourceOptions.from_attributes(self, token=self._token)

    def _keep(self, event: Event) -> bool:
        """Whether ``event`` becomes (part of) a document; counts and logs the ones that don't.

        Unmodelled events become documents only per event, and only with
        ``include_unknown``: they carry no context a session document could show.
        """
        if not isinstance(event, UnknownEvent) or (self.include_unknown and self.per == "event"):
            return True
        self.skipped += 1
        logger.info("loader: skipped an event of unmodelled type %r", event.type)
        return False

    def _bar(self) -> _Bar:
        total = self.max_events if self.per == "event" else None
        return _Bar(self.show_progress, total)

    def _snapshots(self, source: SourceOptions) -> list[SessionSnapshot]:
        if source.store is not None:
            return source.snapshots(source.store)
        return source.gathered(e for e in source.events() if self._keep(e))

    async def _asnapshots(self, source: SourceOptions) -> list[SessionSnapshot]:
        if source.store is not None:
            return await source.asnapshots(source.store)
        return await source.agathered(e async for e in source.aevents() if self._keep(e))

    # -- the hooks ----------------------------------------------------------------------
    @override
    def lazy_load(self) -> Iterator[Document]:
        """Documents one by one (per session: once the source is exhausted)."""
        source = self._source()
        with self._bar() as bar:
            if self.per == "event":
                for event in source.events():
                    if self._keep(event):
                        yield bar.tick(event_document(event))
                return
            for snapshot in self._snapshots(source):
                yield bar.tick(snapshot_document(snapshot))

    @override
    async def alazy_load(self) -> AsyncIterator[Document]:
        """Async twin of :meth:`lazy_load` (streams are read with httpx's async client)."""
        source = self._source()
        with self._bar() as bar:
            if self.per == "event":
                async for event in source.aevents():
                    if self._keep(event):
                        yield bar.tick(event_document(event))
                return
            for snapshot in await self._asnapshots(source):
                yield bar.tick(snapshot_document(snapshot))
