"""LlamaIndex components: strict mode, serialization with store=, copies and pickles."""

from __future__ import annotations

import copy
import pickle

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from autoplay_base.context_store import ContextStore
from autoplay_base.errors import ConfigError, SessionNotFoundError
from autoplay_base.events import ActionsPayload, SlimAction
from llamaindex_autoplay.memory import AutoplayMemoryBlock
from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor
from llamaindex_autoplay.session import autoplay_session


@pytest.fixture
def live() -> ContextStore:
    store = ContextStore()
    store.add(
        ActionsPayload(
            product_id="acme",
            session_id="s1",
            actions=(SlimAction("Billing", "Opened billing", "/billing"),),
            forwarded_at=1.0,
        )
    )
    return store


async def test_strict_postprocessor_and_memory_block(live: ContextStore) -> None:
    post = AutoplayNodePostprocessor(store=live, strict=True)
    block = AutoplayMemoryBlock(store=live, strict=True, use_memory_session_id=False)
    nodes = [NodeWithScore(node=TextNode(text="x"), score=0.5)]
    with pytest.raises(ConfigError, match=r"\(strict=True\)"):
        post.postprocess_nodes(nodes, QueryBundle("q"))
    with pytest.raises(ConfigError, match=r"\(strict=True\)"):
        await block.aget()
    with autoplay_session("nope", product_id="acme"):
        with pytest.raises(SessionNotFoundError, match="no live context for session 'nope'"):
            post.postprocess_nodes(nodes, QueryBundle("q"))
        with pytest.raises(SessionNotFoundError, match="no live context for session 'nope'"):
            await block.aget()
    with autoplay_session("s1", product_id="acme"):
        assert len(post.postprocess_nodes(nodes, QueryBundle("q"))) == 2
        assert await block.aget() == "Recent activity:\n1. Opened billing — /billing"
    assert live.stats()["sessions_not_found"] == 2


def test_postprocessor_round_trips_with_the_store(live: ContextStore) -> None:
    component = AutoplayNodePostprocessor(store=live, boost_weight=0.2, session_id="s1")
    data = component.to_dict()
    with pytest.raises(ConfigError, match=r"from_dict\(data, store=store\)"):
        type(component).from_dict(data)
    again = type(component).from_dict(data, store=live)
    assert again.store is live
    assert again.to_dict() == data
    clone = copy.deepcopy(component)
    assert clone.store is live and clone.to_dict() == data
    with pytest.raises(TypeError, match="holds a live context store, which cannot be pickled"):
        pickle.dumps(component)


def test_memory_block_copies_share_the_store(live: ContextStore) -> None:
    block = AutoplayMemoryBlock(store=live, product_id="acme", context_options={"max_actions": 2})
    clone = copy.deepcopy(block)
    assert clone.store is live and clone.context_options == {"max_actions": 2}
    with pytest.raises(TypeError, match="holds a live context store, which cannot be pickled"):
        pickle.dumps(block)
