"""The exact text a prompt sees, pinned through the store, the retriever and the LlamaIndex
postprocessor (one scenario, written out by hand: a formatting change shows up here).

The input is awkward on purpose: a description with a line break, the stored lines'
field separator and its own `` — ``; an action with no description and no URL (its
title stands in); a summary with a bidirectional override. Every adapter must show
the same cleaned text, laid out by ``autoplay_base.formatting`` alone.
"""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.events import ActionsPayload, SlimAction, SummaryPayload
from langchain_autoplay.retrievers import AutoplayRetriever
from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor
from tests.langchain_autoplay._support import RetrieverRunRecorder, fill, kb_retriever

QUERY = "How do I add a team member?"
BODY = (
    "Summary: User is upgrading.\n"
    "\n"
    "Recent activity:\n"
    "1. Opened billing settings — tab — /settings/billing\n"
    "2. Upgrade plan"
)
BLOCK = f"[Session context]\n{BODY}"
ENRICHED = f"{BLOCK}\n\n[Query]\n{QUERY}"

PAYLOADS = (
    ActionsPayload(
        product_id="acme",
        session_id="s1",
        actions=(
            SlimAction("Billing", "Opened\nbilling\x1f settings — tab", "/settings/billing"),
            SlimAction("Upgrade  plan", "", ""),
        ),
        forwarded_at=1.0,
    ),
    SummaryPayload(
        product_id="acme", session_id="s1", summary="User is\u202e upgrading.", forwarded_at=2.0
    ),
)

MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
async def test_store_text(any_store: ContextStore | AsyncContextStore, mode: str) -> None:
    await fill(any_store, *PAYLOADS)
    if mode == "sync":
        assert any_store.get("s1", "acme") == BODY
        assert any_store.enrich("s1", QUERY, "acme") == ENRICHED
    else:
        assert await any_store.aget("s1", "acme") == BODY
        assert await any_store.aenrich("s1", QUERY, "acme") == ENRICHED


@MODES
async def test_retriever_text(any_store: ContextStore | AsyncContextStore, mode: str) -> None:
    await fill(any_store, *PAYLOADS)
    recorder = RetrieverRunRecorder()
    retriever = AutoplayRetriever(
        store=any_store, retriever=kb_retriever(k=1), include_context_document=True
    )
    config = {"callbacks": [recorder], "configurable": {"session_id": "s1", "product_id": "acme"}}
    if mode == "sync":
        docs = retriever.invoke(QUERY, config=config)
    else:
        docs = await retriever.ainvoke(QUERY, config=config)
    # The wrapped retriever's query, then the context document's text.
    assert [query for _, _, query in recorder.starts] == [QUERY, ENRICHED]
    assert docs[0].page_content == BODY
    bare = AutoplayRetriever(store=any_store)
    if mode == "sync":
        parts = bare.invoke(QUERY, config=config)
    else:
        parts = await bare.ainvoke(QUERY, config=config)
    assert [d.page_content for d in parts] == [
        "User is upgrading.",
        "Opened billing settings — tab — /settings/billing",
        "Upgrade plan",
    ]


@MODES
async def test_postprocessor_text(any_store: ContextStore | AsyncContextStore, mode: str) -> None:
    await fill(any_store, *PAYLOADS)
    live = AutoplayNodePostprocessor(
        store=any_store, session_id="s1", product_id="acme", boost_weight=0.5
    )
    page = NodeWithScore(node=TextNode(text="Billing help", metadata={"url": "/settings/billing"}))
    other = NodeWithScore(node=TextNode(text="Other", metadata={"url": "/other"}), score=0.4)
    bundle = QueryBundle(QUERY)
    if mode == "sync":
        nodes = live.postprocess_nodes([other, page], bundle)
    else:
        nodes = await live.apostprocess_nodes([other, page], bundle)
    assert [n.node.get_content() for n in nodes] == [BLOCK, "Billing help", "Other"]
    # The URL was read back from the display line, past the description's own dash.
    assert [n.score for n in nodes] == [1.0, 0.5, 0.4]
