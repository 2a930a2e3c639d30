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

Named keys: ``session_key`` / ``product_key`` rename the ``config["configurable"]``
keys (``session_key="autoplay_session_id"`` next to ``RunnableWithMessageHistory``,
whose conversation id is ``configurable["session_id"]``). The keyword arguments keep
their names. A call naming no session, but carrying a key that looks like one
(``sessionId``, ``sid``), is logged once per key name; ``strict=True`` raises
:class:`~autoplay_base.errors.ConfigError` for a call without a session and
:class:`~autoplay_base.errors.SessionLookupError` for a session the store does not
know (the store counts those in ``stats()["sessions_not_found"]`` either way).

Wrapped retrievers: ``k`` is passed on only to a retriever whose hook takes it (a
``k`` parameter or ``**kwargs``: vector store retrievers, most custom ones); the
results are cut to ``k`` here in every case. Other keyword arguments of the call go
to the wrapped retriever unchanged. Async calls use the wrapped retriever's async
hook when it has one; a ``BaseRetriever`` that only implements the sync hook runs
it in an executor with the same keyword arguments (``BaseRetriever``'s own async
default would drop them and raise ``TypeError``).

Copies and serialization: ``copy.deepcopy`` copies the options and shares the store;
``pickle`` raises ``TypeError`` (a live store cannot travel; rebuild the retriever
with a store in the other process); LangChain's ``dumpd`` gives its
``not_implemented`` stub, as for every component that is not serializable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, RetrieverLike
from langchain_core.runnables import RunnableConfig, RunnableLambda, ensure_config
from langchain_core.runnables.config import run_in_executor
from pydantic import Field
from typing_extensions import override

from autoplay_base._store_ref import SharesStore
from autoplay_base.backends.base import SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.formatting import format_enriched, view_text
from langchain_autoplay._documents import context_document, session_documents
from langchain_autoplay._scope import (
    CallScope,
    ScopeKeys,
    lookalike_keys,
    require_found,
    require_session,
    warn_lookalikes,
)

__all__ = ["AutoplayRetriever"]


def _call_options(
    config: RunnableConfig, kwargs: Mapping[str, Any], keys: ScopeKeys
) -> dict[str, Any]:
    """Merge the per-call values of ``config["configurable"]`` (read under ``keys``) under
    the keyword arguments; log lookalike keys when neither names a session."""
    configurable = config.get("configurable") or {}
    merged = dict(kwargs)
    for name, key in (("session_id", keys.session), ("product_id", keys.product), ("k", "k")):
        if name not in merged and configurable.get(key) is not None:
            merged[name] = configurable[key]
    if not merged.get("session_id"):
        warn_lookalikes(lookalike_keys(configurable, keys), keys)
    return merged


@lru_cache(maxsize=256)
def _takes_k(hook: Callable[..., Any]) -> bool:
    """Whether ``hook`` accepts a ``k`` keyword (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "k" and p.kind is not p.POSITIONAL_ONLY)
        for p in parameters
    )


def _runs_sync_hook(retriever: RetrieverLike) -> bool:
    """A ``BaseRetriever`` whose async hook is ``BaseRetriever``'s default (sync only)."""
    return isinstance(retriever, BaseRetriever) and (
        type(retriever)._aget_relevant_documents is BaseRetriever._aget_relevant_documents
    )


def _hook(retriever: RetrieverLike, *, is_async: bool) -> Callable[..., Any] | None:
    """The function a call of ``retriever`` ends in, whose signature says if it takes ``k``."""
    if isinstance(retriever, BaseRetriever):
        if is_async and not _runs_sync_hook(retriever):
            return type(retriever)._aget_relevant_documents
        return type(retriever)._get_relevant_documents
    if isinstance(retriever, RunnableLambda):
        # A lambda built from a coroutine function has ``afunc`` only; without ``afunc``
        # its async call runs ``func`` in an executor, with the same keywords.
        afunc: Callable[..., Any] | None = getattr(retriever, "afunc", None)
        if is_async and afunc is not None:
            return afunc
        func: Callable[..., Any] | None = getattr(retriever, "func", afunc)
        return func
    return None


def _check_k(k: object) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ConfigError(f"k must be an int >= 1, got {k!r}")


def _resolved_product(view: SessionView | None, product_id: str | None) -> str | None:
    """The product the store resolved, so documents carry it even when the call omitted it."""
    if view is not None and view.key is not None:
        return view.key.product_id
    return product_id


class AutoplayRetriever(SharesStore, BaseRetriever):
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
        session_key, product_key: the ``config["configurable"]`` keys the ids are read
            under (default ``session_id``, ``product_id``).
        strict: raise when a call names no session or the store does not know it.
    """

    store: ContextStore | AsyncContextStore
    retriever: RetrieverLike | None = None
    enrich_query: bool = True
    include_context_document: bool = False
    k: int | None = None
    context_options: dict[str, Any] = Field(default_factory=dict)
    session_key: str = "session_id"
    product_key: str = "product_id"
    strict: bool = False

    # Typed rather than ``**data: Any`` so type checkers see the fields (a wrong
    # ``store=`` is a type error); pydantic still validates every value.
    def __init__(
        self,
        *,
        store: ContextStore | AsyncContextStore,
        retriever: RetrieverLike | None = None,
        enrich_query: bool = True,
        include_context_document: bool = False,
        k: int | None = None,
        context_options: Mapping[str, Any] | None = None,
        session_key: str = "session_id",
        product_key: str = "product_id",
        strict: bool = False,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "store": store,
            "retriever": retriever,
            "enrich_query": enrich_query,
            "include_context_document": include_context_document,
            "k": k,
            "context_options": dict(context_options or {}),
            "session_key": session_key,
            "product_key": product_key,
            "strict": strict,
            "tags": tags,
            "metadata": metadata,
            "name": name,
        }
        super().__init__(**fields)
        # Checked after validation rather than in a validator so callers get a
        # ConfigError, not pydantic's ValidationError wrapper.
        _check_k(self.k)
        if self.retriever is not None and not (self.enrich_query or self.include_context_document):
            raise ConfigError(
                "AutoplayRetriever with a wrapped retriever needs enrich_query=True "
                "or include_context_document=True, otherwise it adds nothing"
            )

    @property
    def keys(self) -> ScopeKeys:
        """The ``config["configurable"]`` keys the session and product are read under."""
        return ScopeKeys(self.session_key, self.product_key)

    # -- per-call values ------------------------------------------------------------
    @override
    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return super().invoke(input, config, **_call_options(config, kwargs, self.keys))

    @override
    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        config = ensure_config(config)
        return await super().ainvoke(input, config, **_call_options(config, kwargs, self.keys))

    # -- pure steps around the I/O --------------------------------------------------
    def _limit(self, k: int | None) -> int | None:
        _check_k(k)
        return k if k is not None else self.k

    def _wrapped_query(self, query: str, view: SessionView | None) -> str:
        return format_enriched(view_text(view), query) if self.enrich_query else query

    def _wrapped_kwargs(
        self, k: int | None, kwargs: dict[str, Any], *, is_async: bool
    ) -> dict[str, Any]:
        assert self.retriever is not None
        hook = _hook(self.retriever, is_async=is_async)
        if k is None or hook is None or not _takes_k(hook):
            return kwargs
        return {**kwargs, "k": k}

    def _session(self, session_id: str | None, product_id: str | None) -> CallScope:
        scope = CallScope(session_id or None, product_id)
        if self.strict:
            require_session(scope, self.keys, type(self).__name__)
        return scope

    def _checked(self, view: SessionView | None, scope: CallScope) -> SessionView | None:
        if self.strict and scope.session_id is not None:
            require_found(view, scope.session_id, scope.product_id, type(self).__name__)
        return view

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
        scope = self._session(session_id, product_id)
        view = (
            self.store.view(scope.session_id, product_id, **self.context_options)
            if scope.session_id
            else None
        )
        product_id = _resolved_product(self._checked(view, scope), product_id)
        if self.retriever is None:
            return session_documents(view, session_id or "", product_id, k=limit)
        found = self.retriever.invoke(
            self._wrapped_query(query, view),
            config={"callbacks": run_manager.get_child()},
            **self._wrapped_kwargs(limit, kwargs, is_async=False),
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
        scope = self._session(session_id, product_id)
        view = (
            await self.store.aview(scope.session_id, product_id, **self.context_options)
            if scope.session_id
            else None
        )
        product_id = _resolved_product(self._checked(view, scope), product_id)
        if self.retriever is None:
            return session_documents(view, session_id or "", product_id, k=limit)
        found = await self._ainvoke_wrapped(
            self.retriever,
            self._wrapped_query(query, view),
            run_manager,
            self._wrapped_kwargs(limit, kwargs, is_async=True),
        )
        return self._combine(view, found, session_id or "", product_id, limit)

    @staticmethod
    async def _ainvoke_wrapped(
        retriever: RetrieverLike,
        query: str,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        kwargs: dict[str, Any],
    ) -> list[Document]:
        if _runs_sync_hook(retriever):
            # BaseRetriever's default async hook calls the sync one without the call's
            # keyword arguments; run the sync call itself in the executor instead, under
            # the sync twin of this run (as that default does).
            config: RunnableConfig = {"callbacks": run_manager.get_sync().get_child()}
            found: list[Document] = await run_in_executor(
                config, retriever.invoke, query, config, **kwargs
            )
            return found
        return await retriever.ainvoke(
            query, config={"callbacks": run_manager.get_child()}, **kwargs
        )
