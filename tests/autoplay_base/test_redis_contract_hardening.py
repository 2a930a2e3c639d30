"""RedisBackend and the hardened contract: dedupe by content and sent_at, failed writes,
``replaces`` past any Redis integer, and the product-scoped user index.

The contract suite runs the shared cases on both backends; these pin down the
Redis side of each point of the hardening issue with exact values (each one
failed on the backend as it was before the issue was fixed).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView, UserSessionRef
from autoplay_base.backends.redis import RedisBackend
from tests.autoplay_base.factories import Twin

T0 = 1_700_000_000.0
NO_DEDUPE_COUNTS = {"reused_ids": 0, "dedupe_resets": 0}
A = SessionKey("p1", "s1")
ALL = ReadOptions()
MakeBackend = Callable[..., RedisBackend]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- summaries -----------------------------------------------------------------------------------
@pytest.mark.parametrize("replaces", [2**63 - 1, 2**63, 2**64, 10**30])
async def test_replaces_beyond_any_redis_integer_is_clamped_to_what_is_pending(
    make_redis_backend: MakeBackend, mode: str, replaces: int
) -> None:
    twin = Twin(make_redis_backend(max_actions_per_session=5), mode)
    await twin.append_actions(A, ["a", "b", "c"], at=T0)
    assert await twin.apply_summary(A, "all of it", replaces=replaces, at=T0 + 1) is True
    assert await twin.read(A, ALL, now=T0 + 2) == SessionView("all of it", [], T0 + 1, T0 + 1)
    # The activity stream keeps what the caller sent.
    activity = next(twin.backend.listen(A, last_id="0"))
    activity = next(a for a in twin.backend.listen(A, last_id=activity.id) if a.kind == "summary")
    assert activity.replaces == replaces
    assert twin.backend.stats.summaries_stored == 1
    assert twin.backend.stats.errors == 0


# -- dedupe --------------------------------------------------------------------------------------
async def test_the_same_id_with_other_content_is_a_reused_id_and_stored(
    make_redis_backend: MakeBackend, mode: str
) -> None:
    twin = Twin(make_redis_backend(), mode)
    results = [
        await twin.append_actions(A, ["one"], at=T0, event_id="e1"),
        await twin.append_actions(A, ["one"], at=T0 + 1, event_id="e1"),  # a replay
        await twin.append_actions(A, ["two"], at=T0 + 2, event_id="e1"),  # the id reused
        await twin.append_actions(A, ["two"], at=T0 + 3, event_id="e1"),  # its replay
        await twin.apply_summary(A, "sum", replaces=0, at=T0 + 4, event_id="e2"),
        await twin.apply_summary(A, "sum", replaces=0, at=T0 + 5, event_id="e2"),
        # The same summary text replacing more actions is other content.
        await twin.apply_summary(A, "sum", replaces=1, at=T0 + 6, event_id="e2"),
    ]
    assert results == [True, False, True, False, True, False, True]
    assert await twin.read(A, ALL, now=T0 + 7) == SessionView("sum", ["two"], T0 + 6, T0 + 6)
    stats = twin.backend.stats
    assert (stats.actions_stored, stats.summaries_stored, stats.duplicate_events) == (2, 2, 3)
    assert stats.extra == {"reused_ids": 2, "dedupe_resets": 0}


def test_a_replay_longer_than_the_window_costs_only_its_part_outside_it(
    make_redis_backend: MakeBackend, redis_prefix: str
) -> None:
    backend = make_redis_backend(dedupe_window=3, max_actions_per_session=100)
    # Six events sent at T0..T0+5, then the connector replays all six (arriving later).
    for n in range(6):
        assert backend.append_actions(A, [f"a{n}"], at=T0 + n, event_id=f"e{n}", sent_at=T0 + n)
    replay = [
        backend.append_actions(A, [f"a{n}"], at=T0 + 10 + n, event_id=f"e{n}", sent_at=T0 + n)
        for n in range(6)
    ]
    # e0..e2 are older than every remembered id: stored again, never remembered, so
    # they do not push out e3..e5, which the same replay then repeats.
    assert replay == [True, True, True, False, False, False]
    assert backend.client.zrange(f"{redis_prefix}:e:p1", 0, -1) == ["e3", "e4", "e5"]
    assert sorted(backend.client.hkeys(f"{redis_prefix}:ed:p1")) == ["e3", "e4", "e5"]
    assert backend.stats.duplicate_events == 3
    assert backend.stats.actions_stored == 9


def test_arrival_time_orders_the_window_when_sent_at_is_absent(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend(dedupe_window=2)
    backend.append_actions(A, ["late"], at=T0 + 5, event_id="late")
    backend.append_actions(A, ["early"], at=T0 + 6, event_id="early", sent_at=T0)
    # "early" was older than the window's newest, and the window was not full: remembered.
    assert backend.append_actions(A, ["early"], at=T0 + 7, event_id="early", sent_at=T0) is False
    backend.append_actions(A, ["next"], at=T0 + 8, event_id="next")
    # Full at two: "early" (order T0) went first, "late" stays.
    assert backend.append_actions(A, ["late"], at=T0 + 9, event_id="late") is False
    assert backend.append_actions(A, ["early"], at=T0 + 10, event_id="early", sent_at=T0) is True


def test_a_clock_reset_starts_a_new_dedupe_epoch(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(dedupe_window=2, max_actions_per_session=100)
    backend.append_actions(A, ["n0"], at=T0, event_id="n0", sent_at=T0 + 1000)
    backend.append_actions(A, ["n1"], at=T0 + 1, event_id="n1", sent_at=T0 + 1001)
    # The source's clock went back: 4 x window + 1 events in a row older than the window.
    for n in range(9):
        assert backend.append_actions(A, [f"x{n}"], at=T0 + 2 + n, event_id=f"x{n}", sent_at=T0 + n)
    assert backend.stats.extra == {"reused_ids": 0, "dedupe_resets": 1}
    # The new epoch remembers the event that started it, and forgot the old ids.
    assert backend.append_actions(A, ["x8"], at=T0 + 20, event_id="x8", sent_at=T0 + 8) is False
    assert backend.append_actions(A, ["n0"], at=T0 + 21, event_id="n0", sent_at=T0 + 1000)
    assert backend.stats.duplicate_events == 1


async def test_a_write_that_fails_never_marks_its_id_seen(
    make_redis_backend: MakeBackend, mode: str
) -> None:
    backend = make_redis_backend()
    twin = Twin(backend, mode)
    actions_key = backend._keys.session(A, ":a")
    meta_key = backend._keys.session(A, ":m")
    backend.client.set(actions_key, "a foreign value")  # RPUSH fails inside the script
    assert await twin.append_actions(A, ["a"], at=T0, event_id="e1") is False
    backend.client.delete(actions_key)
    assert await twin.append_actions(A, ["a"], at=T0 + 1, event_id="e1") is True
    backend.client.delete(meta_key)
    backend.client.set(meta_key, "a foreign value")  # HSET fails inside the script
    assert await twin.apply_summary(A, "sum", replaces=1, at=T0 + 2, event_id="e2") is False
    backend.client.delete(meta_key)
    assert await twin.apply_summary(A, "sum", replaces=1, at=T0 + 3, event_id="e2") is True
    assert await twin.read(A, ALL, now=T0 + 4) == SessionView("sum", [], T0 + 3, T0 + 3)
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_rejected": 2}
    assert backend.stats.duplicate_events == 0


# -- the user index --------------------------------------------------------------------------------
async def test_the_user_index_is_scoped_by_product(
    make_redis_backend: MakeBackend, mode: str
) -> None:
    twin = Twin(make_redis_backend(), mode)
    await twin.append_actions(SessionKey("p1", "s1"), ["a"], at=T0, user_id="u")
    await twin.append_actions(SessionKey("p2", "s9"), ["b"], at=T0 + 1, user_id="u")
    await twin.append_actions(SessionKey("p1", "s2"), ["c"], at=T0 + 2, user_id="u")
    # Ids with the separator in them never meet: ("a:u", "1") is not ("a", "u:1").
    await twin.append_actions(SessionKey("a:u", "x"), ["d"], at=T0 + 3, user_id="1")
    await twin.append_actions(SessionKey("a", "y"), ["e"], at=T0 + 4, user_id="u:1")
    assert await twin.user_sessions("u", product_id="p1", limit=5) == [
        UserSessionRef("s2", "p1", T0 + 2),
        UserSessionRef("s1", "p1", T0),
    ]
    assert await twin.user_sessions("u", product_id="p1", limit=1) == [
        UserSessionRef("s2", "p1", T0 + 2)
    ]
    assert await twin.user_sessions("u", product_id="p2", limit=5) == [
        UserSessionRef("s9", "p2", T0 + 1)
    ]
    assert await twin.user_sessions("u", product_id="p3", limit=5) == []
    assert await twin.user_sessions("1", product_id="a:u", limit=5) == [
        UserSessionRef("x", "a:u", T0 + 3)
    ]
    assert await twin.user_sessions("u:1", product_id="a", limit=5) == [
        UserSessionRef("y", "a", T0 + 4)
    ]
    assert await twin.user_sessions("1", product_id="a", limit=5) == []
    assert await twin.user_products("u") == ["p1", "p2"]
    assert await twin.user_products("u:1") == ["a"]
    assert await twin.user_products("nobody") == []
    await twin.forget_user("u", product_id="p1")
    assert await twin.user_sessions("u", product_id="p1", limit=5) == []
    assert await twin.user_products("u") == ["p2"]
    await twin.append_actions(SessionKey("p3", "s3"), ["f"], at=T0 + 5, user_id="u")
    await twin.forget_user("u")  # every product
    assert await twin.user_products("u") == []
    assert await twin.user_sessions("u", product_id="p2", limit=5) == []
    assert await twin.user_sessions("u", product_id="p3", limit=5) == []
    assert await twin.user_products("u:1") == ["a"]  # another user is untouched


def test_user_bounds_apply_per_product_user(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(max_users=2, max_sessions_per_user=2)
    for n in range(3):
        backend.append_actions(SessionKey("p1", f"s{n}"), ["a"], at=T0 + n, user_id="u")
    backend.append_actions(SessionKey("p2", "t0"), ["a"], at=T0 + 3, user_id="u")
    # Two sessions per (product, user): p1's oldest went, p2 is counted apart.
    assert backend.user_sessions("u", product_id="p1", limit=5) == [
        UserSessionRef("s2", "p1", T0 + 2),
        UserSessionRef("s1", "p1", T0 + 1),
    ]
    # A third product user pushes out the least recent one, (p1, u), and only it.
    backend.append_actions(SessionKey("p1", "v0"), ["a"], at=T0 + 4, user_id="v")
    assert backend.user_sessions("u", product_id="p1", limit=5) == []
    assert backend.user_sessions("u", product_id="p2", limit=5) == [
        UserSessionRef("t0", "p2", T0 + 3)
    ]
    assert backend.user_products("u") == ["p2"]
    assert backend.user_products("v") == ["p1"]
    # A new product user whose activity is older than every other still stays indexed.
    backend.append_actions(SessionKey("p9", "w0"), ["a"], at=T0 - 100, user_id="w")
    assert backend.user_sessions("w", product_id="p9", limit=5) == [
        UserSessionRef("w0", "p9", T0 - 100)
    ]
