"""The same seeded random history applied to an InMemoryBackend and a RedisBackend: every
read must be identical (the contract suite checks cases; this checks interleavings).

Steps: adds (with and without event ids, replays of earlier writes, reused ids with
other content, sent_at order), summaries with random ``replaces`` (often more than is
pending), resets and reads, over a few sessions of two products. The bounds are
small so trimming and replays past the dedupe window happen; the clock only moves
forward and stays inside the idle TTL (expiry is swept at different moments by the
two backends, by design), and never steps back past the whole window (a clock
reset, optional in Redis).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base.backends.base import ReadOptions, SessionKey
from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.backends.redis import RedisBackend
from tests.autoplay_base.factories import FakeClock

T0 = 1_700_000_000.0
STEPS = 2000
BOUNDS: dict[str, Any] = {
    "max_sessions": 1000,
    "max_actions_per_session": 8,
    "idle_ttl_seconds": 10_000_000.0,
    "max_sessions_per_user": 3,
    "dedupe_window": 30,
}
KEYS = [SessionKey(p, s) for p in ("p1", "p2") for s in ("s1", "s2", "s3")]
READS = [
    ReadOptions(),
    ReadOptions(max_actions=3),
    ReadOptions(include_summary=False, lookback_seconds=40.0),
]


def history(seed: int) -> list[tuple[Any, ...]]:
    """A list of operations, the same for every backend (writes carry their own ids)."""
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    written: list[tuple[Any, ...]] = []
    sent = 0.0
    for step in range(STEPS):
        at = T0 + step
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.015 and written:
            # A reconnect replays a run of earlier writes in order (same ids, same
            # sent_at), often longer than a product's dedupe window of 30.
            for n, op in enumerate(written[-rng.randint(20, 90) :]):
                ops.append(("replay", at + n / 1000, op))
            continue
        if roll < 0.15 and written:  # replay one earlier write exactly
            ops.append(("replay", at, rng.choice(written[-60:])))
            continue
        # Strictly increasing: on equal sent_at the backends may trim different ids.
        sent += rng.choice((1.0, 1.0, 2.0))
        event_id = rng.choice((None, f"e{step}", f"e{step}", f"r{rng.randrange(40)}"))
        if roll < 0.55:
            lines = [f"{key.session_id}.{step}.{n}" for n in range(rng.choice((0, 1, 1, 2, 5)))]
            op: tuple[Any, ...] = (
                "add",
                key,
                lines,
                event_id,
                rng.choice((None, "u1", "u2")),
                sent,
            )
        elif roll < 0.75:
            replaces = rng.choice((0, 1, 2, 3, 5, 9, 20, 2**63))
            op = ("summary", key, f"sum {step}", replaces, event_id, sent)
        elif roll < 0.8:
            ops.append(("reset", at, key))
            continue
        else:
            ops.append(("read", at, key, rng.choice(READS)))
            continue
        written.append(op)
        ops.append(("write", at, op))
    return ops


def apply(backend: Any, ops: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``ops``; every observation (write results and reads) in order."""
    seen: list[Any] = []

    def write(at: float, op: tuple[Any, ...]) -> bool:
        if op[0] == "add":
            _, key, lines, event_id, user_id, sent_at = op
            return bool(
                backend.append_actions(
                    key, lines, at=at, event_id=event_id, user_id=user_id, sent_at=sent_at
                )
            )
        _, key, text, replaces, event_id, sent_at = op
        return bool(
            backend.apply_summary(
                key, text, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
            )
        )

    for entry in ops:
        kind, at = entry[0], entry[1]
        if kind in ("write", "replay"):
            seen.append((kind, write(at, entry[2])))
        elif kind == "reset":
            backend.reset(entry[2])
        else:
            view = backend.read(entry[2], entry[3], now=at)
            seen.append(None if view is None else (view.summary, list(view.actions)))
    for key in KEYS:
        view = backend.read(key, ReadOptions(), now=T0 + STEPS)
        seen.append(None if view is None else tuple(view[:4]))
    for product in ("p1", "p2"):
        for user in ("u1", "u2"):
            seen.append(backend.user_sessions(user, product_id=product, limit=5))
    seen.append(backend.user_products("u1"))
    s = backend.stats
    seen.append((s.actions_stored, s.summaries_stored, s.duplicate_events, s.actions_trimmed))
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memory_and_redis_agree_on_a_random_history(
    seed: int, make_redis_backend: Callable[..., RedisBackend]
) -> None:
    ops = history(seed)
    clock = FakeClock(T0 + STEPS)
    memory = apply(InMemoryBackend(**BOUNDS, clock=clock), ops)
    redis = apply(make_redis_backend(**BOUNDS, clock=clock), ops)
    agree(memory, redis)
    exercised(ops, memory)


def agree(memory: list[Any], other: list[Any]) -> None:
    """Both backends saw the same observations, one by one (the first difference named)."""
    assert len(memory) == len(other)
    for n, (mine, theirs) in enumerate(zip(memory, other, strict=True)):
        assert mine == theirs, f"observation {n} differs"


def exercised(ops: list[tuple[Any, ...]], seen: list[Any]) -> None:
    """The history did its job: summaries past the cap, duplicates, replays past the window."""
    writes = [entry[2] for entry in ops if entry[0] in ("write", "replay")]
    assert sum(1 for op in writes if op[0] == "summary" and op[3] > 8) > 100
    results = [o for o in seen if isinstance(o, tuple) and o[0] in ("write", "replay")]
    assert sum(1 for kind, stored in results if kind == "replay" and not stored) > 100
    assert sum(1 for kind, stored in results if kind == "replay" and stored) > 5


def test_the_memory_run_itself_never_raises_and_is_deterministic() -> None:
    # Runs without Redis: the in-memory half alone, twice, gives the same observations
    # (the old backend lost summaries to IndexError on replaces > pending).
    ops = history(4)
    first = apply(InMemoryBackend(**BOUNDS, clock=FakeClock(T0 + STEPS)), ops)
    second = apply(InMemoryBackend(**BOUNDS, clock=FakeClock(T0 + STEPS)), ops)
    assert first == second
    exercised(ops, first)


def per_session_ids(ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``ops`` with every event id qualified by its session (reuse stays within one)."""

    def qualified(op: tuple[Any, ...]) -> tuple[Any, ...]:
        key, event_id = op[1], op[4 if op[0] == "summary" else 3]
        if event_id is None:
            return op
        at = 4 if op[0] == "summary" else 3
        name = f"{key.product_id}/{key.session_id}/{event_id}"
        return (*op[:at], name, *op[at + 1 :])

    return [
        (entry[0], entry[1], qualified(entry[2])) if entry[0] in ("write", "replay") else entry
        for entry in ops
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_memory_and_a_redis_cluster_agree_on_a_random_history(
    seed: int, make_cluster_backend: Callable[..., RedisBackend]
) -> None:
    # On a cluster the dedupe window is per session (README "Redis topologies"), the
    # one documented difference. Ids unique to their session and a window longer than
    # the history keep it out of play, so everything else (caps, summaries, resets,
    # reused ids within a session, reads, the user index) must agree.
    bounds = {**BOUNDS, "dedupe_window": 10_000}
    ops = per_session_ids(history(seed))
    clock = FakeClock(T0 + STEPS)
    memory = apply(InMemoryBackend(**bounds, clock=clock), ops)
    cluster = apply(make_cluster_backend(**bounds, clock=clock), ops)
    agree(memory, cluster)
    replays = [o for o in memory if isinstance(o, tuple) and o[0] == "replay"]
    assert len(replays) > 100
