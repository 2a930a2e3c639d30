"""InMemoryBackend only: trimming and summaries across chunk boundaries agree with a plain list.

The backend keeps a session's lines in joined chunks and remembers how many lines of
the oldest chunk are live once a trim counted them; a write joining lines to the
oldest chunk, a summary dropping several lines, and a cap trimming one line per write
must all leave exactly the lines a plain list would hold, with the same byte figure.
"""

from __future__ import annotations

import random

from autoplay_base.backends.base import ReadOptions, SessionKey
from autoplay_base.backends.memory import InMemoryBackend

T0 = 1_700_000_000.0
A = SessionKey("p1", "s1")
ALL = ReadOptions()


def test_random_writes_trims_and_summaries_keep_exactly_the_newest_lines() -> None:
    rng = random.Random(7)
    cap = 23
    backend = InMemoryBackend(max_actions_per_session=cap)
    model: list[str] = []
    trimmed = 0
    serial = 0
    for step in range(3_000):
        at = T0 + step
        if rng.random() < 0.08:
            replaces = rng.randrange(0, 12)
            backend.apply_summary(A, f"summary {step}", replaces=replaces, at=at)
            del model[:replaces]
        else:
            batch = []
            for _ in range(rng.choice((1, 1, 1, 2, 5, 9))):
                serial += 1
                batch.append(f"line {serial} " + "x" * rng.randrange(0, 90))
            backend.append_actions(A, batch, at=at, event_id=f"e{step}")
            model.extend(batch)
            if len(model) > cap:
                trimmed += len(model) - cap
                del model[: len(model) - cap]
        view = backend.read(A, ALL, now=at)
        assert view is not None
        assert list(view.actions) == model, step
    assert backend.stats.actions_trimmed == trimmed
    # The byte figure is what the chunks hold: a reset gives every byte back.
    assert backend.stats.extra["bytes"] > 0
    backend.reset(A)
    assert backend.stats.extra["bytes"] == 0
