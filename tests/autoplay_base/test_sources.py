"""Shared loader/reader plumbing: metadata and store snapshots (recordings and streams are
covered with the emulator in test_recording.py and the adapters' tests)."""

from __future__ import annotations

import pytest

from autoplay_base import AsyncContextStore, ConfigError, ContextStore, SessionKey, UnknownEvent
from autoplay_base.sources import (
    asnapshot_sessions,
    event_metadata,
    iter_events,
    session_metadata,
    snapshot_sessions,
)
from tests.autoplay_base.factories import actions, summary


def test_event_metadata_for_each_type() -> None:
    assert event_metadata(actions("s", "a", user_id="u", event_id="7")) == {
        "session_id": "s",
        "product_id": "p1",
        "user_id": "u",
        "event_id": "7",
        "type": "actions",
        "forwarded_at": 1.0,
    }
    assert event_metadata(summary("s", "S.", event_id="8")) == {
        "session_id": "s",
        "product_id": "p1",
        "event_id": "8",
        "type": "summary",
        "forwarded_at": 2.0,
    }
    unknown = UnknownEvent(type="usertour_trigger", data={"product_id": "p", "x": 1}, event_id="9")
    assert event_metadata(unknown) == {
        "product_id": "p",
        "event_id": "9",
        "type": "usertour_trigger",
    }


def test_snapshot_lists_sessions_with_context() -> None:
    store = ContextStore()
    store.add(actions("s1", "Opened billing", url="/billing"))
    store.add(actions("s2", "Other product", product_id="p2"))
    store.add(summary("s1", "Billing visit.", replaces=0))
    snapshots = snapshot_sessions(store)
    assert [s.key for s in snapshots] == [SessionKey("p2", "s2"), SessionKey("p1", "s1")]
    assert (
        snapshots[1].text
        == "Summary: Billing visit.\n\nRecent activity:\n1. Opened billing — /billing"
    )
    assert [s.key for s in snapshot_sessions(store, product_id="p1")] == [SessionKey("p1", "s1")]
    assert session_metadata(snapshots[1])["session_id"] == "s1"
    assert snapshot_sessions(store, include_actions=False, product_id="p2") == []


async def test_async_snapshot() -> None:
    store = AsyncContextStore()
    await store.add(actions("s1", "a"))
    [snapshot] = await asnapshot_sessions(store)
    assert snapshot.text == "Recent activity:\n1. a — /page"


def test_exactly_one_event_source() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        list(iter_events())
    with pytest.raises(ConfigError, match="exactly one"):
        list(iter_events(path="x.jsonl", url="http://127.0.0.1:1/stream/p"))
