"""AutoplayRetriever's added latency over the bare retriever it wraps (target: p50 < 100 µs).

10,000 live sessions x 20 actions in an in-memory ``ContextStore``. The wrapped
retriever returns four fixed documents, so its own cost does not depend on the
query and the difference is what the adapter adds: reading ``configurable``,
one store read, formatting the enriched query and the extra (child) retriever
run LangChain's callbacks record. Calls alternate bare / wrapped for random
sessions so machine noise hits both alike; figures are p50/p99 in microseconds,
sync and async. ``enrich_us`` is the store's ``enrich`` alone, for scale.

There is no reference row: ``autoplay-sdk`` has no LangChain retriever.
Run: ``python benchmarks/bench_langchain.py`` (or ``make bench``).
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


def build_store() -> Any:
    return live_store(SESSIONS, BATCHES, BATCH_SIZE, PRODUCT)


def build_retrievers(store: Any) -> tuple[Any, Any]:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from langchain_autoplay.retrievers import AutoplayRetriever

    docs = [Document(page_content=f"Help article {i}") for i in range(4)]

    class FixedRetriever(BaseRetriever):
        """Constant-cost stand-in for a vector store: the same four documents."""

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return list(docs)

        async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return list(docs)

    bare = FixedRetriever()
    return bare, AutoplayRetriever(store=store, retriever=bare)


def configs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {"configurable": {"session_id": f"ps_{rng.randrange(SESSIONS)}", "product_id": PRODUCT}}
        for _ in range(n)
    ]


def measure_sync(bare: Any, wrapped: Any, calls: list[dict[str, Any]]) -> tuple[list[int], ...]:
    bare_ns: list[int] = []
    wrapped_ns: list[int] = []
    clock = time.perf_counter_ns
    for config in calls:
        t0 = clock()
        bare.invoke(QUERY, config)
        t1 = clock()
        wrapped.invoke(QUERY, config)
        t2 = clock()
        bare_ns.append(t1 - t0)
        wrapped_ns.append(t2 - t1)
    return bare_ns, wrapped_ns


async def measure_async(
    bare: Any, wrapped: Any, calls: list[dict[str, Any]]
) -> tuple[list[int], ...]:
    bare_ns: list[int] = []
    wrapped_ns: list[int] = []
    clock = time.perf_counter_ns
    for config in calls:
        t0 = clock()
        await bare.ainvoke(QUERY, config)
        t1 = clock()
        await wrapped.ainvoke(QUERY, config)
        t2 = clock()
        bare_ns.append(t1 - t0)
        wrapped_ns.append(t2 - t1)
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


def main() -> None:
    store = build_store()
    bare, wrapped = build_retrievers(store)
    rng = random.Random(2)

    measure_sync(bare, wrapped, configs(rng, WARMUP))
    sync = added(*measure_sync(bare, wrapped, configs(rng, CALLS)))

    async def run_async() -> dict[str, Any]:
        await measure_async(bare, wrapped, configs(rng, WARMUP))
        return added(*await measure_async(bare, wrapped, configs(rng, CALLS)))

    async_figures = asyncio.run(run_async())

    enrich_ns = []
    for config in configs(rng, CALLS):
        session = config["configurable"]["session_id"]
        t0 = time.perf_counter_ns()
        store.enrich(session, QUERY, PRODUCT)
        enrich_ns.append(time.perf_counter_ns() - t0)

    config = f"{SESSIONS:,} sessions x {BATCHES * BATCH_SIZE} actions, in-memory store"
    enrich = percentiles(enrich_ns)
    emit(
        "bench_langchain",
        [
            figure(
                "retriever added p50 (sync)",
                config,
                unit="µs",
                ours=sync["added_p50_us"],
                target="< 100",
            ),
            figure(
                "retriever added p50 (async)",
                config,
                unit="µs",
                ours=async_figures["added_p50_us"],
                target="< 100",
            ),
            figure("enrich p50 (for scale)", config, unit="µs", ours=enrich["p50_us"]),
        ],
        calls=CALLS,
        sync=sync,
        async_=async_figures,
        enrich_us=enrich,
    )


if __name__ == "__main__":
    main()
