"""ContextStore side by side with autoplay-sdk's: enrich latency and memory per session.

10,000 sessions x 50 actions in each configuration of ``_common.CONFIGURATIONS``
(``seed``: ``lookback_seconds=300, max_actions=20``, one action per event;
``current``: no lookback, no cap, 10 batches of 5). Both stores get the same
payloads (ours decoded from JSON, the reference's through its ``from_dict``),
stamped with the current time so the lookback keeps them, then answer
``enrich`` for random sessions with ``product_id`` given. Latency rounds
alternate floor/ours/reference so machine noise hits all alike.

The **floor** is what any store has to do at least: one dict lookup of an
already rendered block (ours, minus the query) and one string concatenation
with the query, called through the same loop. Memory is what each store keeps
after ingest (tracemalloc, payload objects not otherwise referenced).

Run inside a reference environment (it has both packages): ``make bench``.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _common import (
    CONFIGURATIONS,
    actions_event,
    emit,
    figure,
    median,
    percentiles,
    size,
)

SESSIONS = size(10_000, 100)
QUERIES = size(20_000, 300)
ROUNDS = size(3, 1)
PRODUCT = "bench"
QUERY = "How do I do this?"

Events = list[tuple[str, dict[str, Any]]]


def payload_stream(config: dict[str, Any], at: float) -> Events:
    """Every session's events in arrival order (round-robin), with event ids."""
    rng = random.Random(1)
    events: Events = []
    for batch in range(config["batches"]):
        for n in range(SESSIONS):
            payload = actions_event(PRODUCT, f"ps_{n}", batch, config["batch_size"], rng, at=at)
            events.append((str(len(events) + 1), payload))
    return events


def build_ours(events: Events, options: dict[str, Any]) -> Any:
    from autoplay_base import ContextStore, decode_event

    store = ContextStore(**options)
    for event_id, raw in events:
        store.add(decode_event(json.dumps(raw), event_id=event_id))  # type: ignore[arg-type]
    return store


def build_reference(events: Events, options: dict[str, Any]) -> Any:
    from autoplay_sdk.context.context_store import ContextStore
    from autoplay_sdk.core.models import ActionsPayload

    store = ContextStore(**options)
    for _, raw in events:
        store.add(ActionsPayload.from_dict(raw))
    return store


def build_floor(ours: Any) -> Callable[..., str]:
    """A dict of every session's rendered block and the least work an enrich can do."""
    blocks: dict[tuple[str, str], str] = {
        (PRODUCT, f"ps_{n}"): ours.enrich(f"ps_{n}", QUERY, product_id=PRODUCT)[: -len(QUERY)]
        for n in range(SESSIONS)
    }

    def enrich(session_id: str, query: str, *, product_id: str) -> str:
        return blocks[(product_id, session_id)] + query

    return enrich


def retained_bytes(build: Callable[[Events, dict[str, Any]], Any], config: dict[str, Any]) -> int:
    events = payload_stream(config, time.time())
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = build(events, config["store_options"])
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del store
    return kept


def enrich_latencies(enrich: Callable[..., str], session_ids: list[str]) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for session_id in session_ids:
        start = clock()
        enrich(session_id, QUERY, product_id=PRODUCT)
        samples.append(clock() - start)
    return samples


def measure(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of one configuration."""
    events = payload_stream(config, time.time())
    ours = build_ours(events, config["store_options"])
    reference = build_reference(events, config["store_options"])
    # The same actions out of both, so the comparison is like for like (the reference's
    # action lines carry an extra "[index] type:" prefix its docs do not show).
    ours_text = ours.enrich("ps_7", QUERY, product_id=PRODUCT)
    ref_text = reference.enrich("ps_7", QUERY, product_id=PRODUCT)
    assert ours_text.count("\n") == ref_text.count("\n"), (ours_text, ref_text)
    shown = config["store_options"].get("max_actions") or config["batches"] * config["batch_size"]
    # Header, "Recent activity:", the actions, a blank line, "[Query]", the query.
    assert ours_text.count("\n") == shown + 4, ours_text
    callers = {"floor": build_floor(ours), "ours": ours.enrich, "reference": reference.enrich}
    rng = random.Random(2)
    ids = [f"ps_{rng.randrange(SESSIONS)}" for _ in range(QUERIES)]
    p50s: dict[str, list[float]] = {who: [] for who in callers}
    p99s: dict[str, list[float]] = {who: [] for who in callers}
    for _ in range(ROUNDS):
        for who, enrich in callers.items():
            figures = percentiles(enrich_latencies(enrich, ids))
            p50s[who].append(figures["p50_us"])
            p99s[who].append(figures["p99_us"])
    del ours, reference, events, callers
    gc.collect()
    label = config["label"]
    rows = [
        figure(
            f"enrich {pct}",
            label,
            unit="µs",
            ours=median(samples["ours"]),
            reference=median(samples["reference"]),
            floor=median(samples["floor"]),
        )
        for pct, samples in (("p50", p50s), ("p99", p99s))
    ]
    rows.append(
        figure(
            "memory per session",
            label,
            unit="bytes",
            ours=round(retained_bytes(build_ours, config) / SESSIONS),
            reference=round(retained_bytes(build_reference, config) / SESSIONS),
        )
    )
    return rows


def main() -> None:
    rows = [row for name, config in CONFIGURATIONS.items() for row in measure(name, config)]
    emit(
        "bench_store",
        rows,
        setup=f"{SESSIONS} sessions x 50 actions, {QUERIES} enrich x {ROUNDS} rounds",
    )


if __name__ == "__main__":
    main()
