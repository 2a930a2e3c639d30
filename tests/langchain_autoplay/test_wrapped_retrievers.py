"""Any retriever a user has works wrapped, sync and async, with and without extra kwargs."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from rank_bm25 import BM25Okapi

from autoplay_base.context_store import ContextStore
from langchain_autoplay.retrievers import AutoplayRetriever
from tests.langchain_autoplay._support import (
    KB_TEXTS,
    PRODUCT,
    RetrieverRunRecorder,
    actions,
    kb_retriever,
)

QUESTION = "How do I upgrade?"
ENRICHED = "[Session context]\nRecent activity:\n1. Opened billing — /s1\n\n[Query]\n" + QUESTION
DOCS = [Document(page_content=t) for t in KB_TEXTS]


def _echo(query: str, n: int | None = None) -> list[Document]:
    """The query as the first document, then the corpus (``n`` of them)."""
    return [Document(page_content=query), *DOCS[: n if n is not None else len(DOCS)]]


class SyncKwargs(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return _echo(query, k)


class SyncPlain(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return _echo(query)


class AsyncKwargs(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        raise NotImplementedError("async only")

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        return _echo(query, k)


class AsyncPlain(AsyncKwargs):
    async def _aget_relevant_documents(  # type: ignore[override]
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return _echo(query)


class BM25Retriever(BaseRetriever):
    """A small BM25 retriever over the corpus (``rank_bm25``), sync hook only, takes ``k``."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int = 4
    ) -> list[Document]:
        bm25 = BM25Okapi([t.lower().split() for t in KB_TEXTS])
        scores = bm25.get_scores(query.lower().split())
        best = sorted(range(len(KB_TEXTS)), key=lambda i: (-scores[i], i))[:k]
        return [Document(page_content=query), *(DOCS[i] for i in best)]


async def _alambda(query: str) -> list[Document]:
    return _echo(query)


def _k_lambda(query: str, k: int | None = None) -> list[Document]:
    return _echo(query, k)


RETRIEVERS: dict[str, Any] = {
    "sync_kwargs": SyncKwargs,
    "sync_plain": SyncPlain,
    "async_kwargs": AsyncKwargs,
    "async_plain": AsyncPlain,
    "bm25": BM25Retriever,
    "lambda": lambda: RunnableLambda(_echo),
    "lambda_k": lambda: RunnableLambda(_k_lambda),
    "lambda_async": lambda: RunnableLambda(_echo, afunc=_alambda),
    # any other runnable: a sequence ending in a retriever (k is applied here only)
    "sequence": lambda: RunnableLambda(lambda q: q) | SyncPlain(),
}
ASYNC_ONLY = {"async_kwargs", "async_plain"}


@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("name", sorted(RETRIEVERS))
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_every_retriever_works_wrapped(
    store: ContextStore, name: str, mode: str, k: int | None
) -> None:
    if mode == "sync" and name in ASYNC_ONLY:
        pytest.skip("an async-only retriever has no sync call to wrap")
    store.add(actions("s1", "Opened billing"))
    wrapped = AutoplayRetriever(store=store, retriever=RETRIEVERS[name](), k=k)
    config = {"configurable": {"session_id": "s1", "product_id": PRODUCT}}
    if mode == "sync":
        docs = wrapped.invoke(QUESTION, config=config)
    else:
        docs = await wrapped.ainvoke(QUESTION, config=config)
    assert docs[0].page_content == ENRICHED
    assert len(docs) == (k if k is not None else 5 if name == "bm25" else len(DOCS) + 1)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_vector_store_retriever_gets_k_and_extra_kwargs(
    store: ContextStore, mode: str
) -> None:
    store.add(actions("s1", "Opened billing"))
    wrapped = AutoplayRetriever(store=store, retriever=kb_retriever(k=4))
    config = {"configurable": {"session_id": "s1", "product_id": PRODUCT}}
    if mode == "sync":
        docs = wrapped.invoke(QUESTION, config=config, k=2)
        bare = kb_retriever(k=2).invoke(ENRICHED)
    else:
        docs = await wrapped.ainvoke(QUESTION, config=config, k=2)
        bare = await kb_retriever(k=2).ainvoke(ENRICHED)
    assert docs == bare


async def test_sync_only_retriever_keeps_the_k_it_is_given_async(store: ContextStore) -> None:
    # The bug: BaseRetriever's default async hook drops the keyword arguments (TypeError).
    store.add(actions("s1", "Opened billing"))
    wrapped = AutoplayRetriever(store=store, retriever=SyncKwargs(), k=4)
    docs = await wrapped.ainvoke(QUESTION, config={"configurable": {"session_id": "s1"}})
    assert [d.page_content for d in docs] == [ENRICHED, *KB_TEXTS[:3]]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_sync_only_retriever_is_a_child_run(store: ContextStore, mode: str) -> None:
    store.add(actions("s1", "Opened billing"))
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(store=store, retriever=SyncKwargs(), k=2)
    config = {"callbacks": [recorder], "configurable": {"session_id": "s1"}}
    if mode == "sync":
        wrapped.invoke(QUESTION, config=config)
    else:
        await wrapped.ainvoke(QUESTION, config=config)
    (outer, outer_parent, outer_query), (inner, inner_parent, inner_query) = recorder.starts
    assert (outer_parent, outer_query) == (None, QUESTION)
    assert (inner_parent, inner_query) == (outer, ENRICHED)
    assert inner != outer
