"""AutoplayNodePostprocessor's added latency per query (target: p50 < 100 µs).

10,000 live sessions x 20 actions in an in-memory ``ContextStore``. A
``RetrieverQueryEngine`` over a constant-cost retriever (the same four nodes
every time) runs its retrieval step (``engine.retrieve``: retriever plus node
postprocessors, no LLM) once bare and once with the postprocessor, alternating,
for random sessions, each inside its own ``with autoplay_session(...)`` block
(the block is part of the measured cost). The difference of the p50s is what
the postprocessor adds: LlamaIndex's instrumentation span around the hook, the
scope lookup, one store read, formatting and the context node. Figures in
microseconds, sync (``retrieve``) and async (``aretrieve``), without and with
URL boosting. ``hook_us`` is ``postprocess_nodes`` called directly.

There is no reference row: ``autoplay-sdk`` has no LlamaIndex postprocessor.
Run: ``python benchmarks/bench_llamaindex.py`` (or ``make bench``).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from _common import emit, figure, live_store, percentiles, size

SESSIONS = size(10_000, 200)
BATCHES = 4
BATCH_SIZE = 5
CALLS = size(20_000, 300)
WARMUP = size(2_000, 50)
PRODUCT = "bench"
QUERY = "How do I do this?"
BOOST_WEIGHT = 0.2


def build_store() -> Any:
    return live_store(SESSIONS, BATCHES, BATCH_SIZE, PRODUCT)


def build_engines(store: Any) -> tuple[Any, Any, Any, Any]:
    """Bare engine, engine with the postprocessor, with boosting, and the postprocessor."""
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor

    Settings.llm = MockLLM()  # never called: only the retrieval step is measured
    urls = ["/settings/billing", "/settings/team", "/reports", "/docs/api"]
    nodes = [
        TextNode(id_=f"doc-{i}", text=f"Help article {i}", metadata={"url": url})
        for i, url in enumerate(urls)
    ]

    class FixedRetriever(BaseRetriever):
        """Constant-cost stand-in for a vector store: the same four nodes."""

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return [NodeWithScore(node=node, score=0.5) for node in nodes]

        async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return self._retrieve(query_bundle)

    live = AutoplayNodePostprocessor(store=store, product_id=PRODUCT)
    boosting = AutoplayNodePostprocessor(store=store, product_id=PRODUCT, boost_weight=BOOST_WEIGHT)
    bare = RetrieverQueryEngine.from_args(FixedRetriever())
    wrapped = RetrieverQueryEngine.from_args(FixedRetriever(), node_postprocessors=[live])
    boosted = RetrieverQueryEngine.from_args(FixedRetriever(), node_postprocessors=[boosting])
    return bare, wrapped, boosted, live


def sessions(rng: random.Random, n: int) -> list[str]:
    return [f"ps_{rng.randrange(SESSIONS)}" for _ in range(n)]


def measure_sync(bare: Any, wrapped: Any, calls: list[str]) -> tuple[list[int], list[int]]:
    from llama_index.core.schema import QueryBundle

    from llamaindex_autoplay.session import autoplay_session

    bare_ns: list[int] = []
    wrapped_ns: list[int] = []
    clock = time.perf_counter_ns
    bundle = QueryBundle(QUERY)
    for session_id in calls:
        t0 = clock()
        with autoplay_session(session_id):
            bare.retrieve(bundle)
        t1 = clock()
        with autoplay_session(session_id):
            result = wrapped.retrieve(bundle)
        t2 = clock()
        bare_ns.append(t1 - t0)
        wrapped_ns.append(t2 - t1)
        assert len(result) == 5  # the context node was added
    return bare_ns, wrapped_ns


async def measure_async(bare: Any, wrapped: Any, calls: list[str]) -> tuple[list[int], list[int]]:
    from llama_index.core.schema import QueryBundle

    from llamaindex_autoplay.session import autoplay_session

    bare_ns: list[int] = []
    wrapped_ns: list[int] = []
    clock = time.perf_counter_ns
    bundle = QueryBundle(QUERY)
    for session_id in calls:
        t0 = clock()
        with autoplay_session(session_id):
            await bare.aretrieve(bundle)
        t1 = clock()
        with autoplay_session(session_id):
            result = await wrapped.aretrieve(bundle)
        t2 = clock()
        bare_ns.append(t1 - t0)
        wrapped_ns.append(t2 - t1)
        assert len(result) == 5
    return bare_ns, wrapped_ns


def added(bare_ns: list[int], wrapped_ns: list[int]) -> dict[str, Any]:
    bare = percentiles(bare_ns)
    wrapped = percentiles(wrapped_ns)
    return {
        "bare": bare,
        "wrapped": wrapped,
        "added_p50_us": round(wrapped["p50_us"] - bare["p50_us"], 2),
        "added_p99_us": round(wrapped["p99_us"] - bare["p99_us"], 2),
    }


def measure_hook(postprocessor: Any, calls: list[str]) -> list[int]:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from llamaindex_autoplay.postprocessors import AutoplayQueryBundle

    nodes = [NodeWithScore(node=TextNode(text=f"Help article {i}"), score=0.5) for i in range(4)]
    samples: list[int] = []
    clock = time.perf_counter_ns
    for session_id in calls:
        bundle: QueryBundle = AutoplayQueryBundle(QUERY, session_id=session_id)
        t0 = clock()
        postprocessor.postprocess_nodes(nodes, bundle)
        samples.append(clock() - t0)
    return samples


def main() -> None:
    store = build_store()
    bare, wrapped, boosted, live = build_engines(store)
    rng = random.Random(2)

    measure_sync(bare, wrapped, sessions(rng, WARMUP))
    sync = added(*measure_sync(bare, wrapped, sessions(rng, CALLS)))
    sync_boost = added(*measure_sync(bare, boosted, sessions(rng, CALLS)))

    async def run_async() -> tuple[dict[str, Any], dict[str, Any]]:
        await measure_async(bare, wrapped, sessions(rng, WARMUP))
        plain = added(*await measure_async(bare, wrapped, sessions(rng, CALLS)))
        boost = added(*await measure_async(bare, boosted, sessions(rng, CALLS)))
        return plain, boost

    async_plain, async_boost = asyncio.run(run_async())
    hook = percentiles(measure_hook(live, sessions(rng, CALLS)))

    config = f"{SESSIONS:,} sessions x {BATCHES * BATCH_SIZE} actions, in-memory store"
    rows = [
        figure(
            f"postprocessor added p50 ({label})",
            config + (", URL boosting" if "boost" in label else ""),
            unit="µs",
            ours=figures["added_p50_us"],
            target="< 100",
        )
        for label, figures in (
            ("sync", sync),
            ("async", async_plain),
            ("sync, boost", sync_boost),
            ("async, boost", async_boost),
        )
    ]
    rows.append(
        figure("postprocess_nodes p50 (hook alone)", config, unit="µs", ours=hook["p50_us"])
    )
    emit(
        "bench_llamaindex",
        rows,
        calls=CALLS,
        sync=sync,
        async_=async_plain,
        sync_with_boost=sync_boost,
        async_with_boost=async_boost,
        hook_us=hook,
    )


if __name__ == "__main__":
    main()
