"""Store level: tenants' users kept apart, ambiguity, the byte budget, replays and replaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base import (
    AmbiguousUserError,
    AsyncContextStore,
    ConfigError,
    ContextStore,
    InMemoryBackend,
    SessionRef,
    UserSessionIndex,
)
from autoplay_base.context_store import MAX_REPLACES
from autoplay_base.events import ActionsPayload
from tests.autoplay_base.factories import FakeClock, action, actions, summary


@pytest.fixture(params=["memory", "redis"])
def make_backend(request: pytest.FixtureRequest) -> Callable[..., Any]:
    if request.param == "memory":
        return InMemoryBackend
    factory: Callable[..., Any] = request.getfixturevalue("make_redis_backend")
    return factory


def two_tenants(store: ContextStore) -> UserSessionIndex:
    index = UserSessionIndex(store, clock=store._clock)
    for payload in (
        actions("a-1", "Acme's billing", product_id="acme", user_id="1001", email="a@acme.io"),
        actions("g-1", "Globex's secrets", product_id="globex", user_id="1001", email="g@gx.io"),
    ):
        store.add(payload)
        index.add(payload)
    return index


def test_two_tenants_user_1001_never_see_each_other(make_backend: Callable[..., Any]) -> None:
    clock = FakeClock()
    store = ContextStore(backend=make_backend(clock=clock), clock=clock)
    index = two_tenants(store)
    assert index.get_user_activity("1001", product_id="acme") == (
        "Session a-1 (acme):\nRecent activity:\n1. Acme's billing — /page"
    )
    assert index.get_user_activity("1001", product_id="globex") == (
        "Session g-1 (globex):\nRecent activity:\n1. Globex's secrets — /page"
    )
    assert index.get_recent_sessions("1001", product_id="acme") == [
        SessionRef("a-1", "acme", clock.now)
    ]
    assert index.get_email("1001", product_id="acme") == "a@acme.io"
    assert index.get_email("1001", product_id="globex") == "g@gx.io"
    assert index.get_user_activity("1001", product_id="initech") == ""
    # Omitted, the product is ambiguous: an error that names neither tenant.
    for call in (index.get_user_activity, index.get_recent_sessions, index.get_email):
        with pytest.raises(AmbiguousUserError) as info:
            call("1001")
        assert str(info.value) == (
            "user '1001' has sessions under 2 products; pass product_id= to choose one"
        )
        assert "acme" not in repr(info.value) and "globex" not in repr(info.value)
        assert info.value.product_ids == ["acme", "globex"]
    with pytest.raises(AmbiguousUserError):
        index.reset_user("1001")
    # Reset per product: the other tenant's user keeps everything.
    index.reset_user("1001", product_id="globex")
    assert index.get_email("1001", product_id="globex") is None
    assert index.get_user_activity("1001", product_id="globex") == ""
    # Now unambiguous: omitting product_id works.
    assert index.get_user_activity("1001") == (
        "Session a-1 (acme):\nRecent activity:\n1. Acme's billing — /page"
    )
    assert index.get_email("1001") == "a@acme.io"
    index.reset_user("1001")
    assert index.get_user_activity("1001") == ""
    assert index.get_email("1001", product_id="acme") is None


async def test_async_twins_are_scoped_too(make_backend: Callable[..., Any]) -> None:
    clock = FakeClock()
    store = AsyncContextStore(backend=make_backend(clock=clock), clock=clock)
    index = UserSessionIndex(store, clock=clock)
    for product in ("acme", "globex"):
        payload = actions(f"{product}-s", f"{product} only", product_id=product, user_id="1001")
        await store.add(payload)
        await index.aadd(payload)
        await index.add_async(payload)
    assert await index.aget_user_activity("1001", product_id="globex") == (
        "Session globex-s (globex):\nRecent activity:\n1. globex only — /page"
    )
    with pytest.raises(AmbiguousUserError):
        await index.aget_user_activity("1001")
    with pytest.raises(AmbiguousUserError):
        await index.aget_recent_sessions("1001")
    with pytest.raises(AmbiguousUserError):
        await index.areset_user("1001")
    await index.areset_user("1001", product_id="acme")
    assert [r.session_id for r in await index.aget_recent_sessions("1001")] == ["globex-s"]


def test_an_unknown_user_reads_empty() -> None:
    index = UserSessionIndex(ContextStore())
    assert index.get_user_activity("nobody") == ""
    assert index.get_recent_sessions("nobody") == []
    assert index.get_email("nobody") is None
    index.reset_user("nobody")


def test_store_byte_budget_evicts_the_lru_session_and_reports_bytes() -> None:
    clock = FakeClock()
    wide = "😀" * 290  # under the 300-character field cap: kept whole, 4 bytes a character
    per_session = 5  # actions of one session (the cap below)
    # The size of one full session as the store writes it (one batch per add).
    store_probe = ContextStore(
        max_actions_per_session=per_session, max_bytes=None, clock=FakeClock()
    )
    for _ in range(per_session):
        store_probe.add(actions("probe", wide))
    full = store_probe.stats()["bytes"]
    budget = 3 * full + full // 2
    store = ContextStore(max_actions_per_session=per_session, max_bytes=budget, clock=clock)
    sessions = [f"s{n}" for n in range(6)]
    for n, session in enumerate(sessions):
        if n == 3:
            store.get("s0")  # s0 is touched: s1 becomes the least recently used
        for _ in range(per_session):
            clock.advance(1)
            store.add(actions(session, wide))
            assert store.stats()["bytes"] <= budget
    assert store.active_keys == [("p1", "s3"), ("p1", "s4"), ("p1", "s5")]
    stats = store.stats()
    # s1 went first (s0 had been read), then s2, then s0.
    assert stats["sessions_evicted_bytes"] == 3
    assert stats["sessions_evicted"] == 0
    assert stats["bytes"] == 3 * full
    with pytest.raises(ConfigError):
        ContextStore(backend=InMemoryBackend(), max_bytes=1024)


def test_a_replay_one_longer_than_the_window_through_the_store_stores_one() -> None:
    store = ContextStore(backend=InMemoryBackend(dedupe_window=100, max_actions_per_session=500))

    def event(n: int) -> ActionsPayload:
        return ActionsPayload(
            product_id="p1",
            session_id="s",
            actions=(action(f"a{n}"),),
            forwarded_at=1000.0 + n,
            event_id=str(n),
        )

    for n in range(101):
        store.add(event(n))
    assert store.add_many(event(n) for n in range(101)) == 1
    for n in range(101):
        store.add(event(n))  # one by one: the same
    view = store.view("s")
    assert view is not None
    assert len(view.actions) == 103
    assert view.actions[-2:] == ["a0 — /page", "a0 — /page"]
    assert store.stats()["duplicates_skipped"] == 200
    # A server that restarted its ids at 1 with other content: stored, counted.
    store.add(actions("s", "after a restart", event_id="1"))
    assert store.stats()["reused_ids"] == 1
    assert store.stats()["dedupe_resets"] == 0


@pytest.mark.parametrize("replaces", [1, 2**63, 10**30])
def test_store_clamps_replaces_and_stores_the_summary(
    make_backend: Callable[..., Any], replaces: int, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = ContextStore(backend=make_backend(clock=clock), clock=clock)
    store.add(summary("fresh", "Started mid-session.", replaces=replaces, event_id="9"))
    assert store.get("fresh") == "Summary: Started mid-session."
    store.add(summary("fresh", "Started mid-session.", replaces=replaces, event_id="9"))
    assert store.stats()["duplicates_skipped"] == 1
    assert MAX_REPLACES == 2**31 - 1
    clamped = 2 if replaces > MAX_REPLACES else 0  # counted per payload, the replay too
    assert store.stats()["replaces_clamped"] == clamped
    assert caplog.text.count("exceeds 2147483647; clamped") == clamped
