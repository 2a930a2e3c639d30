"""``AutoplayReader``: connector activity as LlamaIndex ``Document`` objects.

Three sources, exactly one per reader:

* ``path=`` a recorded JSONL file (:mod:`autoplay_base.recording`), one
  document per event;
* ``url=`` the live stream, read for a bounded window (``max_events`` and/or
  ``timeout`` seconds), one document per event;
* ``store=`` a snapshot of a context store, one document per live session
  (its summary and recent actions as ``ContextStore.get`` formats them).

Event documents carry ``text = event.to_text()`` and the metadata
``session_id, product_id, user_id, event_id, type, forwarded_at`` (ids and
times are hidden from embeddings and the LLM). Their ids derive from
``(product_id, event_id)``, so loading the same window again into an
``IngestionPipeline`` with a docstore updates documents instead of duplicating
them; each part is escaped (``autoplay-event:a%3Ab:7``), so two tenants never
share an id. Everything the LLM or the embedding sees, text and shown metadata,
is cleaned untrusted text: one line per field, no controls or invisible
characters (:mod:`autoplay_base.formatting`). The output feeds
``VectorStoreIndex.from_documents`` directly::

    reader = AutoplayReader(url=STREAM_URL, token=TOKEN, max_events=100, timeout=30)
    index = VectorStoreIndex.from_documents(reader.load_data())

``max_events``, ``timeout`` and ``product_id`` can be overridden per call
(``reader.load_data(max_events=10)``); ``context_options`` (formerly
``read_overrides``, still accepted) are the store's read options for snapshots.
The async methods read the stream with httpx's async client and the store with
its async reads; nothing is run in a thread.

A connector that is down is an error, not zero documents: when a window ends by
its ``timeout`` and the connector never answered 200 with an event stream
(connection refused, no answer, 5xx throughout), ``load_data`` raises
:class:`~autoplay_base.errors.ConnectorError`; 401/403/404 raise at once. A
connector that answered but sent nothing within the window is a quiet stream:
``load_data`` returns ``[]``.

Copies and serialization: ``to_dict``/``to_json`` (and ``from_dict``/``from_json``)
round-trip the configuration, never the token nor the store (pass it back:
``AutoplayReader.from_dict(data, store=store)``); ``pickle`` and ``copy.deepcopy``
carry the configuration and the token, and a copy shares the original's store,
while pickling a reader that holds a store raises ``TypeError`` (a store is a
live resource; the rule is :mod:`autoplay_base.sources`').
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import Document
from typing_extensions import Self

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.sources import SourceOptions, check_picklable, share_store
from llamaindex_autoplay._convert import event_document, snapshot_document
from llamaindex_autoplay._fields import ReadOverridesAlias, context_options_field

__all__ = ["AutoplayReader"]


class AutoplayReader(ReadOverridesAlias, BasePydanticReader):
    """Loads connector events (a recording or a live window) or a store snapshot as documents.

    The source options are checked by :class:`~autoplay_base.sources.SourceOptions`,
    the same rules as ``langchain_autoplay.AutoplayLoader``'s (``ConfigError`` naming
    the option).
    """

    path: str | None = Field(default=None, description="A recorded JSONL stream to read.")
    url: str | None = Field(default=None, description="The connector stream URL to read live.")
    token: str = Field(
        default="",
        exclude=True,
        repr=False,
        description="Stream bearer token (empty: $AUTOPLAY_APP_UNKEY_TOKEN). Never serialized.",
    )
    store: ContextStore | AsyncContextStore | None = Field(
        default=None, exclude=True, description="A context store to snapshot, one doc per session."
    )
    max_events: int | None = Field(
        default=None, description="Stop after this many events, >= 1 (recording or stream)."
    )
    timeout: float | None = Field(
        default=None, description="Stop reading the live stream after this many seconds (> 0)."
    )
    product_id: str | None = Field(
        default=None, description="Snapshot only this product's sessions."
    )
    context_options: dict[str, Any] = context_options_field(
        "Store read options for snapshots (lookback_seconds, max_actions, ...); "
        "also accepted as read_overrides."
    )

    # An explicit signature, not ``**data: Any``: type checkers and IDEs see every
    # option and its type (pydantic's own would be hidden by an override).
    def __init__(
        self,
        *,
        path: str | None = None,
        url: str | None = None,
        token: str = "",
        store: ContextStore | AsyncContextStore | None = None,
        max_events: int | None = None,
        timeout: float | None = None,
        product_id: str | None = None,
        context_options: Mapping[str, Any] | None = None,
        read_overrides: Mapping[str, Any] | None = None,
        is_remote: bool = False,
    ) -> None:
        """Check the source options, then validate the fields.

        ``read_overrides`` is the former name of ``context_options``; ``is_remote``
        is LlamaIndex's flag, set from ``url`` (accepted so ``from_dict`` round-trips).
        """
        source: dict[str, Any] = {
            "path": path,
            "url": url,
            "token": token,
            "store": store,
            "max_events": max_events,
            "timeout": timeout,
            "product_id": product_id,
        }
        # Checked on the values as given, before pydantic coerces them (it would turn
        # ``max_events=True`` into 1), so the reader and the loader refuse the same values.
        SourceOptions(**source)
        options = {"context_options": context_options, "read_overrides": read_overrides}
        given = {name: dict(value) for name, value in options.items() if value is not None}
        super().__init__(**source, **given, is_remote=is_remote or url is not None)

    # -- copies and serialization (the rule: autoplay_base.sources) ----------------------
    def __getstate__(self) -> dict[Any, Any]:
        """Pickle the configuration; a reader holding a store refuses (``TypeError``)."""
        check_picklable(self, self.store)
        state: dict[Any, Any] = super().__getstate__()
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy of the configuration that shares the original's store."""
        memo = {} if memo is None else memo
        share_store(memo, self.store)
        return super().__deepcopy__(memo)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "AutoplayReader"

    def _source(self, args: tuple[Any, ...], overrides: Mapping[str, Any]) -> SourceOptions:
        if args:
            raise ConfigError("load options are keyword-only: max_events=, timeout=, product_id=")
        # Built from the fields on every call (they may have been reassigned since).
        return SourceOptions.from_attributes(self).with_call_options(**overrides)

    def lazy_load_data(self, *args: Any, **overrides: Any) -> Iterator[Document]:
        """Yield documents as the source produces them.

        Keyword overrides for this call: ``max_events``, ``timeout``, ``product_id``.
        """
        source = self._source(args, overrides)
        if source.store is not None:
            yield from map(snapshot_document, source.snapshots(source.store))
            return
        yield from map(event_document, source.events())

    # The base class declares ``alazy_load_data`` as a coroutine returning an iterable,
    # which would have to read the whole window before returning anything; an async
    # generator hands each document over as its event arrives (``async for``).
    async def alazy_load_data(  # type: ignore[override]
        self, *args: Any, **overrides: Any
    ) -> AsyncIterator[Document]:
        """Async twin of :meth:`lazy_load_data`: ``async for doc in reader.alazy_load_data()``."""
        source = self._source(args, overrides)
        if source.store is not None:
            for snapshot in await source.asnapshots(source.store):
                yield snapshot_document(snapshot)
            return
        async for event in source.aevents():
            yield event_document(event)

    def load_data(self, *args: Any, **overrides: Any) -> list[Document]:
        """All documents of the source (a live stream: of the bounded window)."""
        return list(self.lazy_load_data(*args, **overrides))

    async def aload_data(self, *args: Any, **overrides: Any) -> list[Document]:
        """Async twin of :meth:`load_data`."""
        return [doc async for doc in self.alazy_load_data(*args, **overrides)]
