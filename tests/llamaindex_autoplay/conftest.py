"""Fixtures for the LlamaIndex adapter tests: fake models, a filled store, a docs index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from tests.llamaindex_autoplay._corpus import FakeClock, docs, fill


@pytest.fixture(autouse=True)
def fake_models() -> Iterator[None]:
    """MockLLM (echoes its prompt) and MockEmbedding for every test; the old ones come back."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=EMBED_DIM)
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model = saved


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> InMemoryBackend:
    return InMemoryBackend(clock=clock)


@pytest.fixture
def store(backend: InMemoryBackend, clock: FakeClock) -> ContextStore:
    """A sync store holding Alice, Bob and Carol (see ``_corpus.fill``)."""
    filled = ContextStore(backend=backend, clock=clock)
    fill(filled)
    return filled


@pytest.fixture(params=["ContextStore", "AsyncContextStore"])
def any_store(
    request: pytest.FixtureRequest, store: ContextStore, backend: InMemoryBackend, clock: FakeClock
) -> ContextStore | AsyncContextStore:
    """Either store flavour over the same filled backend."""
    if request.param == "ContextStore":
        return store
    return AsyncContextStore(backend=backend, clock=clock)


EMBED_DIM = 8


@pytest.fixture
def index() -> VectorStoreIndex:
    """The four docs in an in-memory vector index, retrieved in ``DOC_IDS`` order.

    MockEmbedding embeds every query as a constant vector; each doc gets a fixed
    vector further from it than the one before (cosine 1.0, 0.94, 0.87, 0.79), so
    similarity scores are distinct and the retrieval order is deterministic.
    """
    nodes = docs()
    for i, node in enumerate(nodes):
        node.embedding = [1.0] * (EMBED_DIM - i) + [0.0] * i
    return VectorStoreIndex(nodes)
