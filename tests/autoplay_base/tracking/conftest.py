"""Tracking test fixtures: fast retries, trackers closed at teardown (the receiver is global)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from autoplay_base._reconnect import Backoff
from autoplay_base.tracking import Tracker

__all__ = ["fast_backoff", "make_tracker"]


def fast_backoff(initial: float = 0.01, maximum: float = 0.05) -> Backoff:
    """Retries within milliseconds, no jitter: timings the tests can assert."""
    return Backoff(initial, maximum, jitter=0.0)


@pytest.fixture
def make_tracker() -> Iterator[Callable[..., Tracker]]:
    """Build ``Tracker``s that are closed (quickly) at teardown, never flushed at exit."""
    made: list[Tracker] = []

    def make(sinks: Any, **options: Any) -> Tracker:
        options.setdefault("flush_at_exit", False)
        tracker = Tracker(sinks, **options)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=0.5)
