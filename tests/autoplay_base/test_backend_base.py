"""The values every backend shares: bounds validated once, the read rules written once."""

from __future__ import annotations

import math

import pytest

from autoplay_base.backends.base import (
    DEFAULT_MAX_SESSIONS,
    Activity,
    ActivityListener,
    Bounds,
    ReadOptions,
    read_cutoff,
    visible_summary,
)
from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.errors import ConfigError


def test_bounds_resolve_max_users_to_max_sessions() -> None:
    assert Bounds().users == DEFAULT_MAX_SESSIONS
    assert Bounds(max_sessions=7).users == 7
    assert Bounds(max_sessions=7, max_users=3).users == 3


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_sessions", 0), ("idle_ttl_seconds", -1.0), ("max_users", 0), ("dedupe_window", -5)],
)
def test_a_bad_bound_names_itself(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"^{option} must be > 0, got {value!r}$"):
        Bounds(**{option: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"^{option} must be > 0"):
        InMemoryBackend(**{option: value})  # type: ignore[arg-type]


def test_the_backends_hold_one_bounds_object() -> None:
    backend = InMemoryBackend(max_sessions=5, max_messages=2)
    assert backend.bounds == Bounds(max_sessions=5, max_users=5, max_messages=2)


def test_read_cutoff_takes_the_later_of_lookback_and_an_exclusive_since() -> None:
    assert read_cutoff(ReadOptions(), 100.0) is None
    assert read_cutoff(ReadOptions(lookback_seconds=30), 100.0) == 70.0
    assert read_cutoff(ReadOptions(since=80.0), 100.0) == math.nextafter(80.0, math.inf)
    assert read_cutoff(ReadOptions(lookback_seconds=30, since=50.0), 100.0) == 70.0
    assert read_cutoff(ReadOptions(lookback_seconds=30, since=70.0), 100.0) == math.nextafter(
        70.0, math.inf
    )


def test_visible_summary_hides_what_was_not_asked_for_or_is_not_newer_than_since() -> None:
    assert visible_summary("s", 10.0, ReadOptions()) == "s"
    assert visible_summary(None, None, ReadOptions()) is None
    assert visible_summary("s", 10.0, ReadOptions(include_summary=False)) is None
    assert visible_summary("s", 10.0, ReadOptions(since=10.0)) is None
    assert visible_summary("s", 10.5, ReadOptions(since=10.0)) == "s"


def test_only_a_backend_that_can_follow_a_session_is_an_activity_listener() -> None:
    assert not isinstance(InMemoryBackend(), ActivityListener)
    assert Activity("1-0", "actions", 1.0, lines=("a",)).lines == ("a",)
