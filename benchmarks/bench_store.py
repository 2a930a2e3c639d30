"""ContextStore side by side with autoplay-sdk's: enrich latency and memory per session.

10,000 sessions x 50 actions (10 batches of 5). Both stores get the same payloads
(ours decoded from JSON, the reference's through its ``from_dict``), then answer
``enrich`` for random sessions with ``product_id`` given. Latency rounds
alternate ours/reference so machine noise hits both alike; memory is what each
store keeps after ingest (tracemalloc, payload objects not otherwise referenced).

Run inside benchmarks/.venv-ref (it has both packages): ``make bench``.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _common import actions_event, emit, latency, machine, median, percentiles, proportion

SESSIONS = 10_000
BATCHES = 10
BATCH_SIZE = 5
QUERIES = 20_000
ROUNDS = 3
QUERY = "How do I do this?"


def payload_stream(rng_seed: int = 1) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(rng_seed)
    events = []
    for batch in range(BATCHES):
        for n in range(SESSIONS):
            payload = actions_event("bench", f"ps_{n}", batch, BATCH_SIZE, rng)
            events.append((str(len(events) + 1), payload))
    return events


def build_ours(events: list[tuple[str, dict[str, Any]]]) -> Any:
    from autoplay_base import ContextStore, decode_event

    store = ContextStore()
    for event_id, raw in events:
        store.add(decode_event(json.dumps(raw), event_id=event_id))  # type: ignore[arg-type]
    return store


def build_reference(events: list[tuple[str, dict[str, Any]]]) -> Any:
    from autoplay_sdk.context.context_store import ContextStore
    from autoplay_sdk.core.models import ActionsPayload

    store = ContextStore()
    for _, raw in events:
        store.add(ActionsPayload.from_dict(raw))
    return store


def retained_bytes(build: Callable[[list[tuple[str, dict[str, Any]]]], Any]) -> int:
    events = payload_stream()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = build(events)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del store
    return kept


def enrich_latencies(store: Any, session_ids: list[str]) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for session_id in session_ids:
        start = clock()
        store.enrich(session_id, QUERY, product_id="bench")
        samples.append(clock() - start)
    return samples


def main() -> None:
    events = payload_stream()
    ours, reference = build_ours(events), build_reference(events)
    # The same 50 numbered actions out of both, so the comparison is like for like (the
    # reference's action lines carry an extra "[index] type:" prefix its docs do not show).
    ours_text = ours.enrich("ps_7", QUERY, product_id="bench")
    ref_text = reference.enrich("ps_7", QUERY, product_id="bench")
    assert ours_text.count("\n") == ref_text.count("\n"), (ours_text, ref_text)
    rng = random.Random(2)
    ids = [f"ps_{rng.randrange(SESSIONS)}" for _ in range(QUERIES)]
    p50s: dict[str, list[float]] = {"ours": [], "reference": []}
    p99s: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(ROUNDS):
        for name, store in (("ours", ours), ("reference", reference)):
            figures = percentiles(enrich_latencies(store, ids))
            p50s[name].append(figures["p50_us"])
            p99s[name].append(figures["p99_us"])
    del ours, reference, events
    gc.collect()
    memory = {
        "ours": retained_bytes(build_ours) / SESSIONS,
        "reference": retained_bytes(build_reference) / SESSIONS,
    }
    ours_p50, ref_p50 = median(p50s["ours"]), median(p50s["reference"])
    ours_p99, ref_p99 = median(p99s["ours"]), median(p99s["reference"])
    emit(
        {
            "benchmark": "context_store",
            "setup": f"{SESSIONS} sessions x {BATCHES * BATCH_SIZE} actions, "
            f"{QUERIES} enrich x {ROUNDS} rounds",
            "enrich_p50_us": latency(ours_p50, ref_p50),
            "enrich_p99_us": latency(ours_p99, ref_p99),
            "memory_bytes_per_session": proportion(
                round(memory["ours"]), round(memory["reference"])
            ),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
