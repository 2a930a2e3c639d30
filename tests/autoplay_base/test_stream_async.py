"""AsyncConnectorClient against the real emulator over loopback sockets."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from typing import Any

import pytest

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.emulator import EmulatorServer, bad_frames
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorNotFoundError,
    EventDecodeError,
)
from autoplay_base.events import ActionsPayload, UnknownEvent
from autoplay_base.stream import AsyncConnectorClient
from tests._fixtures.emulator import Collector, EmulatorFactory

TOKEN = "uk_live_ASYNC_SECRET_7"


def actions(n: int, session: str = "s1", product: str = "acme") -> dict[str, Any]:
    return {
        "type": "actions",
        "product_id": product,
        "session_id": session,
        "actions": [
            {"title": f"T{n}", "description": f"Did thing {n}", "canonical_url": f"/p/{n}"}
        ],
        "forwarded_at": 1.0,
    }


def client_for(
    server: EmulatorServer, product: str = "acme", **options: Any
) -> AsyncConnectorClient:
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.05)
    return AsyncConnectorClient(server.url_for(product), **options)


def connected(client: AsyncConnectorClient) -> asyncio.Event:
    event = asyncio.Event()
    client.on_connect(event.set)
    return event


async def started(client: AsyncConnectorClient) -> asyncio.Task[None]:
    is_up = connected(client)
    task = client.run_in_background()
    await asyncio.wait_for(is_up.wait(), 5)
    return task


async def test_end_to_end_async_and_sync_store_add_exact_text(emulator: EmulatorServer) -> None:
    astore = AsyncContextStore()
    store = ContextStore()
    done = Collector()
    client = client_for(emulator).on_actions(astore.add).on_summary(astore.add)
    client.on_actions(store.add).on_summary(store.add).on_actions(done).on_summary(done)
    task = await started(client)
    for n in (1, 2, 3):
        emulator.publish("acme", actions(n))
    emulator.publish(
        "acme",
        {
            "type": "summary",
            "product_id": "acme",
            "session_id": "s1",
            "summary": "The user did things one and two.",
            "replaces": 2,
            "forwarded_at": 2.0,
        },
    )
    assert await done.await_for(4)
    client.stop()
    await asyncio.wait_for(task, 5)
    expected = (
        "[Session context]\n"
        "Summary: The user did things one and two.\n"
        "\n"
        "Recent activity:\n"
        "1. Did thing 3 — /p/3\n"
        "\n"
        "[Query]\n"
        "How do I export?"
    )
    assert await astore.aenrich("s1", "How do I export?", product_id="acme") == expected
    assert store.enrich("s1", "How do I export?", product_id="acme") == expected


@pytest.mark.parametrize("mode", ["clean", "abort"])
async def test_resume_with_zero_loss_and_zero_duplicates(
    emulator: EmulatorServer, mode: str
) -> None:
    emulator.faults.close_every = 6
    emulator.faults.close_mode = mode  # type: ignore[assignment]
    got = Collector()
    client = client_for(emulator).on_actions(lambda p: got(p.event_id))
    task = await started(client)
    for n in range(1, 61):
        emulator.publish("acme", actions(n))
    assert await got.await_for(60, timeout=10)
    client.stop()
    await task
    assert got.items == [str(n) for n in range(1, 61)]
    assert client.counters.duplicates == 0
    assert client.counters.reconnects >= 60 // 6 - 1  # the last cut may come after event 60


async def test_replayed_duplicates_are_dropped(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 4
    emulator.faults.replay_overlap = 3
    got = Collector()
    client = client_for(emulator).on_actions(lambda p: got(p.event_id))
    task = await started(client)
    for n in range(1, 21):
        emulator.publish("acme", actions(n))
    assert await got.await_for(20, timeout=10)
    client.stop()
    await task
    assert got.items == [str(n) for n in range(1, 21)]
    assert client.counters.duplicates >= 3 * 4


async def test_auth_and_not_found_raise_without_retry(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
    server = emulator_factory(token=TOKEN)
    with pytest.raises(ConnectorAuthError) as caught:
        await client_for(server).run()
    assert caught.value.status_code == 401
    with pytest.raises(ConnectorAuthError) as caught:
        await client_for(server, token="nope").run()
    assert caught.value.status_code == 403
    with pytest.raises(ConnectorNotFoundError):
        await client_for(server, product="nope", token=TOKEN).run()
    assert [r.status for r in server.requests] == [401, 403, 404]


async def test_background_fatal_error_goes_to_async_on_error_and_await_reraises(
    emulator_factory: EmulatorFactory,
) -> None:
    server = emulator_factory(token=TOKEN)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = client_for(server, token="bad").on_error(on_error)
    task = client.run_in_background()
    with pytest.raises(ConnectorAuthError):
        await asyncio.wait_for(task, 5)
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectorAuthError)
    with pytest.raises(ConnectorAuthError):
        await client.wait()


async def test_5xx_burst_backs_off_then_connects(emulator: EmulatorServer) -> None:
    emulator.fail_next(3, status=502)
    got = Collector()
    client = client_for(emulator, rng=lambda: 0.0).on_actions(got)
    task = await started(client)
    emulator.publish("acme", actions(1))
    assert await got.await_for(1)
    client.stop()
    await task
    assert [r.status for r in emulator.requests] == [502, 502, 502, 200]
    assert client.counters.reconnects == 3


async def test_heartbeat_timeout_reconnects_and_resumes(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)
    got = Collector()
    client = client_for(server, heartbeat_timeout=0.3).on_actions(lambda p: got(p.event_id))
    task = await started(client)
    server.publish("acme", actions(1))
    assert await got.await_for(1)
    assert await server.await_for(lambda s: s.streams_opened >= 2)
    server.publish("acme", actions(2))
    assert await got.await_for(2)
    client.stop()
    await task
    assert got.items == ["1", "2"]
    assert server.requests[1].last_event_id == "1"


async def test_bad_frames_are_counted_reported_and_skipped(aemulator: EmulatorServer) -> None:
    got, errors = Collector(), Collector()
    client = client_for(aemulator).on_actions(lambda p: got(p.event_id)).on_error(errors)
    task = await started(client)
    aemulator.publish("acme", actions(1))
    frames = bad_frames()
    for _ in range(4):
        aemulator.publish_raw("acme", next(frames)[1])
    aemulator.publish("acme", {"type": "usertour_trigger", "product_id": "acme"})
    aemulator.publish("acme", actions(7))
    assert await got.await_for(2)
    client.stop()
    await task
    assert got.items == ["1", "7"]
    assert [e.reason for e in errors.items] == ["not_json", "not_object", "invalid", "oversized"]
    assert all(isinstance(e, EventDecodeError) for e in errors.items)
    assert client.counters.decode_errors == 4
    assert client.counters.connections == 1


async def test_unknown_events_and_fan_out(emulator: EmulatorServer) -> None:
    first, second, unknown = Collector(), Collector(), Collector()

    async def second_async(payload: ActionsPayload) -> None:
        await asyncio.sleep(0)
        second(payload.event_id)

    client = client_for(emulator).on_actions(lambda p: first(p.event_id))
    client.on_actions(second_async).on_event(unknown)
    task = await started(client)
    emulator.publish("acme", {"type": "usertour_trigger", "product_id": "acme", "session_id": "s"})
    emulator.publish("acme", actions(2))
    assert await second.await_for(1)
    assert await unknown.await_for(1)
    client.stop()
    await task
    assert (first.items, second.items) == (["2"], ["2"])
    assert isinstance(unknown.items[0], UnknownEvent)
    assert unknown.items[0].type == "usertour_trigger"


async def test_a_slow_session_never_delays_another(emulator: EmulatorServer) -> None:
    release_a = asyncio.Event()
    delivered: list[str] = []
    b_done = Collector()

    async def handler(payload: ActionsPayload) -> None:
        if payload.session_id == "A":
            await release_a.wait()
        delivered.append(f"{payload.session_id}{payload.actions[0].title}")
        if payload.session_id == "B":
            b_done(1)

    client = client_for(emulator).on_actions(handler)
    task = await started(client)
    emulator.publish("acme", actions(1, session="A"))
    emulator.publish("acme", actions(2, session="B"))
    emulator.publish("acme", actions(3, session="A"))
    emulator.publish("acme", actions(4, session="B"))
    assert await b_done.await_for(2)
    assert delivered == ["BT2", "BT4"]  # A is still blocked on its first event
    assert client.queue_size == 2
    release_a.set()
    client.stop()
    await task
    assert delivered == ["BT2", "BT4", "AT1", "AT3"]


async def test_per_session_order_holds_under_interleaving(emulator: EmulatorServer) -> None:
    seen: dict[str, list[int]] = {"A": [], "B": [], "C": []}
    done = Collector()

    async def handler(payload: ActionsPayload) -> None:
        n = int(payload.actions[0].title[1:])
        for _ in range(n % 4):  # uneven suspension points shuffle the lanes
            await asyncio.sleep(0)
        seen[payload.session_id or ""].append(n)
        done(n)

    client = client_for(emulator).on_actions(handler)
    task = await started(client)
    for n in range(1, 91):
        emulator.publish("acme", actions(n, session="ABC"[n % 3]))
    assert await done.await_for(90)
    client.stop()
    await task
    for index, session in enumerate("ABC"):
        assert seen[session] == [n for n in range(1, 91) if n % 3 == index]


async def test_session_concurrency_caps_in_flight_callbacks(emulator: EmulatorServer) -> None:
    in_flight = 0
    peak = 0
    done = Collector()
    gate = asyncio.Event()

    async def handler(payload: ActionsPayload) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        done(1)

    client = client_for(emulator, session_concurrency=2)
    for _ in range(5):
        client.on_actions(handler)
    task = await started(client)
    emulator.publish("acme", actions(1))
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, gate.set)
    assert await done.await_for(5)
    client.stop()
    await task
    assert peak == 2


async def test_buffer_is_bounded_and_drops_are_exact(emulator: EmulatorServer) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    drops = Collector()
    delivered: list[str] = []

    async def slow(payload: ActionsPayload) -> None:
        entered.set()
        await release.wait()
        delivered.append(payload.event_id or "")

    client = client_for(emulator, max_queue_size=2).on_actions(slow).on_drop(drops)
    task = await started(client)
    emulator.publish("acme", actions(1))
    await asyncio.wait_for(entered.wait(), 5)
    for n in range(2, 5):
        emulator.publish("acme", actions(n, session=f"other{n}"))
    assert await drops.await_for(2)
    release.set()
    client.stop()
    await task
    assert delivered == ["1", "2"]
    assert [total for _, total in drops.items] == [1, 2]
    assert [raw["session_id"] for raw, _ in drops.items] == ["other3", "other4"]
    counters = client.counters
    assert (counters.received, counters.delivered, counters.dropped) == (4, 2, 2)


async def test_stop_counts_what_drain_timeout_cannot_deliver(emulator: EmulatorServer) -> None:
    never = asyncio.Event()
    entered = asyncio.Event()
    probe = Collector()

    async def stuck(payload: ActionsPayload) -> None:
        if payload.session_id == "probe":
            probe(1)
            return
        entered.set()
        await never.wait()

    drops = Collector()
    client = client_for(emulator, drain_timeout=0.05).on_actions(stuck).on_drop(drops)
    task = await started(client)
    for n in range(1, 4):
        emulator.publish("acme", actions(n))
    # Frames are read in order: once the probe is delivered, events 1-3 were received.
    emulator.publish("acme", actions(4, session="probe"))
    await asyncio.wait_for(entered.wait(), 5)
    assert await probe.await_for(1)
    client.stop()
    await asyncio.wait_for(task, 5)
    counters = client.counters
    assert (counters.received, counters.delivered, counters.dropped) == (4, 1, 3)
    assert [total for _, total in drops.items] == [1, 2, 3]
    assert [raw["actions"][0]["title"] for raw, _ in drops.items] == ["T1", "T2", "T3"]
    assert client.queue_size == 0


async def test_stop_is_prompt_on_an_idle_stream(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)
    client = client_for(server)
    task = await started(client)
    client.stop()
    await asyncio.wait_for(task, 1.0)


async def test_stop_from_another_thread(emulator: EmulatorServer) -> None:
    client = client_for(emulator)
    task = await started(client)
    threading.Thread(target=client.stop).start()
    await asyncio.wait_for(task, 1.0)


async def test_stop_before_the_task_starts_and_async_with(emulator: EmulatorServer) -> None:
    client = client_for(emulator)
    task = client.run_in_background()
    client.stop()
    await asyncio.wait_for(task, 1.0)
    got = Collector()
    async with client_for(emulator) as other:
        other.on_actions(got)
        is_up = connected(other)
        other.run_in_background()
        await asyncio.wait_for(is_up.wait(), 5)
        emulator.publish("acme", actions(1))
        assert await got.await_for(1)
    assert other.counters.delivered == 1


async def test_token_never_in_logs_repr_or_errors(
    emulator_factory: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = emulator_factory(token=TOKEN)
    monkeypatch.setenv("AUTOPLAY_APP_UNKEY_TOKEN", TOKEN)
    got = Collector()
    client = client_for(server).on_actions(got)
    task = await started(client)
    server.publish("acme", actions(1))
    assert await got.await_for(1)
    server.drop_connections()
    assert await server.await_for(lambda s: s.streams_opened == 2)
    client.stop()
    await task
    bad = client_for(server, token="x" + TOKEN)
    with pytest.raises(ConnectorAuthError) as caught:
        await bad.run()
    for text in (caplog.text, repr(client), repr(bad), str(caught.value)):
        assert TOKEN not in text


def test_invalid_async_options() -> None:
    with pytest.raises(ConfigError):
        AsyncConnectorClient("http://127.0.0.1:1/stream/p", session_concurrency=0)
    with pytest.raises(ConfigError):
        AsyncConnectorClient("http://127.0.0.1:1/stream/p", max_queue_size=0)
    with pytest.raises(ConfigError, match="lane_linger"):
        AsyncConnectorClient("http://127.0.0.1:1/stream/p", lane_linger=-1)


async def test_drain_timeout_zero_drops_at_once(emulator: EmulatorServer) -> None:
    never = asyncio.Event()
    entered = asyncio.Event()

    async def stuck(payload: ActionsPayload) -> None:
        entered.set()
        await never.wait()

    client = client_for(emulator, drain_timeout=0).on_actions(stuck)
    task = await started(client)
    emulator.publish("acme", actions(1))
    await asyncio.wait_for(entered.wait(), 5)
    client.stop()
    await asyncio.wait_for(task, 1.0)
    assert (client.counters.delivered, client.counters.dropped) == (0, 1)


class LaneTasks:
    """A real task factory on the running loop that keeps the client's lane tasks."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        if getattr(coro, "__qualname__", "").endswith("_run_lane"):
            self.tasks.append(task)
        return task


async def test_a_busy_session_reuses_its_lane_task(emulator: EmulatorServer) -> None:
    lanes = LaneTasks()
    asyncio.get_running_loop().set_task_factory(lanes)
    store = AsyncContextStore()
    done = Collector()
    gate = asyncio.Event()

    async def record(payload: ActionsPayload) -> None:
        if payload.actions[0].title == "T31":
            await gate.wait()
        await store.add(payload)
        done(payload.actions[0].title)

    client = client_for(emulator).on_actions(record)
    task = await started(client)
    for n in range(1, 16):
        emulator.publish("acme", actions(n, session=f"s{n % 3}"))
    assert await done.await_for(15)
    for n in range(16, 31):  # a second burst: the three lanes are still lingering
        emulator.publish("acme", actions(n, session=f"s{n % 3}"))
    assert await done.await_for(30)
    assert len(lanes.tasks) == 3
    for session in range(3):  # each session in order (sessions interleave freely)
        mine = [t for t in done.items if int(t[1:]) % 3 == session]
        assert mine == [f"T{n}" for n in range(1, 31) if n % 3 == session]
    assert store.get("s1", product_id="acme").splitlines()[-1] == "10. Did thing 28 — /p/28"

    # A slow callback holds its session's next event back, and no other session's.
    emulator.publish("acme", actions(31))
    emulator.publish("acme", actions(32))
    emulator.publish("acme", actions(33, session="other"))
    assert await done.await_for(31)
    assert done.items[30:] == ["T33"]
    assert (len(lanes.tasks), client.queue_size) == (4, 2)
    gate.set()
    assert await done.await_for(33)
    assert done.items[30:] == ["T33", "T31", "T32"]
    client.stop()
    await task
    assert client.counters.delivered == 33
    assert all(t.done() for t in lanes.tasks)  # lingering lanes end with the client


async def test_idle_lanes_end_after_lane_linger(emulator: EmulatorServer) -> None:
    lanes = LaneTasks()
    asyncio.get_running_loop().set_task_factory(lanes)
    done = Collector()
    client = client_for(emulator, lane_linger=0.05).on_actions(lambda p: done(p.session_id))
    task = await started(client)
    for n in range(1, 7):
        emulator.publish("acme", actions(n, session=f"s{n % 2}"))
    assert await done.await_for(6)
    assert len(lanes.tasks) == 2
    await asyncio.wait_for(asyncio.gather(*lanes.tasks), 5)  # they end on their own
    emulator.publish("acme", actions(7, session="s1"))
    assert await done.await_for(7)
    assert len(lanes.tasks) == 3  # a new lane for the returning session
    client.stop()
    await task


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_a_timeout_inside_a_callback_binds_to_its_lane(emulator: EmulatorServer) -> None:
    timed_out, delivered = Collector(), Collector()
    never = asyncio.Event()

    async def bounded(payload: ActionsPayload) -> None:
        if payload.actions[0].title == "T1":
            try:
                # Binds to the current task: it must be this callback's, not the reader's.
                async with asyncio.timeout(0.05):  # type: ignore[attr-defined,unused-ignore]
                    await never.wait()
            except TimeoutError:
                timed_out(1)
        delivered(payload.actions[0].title)

    client = client_for(emulator).on_actions(bounded)
    task = await started(client)
    emulator.publish("acme", actions(1))
    assert await delivered.await_for(1)
    emulator.publish("acme", actions(2))  # the stream is still read after the timeout
    assert await delivered.await_for(2)
    client.stop()
    await task
    assert (timed_out.items, delivered.items) == ([1], ["T1", "T2"])


CALLBACK_MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")


async def test_a_context_variable_set_in_a_callback_stays_in_its_session_lane(
    emulator: EmulatorServer,
) -> None:
    seen = Collector()

    async def marks(payload: ActionsPayload) -> None:
        seen(CALLBACK_MARK.get())
        CALLBACK_MARK.set(f"set by {payload.event_id}")
        await asyncio.sleep(0)
        seen(CALLBACK_MARK.get())

    client = client_for(emulator).on_actions(marks)
    task = await started(client)
    emulator.publish("acme", actions(1))
    emulator.publish("acme", actions(2, session="s2"))
    assert await seen.await_for(4)
    client.stop()
    await task
    assert sorted(seen.items) == ["set by 1", "set by 2", "unset", "unset"]


async def test_errors_before_and_after_a_suspension_are_reported_and_the_stream_goes_on(
    emulator: EmulatorServer,
) -> None:
    errors, delivered = Collector(), Collector()

    async def flaky(payload: ActionsPayload) -> None:
        title = payload.actions[0].title
        if title == "T1":
            raise ValueError("before suspending")
        await asyncio.sleep(0)
        if title == "T2":
            raise KeyError("after suspending")
        delivered(title)

    client = client_for(emulator).on_actions(flaky).on_error(errors)
    task = await started(client)
    for n in (1, 2, 3):
        emulator.publish("acme", actions(n))
    assert await delivered.await_for(1)
    assert await errors.await_for(2)
    client.stop()
    await task
    assert [type(e).__name__ for e in errors.items] == ["ValueError", "KeyError"]
    assert delivered.items == ["T3"]
    counters = client.counters
    assert (counters.delivered, counters.callback_errors) == (3, 2)


@pytest.mark.parametrize("round_", range(12))
async def test_stop_mid_stream_with_quick_suspended_and_stuck_callbacks_keeps_the_books(
    emulator_factory: EmulatorFactory, round_: int
) -> None:
    server = emulator_factory()
    never = asyncio.Event()
    started_titles: list[int] = []
    finished: dict[str, list[int]] = {}
    unwound: list[int] = []
    done = Collector()

    async def mixed(payload: ActionsPayload) -> None:
        n = int(payload.actions[0].title[1:])
        started_titles.append(n)
        try:
            kind = (n + round_) % 5
            if kind == 1:
                await asyncio.sleep(0)
            elif kind == 2:
                for _ in range(3):
                    await asyncio.sleep(0)
            elif kind == 3 and n > 150:
                await never.wait()  # still in flight when stop's drain_timeout ends
            finished.setdefault(payload.session_id or "", []).append(n)
            done(n)
        finally:
            unwound.append(n)

    client = client_for(server, drain_timeout=0.05).on_actions(mixed)
    task = await started(client)
    for n in range(1, 201):
        server.publish("acme", actions(n, session=f"s{n % 10}"))
    assert await done.await_for(100)
    client.stop()
    await asyncio.wait_for(task, 5)
    counters = client.counters
    assert counters.received == counters.delivered + counters.dropped
    assert counters.delivered == len(done.items)
    assert sorted(unwound) == sorted(started_titles)  # every started callback ended
    for session, seen in finished.items():
        assert seen == sorted(seen), session  # each session in order
    assert client.queue_size == 0


async def test_the_reader_hands_the_loop_to_the_lanes_while_data_keeps_coming(
    emulator_factory: EmulatorFactory,
) -> None:
    # A backlog replayed at socket speed: every read finds data waiting, so a reader
    # that never suspends between reads would queue the whole backlog before the
    # first callback ran. It hands the loop over after at most 256 events instead.
    total = 3_000
    server = emulator_factory(replay_from_start=True, replay_size=total)
    for n in range(1, total + 1):
        server.publish("acme", actions(n, session=f"s{n % 10}"))
    client = client_for(server)
    received_at_first: list[int] = []
    done = Collector()

    def record(payload: ActionsPayload) -> None:
        if not received_at_first:
            received_at_first.append(client.counters.received)
        done(payload.actions[0].title)

    client.on_actions(record)
    task = client.run_in_background()
    assert await done.await_for(total)
    client.stop()
    await task
    assert 1 <= received_at_first[0] <= 256
    assert client.counters.delivered == total
    assert sorted(done.items) == sorted(f"T{n}" for n in range(1, total + 1))
