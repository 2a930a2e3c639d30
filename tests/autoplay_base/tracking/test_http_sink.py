"""HttpBatchSink against the real ingest receiver: batches, retries, 413, hangs, secrets."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base.emulator.receiver import IngestReceiver
from autoplay_base.errors import ConfigError
from autoplay_base.tracking import AsyncTracker, DeliveryError, DropNotice, HttpBatchSink, Tracker
from tests._fixtures.receiver import ReceiverFactory
from tests.autoplay_base.tracking.conftest import fast_backoff

MakeTracker = Callable[..., Tracker]
SECRET = "sk-live-0123456789abcdef"


def http(receiver: IngestReceiver, **options: Any) -> HttpBatchSink:
    options.setdefault("backoff", fast_backoff())
    options.setdefault("flush_interval", 0.05)
    return HttpBatchSink(receiver.url, **options)


def track_turns(tracker: Tracker | AsyncTracker, count: int, session: str = "s1") -> None:
    handle = tracker.session(session, product_id="acme", user_id="u1", conversation_id="c1")
    for n in range(count):
        handle.track_turn(user=f"question {n}", assistant=f"answer {n}")


def test_a_batch_reaches_the_receiver(
    receiver_factory: ReceiverFactory, make_tracker: MakeTracker
) -> None:
    receiver = receiver_factory(token=SECRET)
    tracker = make_tracker([http(receiver, token=SECRET, batch_size=3)])
    track_turns(tracker, 3)
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.pending, result.failed, result.timed_out) == (3, 0, 0, False)
    [batch] = receiver.batches
    [request] = receiver.requests
    assert request.authorization == "valid"
    assert batch.headers["content-type"] == "application/json"
    assert batch.headers["idempotency-key"] == request.idempotency_key
    assert len(request.idempotency_key or "") == 32
    assert [event["data"] for event in batch.events] == [
        {"user": f"question {n}", "assistant": f"answer {n}"} for n in range(3)
    ]
    first = batch.events[0]
    assert sorted(first) == [
        "conversation_id",
        "data",
        "device_id",
        "event_id",
        "product_id",
        "session_id",
        "timestamp",
        "type",
        "user_id",
    ]
    assert (first["type"], first["session_id"], first["product_id"], first["user_id"]) == (
        "turn",
        "s1",
        "acme",
        "u1",
    )
    assert json.loads(batch.body) == {"events": batch.events}


def test_a_503_burst_loses_and_duplicates_nothing(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.fail_next(4, 503)
    tracker = make_tracker([http(receiver, batch_size=5)])
    track_turns(tracker, 20)
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.failed, result.dropped, result.pending) == (20, 0, 0, 0)
    assert len(receiver.events) == 20
    assert [e["data"]["user"] for e in receiver.unique_events()] == [
        f"question {n}" for n in range(20)
    ]
    statuses = [r.status for r in receiver.requests]
    assert statuses == [503, 503, 503, 503, 200, 200, 200, 200]
    # Every retry of the first batch carried the same key; each batch has its own.
    keys = [r.idempotency_key for r in receiver.requests]
    assert len(set(keys[:5])) == 1
    assert len(set(keys[4:])) == 4
    assert tracker.stats()["http"]["retries"] == 4


def test_retry_after_is_honoured(receiver: IngestReceiver, make_tracker: MakeTracker) -> None:
    receiver.fail_next(1, 429, retry_after="1")
    tracker = make_tracker([http(receiver, backoff=fast_backoff(0.01, 5.0))])
    track_turns(tracker, 1)
    result = tracker.flush(timeout=5)
    assert result.delivered == 1
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    # The client waited out the hint (read after the 429's body; answered after that).
    assert 0.99 <= second.at - first.at < 2.5


def test_retry_after_is_capped_by_the_backoff_maximum(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.fail_next(1, 503, retry_after="3600")
    tracker = make_tracker([http(receiver, backoff=fast_backoff(0.01, 0.2))])
    track_turns(tracker, 1)
    started = time.monotonic()
    assert tracker.flush(timeout=5).delivered == 1
    assert time.monotonic() - started < 1.5


def test_a_4xx_fails_the_batch_at_once(receiver: IngestReceiver, make_tracker: MakeTracker) -> None:
    seen: list[DeliveryError] = []
    receiver.fail_next(1, 400)
    tracker = make_tracker([http(receiver, batch_size=2)], on_error=seen.append)
    track_turns(tracker, 2)
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.failed, result.pending) == (0, 2, 0)
    assert tracker.has_errors()
    [error] = tracker.get_errors()
    assert seen == [error]
    assert (error.sink, error.events, error.status, error.attempts) == ("http", 2, 400, 1)
    assert error.message == f"POST {receiver.url} answered 400"
    assert len(receiver.requests) == 1


def test_413_splits_the_batch_then_fails_the_single_event(
    receiver_factory: ReceiverFactory, make_tracker: MakeTracker
) -> None:
    receiver = receiver_factory(max_body_bytes=1500)
    tracker = make_tracker([http(receiver, batch_size=4)])
    handle = tracker.session("s1", product_id="acme")
    for text in ("a", "b", "x" * 3000, "d"):
        handle.track_turn(user=text, assistant="ok")
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.failed) == (3, 1)
    assert [e["data"]["user"] for e in receiver.events] == ["a", "b", "d"]
    assert [r.status for r in receiver.requests] == [413, 200, 413, 413, 200]
    [error] = tracker.get_errors()
    assert (error.events, error.status) == (1, 413)


def test_batches_are_cut_by_bytes(receiver: IngestReceiver, make_tracker: MakeTracker) -> None:
    tracker = make_tracker([http(receiver, batch_size=10, max_batch_bytes=1200)])
    track_turns(tracker, 10)
    assert tracker.flush(timeout=5).delivered == 10
    sizes = [len(batch.events) for batch in receiver.batches]
    assert sum(sizes) == 10
    assert len(sizes) > 1
    assert all(len(batch.body) <= 1200 + 20 for batch in receiver.batches)


def test_cut_connections_are_retried(receiver: IngestReceiver, make_tracker: MakeTracker) -> None:
    receiver.drop_next(2)
    tracker = make_tracker([http(receiver)])
    track_turns(tracker, 3)
    assert tracker.flush(timeout=5).delivered == 3
    assert [r.status for r in receiver.requests] == [None, None, 200]
    assert len(receiver.unique_events()) == len(receiver.events) == 3


def test_flush_returns_by_its_deadline_against_a_hung_receiver(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.hang()
    tracker = make_tracker([http(receiver)])
    track_turns(tracker, 2)
    assert receiver.wait_for_requests(1)
    started = time.monotonic()
    result = tracker.flush(timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 1.05
    assert (result.timed_out, result.pending, result.delivered) == (True, 2, 0)
    assert result.enqueued == 2


def test_close_returns_by_its_deadline_against_a_hung_receiver(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.hang()
    tracker = make_tracker([http(receiver, batch_size=1)])
    track_turns(tracker, 3)
    assert receiver.wait_for_requests(1)
    started = time.monotonic()
    result = tracker.close(timeout=0.5)
    assert time.monotonic() - started < 0.6
    # One event is in the hung request; the two waiting behind it were dropped at the deadline.
    assert (result.timed_out, result.pending, result.dropped) == (True, 1, 2)
    counts = tracker.stats()["http"]
    assert (
        counts["enqueued"]
        == counts["delivered"] + counts["dropped"] + counts["failed"] + counts["pending"]
    )


def test_the_token_never_reaches_logs_reprs_or_errors(
    receiver_factory: ReceiverFactory, make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = receiver_factory(token="another-token")
    sink = http(receiver, token=SECRET)
    tracker = make_tracker([sink])
    track_turns(tracker, 1)
    result = tracker.flush(timeout=5)
    assert result.failed == 1
    assert [r.authorization for r in receiver.requests] == ["invalid"]
    shown = " ".join([repr(sink), repr(tracker), repr(tracker.get_errors()), str(tracker.stats())])
    assert "token='***'" in repr(sink)
    assert SECRET not in shown
    assert SECRET not in caplog.text
    assert "answered 401" in caplog.text


def test_the_token_stays_out_of_the_retry_logs(
    receiver_factory: ReceiverFactory, make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = receiver_factory(token=SECRET)
    receiver.fail_next(6, 503)
    tracker = make_tracker([http(receiver, token=SECRET)])
    track_turns(tracker, 1)
    assert tracker.flush(timeout=5).delivered == 1
    assert "still retrying" in caplog.text  # the warning after 5 attempts was logged
    assert SECRET not in caplog.text
    assert SECRET not in repr(tracker) + str(tracker.stats()) + repr(tracker.get_errors())


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "ünïcode"])
def test_a_bad_token_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HttpBatchSink("http://127.0.0.1:1/v1/batch", token=token)
    assert token not in str(caught.value) or not token


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ConfigError):
        HttpBatchSink("ftp://example.com/batch")


# -- the async twin ---------------------------------------------------------------------
async def test_async_503_burst_and_retry_after(receiver: IngestReceiver) -> None:
    receiver.fail_next(2, 503, retry_after="1")
    tracker = AsyncTracker(
        [http(receiver, batch_size=5, backoff=fast_backoff(0.01, 5.0))], flush_at_exit=False
    )
    try:
        track_turns(tracker, 10)
        result = await tracker.aflush(timeout=5)
        assert (result.delivered, result.failed, result.pending) == (10, 0, 0)
        assert [e["data"]["user"] for e in receiver.unique_events()] == [
            f"question {n}" for n in range(10)
        ]
        first, second, third = receiver.requests[:3]
        assert [r.status for r in receiver.requests] == [503, 503, 200, 200]
        assert 0.99 <= second.at - first.at < 2.5
        assert 0.99 <= third.at - second.at < 2.5
    finally:
        await tracker.aclose(timeout=1)


async def test_async_flush_returns_by_its_deadline(receiver: IngestReceiver) -> None:
    receiver.hang()
    tracker = AsyncTracker([http(receiver)], flush_at_exit=False)
    try:
        track_turns(tracker, 2)
        assert await receiver.await_for(lambda r: len(r.requests) >= 1)
        started = time.monotonic()
        result = await tracker.aflush(timeout=1)
        assert time.monotonic() - started < 1.05
        assert (result.timed_out, result.pending) == (True, 2)
    finally:
        started = time.monotonic()
        closed = await tracker.aclose(timeout=0.3)
        assert time.monotonic() - started < 0.4
    # aclose cancelled the hung request: its events are dropped, and counted.
    assert (closed.pending, closed.dropped) == (0, 2)


async def test_async_4xx_calls_an_async_on_error(receiver: IngestReceiver) -> None:
    seen: list[DeliveryError] = []

    async def on_error(error: DeliveryError) -> None:
        seen.append(error)

    receiver.fail_next(1, 422)
    tracker = AsyncTracker([http(receiver)], on_error=on_error, flush_at_exit=False)
    try:
        track_turns(tracker, 1)
        result = await tracker.aflush(timeout=5)
        assert result.failed == 1
        assert [(e.status, e.events) for e in seen] == [(422, 1)]
    finally:
        await tracker.aclose(timeout=1)


# -- outages longer than any retry budget, and batches that grow with the backlog ---------
def statuses_and_keys(receiver: IngestReceiver) -> tuple[list[int | None], set[str | None]]:
    return [r.status for r in receiver.requests], {r.idempotency_key for r in receiver.requests}


@pytest.mark.parametrize(
    ("fault", "status"), [("fail", 503), ("fail", 429), ("fail", 500), ("drop", None)]
)
def test_an_outage_of_many_attempts_loses_and_duplicates_nothing(
    receiver: IngestReceiver, make_tracker: MakeTracker, fault: str, status: int | None
) -> None:
    # 12 failed attempts: past the old default budget (5 retries), which failed the batch.
    if fault == "drop":
        receiver.drop_next(12)
    else:
        receiver.fail_next(12, status or 503, retry_after="0")
    tracker = make_tracker([http(receiver, backoff=fast_backoff(0.001, 0.005))])
    track_turns(tracker, 10)
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.failed, result.dropped, result.pending) == (10, 0, 0, 0)
    statuses, keys = statuses_and_keys(receiver)
    assert statuses == [status] * 12 + [200]
    assert len(keys) == 1  # every attempt was the same batch, under the same key
    assert [e["data"]["user"] for e in receiver.events] == [f"question {n}" for n in range(10)]
    assert len(receiver.unique_events()) == 10
    assert tracker.stats()["http"]["retries"] == 12
    assert not tracker.has_errors()


def test_max_retries_is_an_explicit_bound(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.fail_next(3, 503)
    tracker = make_tracker([http(receiver, max_retries=2)])
    track_turns(tracker, 2)
    result = tracker.flush(timeout=5)
    assert (result.delivered, result.failed, result.pending) == (0, 2, 0)
    [error] = tracker.get_errors()
    assert (error.events, error.status, error.attempts) == (2, 503, 3)
    track_turns(tracker, 1, session="s2")  # the receiver is back: later events arrive
    assert tracker.flush(timeout=5).delivered == 1
    assert [r.status for r in receiver.requests] == [503, 503, 503, 200]


def test_a_receiver_down_for_good_keeps_events_pending_until_close_drops_them(
    receiver: IngestReceiver, make_tracker: MakeTracker
) -> None:
    receiver.fail_next(10**9, 503)
    seen: list[DropNotice] = []
    # A long backoff: after the first 503 the batch waits out its retry, in no request.
    tracker = make_tracker([http(receiver, backoff=fast_backoff(5.0, 5.0))], on_drop=seen.append)
    track_turns(tracker, 5)
    started = time.monotonic()
    result = tracker.flush(timeout=1)
    assert time.monotonic() - started < 1.05
    assert (result.timed_out, result.pending, result.failed, result.delivered) == (True, 5, 0, 0)
    assert tracker.stats()["http"]["retries"] == 1
    started = time.monotonic()
    closed = tracker.close(timeout=0.5)
    assert time.monotonic() - started < 0.55
    # The parked batch is dropped at the deadline, exactly, not left pending.
    assert (closed.pending, closed.dropped, closed.failed, closed.enqueued) == (0, 5, 0, 5)
    assert seen == [DropNotice("http", 5, "closed")]


def test_a_long_outage_is_warned_about_once_per_interval_a_blip_is_not(
    receiver: IngestReceiver, make_tracker: MakeTracker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="autoplay_base.tracking")
    receiver.fail_next(4, 503)
    tracker = make_tracker([http(receiver)])
    track_turns(tracker, 3)
    assert tracker.flush(timeout=5).delivered == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in caplog.records if "retrying in" in r.getMessage()]) == 4
    caplog.clear()
    receiver.fail_next(10**9, 503)
    track_turns(tracker, 2, session="s2")
    assert receiver.wait_for_requests(4 + 1 + 12)  # 12 failures of the second batch
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"tracking: sink http: 2 events not delivered after 5 attempts (POST {receiver.url} "
        "answered 503); still retrying, next in 0.05 s"
    ]
    assert tracker.stats()["http"]["failed"] == 0


async def test_async_a_receiver_down_for_good_is_dropped_exactly_at_aclose(
    receiver: IngestReceiver,
) -> None:
    receiver.fail_next(10**9, 429, retry_after="3600")
    tracker = AsyncTracker([http(receiver, backoff=fast_backoff(5.0, 5.0))], flush_at_exit=False)
    track_turns(tracker, 4)
    result = await tracker.aflush(timeout=1)
    assert (result.timed_out, result.pending, result.failed) == (True, 4, 0)
    started = time.monotonic()
    closed = await tracker.aclose(timeout=0.3)
    assert time.monotonic() - started < 0.35
    assert (closed.pending, closed.dropped, closed.failed, closed.enqueued) == (0, 4, 0, 4)


@pytest.mark.parametrize(
    ("options", "sizes"),
    [
        ({}, [1, 1, 1000, 1000, 500]),
        ({"batch_size": 100}, [1, 1] + [100] * 25),
        ({"max_batch_events": 700}, [1, 1, 700, 700, 700, 400]),
    ],
)
def test_a_backed_up_lane_sends_bigger_batches_in_order(
    receiver: IngestReceiver, make_tracker: MakeTracker, options: dict[str, int], sizes: list[int]
) -> None:
    receiver.hang()
    tracker = make_tracker([http(receiver, **options)])
    track_turns(tracker, 1)
    assert receiver.wait_for_requests(1)  # one event in a hung request; the rest back up
    track_turns(tracker, 2500, session="s2")
    receiver.release()  # the hung request is answered 503 and retried
    result = tracker.flush(timeout=10)
    assert (result.delivered, result.pending, result.failed) == (2501, 0, 0)
    assert [r.body_bytes > 0 for r in receiver.requests] == [True] * len(sizes)
    assert [len(batch.events) for batch in receiver.batches] == sizes[1:]
    assert [e["data"]["user"] for e in receiver.events[1:]] == [
        f"question {n}" for n in range(2500)
    ]
    assert all(batch.body and len(batch.body) <= 512 * 1024 for batch in receiver.batches)
