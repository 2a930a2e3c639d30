"""The batching and retry decisions, without sockets or clocks."""

from __future__ import annotations

import pytest

from autoplay_base._reconnect import Backoff
from autoplay_base.errors import ConfigError
from autoplay_base.tracking.policy import (
    Action,
    BatchPolicy,
    Decision,
    Outcome,
    RetryPolicy,
    Send,
    Settled,
    Wait,
    chunk_by_bytes,
    delivery_flow,
    idempotency_key,
)

OK = Outcome(status=200)


def policy(max_retries: int = 3) -> RetryPolicy:
    return RetryPolicy(max_retries, Backoff(1.0, 8.0, jitter=0.0))


def test_batch_waits_for_size_or_interval() -> None:
    batching = BatchPolicy(batch_size=3, flush_interval=1.0)
    assert batching.wait_time(0, 0.0, 5.0, urgent=True) is None
    assert batching.wait_time(1, 10.0, 10.25, urgent=False) == 0.75
    assert batching.wait_time(2, 10.0, 11.5, urgent=False) == 0.0
    assert batching.wait_time(3, 10.0, 10.0, urgent=False) == 0.0
    assert batching.wait_time(1, 10.0, 10.0, urgent=True) == 0.0
    # A wall clock set back an hour parks nothing longer than the interval.
    assert batching.wait_time(1, 10_000.0, 6_400.0, urgent=False) == 1.0


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"max_batch_bytes": 0},
        {"flush_interval": 0},
        {"flush_interval": float("nan")},
    ],
)
def test_batch_policy_rejects_bad_options(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BatchPolicy(**options)  # type: ignore[arg-type]


def test_chunks_keep_order_and_byte_bounds() -> None:
    assert chunk_by_bytes([], 10) == []
    assert chunk_by_bytes([4, 4, 4], 10) == [(0, 2), (2, 3)]
    assert chunk_by_bytes([4, 30, 4], 10) == [(0, 1), (1, 2), (2, 3)]
    assert chunk_by_bytes([5, 5, 5, 5], 10) == [(0, 2), (2, 4)]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (OK, Decision(Action.DELIVERED)),
        (Outcome(status=503, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=500, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=599, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=408, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=425, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(network_error=True, error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=429, retry_after=3.0, error="x"), Decision(Action.RETRY, 3.0)),
        (Outcome(status=429, retry_after=3600.0, error="x"), Decision(Action.RETRY, 8.0)),
        (Outcome(status=429, retry_after=float("nan"), error="x"), Decision(Action.RETRY, 1.0)),
        (Outcome(status=400, error="x"), Decision(Action.FAIL)),
        (Outcome(status=401, error="x"), Decision(Action.FAIL)),
        (Outcome(status=404, error="x"), Decision(Action.FAIL)),
        (Outcome(status=302, error="x"), Decision(Action.FAIL)),
        (Outcome(error="local"), Decision(Action.FAIL)),
        (Outcome(status=413, error="x"), Decision(Action.SPLIT)),
    ],
)
def test_retry_decisions(outcome: Outcome, expected: Decision) -> None:
    assert policy().decide(outcome, 0 if outcome.ok else 1, 4) == expected


def test_backoff_grows_and_retries_end() -> None:
    rules = policy(max_retries=3)
    failure = Outcome(status=503, error="x")
    assert [rules.decide(failure, n, 1).delay for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert rules.decide(failure, 4, 1) == Decision(Action.FAIL)
    assert rules.decide(Outcome(status=413, error="x"), 1, 1) == Decision(Action.FAIL)


def drive(flow: object, replies: list[Outcome]) -> list[object]:
    """Run a flow with scripted send outcomes; returns every command it yielded."""
    seen: list[object] = []
    answers = iter(replies)
    reply = None
    try:
        while True:
            step = flow.send(reply)  # type: ignore[attr-defined]
            seen.append(step)
            reply = next(answers) if isinstance(step, Send) else None
    except StopIteration:
        return seen


def test_flow_retries_then_settles_in_order() -> None:
    failure = Outcome(status=503, retry_after=2.5, error="x")
    steps = drive(delivery_flow([(0, 2), (2, 3)], policy()), [failure, OK, OK])
    assert steps == [
        Send(0, 2),
        Wait(2.5),
        Send(0, 2),
        Settled(0, 2, True, OK, 2),
        Send(2, 3),
        Settled(2, 3, True, OK, 1),
    ]


def test_flow_splits_413_in_halves_then_fails_single_events() -> None:
    too_large = Outcome(status=413, error="too large")
    steps = drive(delivery_flow([(0, 4)], policy()), [too_large, OK, too_large, too_large, OK])
    assert steps == [
        Send(0, 4),
        Send(0, 2),
        Settled(0, 2, True, OK, 1),
        Send(2, 4),
        Send(2, 3),
        Settled(2, 3, False, too_large, 1),
        Send(3, 4),
        Settled(3, 4, True, OK, 1),
    ]


def test_flow_fails_after_max_retries() -> None:
    failure = Outcome(status=500, error="boom")
    steps = drive(delivery_flow([(0, 1)], policy(max_retries=1)), [failure, failure])
    assert steps == [Send(0, 1), Wait(1.0), Send(0, 1), Settled(0, 1, False, failure, 2)]


def test_idempotency_key_names_the_events() -> None:
    key = idempotency_key(["a", "b"])
    assert key == idempotency_key(["a", "b"])
    assert len(key) == 32
    assert (
        len({key, idempotency_key(["a"]), idempotency_key(["b"]), idempotency_key(["b", "a"])}) == 4
    )


def test_retry_policy_rejects_negative_retries() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(-1)


# -- retries without a count limit (the default) ------------------------------------------
@pytest.mark.parametrize(
    "failure",
    [
        Outcome(status=503, error="x"),
        Outcome(status=429, retry_after=1.0, error="x"),
        Outcome(status=408, error="x"),
        Outcome(network_error=True, error="x"),
    ],
)
def test_by_default_a_retryable_failure_is_retried_however_long_it_lasts(failure: Outcome) -> None:
    rules = RetryPolicy(backoff=Backoff(0.5, 30.0, jitter=0.0))
    assert rules.max_retries is None
    # A 30 s outage is ~7 attempts at these delays; 10,000 is any outage at all.
    decisions = [rules.decide(failure, n, 100) for n in (1, 6, 7, 10_000)]
    assert [d.action for d in decisions] == [Action.RETRY] * 4
    assert [d.delay for d in decisions] == [max(0.5, failure.retry_after or 0), 16.0, 30.0, 30.0]


def test_by_default_permanent_errors_still_fail_at_once() -> None:
    rules = RetryPolicy()
    for status in (400, 401, 403, 404, 422):
        assert rules.decide(Outcome(status=status, error="x"), 1, 5) == Decision(Action.FAIL)
    assert rules.decide(Outcome(error="local"), 1, 5) == Decision(Action.FAIL)
    assert rules.decide(Outcome(status=413, error="x"), 1, 5) == Decision(Action.SPLIT)
    assert rules.decide(Outcome(status=413, error="x"), 1, 1) == Decision(Action.FAIL)


def test_a_flow_keeps_retrying_and_its_waits_say_why() -> None:
    failure = Outcome(status=503, error="answered 503")
    steps = drive(
        delivery_flow([(0, 3)], RetryPolicy(backoff=Backoff(1.0, 2.0, jitter=0.0))),
        [failure] * 50 + [OK],
    )
    waits = [step for step in steps if isinstance(step, Wait)]
    assert len(waits) == 50
    assert [(w.failures, w.outcome, w.start, w.stop) for w in waits[:2]] == [
        (1, failure, 0, 3),
        (2, failure, 0, 3),
    ]
    assert steps[-1] == Settled(0, 3, True, OK, 51)


def test_max_retries_none_or_a_count() -> None:
    assert RetryPolicy(None).max_retries is None
    assert RetryPolicy(0).decide(Outcome(status=503, error="x"), 1, 1) == Decision(Action.FAIL)


# -- batch sizes ---------------------------------------------------------------------------
def test_the_default_batch_grows_with_the_backlog_up_to_max_batch_events() -> None:
    batching = BatchPolicy()
    assert (batching.batch_size, batching.max_batch_events) == (100, 1000)
    assert [batching.take_size(n) for n in (1, 100, 101, 999, 1000, 5000)] == [
        1,
        100,
        101,
        999,
        1000,
        1000,
    ]
    assert batching.wait_time(99, 0.0, 0.0, urgent=False) == 1.0  # still sent at 100


def test_an_explicit_batch_size_is_the_exact_size_of_every_batch() -> None:
    batching = BatchPolicy(batch_size=7)
    assert [batching.take_size(n) for n in (3, 7, 50)] == [3, 7, 7]
    grown = BatchPolicy(batch_size=7, max_batch_events=20)
    assert [grown.take_size(n) for n in (3, 7, 50)] == [3, 7, 20]
    capped = BatchPolicy(max_batch_events=50)
    assert (capped.batch_size, capped.max_batch_events) == (50, 50)


def test_max_batch_events_below_batch_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_batch_events"):
        BatchPolicy(batch_size=10, max_batch_events=9)
