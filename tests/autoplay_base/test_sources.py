"""Shared loader/reader plumbing: metadata and store snapshots (recordings and streams are
covered with the emulator in test_recording.py and the adapters' tests)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from autoplay_base import (
    AsyncContextStore,
    ConfigError,
    ContextStore,
    Event,
    SessionKey,
    UnknownEvent,
)
from autoplay_base.sources import (
    SourceOptions,
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


# -- one set of source options for the loader and the reader -----------------------------------
STREAM = "http://127.0.0.1:9/stream/acme"
BAD_SOURCE_OPTIONS: list[tuple[dict[str, Any], str]] = [
    (
        {},
        "pass exactly one source: path= (a recording), url= (a live stream) "
        "or store= (a snapshot); got none",
    ),
    (
        {"path": "x.jsonl", "url": STREAM},
        "pass exactly one source: path= (a recording), url= (a live stream) "
        "or store= (a snapshot); got path, url",
    ),
    ({"path": "x.jsonl", "max_events": 0}, "max_events must be >= 1 or None (an int), got 0"),
    ({"path": "x.jsonl", "max_events": -1}, "max_events must be >= 1 or None (an int), got -1"),
    ({"path": "x.jsonl", "max_events": True}, "max_events must be >= 1 or None (an int), got True"),
    ({"path": "x.jsonl", "max_events": "3"}, "max_events must be >= 1 or None (an int), got '3'"),
    ({"path": "x.jsonl", "timeout": 0}, "timeout must be > 0 or None (seconds), got 0"),
    ({"path": "x.jsonl", "timeout": -1.5}, "timeout must be > 0 or None (seconds), got -1.5"),
    ({"path": "x.jsonl", "timeout": math.nan}, "timeout must be > 0 or None (seconds), got nan"),
    ({"path": "x.jsonl", "timeout": True}, "timeout must be > 0 or None (seconds), got True"),
    (
        {"path": "x.jsonl", "product_id": "acme"},
        "product_id= filters store snapshots; it needs store= (a stream URL names its product)",
    ),
    (
        {"url": STREAM},
        "a live stream needs a bound, it is read for a bounded window: "
        "pass max_events= or timeout=",
    ),
]
"""Options both adapters refuse, with the exact ``ConfigError`` message (their tests use it)."""


def refusals(build: Callable[..., object]) -> list[tuple[dict[str, Any], str]]:
    """``(kwargs, message)`` for each of :data:`BAD_SOURCE_OPTIONS` that ``build`` refuses.

    An adapter agrees with :class:`SourceOptions` when this is the whole table.
    """
    refused = []
    for kwargs, _ in BAD_SOURCE_OPTIONS:
        try:
            build(**kwargs)
        except ConfigError as exc:
            refused.append((kwargs, str(exc)))
    return refused


def test_source_options_refuse_with_one_message() -> None:
    assert refusals(SourceOptions) == BAD_SOURCE_OPTIONS


def test_source_options_accept_and_override_per_call() -> None:
    store = ContextStore()
    options = SourceOptions(url=STREAM, token="uk_secret", max_events=1)
    assert "uk_secret" not in repr(options)
    assert options.with_call_options() is options
    assert options.with_call_options(timeout=2.5, max_events=None).timeout == 2.5
    with pytest.raises(ConfigError, match=r"^a live stream needs a bound"):
        options.with_call_options(max_events=None)
    with pytest.raises(ConfigError) as info:
        options.with_call_options(max_event=2)
    assert str(info.value) == (
        "unknown load option(s) max_event; valid: max_events, product_id, timeout"
    )
    snapshot = SourceOptions(store=store, product_id="p1", context_options={"max_actions": 1})
    assert snapshot.with_call_options(product_id="p2").product_id == "p2"
    with pytest.raises(TypeError):
        snapshot.context_options["max_actions"] = 2
    assert SourceOptions(path="x.jsonl", max_events=1, timeout=0.5).max_events == 1


def test_source_options_read_what_they_name() -> None:
    store = ContextStore()
    store.add(actions("s1", "One", url="/1"))
    store.add(actions("s1", "Two", url="/2"))
    store.add(actions("s2", "Other", product_id="p2"))
    options = SourceOptions(store=store, product_id="p1", context_options={"max_actions": 1})
    assert [(s.key, s.text) for s in options.snapshots(store)] == [
        (SessionKey("p1", "s1"), "Recent activity:\n1. Two — /2")
    ]


async def test_gathered_events_become_session_snapshots() -> None:
    events = [
        actions("s1", "One", url="/1"),
        UnknownEvent(type="usertour_trigger", data={"session_id": "s1"}),
        actions("s1", "Two", url="/2"),
        summary("s1", "Did one.", replaces=1),
        actions("s2", "Other", product_id="p2"),
    ]
    options = SourceOptions(path="unused.jsonl")
    expected = [
        (SessionKey("p1", "s1"), "Summary: Did one.\n\nRecent activity:\n1. Two — /2"),
        (SessionKey("p2", "s2"), "Recent activity:\n1. Other — /page"),
    ]
    assert [(s.key, s.text) for s in options.gathered(events)] == expected

    async def aevents() -> AsyncIterator[Event]:
        for event in events:
            yield event

    assert [(s.key, s.text) for s in await options.agathered(aevents())] == expected
