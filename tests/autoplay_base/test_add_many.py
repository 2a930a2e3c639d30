"""store.add_many: the same result as add() one by one, with actions written in batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from autoplay_base import AsyncContextStore, ContextStore, InMemoryBackend, UnknownEvent
from tests.autoplay_base.factories import actions, summary

MakeBackend = Callable[..., Any]


def mixed() -> list[Any]:
    return [
        actions("s1", "a1", "a2", event_id="1"),
        actions("s2", "b1", event_id="2"),
        summary("s1", "Did a1.", replaces=1, event_id="3"),
        actions("s1", "a3", event_id="4"),
        actions("s1", "a3", event_id="4"),  # a replay (same id, same content): not stored
        {
            "type": "actions",
            "product_id": "p1",
            "session_id": "s2",
            "actions": [{"title": "T", "description": "b2", "canonical_url": "/page"}],
            "forwarded_at": 1.0,
        },
        UnknownEvent(type="usertour_trigger", data={"type": "usertour_trigger"}),
        actions(None, "nobody's"),
    ]


EXPECTED = {
    "s1": "Summary: Did a1.\n\nRecent activity:\n1. a2 — /page\n2. a3 — /page",
    "s2": "Recent activity:\n1. b1 — /page\n2. b2 — /page",
}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return InMemoryBackend()
    make: MakeBackend = request.getfixturevalue("make_redis_backend")
    return make()


def test_add_many_matches_add_one_by_one(backend: Any) -> None:
    batched = ContextStore(backend=backend)
    assert batched.add_many(mixed()) == 5
    one_by_one = ContextStore()
    for payload in mixed():
        one_by_one.add(payload)
    for session, text in EXPECTED.items():
        assert batched.get(session) == text
        assert one_by_one.get(session) == text
    assert batched.counters.as_dict() == {
        **one_by_one.counters.as_dict(),
        "reads": batched.counters.reads,
    }
    assert batched.counters.duplicates_skipped == 1
    assert batched.counters.unknown_events_ignored == 1
    assert batched.counters.payloads_without_session == 1


async def test_async_add_many_matches_too(backend: Any) -> None:
    store = AsyncContextStore(backend=backend)
    assert await store.add_many(mixed()) == 5
    for session, text in EXPECTED.items():
        assert await store.aget(session) == text
    assert await store.add_many([]) == 0
