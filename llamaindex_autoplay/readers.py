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
(``reader.load_data(max_events=10)``). The async methods read the stream with
httpx's async client and the store with its async reads; nothing is run in a
thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import Document

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.sources import aiter_events, asnapshot_sessions, iter_events, snapshot_sessions
from llamaindex_autoplay._convert import event_document, snapshot_document

__all__ = ["AutoplayReader"]

_PER_CALL = frozenset({"max_events", "timeout", "product_id"})


class AutoplayReader(BasePydanticReader):
    """Loads connector events (a recording or a live window) or a store snapshot as documents."""

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
        default=None, ge=0, description="Stop after this many events (recording or stream)."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Stop reading the live stream after this many seconds."
    )
    product_id: str | None = Field(
        default=None, description="Snapshot only this product's sessions."
    )
    read_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Store read overrides for snapshots (lookback_seconds, max_actions, ...).",
    )

    def __init__(self, **data: Any) -> None:
        """Validate the fields, then check the source (outside pydantic, so as ``ConfigError``)."""
        super().__init__(**data)
        sources = [name for name in ("path", "url", "store") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ConfigError(
                "pass exactly one source: path= (a recording), url= (a live stream) "
                f"or store= (a snapshot); got {', '.join(sources) or 'none'}"
            )
        if self.url is not None:
            self.is_remote = True
        self._options((), {})  # the constructor's options must work for a call without overrides

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "AutoplayReader"

    def _options(self, args: tuple[Any, ...], overrides: Mapping[str, Any]) -> dict[str, Any]:
        if args:
            raise ConfigError("load options are keyword-only: max_events=, timeout=, product_id=")
        unknown = set(overrides) - _PER_CALL
        if unknown:
            raise ConfigError(
                f"unknown load option(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(sorted(_PER_CALL))}"
            )
        options = {name: overrides.get(name, getattr(self, name)) for name in _PER_CALL}
        max_events, timeout = options["max_events"], options["timeout"]
        if max_events is not None and (not isinstance(max_events, int) or max_events < 0):
            raise ConfigError(f"max_events must be an int >= 0 or None, got {max_events!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"timeout must be > 0 or None, got {timeout!r}")
        if options["product_id"] is not None and self.store is None:
            # A stream URL is already one product's; a recording is read as recorded.
            raise ConfigError("product_id= selects snapshot sessions; it needs store=")
        if self.url is not None and max_events is None and timeout is None:
            # An unbounded read of a live stream would never return from load_data.
            raise ConfigError("a live stream needs a bound: pass max_events= and/or timeout=")
        return options

    def lazy_load_data(self, *args: Any, **overrides: Any) -> Iterator[Document]:
        """Yield documents as the source produces them.

        Keyword overrides for this call: ``max_events``, ``timeout``, ``product_id``.
        """
        options = self._options(args, overrides)
        if self.store is not None:
            for snapshot in snapshot_sessions(
                self.store, product_id=options["product_id"], **self.read_overrides
            ):
                yield snapshot_document(snapshot)
            return
        for event in iter_events(
            path=self.path,
            url=self.url,
            token=self.token,
            max_events=options["max_events"],
            timeout=options["timeout"],
        ):
            yield event_document(event)

    # The base class declares ``alazy_load_data`` as a coroutine returning an iterable,
    # which would have to read the whole window before returning anything; an async
    # generator hands each document over as its event arrives (``async for``).
    async def alazy_load_data(  # type: ignore[override]
        self, *args: Any, **overrides: Any
    ) -> AsyncIterator[Document]:
        """Async twin of :meth:`lazy_load_data`: ``async for doc in reader.alazy_load_data()``."""
        options = self._options(args, overrides)
        if self.store is not None:
            for snapshot in await asnapshot_sessions(
                self.store, product_id=options["product_id"], **self.read_overrides
            ):
                yield snapshot_document(snapshot)
            return
        async for event in aiter_events(
            path=self.path,
            url=self.url,
            token=self.token,
            max_events=options["max_events"],
            timeout=options["timeout"],
        ):
            yield event_document(event)

    def load_data(self, *args: Any, **overrides: Any) -> list[Document]:
        """All documents of the source (a live stream: of the bounded window)."""
        return list(self.lazy_load_data(*args, **overrides))

    async def aload_data(self, *args: Any, **overrides: Any) -> list[Document]:
        """Async twin of :meth:`load_data`."""
        return [doc async for doc in self.alazy_load_data(*args, **overrides)]
