"""AutoplayNodePostprocessor inside real LlamaIndex query engines, chat engines and tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import RetrieverTool

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousSessionError, ConfigError
from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor, AutoplayQueryBundle
from llamaindex_autoplay.session import autoplay_session
from tests.llamaindex_autoplay._corpus import (
    ACME,
    ALICE_CONTEXT,
    BOB_CONTEXT,
    CAROL_ACME_CONTEXT,
    CAROL_GLOBEX_CONTEXT,
    DOC_IDS,
    GLOBEX,
    FakeClock,
    actions,
    context_id,
    docs,
    fill,
)

QUESTION = "How do I change my plan?"
WAIT = 10.0  # seconds a synchronisation point may take before the test fails


def live(store: ContextStore | AsyncContextStore, **fields: Any) -> AutoplayNodePostprocessor:
    return AutoplayNodePostprocessor(store=store, **fields)


def ids(nodes: Sequence[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


def first_text(nodes: Sequence[NodeWithScore]) -> str:
    return nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)


def engine(index: VectorStoreIndex, *postprocessors: BaseNodePostprocessor) -> Any:
    return index.as_query_engine(similarity_top_k=4, node_postprocessors=list(postprocessors))


class AsyncGate(BaseNodePostprocessor):
    """Holds every async query until ``parties`` of them are in flight, then lets all through."""

    parties: int
    arrived: int = 0
    event: asyncio.Event

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        raise AssertionError("the async path must not call the sync hook")

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        self.arrived += 1
        if self.arrived == self.parties:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), WAIT)
        return nodes


class ThreadGate(BaseNodePostprocessor):
    """Holds every sync query until ``barrier.parties`` threads are inside the engine."""

    barrier: threading.Barrier

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        self.barrier.wait(WAIT)
        return nodes


class SyncViewForbidden(ContextStore):
    """A real store whose sync read path fails, to prove the async hooks never take it."""

    def view(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync store read on the async path")


class TestQueryEngine:
    def test_context_node_comes_first_with_the_exact_context(
        self, index: VectorStoreIndex, any_store: ContextStore | AsyncContextStore
    ) -> None:
        response = engine(index, live(any_store, session_id="ps_alice", product_id=ACME)).query(
            QUESTION
        )
        assert ids(response.source_nodes) == [context_id("ps_alice"), *DOC_IDS]
        context = response.source_nodes[0]
        assert first_text(response.source_nodes) == ALICE_CONTEXT
        assert context.node.get_content(metadata_mode=MetadataMode.EMBED) == ALICE_CONTEXT
        assert context.score == 1.0
        assert context.node.metadata == {
            "source": "autoplay_live_context",
            "session_id": "ps_alice",
            "product_id": ACME,
        }
        # MockLLM answers with its prompt: the context reaches the LLM once, before the docs.
        prompt = str(response)
        assert prompt.count(ALICE_CONTEXT) == 1
        assert prompt.index(ALICE_CONTEXT) < prompt.index(docs()[0].text)

    async def test_async_query(
        self, index: VectorStoreIndex, any_store: ContextStore | AsyncContextStore
    ) -> None:
        with autoplay_session("ps_bob", product_id=ACME):
            response = await engine(index, live(any_store)).aquery(QUESTION)
        assert ids(response.source_nodes) == [context_id("ps_bob"), *DOC_IDS]
        assert first_text(response.source_nodes) == BOB_CONTEXT
        assert str(response).count(BOB_CONTEXT) == 1

    def test_position_last_and_score(self, index: VectorStoreIndex, store: ContextStore) -> None:
        postprocessor = live(store, session_id="ps_bob", position="last", context_score=0.25)
        response = engine(index, postprocessor).query(QUESTION)
        assert ids(response.source_nodes) == [*DOC_IDS, context_id("ps_bob", None)]
        assert response.source_nodes[-1].score == 0.25
        assert response.source_nodes[-1].node.get_content() == BOB_CONTEXT

    def test_read_overrides_reach_the_store(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        postprocessor = live(
            store,
            session_id="ps_alice",
            read_overrides={"max_actions": 1, "include_summary": False},
        )
        response = engine(index, postprocessor).query(QUESTION)
        assert first_text(response.source_nodes) == (
            "[Session context]\nRecent activity:\n1. Clicked Upgrade plan — /settings/billing"
        )

    def test_bad_read_override_is_a_config_error(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        postprocessor = live(store, session_id="ps_alice", read_overrides={"max_action": 1})
        with pytest.raises(ConfigError, match="unknown option"):
            engine(index, postprocessor).query(QUESTION)

    def test_context_is_live_between_queries(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        query_engine = engine(index, live(store, session_id="ps_bob", product_id=ACME))
        assert first_text(query_engine.query(QUESTION).source_nodes) == BOB_CONTEXT
        store.add(actions("ps_bob", ("Clicked Invite", "/settings/team/invite"), event_id="e9"))
        assert first_text(query_engine.query(QUESTION).source_nodes) == (
            BOB_CONTEXT + "\n2. Clicked Invite — /settings/team/invite"
        )

    def test_no_session_leaves_the_nodes_alone(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        response = engine(index, live(store, boost_weight=1.0)).query(QUESTION)
        assert ids(response.source_nodes) == DOC_IDS

    def test_unknown_session_leaves_the_nodes_alone(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_nobody", product_id=ACME):
            response = engine(index, live(store)).query(QUESTION)
        assert ids(response.source_nodes) == DOC_IDS

    def test_session_known_under_another_product_is_not_read(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_alice", product_id=GLOBEX):
            response = engine(index, live(store)).query(QUESTION)
        assert ids(response.source_nodes) == DOC_IDS


class TestSessionSources:
    def test_query_bundle_wins_over_scope_and_constructor(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        query_engine = engine(index, live(store, session_id="ps_carol", product_id=ACME))
        bundle = AutoplayQueryBundle(QUESTION, session_id="ps_alice", product_id=ACME)
        with autoplay_session("ps_bob", product_id=ACME):
            response = query_engine.query(bundle)
        assert first_text(response.source_nodes) == ALICE_CONTEXT

    async def test_query_bundle_on_the_async_path(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        bundle = AutoplayQueryBundle(QUESTION, session_id="ps_bob")
        response = await engine(index, live(store)).aquery(bundle)
        assert first_text(response.source_nodes) == BOB_CONTEXT

    def test_plain_query_bundle_falls_through_to_the_scope(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_bob"):
            response = engine(index, live(store)).query(QueryBundle(QUESTION))
        assert first_text(response.source_nodes) == BOB_CONTEXT

    def test_scope_wins_over_constructor(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        query_engine = engine(index, live(store, session_id="ps_alice", product_id=ACME))
        with autoplay_session("ps_bob"):
            assert first_text(query_engine.query(QUESTION).source_nodes) == BOB_CONTEXT
        # Leaving the block brings the constructor's session back.
        assert first_text(query_engine.query(QUESTION).source_nodes) == ALICE_CONTEXT

    def test_nested_scopes_restore_the_outer_one(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        query_engine = engine(index, live(store))
        with autoplay_session("ps_alice"):
            with autoplay_session("ps_bob"):
                assert first_text(query_engine.query(QUESTION).source_nodes) == BOB_CONTEXT
            assert first_text(query_engine.query(QUESTION).source_nodes) == ALICE_CONTEXT

    def test_constructor_product_completes_a_scope_without_one(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        query_engine = engine(index, live(store, product_id=GLOBEX))
        with autoplay_session("ps_carol"):
            response = query_engine.query(QUESTION)
        assert first_text(response.source_nodes) == CAROL_GLOBEX_CONTEXT
        assert response.source_nodes[0].node.metadata["product_id"] == GLOBEX

    def test_scope_product_wins_over_constructor_product(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_carol", product_id=ACME):
            response = engine(index, live(store, product_id=GLOBEX)).query(QUESTION)
        assert first_text(response.source_nodes) == CAROL_ACME_CONTEXT

    def test_store_resolves_an_unambiguous_session_without_product(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_alice"):
            response = engine(index, live(store)).query(QUESTION)
        assert ids(response.source_nodes)[0] == context_id("ps_alice", None)
        assert response.source_nodes[0].node.metadata == {
            "source": "autoplay_live_context",
            "session_id": "ps_alice",
        }
        assert first_text(response.source_nodes) == ALICE_CONTEXT

    def test_ambiguous_session_raises(self, index: VectorStoreIndex, store: ContextStore) -> None:
        with autoplay_session("ps_carol"), pytest.raises(AmbiguousSessionError) as caught:
            engine(index, live(store)).query(QUESTION)
        assert caught.value.product_ids == [ACME, GLOBEX]

    async def test_ambiguous_session_raises_async(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        with autoplay_session("ps_carol"), pytest.raises(AmbiguousSessionError):
            await engine(index, live(store)).aquery(QUESTION)

    async def test_async_hook_reads_only_through_aview(
        self, index: VectorStoreIndex, backend: Any, clock: FakeClock, store: ContextStore
    ) -> None:
        async_only = SyncViewForbidden(backend=backend, clock=clock)
        with autoplay_session("ps_alice", product_id=ACME):
            response = await engine(index, live(async_only, boost_weight=0.5)).aquery(QUESTION)
            with pytest.raises(AssertionError, match="sync store read"):
                engine(index, live(async_only)).query(QUESTION)
        assert first_text(response.source_nodes) == ALICE_CONTEXT


class TestBoost:
    def test_visited_pages_rank_first_by_recency(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        # Alice's latest page is /settings/billing (rank 0), before it the dashboard (rank 1).
        plain = engine(index).query(QUESTION)
        base = {n.node.node_id: n.score or 0.0 for n in plain.source_nodes}
        postprocessor = live(store, session_id="ps_alice", boost_weight=0.5)
        response = engine(index, postprocessor).query(QUESTION)
        assert ids(response.source_nodes) == [
            context_id("ps_alice", None),
            "doc-billing",
            "doc-export",
            "doc-team",
            "doc-api",
        ]
        assert [n.score for n in response.source_nodes[1:]] == pytest.approx(
            [
                base["doc-billing"] + 0.5,
                base["doc-export"] + 0.25,
                base["doc-team"],
                base["doc-api"],
            ]
        )

    def test_path_match_ignores_host_and_trailing_slash(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        # Bob visited /settings/team; doc-team's url is https://docs.example.com/settings/team/.
        postprocessor = live(store, session_id="ps_bob", boost_weight=0.5, add_context_node=False)
        response = engine(index, postprocessor).query(QUESTION)
        assert ids(response.source_nodes) == ["doc-team", "doc-billing", "doc-export", "doc-api"]

    def test_only_configured_metadata_keys_count(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        # doc-billing names its page under "path"; without that key it is not boosted.
        postprocessor = live(
            store,
            session_id="ps_alice",
            boost_weight=0.5,
            add_context_node=False,
            url_metadata_keys=["url", "canonical_url"],
        )
        response = engine(index, postprocessor).query(QUESTION)
        assert ids(response.source_nodes) == ["doc-export", "doc-team", "doc-billing", "doc-api"]

    def test_caller_nodes_are_not_modified(self, store: ContextStore) -> None:
        nodes = [NodeWithScore(node=doc, score=0.5) for doc in docs()]
        postprocessor = live(store, session_id="ps_alice", boost_weight=1.0)
        result = postprocessor.postprocess_nodes(nodes, query_str=QUESTION)
        assert [n.score for n in nodes] == [0.5, 0.5, 0.5, 0.5]
        assert [n.score for n in result] == [1.0, 1.5, 1.0, 0.5, 0.5]

    def test_negative_weight_is_rejected(self, store: ContextStore) -> None:
        with pytest.raises(ValueError, match="boost_weight"):
            live(store, boost_weight=-1.0)

    def test_bm25_ranking_follows_the_users_page(self, store: ContextStore) -> None:
        """A real lexical retriever: the same query ranks a different doc first per session."""
        from llama_index.retrievers.bm25 import BM25Retriever  # type: ignore[import-untyped]

        retriever = BM25Retriever.from_defaults(nodes=docs(), similarity_top_k=4)
        postprocessor = live(store, boost_weight=0.1)
        query_engine = RetrieverQueryEngine.from_args(
            retriever, node_postprocessors=[postprocessor]
        )

        plain = query_engine.query("open settings")
        assert ids(plain.source_nodes) == ["doc-billing", "doc-team", "doc-api", "doc-export"]
        with autoplay_session("ps_bob", product_id=ACME):
            bob = query_engine.query("open settings")
        with autoplay_session("ps_alice", product_id=ACME):
            alice = query_engine.query("open settings")
        assert ids(bob.source_nodes) == [
            context_id("ps_bob"),
            "doc-team",
            "doc-billing",
            "doc-api",
            "doc-export",
        ]
        assert ids(alice.source_nodes) == [
            context_id("ps_alice"),
            "doc-billing",
            "doc-team",
            "doc-export",
            "doc-api",
        ]
        assert first_text(bob.source_nodes) == BOB_CONTEXT


class TestConcurrency:
    async def test_concurrent_async_queries_get_their_own_context(
        self, index: VectorStoreIndex, any_store: ContextStore | AsyncContextStore
    ) -> None:
        sessions = {
            "ps_alice": ALICE_CONTEXT,
            "ps_bob": BOB_CONTEXT,
            "ps_carol": CAROL_ACME_CONTEXT,
        }
        gate = AsyncGate(parties=len(sessions) + 1, event=asyncio.Event())
        query_engine = engine(index, gate, live(any_store, product_id=ACME))

        async def ask(session_id: str | None) -> list[NodeWithScore]:
            if session_id is None:
                return list((await query_engine.aquery(QUESTION)).source_nodes)
            with autoplay_session(session_id):
                return list((await query_engine.aquery(QUESTION)).source_nodes)

        results = await asyncio.wait_for(
            asyncio.gather(*(ask(s) for s in sessions), ask(None)), WAIT
        )
        assert gate.arrived == len(sessions) + 1  # all were in flight at once
        for (session_id, expected), nodes in zip(sessions.items(), results[:-1], strict=True):
            assert ids(nodes) == [context_id(session_id), *DOC_IDS]
            assert first_text(nodes) == expected
        assert ids(results[-1]) == DOC_IDS

    def test_concurrent_threads_get_their_own_context(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        sessions = {
            "ps_alice": ALICE_CONTEXT,
            "ps_bob": BOB_CONTEXT,
            "ps_carol": CAROL_ACME_CONTEXT,
        }
        gate = ThreadGate(barrier=threading.Barrier(len(sessions)))
        query_engine = engine(index, gate, live(store, product_id=ACME))

        def ask(session_id: str) -> str:
            with autoplay_session(session_id):
                return first_text(query_engine.query(QUESTION).source_nodes)

        with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
            answers = list(pool.map(ask, sessions))
        assert answers == list(sessions.values())


class TestChatEngines:
    @pytest.mark.parametrize("chat_mode", [ChatMode.CONTEXT, ChatMode.CONDENSE_PLUS_CONTEXT])
    def test_chat_sees_the_scoped_session_turn_after_turn(
        self, index: VectorStoreIndex, store: ContextStore, chat_mode: ChatMode
    ) -> None:
        chat_engine = index.as_chat_engine(
            chat_mode=chat_mode, similarity_top_k=4, node_postprocessors=[live(store)]
        )
        with autoplay_session("ps_bob", product_id=ACME):
            first = chat_engine.chat("How do I add a team member?")
            store.add(actions("ps_bob", ("Clicked Invite", "/settings/team/invite"), event_id="e9"))
            second = chat_engine.chat("And then?")
        assert ids(first.source_nodes) == [context_id("ps_bob"), *DOC_IDS]
        assert first_text(first.source_nodes) == BOB_CONTEXT
        assert str(first).count(BOB_CONTEXT) == 1  # MockLLM echoes the messages it got
        updated = BOB_CONTEXT + "\n2. Clicked Invite — /settings/team/invite"
        assert first_text(second.source_nodes) == updated
        assert updated in str(second)

    def test_chat_without_scope_gets_no_context(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        chat_engine = index.as_chat_engine(
            chat_mode=ChatMode.CONTEXT, similarity_top_k=4, node_postprocessors=[live(store)]
        )
        response = chat_engine.chat("How do I add a team member?")
        assert ids(response.source_nodes) == DOC_IDS
        assert "[Session context]" not in str(response)

    @pytest.mark.parametrize("chat_mode", [ChatMode.CONTEXT, ChatMode.CONDENSE_PLUS_CONTEXT])
    async def test_concurrent_async_chats_get_their_own_context(
        self,
        index: VectorStoreIndex,
        any_store: ContextStore | AsyncContextStore,
        chat_mode: ChatMode,
    ) -> None:
        sessions = {"ps_alice": ALICE_CONTEXT, "ps_bob": BOB_CONTEXT}
        gate = AsyncGate(parties=len(sessions), event=asyncio.Event())
        shared = live(any_store, product_id=ACME)

        async def chat(session_id: str) -> Any:
            chat_engine = index.as_chat_engine(
                chat_mode=chat_mode, similarity_top_k=4, node_postprocessors=[gate, shared]
            )
            with autoplay_session(session_id):
                return await chat_engine.achat("What should I do next?")

        responses = await asyncio.wait_for(asyncio.gather(*(chat(s) for s in sessions)), WAIT)
        for (session_id, expected), response in zip(sessions.items(), responses, strict=True):
            assert ids(response.source_nodes) == [context_id(session_id), *DOC_IDS]
            assert first_text(response.source_nodes) == expected
            assert str(response).count(expected) == 1
        assert ALICE_CONTEXT not in str(responses[1])
        assert BOB_CONTEXT not in str(responses[0])

    async def test_async_stream_chat(self, index: VectorStoreIndex, store: ContextStore) -> None:
        chat_engine = index.as_chat_engine(
            chat_mode=ChatMode.CONTEXT, similarity_top_k=4, node_postprocessors=[live(store)]
        )
        with autoplay_session("ps_alice", product_id=ACME):
            response = await chat_engine.astream_chat("What should I do next?")
            text = "".join([token async for token in response.async_response_gen()])
        assert first_text(response.source_nodes) == ALICE_CONTEXT
        assert text.count(ALICE_CONTEXT) == 1


class TestRetrieverTool:
    def tool(
        self, index: VectorStoreIndex, store: ContextStore, *before: BaseNodePostprocessor
    ) -> RetrieverTool:
        return RetrieverTool.from_defaults(
            retriever=index.as_retriever(similarity_top_k=4),
            node_postprocessors=[*before, live(store)],
            name="docs",
        )

    def test_call_inside_a_scope(self, index: VectorStoreIndex, store: ContextStore) -> None:
        tool = self.tool(index, store)
        with autoplay_session("ps_alice", product_id=ACME):
            output = tool.call("change plan")
        assert ids(output.raw_output) == [context_id("ps_alice"), *DOC_IDS]
        assert output.content.startswith(ALICE_CONTEXT + "\n\n")
        assert output.content.count("[Session context]") == 1

    async def test_acall_for_concurrent_sessions(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        gate = AsyncGate(parties=2, event=asyncio.Event())
        tool = self.tool(index, store, gate)

        async def call(session_id: str) -> Any:
            with autoplay_session(session_id, product_id=ACME):
                return await tool.acall("change plan")

        alice, bob = await asyncio.wait_for(asyncio.gather(call("ps_alice"), call("ps_bob")), WAIT)
        assert gate.arrived == 2
        assert alice.content.startswith(ALICE_CONTEXT + "\n\n")
        assert bob.content.startswith(BOB_CONTEXT + "\n\n")
        assert "ps_alice" not in str(bob.raw_output[0].node.metadata)

    def test_call_without_scope_has_no_context(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        output = self.tool(index, store).call("change plan")
        assert ids(output.raw_output) == DOC_IDS


class TestComponent:
    def test_class_name_and_serialization_leave_the_store_out(self, store: ContextStore) -> None:
        postprocessor = live(store, session_id="ps_alice", boost_weight=0.5)
        assert AutoplayNodePostprocessor.class_name() == "AutoplayNodePostprocessor"
        data = postprocessor.to_dict()
        assert data["class_name"] == "AutoplayNodePostprocessor"
        assert "store" not in data
        assert data["boost_weight"] == 0.5
        assert data["url_metadata_keys"] == ["url", "path", "canonical_url"]

    def test_store_must_be_a_context_store(self) -> None:
        with pytest.raises(ValueError, match="store"):
            AutoplayNodePostprocessor(store=object())  # type: ignore[arg-type]

    def test_query_bundle_is_a_query_bundle(self) -> None:
        bundle = AutoplayQueryBundle("q", session_id="s", product_id="p")
        assert isinstance(bundle, QueryBundle)
        assert (bundle.query_str, bundle.session_id, bundle.product_id) == ("q", "s", "p")
        assert bundle.embedding_strs == ["q"]


def test_text_node_in_docs_is_untouched_by_queries(
    index: VectorStoreIndex, store: ContextStore
) -> None:
    """Boosting builds new NodeWithScore objects; the docs' metadata stays as indexed."""
    response = engine(index, live(store, session_id="ps_alice", boost_weight=0.5)).query(QUESTION)
    by_id = {n.node.node_id: n.node for n in response.source_nodes}
    node = by_id["doc-billing"]
    assert isinstance(node, TextNode)
    assert node.metadata == {"path": "/settings/billing"}


class TestRedisBackend:
    """The same postprocessor over a store backed by a real Redis-protocol server."""

    async def test_sync_and_async_queries(
        self, index: VectorStoreIndex, make_redis_backend: Any
    ) -> None:
        backend = make_redis_backend()
        writer = ContextStore(backend=backend)
        fill(writer)
        reader = AsyncContextStore(backend=backend)
        query_engine = engine(index, live(reader, boost_weight=0.5))
        with autoplay_session("ps_alice", product_id=ACME):
            response = await query_engine.aquery(QUESTION)
        assert ids(response.source_nodes)[:3] == [
            context_id("ps_alice"),
            "doc-billing",
            "doc-export",
        ]
        assert first_text(response.source_nodes) == ALICE_CONTEXT
        with autoplay_session("ps_bob", product_id=ACME):
            response = query_engine.query(QUESTION)
        assert first_text(response.source_nodes) == BOB_CONTEXT
        with autoplay_session("ps_carol"), pytest.raises(AmbiguousSessionError):
            await query_engine.aquery(QUESTION)


@pytest.mark.parametrize("name", ["context_options", "read_overrides"])
def test_context_options_under_either_name(
    index: VectorStoreIndex, store: ContextStore, name: str
) -> None:
    # ``context_options`` is the name every adapter uses; ``read_overrides`` still works.
    postprocessor = live(
        store, session_id="ps_alice", **{name: {"max_actions": 1, "include_summary": False}}
    )
    assert postprocessor.context_options == postprocessor.read_overrides
    response = engine(index, postprocessor).query(QUESTION)
    assert first_text(response.source_nodes) == (
        "[Session context]\nRecent activity:\n1. Clicked Upgrade plan — /settings/billing"
    )
    assert "read_overrides" not in postprocessor.to_dict()
    assert postprocessor.to_dict()["context_options"] == {
        "max_actions": 1,
        "include_summary": False,
    }
