"""``AutoplayRetriever``: any LangChain retriever, aware of what the user is doing right now.

Wrap an existing retriever and pass the session per call::

    retriever = AutoplayRetriever(store=store, retriever=vectorstore.as_retriever())
    docs = retriever.invoke(
        "How do I add a team member?",
        config={"configurable": {"session_id": "ps_abc", "product_id": "acme"}},
    )

The wrapped retriever then receives ``store.enrich(session_id, query)``: the
user's live context (``[Session context]`` … ``[Query]`` …) followed by the
question, so a lexical or vector search matches the pages the user is on. With
``include_context_document=True`` one more :class:`~langchain_core.documents.Document`
holding the context itself comes first (``metadata["source"] ==
"autoplay_live_context"``). Without a wrapped retriever the session's context is
returned as documents (summary, then one per recent action).

Per-call values only: ``session_id``, ``product_id`` and ``k`` come from the
call's keyword arguments or ``config["configurable"]`` (keywords win), never
from the instance, so one retriever serves every user concurrently. A call
without a session id is exactly the wrapped retriever's call. When
``product_id`` is omitted the store resolves it if the session id exists under
one product and raises :class:`~autoplay_base.errors.AmbiguousSessionError` if
it exists under several.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, RetrieverLike
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import Field
from typing_extensions import override

from autoplay_base.backends.base import SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.formatting import format_enriched, view_text
from langchain_autoplay._documents import context_document, session_documents

__all__ = ["AutoplayRetriever"]

_CALL_OPTIONS = ("session_id", "product_id", "k")
"""Per-call values read from ``config["configurable"]`` when not passed as keywords."""


def _call_options(config: RunnableConfig, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the per-call values of ``config["configurable"]`` under the keyword arguments."""
    configurable = config.get("configurable") or {}
    merged = dict(kwargs)
    for name in _CALL_OPTIONS:
        if name not in merged and configurable.get(name) is not None:
            merged[name] = configurable[name]
    return merged


def _check_k(k: object) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ConfigError(f"k must be an int >= 1, got {k!r}")


def _resolved_product(view: SessionView | None, product_id: str | None) -> str | None:
    """The product the store resolved, so documents carry it even when the call omitted it."""
    if view is not None and view.key is not None:
        return view.key.product_id
    return product_id


class AutoplayRetriever(BaseRetriever):
    """A retriever that adds the user's live session context to every query.

    Args:
        store: the :class:`~autoplay_base.context_store.ContextStore` or
            :class:`~autoplay_base.context_store.AsyncContextStore` to read. Sync
            calls use ``store.view``, async calls ``store.aview``.
        retriever: the retriever to wrap (anything ``Runnable[str, list[Document]]``:
            a vector store's ``as_retriever()``, BM25, an ensemble). ``None``
            returns the session's context as documents instead.
        enrich_query: send the wrapped retriever the enriched query (default).
        include_context_document: put one document with the whole live context
            first in the results.
        k: default cap on the number of documents returned (the context document
            included); ``k=`` on a call overrides it, and it is also passed to
            the wrapped retriever as its ``k``.
        context_options: store read overrides applied to every call
            (``lookback_seconds``, ``max_actions``, ``include_summary``, …).
    """

    store: ContextStore | AsyncContextStore
    retriever: RetrieverLike | None = None
    enrich_query: bool = True
    include_context_document: bool = False
    k: int | None = None
    context_options: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # Checked after validation rather than in a validator so callers get a
        # ConfigError, not pydantic's ValidationError wrapper.
        _check_k(self.k)
        if self.retriever is not None and not (self.enrich_query or self.include_context_document):
            raise ConfigError(
                "AutoplayRetriever with a wrapped retriever needs enrich_query=True "
                "or include_context_document=True, otherwise it adds nothing"
            )

    # -- per-call values ------------------------------------------------------------
    @override
    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return super().invoke(input, config, **_call_options(config, kwargs))

    @override
    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return await super().ainvoke(input, config, **_call_options(config, kwargs))

    # -- pure steps around the I/O --------------------------------------------------
    def _limit(self, k: int | None) -> int | None:
        _check_k(k)
        return k if k is not None else self.k

    def _wrapped_query(self, query: str, view: SessionView | None) -> str:
        return format_enriched(view_text(view), query) if self.enrich_query else query

    @staticmethod
    def _wrapped_kwargs(k: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "k": k} if k is not None else kwargs

    def _combine(
        self,
        view: SessionView | None,
        found: list[Document],
        session_id: str,
        product_id: str | None,
        k: int | None,
    ) -> list[Document]:
        docs = list(found)
        context = view_text(view)
        if self.include_context_document and context:
            docs.insert(0, context_document(context, session_id, product_id))
        return docs[:k] if k is not None else docs

    # -- the hooks --------------------------------------------------------------------
    @override
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        session_id: str | None = None,
        product_id: str | None = None,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        limit = self._limit(k)
        view = (
            self.store.view(session_id, product_id, **self.context_options) if session_id else None
        )
        product_id = _resolved_product(view, product_id)
        if self.retriever is None:
            return session_documents(view, session_id or "", product_id, k=limit)
        found = self.retriever.invoke(
            self._wrapped_query(query, view),
            config={"callbacks": run_manager.get_child()},
            **self._wrapped_kwargs(limit, kwargs),
        )
        return self._combine(view, found, session_id or "", product_id, limit)

    @override
    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        session_id: str | None = None,
        product_id: str | None = None,
        k: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        limit = self._limit(k)
        view = (
            await self.store.aview(session_id, product_id, **self.context_options)
            if session_id
            else None
        )
        product_id = _resolved_product(view, product_id)
        if self.retriever is None:
            return session_documents(view, session_id or "", product_id, k=limit)
        found = await self.retriever.ainvoke(
            self._wrapped_query(query, view),
            config={"callbacks": run_manager.get_child()},
            **self._wrapped_kwargs(limit, kwargs),
        )
        return self._combine(view, found, session_id or "", product_id, limit)
