"""The tracker's own guarantees: bounded queues, exact accounting, independent lanes,
callbacks, close, fork and exit."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from autoplay_base import ContextStore
from autoplay_base.emulator.receiver import IngestReceiver
from autoplay_base.errors import ConfigError
from autoplay_base.tracking import (
    AsyncTracker,
    ContextStoreSink,
    DropNotice,
    HttpBatchSink,
    Outcome,
    Sink,
    Tracker,
)
from autoplay_base.tracking.sinks.base import Encoded
from tests.autoplay_base.tracking.conftest import fast_backoff

MakeTracker = Callable[..., Tracker]


class GateSink(Sink):
    """A sink whose sends wait on a gate: a dead destination the test can revive."""

    name = "gate"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sent: list[str] = []

    def send(self, events: Sequence[Encoded]) -> Outcome:
        self.entered.set()
        self.gate.wait(10)
        self.sent.extend(event.event_id for event, _ in events)
        return Outcome()


def invariant(counts: Mapping[str, int]) -> bool:
    return counts["enqueued"] == (
        counts["delivered"] + counts["dropped"] + counts["failed"] + counts["pending"]
    )


def test_a_full_queue_drops_the_newest_exactly(
    make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    sink = GateSink()
    drops: list[DropNotice] = []
    tracker = make_tracker([sink], max_queue=5, on_drop=drops.append)
    handle = tracker.session("s1", product_id="acme")
    handle.track_event("first")
    assert sink.entered.wait(5)  # the first event is in flight; five more fit the outbox
    for n in range(12):
        handle.track_event(f"e{n}")
    counts = tracker.stats()["gate"]
    assert counts == {
        "enqueued": 13,
        "delivered": 0,
        "dropped": 7,
        "failed": 0,
        "batches": 0,
        "retries": 0,
        "pending": 6,
    }
    warnings = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [
        "tracking: sink gate: outbox full (5 events); 1 events dropped so far"
    ]
    sink.gate.set()
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.dropped, result.pending, result.enqueued) == (6, 7, 0, 13)
    assert len(sink.sent) == 6
    tracker.close(timeout=1)
    assert drops == [DropNotice("gate", 7, "queue_full")]


def test_the_accounting_holds_at_every_read(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    tracker = make_tracker(
        [HttpBatchSink(receiver.url, batch_size=7, flush_interval=0.01, backoff=fast_backoff())],
        max_queue=50,
    )
    receiver.fail_next(3, 503)
    stop = threading.Event()

    def produce() -> None:
        handle = tracker.session("s1", product_id="acme")
        while not stop.is_set():
            handle.track_event("tick")

    threads = [threading.Thread(target=produce) for _ in range(3)]
    for thread in threads:
        thread.start()
    reads = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert invariant(tracker.stats()["http"])
        reads += 1
    stop.set()
    for thread in threads:
        thread.join()
    result = tracker.flush(timeout=5)
    counts = result.by_sink["http"]
    assert invariant(counts)
    assert counts["delivered"] == len(receiver.unique_events()) == len(receiver.events)
    assert result.pending == 0
    assert reads >= 10


def test_a_dead_http_sink_does_not_delay_the_context_store(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    receiver.hang()
    store = ContextStore()
    tracker = make_tracker([HttpBatchSink(receiver.url), ContextStoreSink(store)])
    handle = tracker.session("s1", product_id="acme", user_id="u1")
    handle.track_turn(user="How do I export?", assistant="Open Reports, then click Export CSV.")
    assert receiver.wait_for_requests(1)
    started = time.monotonic()
    result = tracker.flush(timeout=1)
    assert time.monotonic() - started < 1.05
    assert result.by_sink["context"]["delivered"] == 1
    assert result.by_sink["http"]["pending"] == 1
    assert store.enrich("s1", "And then?", product_id="acme") == (
        "[Session context]\n"
        "Recent activity:\n"
        "1. Assistant answered: Open Reports, then click Export CSV.\n"
        "\n"
        "[Query]\n"
        "And then?"
    )


def test_an_outage_keeps_what_fits_drops_the_rest_exactly_and_spares_the_context_store(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    receiver.fail_next(10**9, 503)
    store = ContextStore()
    drops: list[DropNotice] = []
    sink = HttpBatchSink(receiver.url, flush_interval=0.01, backoff=fast_backoff(0.2, 0.2))
    tracker = make_tracker([sink, ContextStoreSink(store)], max_queue=10, on_drop=drops.append)
    handle = tracker.session("s1", product_id="acme")
    handle.track_turn(user="q0", assistant="a0")
    assert receiver.wait_for_requests(1)  # the first event's batch is being retried
    # The context store's lane has taken q0 out of its own outbox before ten more come.
    assert tracker.flush(timeout=1).by_sink["context"]["delivered"] == 1
    for n in range(1, 11):
        handle.track_turn(user=f"q{n}", assistant=f"a{n}")
    # (Each sink has its own bound: the context store's lane empties its outbox meanwhile.)
    assert tracker.flush(timeout=1).by_sink["context"]["delivered"] == 11
    for n in range(11, 16):
        handle.track_turn(user=f"q{n}", assistant=f"a{n}")
    during = tracker.flush(timeout=0.5)
    http, context = during.by_sink["http"], during.by_sink["context"]
    # 1 in its retry, 10 in the outbox, 5 beyond the bound: dropped and counted, none failed.
    assert (http["pending"], http["dropped"], http["failed"], http["delivered"]) == (11, 5, 0, 0)
    assert (context["delivered"], context["pending"], context["dropped"]) == (16, 0, 0)
    assert invariant(http) and invariant(context)
    assert "Assistant answered: a15" in store.enrich("s1", "?", product_id="acme")
    receiver.fail_next(0)  # the collector is back
    after = tracker.flush(timeout=5)
    assert (after.by_sink["http"]["delivered"], after.by_sink["http"]["failed"]) == (11, 0)
    assert [e["data"]["user"] for e in receiver.unique_events()] == ["q0"] + [
        f"q{n}" for n in range(1, 11)
    ]
    assert len(receiver.events) == 11
    tracker.close(timeout=1)
    assert drops == [DropNotice("http", 5, "queue_full")]


def test_callbacks_that_raise_are_counted(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    def on_error(error: object) -> None:
        raise RuntimeError("callback bug")

    receiver.fail_next(2, 400)
    tracker = make_tracker(
        [HttpBatchSink(receiver.url, batch_size=1, flush_interval=0.01)], on_error=on_error
    )
    handle = tracker.session("s1", product_id="acme")
    handle.track_event("a")
    handle.track_event("b")
    handle.track_event("c")
    result = tracker.flush(timeout=5)
    assert (result.failed, result.delivered) == (2, 1)
    assert tracker.stats()["tracker"]["callback_errors"] == 2
    assert tracker.stats()["tracker"]["errors"] == 2


def test_close_refuses_later_events_and_is_idempotent(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    tracker = make_tracker([HttpBatchSink(receiver.url)])
    handle = tracker.session("s1", product_id="acme")
    handle.track_event("before")
    first = tracker.close(timeout=5)
    handle.track_event("after")
    handle.track_event("after again")
    assert (first.delivered, first.timed_out) == (1, False)
    assert tracker.close(timeout=5) == first
    assert tracker.stats()["tracker"]["rejected_after_close"] == 2
    assert tracker.closed


def test_the_error_list_is_bounded(make_tracker: MakeTracker, receiver: IngestReceiver) -> None:
    receiver.fail_next(5, 400)
    tracker = make_tracker(
        [HttpBatchSink(receiver.url, batch_size=1, flush_interval=0.01)], max_errors=2
    )
    handle = tracker.session("s1", product_id="acme")
    for n in range(5):
        handle.track_event(f"e{n}")
    assert tracker.flush(timeout=5).failed == 5
    assert len(tracker.get_errors()) == 2
    assert tracker.stats()["tracker"]["errors"] == 5


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError):
        Tracker([])
    with pytest.raises(ConfigError):
        Tracker([GateSink()], max_queue=0)
    with pytest.raises(ConfigError):
        Tracker([object()])  # type: ignore[list-item]
    tracker = Tracker([GateSink()], flush_at_exit=False)
    with pytest.raises(ConfigError):
        tracker.session("", product_id="acme")
    with pytest.raises(ConfigError):
        tracker.session("s1", product_id=None)  # type: ignore[arg-type]
    tracker.close(timeout=0)


def test_sink_names_are_unique(make_tracker: MakeTracker) -> None:
    tracker = make_tracker([GateSink(), GateSink()])
    assert list(tracker.stats()) == ["tracker", "gate", "gate-2"]


def test_identify_carries_the_user_on_later_events(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    tracker = make_tracker([HttpBatchSink(receiver.url)])
    handle = tracker.session("s1", product_id="acme", device_id="d1")
    handle.track_event("anonymous")
    handle.identify("u7", {"plan": "pro"})
    handle.track_event("known")
    handle.alias("u8", "u7")
    handle.end_conversation("c2")
    handle.end_session()
    tracker.identify("u9", product_id="acme", traits={"a": 1})
    tracker.alias("u10", "u9", product_id="acme")
    assert tracker.flush(timeout=5).delivered == 8
    got = [(e["type"], e["session_id"], e["user_id"], e["device_id"]) for e in receiver.events]
    assert got == [
        ("event", "s1", None, "d1"),
        ("identify", "s1", "u7", "d1"),
        ("event", "s1", "u7", "d1"),
        ("alias", "s1", "u7", "d1"),
        ("conversation_end", "s1", "u7", "d1"),
        ("session_end", "s1", "u7", "d1"),
        ("identify", None, "u9", None),
        ("alias", None, "u10", None),
    ]
    assert receiver.events[4]["conversation_id"] == "c2"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_lanes(
    make_tracker: MakeTracker, receiver: IngestReceiver
) -> None:
    sink = GateSink()
    tracker = make_tracker([HttpBatchSink(receiver.url), sink])
    parent = tracker.session("parent", product_id="acme")
    parent.track_event("before fork")
    assert sink.entered.wait(5)  # the parent's gate lane holds its event in flight
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: track, flush to the receiver, report, and leave at once
        code = 1
        try:
            os.close(read)
            before = tracker.stats()
            sink.gate.set()  # the child's copy of the gate (the parent's stays shut)
            child = tracker.session("child", product_id="acme")
            child.track_event("from the child")
            result = tracker.flush(timeout=5)
            line = f"{before['http']['enqueued']} {result.by_sink['http']} {result.by_sink['gate']}"
            os.write(write, line.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 4096).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    fresh = str(
        {"enqueued": 1, "delivered": 1, "dropped": 0, "failed": 0, "batches": 1, "retries": 0}
        | {"pending": 0}
    )
    assert report == f"0 {fresh} {fresh}"
    # The parent's lanes are untouched: its gate event is still in flight, its HTTP one delivered.
    assert tracker.stats()["gate"]["pending"] == 1
    sink.gate.set()
    assert tracker.flush(timeout=5).pending == 0
    sessions = sorted(e["session_id"] for e in receiver.unique_events())
    assert sessions == ["child", "parent"]
    assert len(receiver.events) == 2


def test_exit_flushes_an_open_tracker_within_its_timeout(
    receiver_factory: Callable[..., IngestReceiver],
) -> None:
    live = receiver_factory()
    hung = receiver_factory()
    hung.hang()
    script = textwrap.dedent(
        f"""
        from autoplay_base.tracking import HttpBatchSink, Tracker
        ok = Tracker([HttpBatchSink({live.url!r})], exit_timeout=1.0)
        stuck = Tracker([HttpBatchSink({hung.url!r})], exit_timeout=1.0)
        for tracker in (ok, stuck):
            tracker.session("s1", product_id="acme").track_event("at exit")
        """
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30, cwd=os.getcwd())
    elapsed = time.monotonic() - started
    assert [e["data"]["name"] for e in live.events] == ["at exit"]
    assert hung.wait_for_requests(1)
    # Interpreter start-up plus at most one second per tracker.
    assert elapsed < 2.0 + 2.5


def test_exit_flush_can_be_opted_out(receiver: IngestReceiver) -> None:
    script = textwrap.dedent(
        f"""
        from autoplay_base.tracking import HttpBatchSink, Tracker
        tracker = Tracker([HttpBatchSink({receiver.url!r}, flush_interval=30)], flush_at_exit=False)
        tracker.session("s1", product_id="acme").track_event("lost on purpose")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert receiver.requests == []


# -- the async twin ---------------------------------------------------------------------
async def test_async_track_from_another_thread_wakes_the_loop(receiver: IngestReceiver) -> None:
    store = ContextStore()
    async with AsyncTracker(
        [HttpBatchSink(receiver.url, flush_interval=0.01), ContextStoreSink(store)]
    ) as tracker:
        handle = tracker.session("s1", product_id="acme")
        worker = threading.Thread(
            target=lambda: handle.track_turn(user="q", assistant="From a thread.")
        )
        worker.start()
        worker.join()
        assert await receiver.await_for(lambda r: len(r.events) == 1)
        result = await tracker.aflush(timeout=5)
        assert (result.delivered, result.pending) == (2, 0)
    assert (
        store.get("s1", product_id="acme")
        == "Recent activity:\n1. Assistant answered: From a thread."
    )


async def test_async_events_tracked_before_the_loop_are_kept(receiver: IngestReceiver) -> None:
    tracker = AsyncTracker([HttpBatchSink(receiver.url)], flush_at_exit=False)
    ready = threading.Event()

    def outside() -> None:
        # No running loop here: the event waits in the outbox for the tracker to be bound.
        tracker.session("s1", product_id="acme").track_event("early")
        ready.set()

    thread = threading.Thread(target=outside)
    thread.start()
    thread.join()
    assert ready.is_set()
    result = await tracker.aclose(timeout=5)
    assert result.delivered == 1
    assert [e["data"]["name"] for e in receiver.events] == ["early"]


async def test_async_full_queue_and_sync_sinks_in_threads() -> None:
    sink = GateSink()
    tracker = AsyncTracker([sink], max_queue=3, flush_at_exit=False)
    handle = tracker.session("s1", product_id="acme")
    handle.track_event("first")
    assert await asyncio.to_thread(sink.entered.wait, 5)
    for n in range(5):
        handle.track_event(f"e{n}")
    assert tracker.stats()["gate"]["dropped"] == 2
    sink.gate.set()
    result = await tracker.aclose(timeout=5)
    assert (result.delivered, result.dropped, result.pending) == (4, 2, 0)


def test_an_async_only_sink_is_refused_by_the_sync_tracker() -> None:
    from autoplay_base import AsyncContextStore

    with pytest.raises(ConfigError):
        Tracker([ContextStoreSink(AsyncContextStore())])


def test_track_calls_log_nothing(
    make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="autoplay_base.tracking")
    tracker = make_tracker([GateSink()])
    tracker.session("s1", product_id="acme").track_turn(user="secret", assistant="secret")
    assert caplog.records == []


def test_an_event_racing_close_is_dropped_not_left_pending() -> None:
    from autoplay_base.tracking._lanes import Outbox
    from autoplay_base.tracking._values import Captured
    from autoplay_base.tracking.policy import BatchPolicy

    outbox = Outbox("http", 10, BatchPolicy())
    woken: list[bool] = []
    outbox.wake = lambda: woken.append(True)
    record = Captured("event", 1.0, ("s", "p", None, None, None), {})
    outbox.put(record)
    outbox.put(record)
    assert woken == [True]  # once for the first event of the batch, not once per event
    assert outbox.abandon(close=True) == 2
    outbox.put(record)  # a track_* call that passed the tracker's closed check just before
    assert outbox.counts() == {
        "enqueued": 3,
        "delivered": 0,
        "dropped": 3,
        "failed": 0,
        "batches": 0,
        "retries": 0,
        "pending": 0,
    }


async def test_async_tracker_built_outside_a_loop_binds_on_session(
    receiver: IngestReceiver,
) -> None:
    # Built where no loop runs (a module-level tracker): the first handle made in the loop binds it.
    tracker = await asyncio.to_thread(
        AsyncTracker, [HttpBatchSink(receiver.url, flush_interval=0.01)], flush_at_exit=False
    )
    assert tracker._loop is None
    tracker.session("s1", product_id="acme").track_event("bound")
    assert tracker._loop is asyncio.get_running_loop()
    assert await receiver.await_for(lambda r: len(r.events) == 1)
    assert (await tracker.aclose(timeout=5)).delivered == 1
