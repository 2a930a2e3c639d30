"""Listeners wake when an event is written, not at their next poll: [in-process, Redis] x [sync,
async], the Redis Cluster, the bound on blocked listeners and a wait that fails.

Every stream here is built with ``poll_seconds=2.0``: a listener that polled would see
each event up to two seconds late, one that blocks on the write sees it within a few
round trips. The bound asserted (``FAST``) is far above the few milliseconds measured and
far below the poll interval, so load on the machine cannot make it flaky and a polling
listener cannot pass it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from autoplay_base.agent_stream import AsyncRunStream, RunEvent, RunStream
from autoplay_base.agent_stream._redis import block_seconds
from autoplay_base.agent_stream._transport import RunRef
from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis import RedisBackend
from tests._fixtures.redis import free_port, wait_for
from tests.autoplay_base.agent_stream.conftest import LISTEN_TIMEOUT, Streams

S: dict[str, Any] = {"session_id": "s1", "product_id": "p1"}
POLL = 2.0
FAST = 0.5
"""A listener woken by the write gets each event well within this (a poller: ~POLL late)."""
TOKENS = 5


async def events_of(
    stream: RunStream | AsyncRunStream, run_id: str, **kwargs: Any
) -> AsyncIterator[RunEvent]:
    """The listener's events as they come, from either twin (sync: on a worker thread)."""
    if isinstance(stream, AsyncRunStream):
        async for event in stream.listen(run_id, **kwargs):
            yield event
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()

    def pump() -> None:
        for event in stream.listen(run_id, **kwargs):
            loop.call_soon_threadsafe(queue.put_nowait, event)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    while (item := await asyncio.wait_for(queue.get(), LISTEN_TIMEOUT)) is not None:
        yield item
    thread.join(LISTEN_TIMEOUT)


async def one_token_at_a_time(streams: Streams, listener: RunStream | AsyncRunStream) -> None:
    """Emit a token only once the listener has the previous one (and so waits again)."""
    async with streams.run(**S) as run:
        received: asyncio.Queue[RunEvent] = asyncio.Queue()

        async def listen() -> None:
            async for event in events_of(listener, run.run_id, **S):
                received.put_nowait(event)

        task = asyncio.ensure_future(listen())
        assert (await asyncio.wait_for(received.get(), LISTEN_TIMEOUT)).type == "start"
        for n in range(TOKENS):
            run.text_delta(f"t{n}")
            event = await asyncio.wait_for(received.get(), LISTEN_TIMEOUT)
            late = time.time() - event.ts
            assert (event.seq, event.data) == (n + 2, {"text": f"t{n}"})
            assert late < FAST, f"token {n} reached the listener {late * 1000:.0f} ms after emit"
    await asyncio.wait_for(task, LISTEN_TIMEOUT)
    assert (await received.get()).type == "finished"


async def test_a_listener_wakes_on_the_write_not_at_its_next_poll(
    make_streams: Callable[..., Streams],
) -> None:
    streams = make_streams(poll_seconds=POLL)
    await one_token_at_a_time(streams, streams.stream)


async def test_a_cluster_listener_blocks_on_the_runs_node(
    make_cluster_backend: Callable[..., RedisBackend],
) -> None:
    producer = Streams(AsyncRunStream(make_cluster_backend()), "async")
    listener = AsyncRunStream(make_cluster_backend(), poll_seconds=POLL)  # another "process"
    await one_token_at_a_time(producer, listener)
    assert listener.stats.listen_wait_errors == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["redis"])
async def test_listeners_past_the_bound_poll_and_miss_nothing(
    make_streams: Callable[..., Streams],
) -> None:
    # One blocking slot, three listeners: two of them sleep poll_seconds between reads.
    streams = make_streams(poll_seconds=0.02, max_blocking_listeners=1)
    async with streams.run(**S) as run:
        listeners = [asyncio.ensure_future(streams.listen(run.run_id, **S)) for _ in range(3)]
        for n in range(20):
            run.text_delta(str(n))
            await asyncio.sleep(0.005)  # the model's pace: the listeners wait between tokens
    for events in await asyncio.gather(*listeners):
        assert [e.seq for e in events] == list(range(1, 23))
    assert streams.stream.stats.listener_slots_full > 0
    assert streams.stream.transport._blocking == 0  # every slot given back


def test_an_in_process_wait_returns_at_once_when_the_event_is_already_written() -> None:
    # The write lands between the listener's read and its wait: the wait must see it.
    stream = RunStream(poll_seconds=POLL)
    with stream.run(**S) as run:
        run.text_delta("a")  # seq 2, written before the wait starts
        started = time.monotonic()
        stream.transport.pause(run.ref, POLL, 2)
        assert time.monotonic() - started < FAST


async def test_an_async_in_process_wait_returns_at_once_when_the_event_is_already_written() -> None:
    stream = AsyncRunStream(poll_seconds=POLL)
    async with stream.run(**S) as run:
        run.text_delta("a")
        await asyncio.wait_for(stream.transport.apause(run.ref, POLL, 2), FAST)


@pytest.fixture
def dead_backend() -> Iterator[RedisBackend]:
    """A backend whose server is not there (nothing listens on the port)."""
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="dead")
    yield backend
    backend.client.close()


async def test_a_failed_wait_is_counted_and_only_waits(dead_backend: RedisBackend) -> None:
    # The read after the wait is what reports an outage to the listener; the wait counts it.
    ref = RunRef("p1", "s1", "0" * 32)
    sync, async_ = RunStream(dead_backend, history=False), AsyncRunStream(dead_backend)
    sync.transport.pause(ref, 0.01, 1)
    await async_.transport.apause(ref, 0.01, 1)
    for stream in (sync, async_):
        assert stream.stats.listen_wait_errors == 1
        assert stream.transport._blocking == 0  # type: ignore[attr-defined]


def test_a_blocking_read_stays_within_half_the_socket_timeout() -> None:
    import redis.asyncio as aredis

    assert block_seconds(redis.Redis(socket_timeout=0.05)) == 0.025
    assert block_seconds(aredis.Redis(socket_timeout=2.0)) == 1.0
    # no timeout: poll_seconds bounds each wait
    assert block_seconds(redis.Redis(socket_timeout=None)) == float("inf")
    assert block_seconds(object()) == float("inf")


@pytest.mark.parametrize("twin", [RunStream, AsyncRunStream])
async def test_a_listener_at_the_tail_waits_in_xread_instead_of_reading_again(
    twin: type[RunStream] | type[AsyncRunStream],
    private_backends: Callable[..., RedisBackend],
    redis_server: Any,
) -> None:
    # A read that returned a short page ended at the tail: the listener's next command
    # is one XREAD BLOCK (it answers at once if more came), not a second three-command
    # read. Counted on the listener's own server: exactly one XRANGE for the whole run.
    admin = redis.Redis.from_url(redis_server.url, decode_responses=True)

    def calls(command: str) -> int:
        stats: dict[str, Any] = admin.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def blocked() -> int:
        return int(admin.info("clients")["blocked_clients"])

    producer = AsyncRunStream(private_backends(), history=False, poll_seconds=POLL)
    listener = twin(private_backends(), history=False, poll_seconds=POLL)
    async with producer.run(**S) as run:
        for n in range(3):
            run.text_delta(f"t{n}")
        key = producer.transport._keys.run_stream(  # type: ignore[attr-defined]
            SessionKey(S["product_id"], S["session_id"]), run.run_id
        )
        await asyncio.to_thread(wait_for, lambda: admin.xlen(key) == 4, "the first four events")
        received: asyncio.Queue[RunEvent] = asyncio.Queue()

        async def listen() -> None:
            async for event in events_of(listener, run.run_id, **S):
                received.put_nowait(event)

        task = asyncio.ensure_future(listen())
        got = [await asyncio.wait_for(received.get(), LISTEN_TIMEOUT) for _ in range(4)]
        assert [e.seq for e in got] == [1, 2, 3, 4]
        await asyncio.to_thread(wait_for, lambda: blocked() == 1, "the listener in XREAD")
        assert calls("xrange") == 1
        run.text_delta("t3")
        assert (await asyncio.wait_for(received.get(), LISTEN_TIMEOUT)).data == {"text": "t3"}
        await asyncio.to_thread(wait_for, lambda: blocked() == 1, "the listener back in XREAD")
        assert calls("xrange") == 1
    await asyncio.wait_for(task, LISTEN_TIMEOUT)
    assert (await received.get()).type == "finished"
    assert calls("xrange") == 1  # the terminal event came through the wait too
    admin.close()
