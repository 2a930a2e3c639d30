"""``Lanes`` on its own: a fake ``deliver``/``dropped`` pair, a real event loop.

The async client hands ``Lanes`` its callbacks through ``deliver``; here
``deliver`` records what it was given (and in which task), and can hold one
session back behind a gate, so each rule is checked without a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest

from autoplay_base._connection import ClientCounters
from autoplay_base._lanes import Lanes
from autoplay_base.events import ActionsPayload, Event
from tests.autoplay_base.factories import actions

WAIT = 5.0  # seconds any wait below may take before the test fails


def event(session: str, n: int) -> ActionsPayload:
    return actions(session, f"e{n}", product_id="acme")


def label(event: Event) -> tuple[str | None, str]:
    assert isinstance(event, ActionsPayload)
    return (event.session_id, event.actions[0].description)


class FakeDeliver:
    """Records each event delivered, with the task that ran it; gates hold sessions back."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []
        self.tasks: list[asyncio.Task[object] | None] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: list[tuple[str | None, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> Awaitable[None]:
        return self._deliver(event)

    async def _deliver(self, event: Event) -> None:
        self.entered.append(label(event))
        self._changed.set()
        gate = self.gates.get(event.session_id or "")
        if gate is not None:
            await gate.wait()
        self.seen.append(label(event))
        self.tasks.append(asyncio.current_task())
        self._changed.set()

    async def until(self, count: int, *, entered: bool = False) -> None:
        """Wait until ``count`` events were delivered (or entered ``deliver``)."""

        async def wait() -> None:
            while len(self.entered if entered else self.seen) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), WAIT)


class Drops:
    def __init__(self) -> None:
        self.items: list[tuple[tuple[str | None, str], str]] = []

    def __call__(self, event: Event, why: str) -> None:
        self.items.append((label(event), why))


def make(
    deliver: FakeDeliver,
    drops: Drops,
    *,
    max_buffered: int = 100,
    linger: float = 60.0,
    drain_timeout: float = 5.0,
    stuck_grace: float = 1.0,
    max_lingering: int = 1024,
) -> tuple[Lanes, ClientCounters]:
    counters = ClientCounters()
    lanes = Lanes(
        deliver,
        drops,
        counters,
        max_buffered=max_buffered,
        drain_timeout=drain_timeout,
        stuck_grace=stuck_grace,
        linger=linger,
        max_lingering=max_lingering,
    )
    lanes.start()
    return lanes, counters


async def test_each_session_in_order_and_a_held_session_never_delays_another() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops)
    deliver.gates["a"] = gate = asyncio.Event()
    for n in range(1, 4):
        lanes.put(event("a", n))
        lanes.put(event("b", n))
    await deliver.until(3)
    assert deliver.seen == [("b", "e1"), ("b", "e2"), ("b", "e3")]
    assert (lanes.buffered, counters.delivered) == (3, 3)
    gate.set()
    await deliver.until(6)
    assert deliver.seen[3:] == [("a", "e1"), ("a", "e2"), ("a", "e3")]
    assert (lanes.buffered, counters.delivered, drops.items) == (0, 6, [])
    await lanes.drain()


async def test_one_event_at_a_time_per_session() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, _ = make(deliver, drops)
    deliver.gates["a"] = gate = asyncio.Event()
    lanes.put(event("a", 1))
    lanes.put(event("a", 2))
    await deliver.until(1, entered=True)
    await asyncio.sleep(0)  # a second event would enter now if the lane did not wait
    assert deliver.entered == [("a", "e1")]
    gate.set()
    await deliver.until(2)
    assert deliver.seen == [("a", "e1"), ("a", "e2")]
    await lanes.drain()


async def test_a_lingering_lane_reuses_its_task_for_the_next_burst() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops)
    lanes.put(event("a", 1))
    await deliver.until(1)
    assert (lanes.sessions, lanes.lingering) == (1, 1)
    lanes.put(event("a", 2))
    await deliver.until(2)
    assert deliver.tasks[0] is deliver.tasks[1]
    assert (lanes.sessions, lanes.lingering, counters.delivered) == (1, 1, 2)
    await lanes.drain()


async def test_without_linger_a_lane_ends_as_soon_as_it_is_idle() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, _ = make(deliver, drops, linger=0)
    lanes.put(event("a", 1))
    await deliver.until(1)
    first = deliver.tasks[0]
    assert first is not None
    await asyncio.wait_for(first, WAIT)
    assert (lanes.sessions, lanes.lingering) == (0, 0)
    lanes.put(event("a", 2))
    await deliver.until(2)
    assert deliver.tasks[1] is not first
    await lanes.drain()


async def test_the_sweep_ends_lanes_idle_since_the_previous_sweep() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, _ = make(deliver, drops, linger=0.02)
    lanes.put(event("a", 1))
    await deliver.until(1)
    task = deliver.tasks[0]
    assert task is not None and lanes.lingering == 1
    await asyncio.wait_for(task, WAIT)  # ended by the sweep, not by drain
    assert (lanes.sessions, lanes.lingering) == (0, 0)
    await lanes.drain()


async def test_no_more_than_max_lingering_lanes_linger() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, _ = make(deliver, drops, max_lingering=1)
    lanes.put(event("a", 1))
    await deliver.until(1)
    lanes.put(event("b", 1))
    await deliver.until(2)
    second = deliver.tasks[1]
    assert second is not None
    await asyncio.wait_for(second, WAIT)  # no room to linger: it ended
    assert (lanes.sessions, lanes.lingering) == (1, 1)
    await lanes.drain()


async def test_drain_wakes_lingering_lanes_at_once() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops, linger=3600.0, drain_timeout=3600.0)
    for session in ("a", "b", "c"):
        lanes.put(event(session, 1))
    await deliver.until(3)
    assert lanes.lingering == 3
    await asyncio.wait_for(lanes.drain(), WAIT)
    assert all(task is not None and task.done() for task in deliver.tasks)
    assert (lanes.sessions, lanes.lingering, counters.delivered, drops.items) == (0, 0, 3, [])


async def test_drain_delivers_what_is_buffered_when_there_is_time() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops)
    deliver.gates["a"] = gate = asyncio.Event()
    for n in range(1, 4):
        lanes.put(event("a", n))
    await deliver.until(1, entered=True)
    draining = asyncio.ensure_future(lanes.drain())
    gate.set()
    await asyncio.wait_for(draining, WAIT)
    assert deliver.seen == [("a", "e1"), ("a", "e2"), ("a", "e3")]
    assert (counters.delivered, drops.items, lanes.buffered) == (3, [], 0)


async def test_a_full_buffer_drops_new_events_and_counts_nothing_twice() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops, max_buffered=2)
    deliver.gates["a"] = gate = asyncio.Event()
    for n in range(1, 5):
        lanes.put(event("a", n))
    assert drops.items == [(("a", "e3"), "buffer full"), (("a", "e4"), "buffer full")]
    assert lanes.buffered == 2
    gate.set()
    await deliver.until(2)
    lanes.put(event("a", 5))  # room again
    await deliver.until(3)
    assert deliver.seen == [("a", "e1"), ("a", "e2"), ("a", "e5")]
    assert (counters.delivered, len(drops.items), lanes.buffered) == (3, 2, 0)
    await lanes.drain()


async def test_drain_past_its_timeout_drops_the_event_in_flight_and_the_rest() -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops, drain_timeout=0.05)
    deliver.gates["a"] = asyncio.Event()  # never set: the callback is cancelled
    for n in range(1, 4):
        lanes.put(event("a", n))
    lanes.put(event("b", 1))
    await deliver.until(1)  # b delivered; a's first event is held
    await asyncio.wait_for(lanes.drain(), WAIT)
    why = "not delivered before stop's drain_timeout"
    assert drops.items == [(("a", f"e{n}"), why) for n in (1, 2, 3)]
    assert (counters.delivered, lanes.buffered, lanes.sessions) == (1, 0, 0)


async def test_a_callback_that_swallows_its_cancellation_is_abandoned_and_its_books_kept() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    returned = asyncio.Event()
    finished: list[str] = []
    running: list[asyncio.Task[object] | None] = []

    async def stubborn(event: Event) -> None:
        running.append(asyncio.current_task())
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallowed: drain must still return
        finished.append(label(event)[1])
        returned.set()

    drops = Drops()
    counters = ClientCounters()
    lanes = Lanes(stubborn, drops, counters, max_buffered=10, drain_timeout=0.02, stuck_grace=0.02)
    lanes.start()
    lanes.put(event("a", 1))
    lanes.put(event("a", 2))
    await asyncio.wait_for(entered.wait(), WAIT)
    await asyncio.wait_for(lanes.drain(), WAIT)
    why = "not delivered before stop's drain_timeout"
    assert drops.items == [(("a", "e1"), why), (("a", "e2"), why)]
    release.set()
    # The lane goes on in the same step once the callback returns: it sees it
    # was abandoned before this test runs again.
    await asyncio.wait_for(returned.wait(), WAIT)
    assert finished == ["e1"]  # it ran to its end, but its lane was given up on
    task = running[0]
    assert task is not None
    await asyncio.wait_for(task, WAIT)  # and the lane ended quietly, touching nothing
    assert (counters.delivered, lanes.buffered) == (0, 0)  # counted dropped, never delivered


async def test_deliver_may_return_nothing_to_await() -> None:
    seen: list[tuple[str | None, str]] = []
    done = asyncio.Event()

    def plain(event: Event) -> None:
        seen.append(label(event))
        if len(seen) == 2:
            done.set()

    counters = ClientCounters()
    lanes = Lanes(plain, Drops(), counters, max_buffered=10, drain_timeout=1.0, stuck_grace=1.0)
    lanes.start()
    lanes.put(event("a", 1))
    lanes.put(event("a", 2))
    await asyncio.wait_for(done.wait(), WAIT)
    await lanes.drain()
    assert (seen, counters.delivered) == ([("a", "e1"), ("a", "e2")], 2)


@pytest.mark.parametrize("linger", [0.0, 60.0])
async def test_lanes_can_run_again_after_a_drain(linger: float) -> None:
    deliver, drops = FakeDeliver(), Drops()
    lanes, counters = make(deliver, drops, linger=linger)
    lanes.put(event("a", 1))
    await deliver.until(1)
    await lanes.drain()
    lanes.start()
    lanes.put(event("a", 2))
    await deliver.until(2)
    await lanes.drain()
    assert (deliver.seen, counters.delivered, drops.items) == (
        [("a", "e1"), ("a", "e2")],
        2,
        [],
    )


async def test_what_deliver_raises_goes_to_failed_and_the_lane_goes_on() -> None:
    # Raised at once by deliver, or later by what it returned: both reach ``failed``
    # with their event, the event counts as delivered, and the session's next one runs.
    failures: list[tuple[tuple[str | None, str], str]] = []
    seen: list[tuple[str | None, str]] = []
    done = asyncio.Event()

    async def fails_later(event: Event) -> None:
        await asyncio.sleep(0)
        raise KeyError(label(event)[1])

    def deliver(event: Event) -> Awaitable[None] | None:
        seen.append(label(event))
        n = label(event)[1]
        if n == "e1":
            raise ValueError(n)
        if n == "e2":
            return fails_later(event)
        done.set()
        return None

    def failed(event: Event, exc: Exception) -> None:
        failures.append((label(event), type(exc).__name__))

    counters = ClientCounters()
    lanes = Lanes(
        deliver,
        Drops(),
        counters,
        max_buffered=10,
        drain_timeout=1.0,
        stuck_grace=1.0,
        failed=failed,
    )
    lanes.start()
    for n in (1, 2, 3):
        lanes.put(event("a", n))
    await asyncio.wait_for(done.wait(), WAIT)
    await lanes.drain()
    assert seen == [("a", "e1"), ("a", "e2"), ("a", "e3")]
    assert failures == [(("a", "e1"), "ValueError"), (("a", "e2"), "KeyError")]
    assert (counters.delivered, lanes.buffered) == (3, 0)


async def test_without_failed_a_raising_deliver_is_logged_and_the_lane_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str | None, str]] = []
    done = asyncio.Event()

    def deliver(event: Event) -> None:
        seen.append(label(event))
        if len(seen) == 1:
            raise RuntimeError("secret text that must not be logged")
        done.set()

    counters = ClientCounters()
    lanes = Lanes(deliver, Drops(), counters, max_buffered=10, drain_timeout=1.0, stuck_grace=1.0)
    lanes.start()
    with caplog.at_level(logging.ERROR, logger="autoplay_base.stream"):
        lanes.put(event("a", 1))
        lanes.put(event("a", 2))
        await asyncio.wait_for(done.wait(), WAIT)
        await lanes.drain()
    assert (seen, counters.delivered) == ([("a", "e1"), ("a", "e2")], 2)
    assert [r.getMessage() for r in caplog.records] == [
        "stream: delivering an event of type actions raised RuntimeError"
    ]
