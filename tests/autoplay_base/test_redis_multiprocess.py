"""Several processes, one live context, and a Redis crash in the middle of the stream.

* one ingest process runs a ``ConnectorClient`` against the emulator and writes
  every event into Redis through ``ContextStore(backend=RedisBackend)``;
* two answer processes (one sync ``enrich``, one async ``aenrich``) read the same
  sessions from the same Redis;
* Redis is killed (SIGKILL) after the first third of the events and restarted
  (from its append-only file) after the second third: every event the store
  acknowledged is in the context the answerers see, exactly once, in order.

Processes are started with ``spawn`` and talk over ``multiprocessing`` queues;
every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest

from autoplay_base.emulator import EmulatorServer
from tests._fixtures.redis import RedisServer

PRODUCT = "acme"
SESSIONS = [f"ps_{n}" for n in range(4)]
PER_PHASE = 3
QUERY = "How do I invite a teammate?"
WAIT = 60.0
MP = multiprocessing.get_context("spawn")


# -- the processes ---------------------------------------------------------------------------
def ingest_main(stream_url: str, redis_url: str, prefix: str, commands: Any, reports: Any) -> None:
    """Connector -> store -> Redis; reports each acknowledged event id."""
    from autoplay_base.backends.redis import RedisBackend
    from autoplay_base.context_store import ContextStore
    from autoplay_base.events import ActionsPayload
    from autoplay_base.stream import ConnectorClient

    backend = RedisBackend.from_url(
        redis_url, prefix=prefix, socket_timeout=2.0, retry_interval_seconds=0.05
    )
    store = ContextStore(backend=backend)

    def add(payload: ActionsPayload) -> None:
        store.add(payload)
        reports.put(("added", payload.event_id))

    client = ConnectorClient(stream_url, heartbeat_timeout=5.0)
    client.on_actions(add)
    client.run_in_background()
    while True:
        command = commands.get(timeout=WAIT)
        if command == "flush":
            reports.put(("flushed", backend.flush()))
        elif command == "stop":
            break
    client.stop()
    reports.put(("stats", dict(backend.stats.extra), store.stats()))
    backend.close()


def answer_main(redis_url: str, prefix: str, use_async: bool, requests: Any, answers: Any) -> None:
    """Answer ``enrich`` for session ids from ``requests`` until ``None``."""
    from autoplay_base.backends.redis import RedisBackend
    from autoplay_base.context_store import AsyncContextStore, ContextStore

    backend = RedisBackend.from_url(
        redis_url, prefix=prefix, socket_timeout=2.0, retry_interval_seconds=0.0
    )
    if not use_async:
        store = ContextStore(backend=backend)
        while (session_id := requests.get(timeout=WAIT)) is not None:
            answers.put((session_id, store.enrich(session_id, QUERY, product_id=PRODUCT)))
        return

    async def serve() -> None:
        astore = AsyncContextStore(backend=backend)
        while (session_id := requests.get(timeout=WAIT)) is not None:
            answers.put((session_id, await astore.aenrich(session_id, QUERY, product_id=PRODUCT)))
        await backend.aclose()

    asyncio.run(serve())


# -- the test -------------------------------------------------------------------------------------
def payload(session_id: str, step: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "product_id": PRODUCT,
        "session_id": session_id,
        "user_id": f"usr_{session_id}",
        "actions": [
            {"title": f"Step {step}", "description": f"Step {step}", "canonical_url": f"/s{step}"}
        ],
        "count": 1,
        "forwarded_at": 1.0,
    }


def expected(steps: range) -> str:
    lines = "\n".join(f"{i}. Step {step} — /s{step}" for i, step in enumerate(steps, 1))
    return f"[Session context]\nRecent activity:\n{lines}\n\n[Query]\n{QUERY}"


def take(reports: Any, kind: str) -> tuple[Any, ...]:
    report: tuple[Any, ...] = reports.get(timeout=WAIT)
    assert report[0] == kind, report
    return report


def publish_phase(emulator: EmulatorServer, reports: Any, steps: range) -> None:
    """Publish one event per session and step, then wait until the store took them all."""
    ids = {emulator.publish(PRODUCT, payload(s, step)) for step in steps for s in SESSIONS}
    while ids:
        ids.discard(take(reports, "added")[1])


def ask(readers: list[tuple[Any, Any]], session_id: str) -> list[str]:
    for requests, _ in readers:
        requests.put(session_id)
    texts = []
    for _, answers in readers:
        answered, text = answers.get(timeout=WAIT)
        assert answered == session_id
        texts.append(text)
    return texts


@pytest.mark.timeout(180)
def test_two_answerers_see_what_one_ingester_wrote_across_a_redis_crash(
    redis_server: RedisServer, emulator: EmulatorServer, redis_prefix: str
) -> None:
    commands, reports = MP.Queue(), MP.Queue()
    ingest = MP.Process(
        target=ingest_main,
        args=(emulator.url_for(PRODUCT), redis_server.url, redis_prefix, commands, reports),
    )
    readers = [(MP.Queue(), MP.Queue()) for _ in range(2)]
    answerers = [
        MP.Process(
            target=answer_main,
            args=(redis_server.url, redis_prefix, use_async, requests, answers),
        )
        for use_async, (requests, answers) in zip((False, True), readers, strict=True)
    ]
    processes = [ingest, *answerers]
    for process in processes:
        process.start()
    try:
        assert emulator.wait_for(lambda s: s.streams_active == 1, timeout=WAIT)
        first, second, third = (range(1 + n * PER_PHASE, 1 + (n + 1) * PER_PHASE) for n in range(3))

        publish_phase(emulator, reports, first)
        for session_id in SESSIONS:
            assert ask(readers, session_id) == [expected(first)] * 2

        redis_server.kill()
        publish_phase(emulator, reports, second)  # acknowledged into the local buffer
        # Meanwhile the answerers return the bare query at once instead of hanging.
        assert ask(readers, SESSIONS[0]) == [QUERY, QUERY]

        redis_server.start()
        publish_phase(emulator, reports, third)
        commands.put("flush")
        assert take(reports, "flushed")[1] == 0

        everything = range(1, 1 + 3 * PER_PHASE)
        for session_id in SESSIONS:
            assert ask(readers, session_id) == [expected(everything)] * 2

        commands.put("stop")
        _, extra, counters = take(reports, "stats")
        outage_writes = len(SESSIONS) * PER_PHASE
        assert extra["redis_writes_buffered"] == outage_writes
        assert extra["redis_writes_replayed"] == outage_writes
        assert extra["redis_write_errors"] == outage_writes
        assert "redis_writes_dropped" not in extra
        assert counters["writes"] == 3 * outage_writes
        assert counters["duplicates_skipped"] == 0
        assert counters["actions_stored"] == 3 * outage_writes
    finally:
        for requests, _ in readers:
            requests.put(None)
        for process in processes:
            process.join(timeout=WAIT)
            if process.is_alive():
                process.kill()
                process.join(timeout=WAIT)
        for channel in (commands, reports, *(q for pair in readers for q in pair)):
            channel.close()
    assert [process.exitcode for process in processes] == [0, 0, 0]
