"""InMemoryBackend only: all-or-nothing writes and the byte budget (``max_bytes``)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView
from autoplay_base.backends.memory import DEFAULT_MAX_BYTES, InMemoryBackend
from autoplay_base.errors import ConfigError
from tests.autoplay_base.factories import FakeClock

T0 = 1_700_000_000.0
A = SessionKey("p1", "s1")
ALL = ReadOptions()


def test_a_write_that_raises_marks_nothing_and_creates_nothing() -> None:
    backend = InMemoryBackend(clock=FakeClock(T0))
    bad: list[Any] = ["fine", 42]  # joining fails: no string
    with pytest.raises(TypeError):
        backend.append_actions(A, bad, at=T0, event_id="e1", user_id="u1")
    with pytest.raises(TypeError):
        backend.append_actions(A, [None], at=T0, event_id="e2")  # a lone non-string line too
    with pytest.raises(TypeError):
        backend.apply_summary(A, None, replaces=0, at=T0, event_id="e3")  # type: ignore[arg-type]
    # Nothing half-done: no session (a read would find it), no user, no byte, no counter.
    assert backend.products_for("s1") == []
    assert backend.user_products("u1") == []
    assert backend.stats.actions_stored == backend.stats.summaries_stored == 0
    assert backend.stats.extra["bytes"] == 0
    # The ids were never marked seen: the retries are stored.
    assert backend.append_actions(A, ["fine", "42"], at=T0 + 1, event_id="e1") is True
    assert backend.append_actions(A, ["x"], at=T0 + 2, event_id="e2") is True
    assert backend.apply_summary(A, "sum", replaces=0, at=T0 + 3, event_id="e3") is True
    assert backend.read(A, ALL, now=T0 + 4) == SessionView(
        "sum", ["fine", "42", "x"], T0 + 3, T0 + 3
    )
    assert backend.stats.duplicate_events == 0


def test_negative_replaces_drops_nothing() -> None:
    backend = InMemoryBackend()
    backend.append_actions(A, ["a", "b"], at=T0)
    assert backend.apply_summary(A, "s", replaces=-3, at=T0 + 1) is True
    assert backend.read(A, ALL, now=T0 + 2) == SessionView("s", ["a", "b"], T0 + 1, T0 + 1)


def line_bytes(text: str) -> int:
    return sys.getsizeof(text)


def test_the_byte_budget_evicts_the_least_recently_used_session() -> None:
    clock = FakeClock(T0)
    wide = "😀" * 500  # 4-byte characters: the worst case per character
    one = line_bytes("\n".join([wide] * 4))  # a four-line batch as stored
    budget = 3 * one + one // 2  # room for three such sessions, not four
    backend = InMemoryBackend(max_bytes=budget, max_actions_per_session=4, clock=clock)
    keys = [SessionKey("p1", f"s{n}") for n in range(8)]
    evicted_at: list[int] = []
    for n, key in enumerate(keys):
        if n == 4:
            backend.read(keys[1], ALL, now=T0 + n)  # s1 is touched: s2 is now the LRU
        backend.append_actions(key, [wide] * 4, at=T0 + n)
        assert backend.stats.extra["bytes"] <= budget
        evicted_at.append(backend.stats.extra["sessions_evicted_bytes"])
    assert evicted_at == [0, 0, 0, 1, 2, 3, 4, 5]
    clock.now = T0 + 8
    # s0 went at the 4th write, then s2 (s1 was read), then s3, s1, s4.
    assert backend.sessions() == [keys[5], keys[6], keys[7]]
    assert backend.stats.extra["bytes"] == 3 * one
    assert backend.stats.sessions_evicted == 0  # count-based evictions are apart
    # Trimming and summaries keep the figure exact.
    backend.append_actions(keys[7], ["a"], at=T0 + 9)  # trims one line of the wide batch
    assert backend.stats.extra["bytes"] == 3 * one + line_bytes("a")
    backend.apply_summary(keys[7], "sum", replaces=10, at=T0 + 10)
    assert backend.stats.extra["bytes"] == 2 * one + line_bytes("sum")
    backend.reset(keys[7])
    assert backend.stats.extra["bytes"] == 2 * one


def test_chat_histories_count_against_the_budget_too() -> None:
    clock = FakeClock(T0)
    message = "m" * 10_000
    size = line_bytes(message)
    backend = InMemoryBackend(max_bytes=5 * size, max_messages=3, clock=clock)
    backend.append_messages(A, [message + "1", message + "2"])
    assert backend.stats.extra["bytes"] == 2 * line_bytes(message + "1")
    backend.append_messages(A, [message + "3", message + "4"])  # max_messages pushes one out
    assert backend.stats.extra["bytes"] == 3 * line_bytes(message + "1")
    clock.advance(1)
    other = SessionKey("p1", "s2")
    backend.append_messages(other, [message + "5", message + "6", message + "7"])
    # Six messages do not fit in five: the older history (A) goes whole.
    assert backend.get_messages(A) == []
    assert backend.get_messages(other) == [message + "5", message + "6", message + "7"]
    assert backend.stats.extra["histories_evicted_bytes"] == 1
    assert backend.stats.extra["bytes"] == 3 * line_bytes(message + "5")
    backend.clear_messages(other)
    assert backend.stats.extra["bytes"] == 0


def test_byte_budget_options() -> None:
    assert InMemoryBackend().max_bytes == DEFAULT_MAX_BYTES == 512 * 1024 * 1024
    unbounded = InMemoryBackend(max_bytes=None)
    unbounded.append_actions(A, ["x" * 100_000], at=T0)
    assert unbounded.stats.extra["bytes"] == line_bytes("x" * 100_000)
    with pytest.raises(ConfigError):
        InMemoryBackend(max_bytes=0)


def test_dedupe_windows_are_per_product_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoplay_base.backends import memory

    monkeypatch.setattr(memory, "MAX_DEDUPE_PRODUCTS", 2)
    backend = InMemoryBackend(dedupe_window=2)
    for product in ("p1", "p2"):
        for n in range(2):
            backend.append_actions(SessionKey(product, "s"), ["x"], at=T0 + n, event_id=str(n))
    # Each product keeps its own two ids: p2's writes pushed none of p1's out.
    assert backend.append_actions(SessionKey("p1", "s"), ["x"], at=T0 + 5, event_id="0") is False
    backend.append_actions(SessionKey("p3", "s"), ["x"], at=T0 + 6, event_id="0")
    # A third product drops the least recently written product's window (p2): counted.
    assert backend.stats.extra["dedupe_windows_evicted"] == 1
    assert backend.append_actions(SessionKey("p2", "s"), ["x"], at=T0 + 7, event_id="1") is True


def test_one_line_writes_share_their_strings() -> None:
    """Fifty one-line events cost about their characters, not fifty string headers.

    A str costs ``sys.getsizeof("")`` (49 bytes) before its first character: a backend
    keeping one string per write would hold ``50 * (49 + 60)`` bytes here; joined into
    a few chunks it holds little more than the characters.
    """
    backend = InMemoryBackend(clock=FakeClock(T0))
    lines = [f"{n:02d} {'x' * 54}\x1f/u" for n in range(50)]  # 60 characters each
    for n, line in enumerate(lines):
        backend.append_actions(A, [line], at=T0 + n)
    held = backend.stats.extra["bytes"]
    assert 50 * 61 <= held <= 50 * 61 + 10 * sys.getsizeof("")
    assert backend.read(A, ALL, now=T0 + 50) == SessionView(None, lines, None, T0 + 49)
    assert backend.read(A, ReadOptions(max_actions=3), now=T0 + 50).actions == lines[-3:]
    backend.apply_summary(A, "s", replaces=49, at=T0 + 50)  # every chunk but the newest line's
    assert backend.read(A, ALL, now=T0 + 51).actions == lines[-1:]
    assert backend.stats.extra["bytes"] < 2000 + sys.getsizeof("s")
