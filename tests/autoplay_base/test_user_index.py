"""UserSessionIndex: user id -> recent sessions -> joined context."""

from __future__ import annotations

import pytest

from autoplay_base import (
    AsyncContextStore,
    ConfigError,
    ContextStore,
    InMemoryBackend,
    SessionRef,
    UserSessionIndex,
)
from tests.autoplay_base.factories import FakeClock, actions


def test_joins_the_context_of_recent_sessions_newest_first() -> None:
    clock = FakeClock()
    store = ContextStore(clock=clock)
    index = UserSessionIndex(store, lookback_seconds=300, clock=clock)
    for payload in (
        actions("s1", "Opened billing", user_id="u1", email="u1@example.com", product_id="app"),
        actions("other", "Not u1", user_id="u2", product_id="app"),
    ):
        store.add(payload)
        index.add(payload)
    clock.advance(10)
    store.add(actions("s2", "Invited a teammate", user_id="u1", product_id="app"))
    assert index.get_recent_sessions("u1") == [
        SessionRef("s2", "app", clock.now),
        SessionRef("s1", "app", clock.now - 10),
    ]
    assert index.get_user_activity("u1") == (
        "Session s2 (app):\nRecent activity:\n1. Invited a teammate — /page\n\n"
        "Session s1 (app):\nRecent activity:\n1. Opened billing — /page"
    )
    assert index.get_email("u1") == "u1@example.com"
    clock.advance(295)  # s1 is now older than the lookback
    assert [ref.session_id for ref in index.get_recent_sessions("u1")] == ["s2"]
    index.reset_user("u1")
    assert index.get_user_activity("u1") == ""
    assert index.get_email("u1") is None


def test_sessions_per_user_are_bounded() -> None:
    clock = FakeClock()
    store = ContextStore(backend=InMemoryBackend(max_sessions_per_user=3, clock=clock), clock=clock)
    index = UserSessionIndex(store, max_sessions_per_user=2, clock=clock)
    for n in range(5):
        clock.advance(1)
        store.add(actions(f"s{n}", "x", user_id="u"))
    assert [ref.session_id for ref in index.get_recent_sessions("u")] == ["s4", "s3"]


async def test_async_twins() -> None:
    clock = FakeClock()
    store = AsyncContextStore(clock=clock)
    index = UserSessionIndex(store, clock=clock)
    payload = actions("s1", "Exported a report", user_id="u1", email="e@x.io")
    await store.add(payload)
    await index.add_async(payload)
    assert await index.aget_user_activity("u1") == (
        "Session s1 (p1):\nRecent activity:\n1. Exported a report — /page"
    )
    assert [r.session_id for r in await index.aget_recent_sessions("u1")] == ["s1"]
    await index.areset_user("u1")
    assert await index.aget_user_activity("u1") == ""


async def test_add_async_is_the_deprecated_alias_of_aadd() -> None:
    store = AsyncContextStore()
    index = UserSessionIndex(store)
    await index.aadd(actions("s1", "x", user_id="u1", email="new@x.io"))
    await index.add_async(actions("s2", "x", user_id="u2", email="old@x.io"))
    await store.add(actions("s1", "x", user_id="u1"))
    await store.add(actions("s2", "x", user_id="u2"))
    assert [index.get_email("u1"), index.get_email("u2")] == ["new@x.io", "old@x.io"]
    doc = UserSessionIndex.add_async.__doc__ or ""
    assert doc.startswith("Deprecated: use :meth:`aadd`")


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        UserSessionIndex(ContextStore(), lookback_seconds=0)
    with pytest.raises(ConfigError):
        UserSessionIndex(ContextStore(), max_sessions_per_user=0)
