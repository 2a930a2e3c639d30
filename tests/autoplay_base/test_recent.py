"""The dedupe window: replays past it, reused ids, clock resets, bounded memory."""

from __future__ import annotations

import pytest

from autoplay_base._recent import DedupeWindow, RecentKeys
from autoplay_base.errors import ConfigError


def _stream(window: DedupeWindow[str], ids: range, *, digest: str = "a") -> list[str]:
    """The ids of ``ids`` that the window lets through (order = the id's number)."""
    return [f"e{n}" for n in ids if window.check(f"e{n}", float(n), digest)]


def test_a_replay_one_longer_than_the_window_costs_one_event() -> None:
    window: DedupeWindow[str] = DedupeWindow(100)
    assert len(_stream(window, range(1, 102))) == 101
    # The server replays everything: only e1, already forgotten, comes through again.
    assert _stream(window, range(1, 102)) == ["e1"]
    assert len(window) == 100


def test_a_replay_costs_exactly_the_part_outside_the_window() -> None:
    window: DedupeWindow[str] = DedupeWindow(100)
    _stream(window, range(1, 501))
    # 400 events outside the window (up to 4x its size counts as a replay, not a reset).
    assert _stream(window, range(1, 501)) == [f"e{n}" for n in range(1, 401)]
    assert _stream(window, range(401, 511)) == [f"e{n}" for n in range(501, 511)]
    assert window.resets == 0


def test_a_reused_id_with_other_content_is_new_and_counted() -> None:
    window: DedupeWindow[str] = DedupeWindow(10)
    assert _stream(window, range(1, 6), digest="first run") == ["e1", "e2", "e3", "e4", "e5"]
    # The server restarted and counts from 1 again, with new events.
    assert _stream(window, range(1, 4), digest="second run") == ["e1", "e2", "e3"]
    assert window.reused == 3
    assert _stream(window, range(1, 4), digest="second run") == []
    assert _stream(window, range(4, 6), digest="first run") == []


def test_events_without_order_or_digest_use_fifo_and_any_digest() -> None:
    window: DedupeWindow[str] = DedupeWindow(2)
    assert window.check("a") and window.check("b")
    assert not window.check("a", digest="x")  # no digest remembered: matches any
    assert window.check("c")  # pushes out "a"
    assert window.check("a")
    assert list(window._entries) == ["c", "a"]


def test_a_clock_reset_clears_the_window_after_a_long_stale_run() -> None:
    window: DedupeWindow[str] = DedupeWindow(3)
    for n in range(3):
        assert window.check(f"new{n}", 1000.0 + n)
    # The source's clock went back: every event is older than the window.
    passed = [window.check(f"old{n}", float(n)) for n in range(13)]
    assert passed == [True] * 13
    assert window.resets == 1
    assert "old12" in window and "new0" not in window
    assert not window.check("old12", 12.0)


def test_memory_stays_bounded_when_one_id_is_reused_forever() -> None:
    window: DedupeWindow[str] = DedupeWindow(4)
    for n in range(10_000):
        assert window.check("same", float(n), digest=n)
    assert len(window) == 1
    assert len(window._ages) <= 8
    assert window.reused == 9_999


def test_is_duplicate_and_remember_separately_leave_no_mark_on_failure() -> None:
    window: DedupeWindow[str] = DedupeWindow(4)
    assert not window.is_duplicate("e1", "d")
    assert "e1" not in window  # a write that fails here leaves nothing behind
    window.remember("e1", 1.0, "d")
    assert window.is_duplicate("e1", "d")
    assert not window.is_duplicate("e1", "other")


@pytest.mark.parametrize("capacity", [0, -1])
def test_windows_reject_a_capacity_below_one(capacity: int) -> None:
    with pytest.raises(ConfigError):
        DedupeWindow(capacity)
    with pytest.raises(ConfigError):
        RecentKeys(capacity)


@pytest.mark.parametrize("order", [float("nan"), float("inf"), float("-inf")])
def test_orders_that_cannot_be_compared_count_as_the_newest(order: float) -> None:
    window: DedupeWindow[str] = DedupeWindow(3)
    for n in range(5):
        assert window.check(f"e{n}", order)
    assert list(window._entries) == ["e2", "e3", "e4"]
    assert not window.check("e4", 1.0)
