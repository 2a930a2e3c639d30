"""The optimised read path returns exactly what a straightforward reference returns.

The backends' reads walk back from the newest batch only as far as the lookback and
``max_actions`` reach (the in-memory one bisects its per-line times when they are in
order and keeps its lines in chunks, checked here with tiny chunks too), and the store
formats the result. This checks, over seeded random
sessions (batches of 1-4 lines, trims past the per-session cap, summaries with random
``replaces``, resets, clock steps back, random lookbacks, caps, ``since`` and summary
visibility), that every read equals the reference written here the plain way: keep every
stored line with its arrival time, then take the newest run of lines at or after the
cutoff, then the newest ``max_actions`` of those. Both backends, sync and async.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from autoplay_base import ContextStore
from autoplay_base.backends import memory
from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView
from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.backends.redis import RedisBackend
from tests.autoplay_base.factories import FakeClock, Twin

T0 = 1_700_000_000.0
CAP = 12
KEYS = [SessionKey("p1", "s1"), SessionKey("p1", "s2"), SessionKey("p2", "s1")]
BOUNDS: dict[str, Any] = {
    "max_sessions": 100,
    "max_actions_per_session": CAP,
    "idle_ttl_seconds": 10_000_000.0,
}


@dataclass
class Reference:
    """One session as the plain model keeps it: every live line with its own time."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    summary: str | None = None
    summary_at: float | None = None
    last_activity_at: float | None = None

    def append(self, batch: list[str], at: float) -> None:
        self.lines.extend((at, line) for line in batch)
        del self.lines[: max(0, len(self.lines) - CAP)]
        self.last_activity_at = at

    def summarise(self, summary: str, replaces: int, at: float) -> None:
        del self.lines[: max(0, replaces)]
        self.summary, self.summary_at, self.last_activity_at = summary, at, at

    def read(self, options: ReadOptions, now: float) -> SessionView:
        cutoffs = []
        if options.lookback_seconds is not None:
            cutoffs.append(now - options.lookback_seconds)
        if options.since is not None:
            cutoffs.append(math.nextafter(options.since, math.inf))
        kept: list[str] = []
        if options.include_actions:
            for at, line in reversed(self.lines):  # the newest run at or after the cutoff
                if cutoffs and at < max(cutoffs):
                    break
                kept.append(line)
            kept.reverse()
            if options.max_actions is not None:
                kept = kept[-options.max_actions :] if kept else kept
        summary = self.summary if options.include_summary else None
        if options.since is not None and self.summary_at is not None:
            summary = summary if self.summary_at > options.since else None
        return SessionView(summary, kept, self.summary_at, self.last_activity_at)


def reference_text(view: SessionView | None) -> str:
    """``store.get``'s text, laid out the plain way (one f-string per line)."""
    if view is None:
        return ""
    shown = [line.replace("\x1f", " — ") for line in view.actions]
    numbered = "\n".join(f"{n}. {line}" for n, line in enumerate(shown, 1))
    parts = [f"Summary: {view.summary}"] if view.summary else []
    if shown:
        parts.append(f"Recent activity:\n{numbered}")
    return "\n\n".join(parts)


def random_options(rng: random.Random, now: float) -> ReadOptions:
    return ReadOptions(
        include_summary=rng.random() < 0.8,
        include_actions=rng.random() < 0.9,
        lookback_seconds=rng.choice([None, None, 0.5, 3.0, 10.0, 40.0]),
        max_actions=rng.choice([None, None, 1, 2, 5, 20]),
        since=rng.choice([None, None, now - rng.choice([0.5, 2.0, 7.0, 30.0])]),
    )


def script(seed: int, steps: int = 400) -> list[tuple[Any, ...]]:
    """Writes, resets and reads; times on a 0.5 s grid, sometimes stepping back."""
    rng = random.Random(seed)
    ops: list[tuple[Any, ...]] = []
    at = T0
    for step in range(steps):
        at += rng.choice([0.0, 0.5, 0.5, 1.0, 2.0]) if rng.random() > 0.04 else -3.0
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.45:
            batch = [
                f"step {step}.{i}\x1f/p/{rng.randrange(9)}"
                if rng.random() < 0.8
                else f"bare {step}"
                for i in range(rng.randint(1, 4))
            ]
            ops.append(("add", key, batch, at))
        elif roll < 0.52:
            ops.append(("summary", key, f"summary {step}", rng.randint(-1, 8), at))
        elif roll < 0.54:
            ops.append(("reset", key))
        else:
            ops.append(("read", key, random_options(rng, at), at))
    return ops


async def run(backend: Any, ops: list[tuple[Any, ...]]) -> int:
    """Apply ``ops`` to ``backend`` and the reference; every read must agree. Returns reads."""
    model: dict[SessionKey, Reference] = {}
    reads = 0
    for op in ops:
        if op[0] == "add":
            _, key, batch, at = op
            await backend.append_actions(key, batch, at=at)
            model.setdefault(key, Reference()).append(batch, at)
        elif op[0] == "summary":
            _, key, text, replaces, at = op
            await backend.apply_summary(key, text, replaces=max(0, replaces), at=at)
            model.setdefault(key, Reference()).summarise(text, max(0, replaces), at)
        elif op[0] == "reset":
            await backend.reset(op[1])
            model.pop(op[1], None)
        else:
            _, key, options, now = op
            view = await backend.read(key, options, now=now)
            expected = model[key].read(options, now) if key in model else None
            got = None if view is None else SessionView(*view[:4])
            assert got == expected, (op, got, expected)
            reads += 1
    return reads


SEEDS = range(6)


@pytest.mark.parametrize("chunk_chars", [None, 24, 64])
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_memory_reads_match_the_reference(
    seed: int, mode: str, chunk_chars: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with tiny chunks: writes join the newest chunk, reads and trims cross chunks."""
    if chunk_chars is not None:
        monkeypatch.setattr(memory, "_CHUNK_CHARS", chunk_chars)
    backend = InMemoryBackend(**BOUNDS, clock=FakeClock(T0))
    ops = script(seed)
    assert await run(Twin(backend, mode), ops) == sum(op[0] == "read" for op in ops)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("seed", SEEDS[:3])
async def test_redis_reads_match_the_reference(
    seed: int, mode: str, make_redis_backend: Callable[..., RedisBackend]
) -> None:
    backend = make_redis_backend(**BOUNDS, clock=FakeClock(T0))
    ops = script(seed, steps=250)
    assert await run(Twin(backend, mode), ops) == sum(op[0] == "read" for op in ops)


@pytest.mark.parametrize("seed", SEEDS)
def test_store_text_matches_the_reference(seed: int) -> None:
    """``get``/``enrich``/``view`` through the store, product given or resolved."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    store = ContextStore(backend=InMemoryBackend(**BOUNDS, clock=clock), clock=clock)
    model: dict[SessionKey, Reference] = {}
    key = SessionKey("p1", "solo")  # one product: an omitted product_id resolves to it
    checked = 0
    for step in range(300):
        clock.advance(rng.choice([0.0, 0.5, 1.0, 2.0]))
        roll = rng.random()
        if roll < 0.5:
            batch = [f"did {step}.{i}\x1f/u/{i}" for i in range(rng.randint(1, 3))]
            store.backend.append_actions(key, batch, at=clock.now)
            model.setdefault(key, Reference()).append(batch, clock.now)
        elif roll < 0.56:
            replaces = rng.randint(0, 5)
            store.backend.apply_summary(key, f"sum {step}", replaces=replaces, at=clock.now)
            model.setdefault(key, Reference()).summarise(f"sum {step}", replaces, clock.now)
        else:
            options = random_options(rng, clock.now)
            overrides = {
                "include_summary": options.include_summary,
                "include_actions": options.include_actions,
                "lookback_seconds": options.lookback_seconds,
                "max_actions": options.max_actions,
                "since": options.since,
            }
            expected = reference_text(model[key].read(options, clock.now) if key in model else None)
            product = rng.choice([None, "p1"])
            assert store.get("solo", product, **overrides) == expected
            query = f"question {step}"
            enriched = f"[Session context]\n{expected}\n\n[Query]\n{query}" if expected else query
            assert store.enrich("solo", query, product, **overrides) == enriched
            view = store.view("solo", product, **overrides)
            assert view is not None if key in model else view is None
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(("max_actions", "expected"), [(None, 3), (2, 2), (3, 3), (10, 3)])
def test_a_read_never_returns_the_trimmed_lines_of_the_oldest_chunk(
    max_actions: int | None, expected: int
) -> None:
    """The read joins every chunk and splits from the end: the oldest chunk's dropped lines
    (trimmed here, still in its string) must stay out, whether all or some lines are wanted."""
    backend = InMemoryBackend(max_actions_per_session=3, idle_ttl_seconds=None)
    key = SessionKey("p", "s")
    backend.append_actions(key, ["a\x1f/1", "b\x1f/2", "c\x1f/3"], at=T0)
    backend.append_actions(key, ["d\x1f/4", "e\x1f/5"], at=T0 + 1)  # trims a and b
    view = backend.read(key, ReadOptions(max_actions=max_actions), now=T0 + 2)
    assert view is not None
    assert list(view.actions) == ["c\x1f/3", "d\x1f/4", "e\x1f/5"][-expected:]
    assert backend.stats.actions_trimmed == 2
