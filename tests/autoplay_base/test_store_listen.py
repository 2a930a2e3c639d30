"""ContextStore.listen / alisten: a session's live activity through the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base import AsyncContextStore, ConfigError, ContextStore
from tests.autoplay_base.factories import actions, summary

MakeBackend = Callable[..., Any]


def test_listen_needs_a_backend_that_can_follow() -> None:
    store = ContextStore()
    store.add(actions("s", "a"))
    with pytest.raises(ConfigError, match="InMemoryBackend cannot follow live activity"):
        store.listen("s")


def test_listen_shows_display_lines_and_resumes(make_redis_backend: MakeBackend) -> None:
    store = ContextStore(backend=make_redis_backend())
    with pytest.raises(ConfigError, match="not known yet"):
        store.listen("s")
    store.add(actions("s", "Opened billing", "Clicked Upgrade", url="/billing", event_id="1"))
    store.add(summary("s", "Upgrading.", replaces=1, event_id="2"))
    seen = []
    for activity in store.listen("s", last_id="0", block_ms=50):
        seen.append(activity)
        if len(seen) == 2:
            break
    assert [(a.kind, a.lines, a.summary, a.replaces, a.event_id) for a in seen] == [
        ("actions", ("Opened billing — /billing", "Clicked Upgrade — /billing"), None, 0, "1"),
        ("summary", (), "Upgrading.", 1, "2"),
    ]
    resumed = store.listen("s", "p1", last_id=seen[0].id, block_ms=50)
    assert next(resumed) == seen[1]


async def test_alisten_follows_new_activity(make_redis_backend: MakeBackend) -> None:
    store = AsyncContextStore(backend=make_redis_backend())
    await store.add(actions("s", "first", event_id="1"))
    followed = await store.alisten("s", last_id="0", block_ms=50)
    first = await anext(followed)
    assert first.lines == ("first — /page",)
    await store.add(actions("s", "second", event_id="2"))
    second = await anext(followed)
    assert (second.lines, second.event_id) == (("second — /page",), "2")
    await followed.aclose()  # type: ignore[attr-defined]
