"""The LangChain side composes no ids: tenants whose ids share separators stay apart.

LangChain documents built by the adapters carry no ``id`` (a vector store assigns
its own), and the metadata keeps ``product_id`` and ``session_id`` as separate
keys, so ``("a:b", "c")`` and ``("a", "b:c")`` can never be mistaken for each
other. A guard: this held before the hardening round and must keep holding.
"""

from __future__ import annotations

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from autoplay_base.context_store import ContextStore
from autoplay_base.events import ActionsPayload, SlimAction
from langchain_autoplay.document_loaders import AutoplayLoader
from langchain_autoplay.retrievers import AutoplayRetriever

TENANTS = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("", "a:b:c")]


def _store() -> ContextStore:
    store = ContextStore()
    for product, session in TENANTS:
        store.add(
            ActionsPayload(
                product_id=product,
                session_id=session,
                actions=(
                    SlimAction(title="t", description=f"{product}|{session}", canonical_url=""),
                ),
                forwarded_at=1.0,
            )
        )
    return store


def test_loader_documents_keep_tenants_apart_in_a_vector_store() -> None:
    docs = AutoplayLoader(store=_store()).load()
    assert [doc.id for doc in docs] == [None] * len(TENANTS)
    assert [(d.metadata["product_id"], d.metadata["session_id"]) for d in docs] == TENANTS
    assert [d.page_content for d in docs] == [f"Recent activity:\n1. {p}|{s}" for p, s in TENANTS]
    vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    ids = vectors.add_documents(docs)
    assert len(set(ids)) == len(TENANTS)
    stored = vectors.get_by_ids(ids)
    assert sorted(d.page_content for d in stored) == sorted(d.page_content for d in docs)


def test_retriever_documents_name_their_own_tenant() -> None:
    retriever = AutoplayRetriever(store=_store())
    for product, session in TENANTS:
        docs = retriever.invoke("q", session_id=session, product_id=product)
        assert [(d.id, d.metadata["product_id"], d.metadata["session_id"]) for d in docs] == [
            (None, product, session)
        ]
        assert docs[0].page_content == f"{product}|{session}"
