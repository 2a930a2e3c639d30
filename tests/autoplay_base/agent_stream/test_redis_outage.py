"""A Redis that does not answer never fails the agent: counted, ``on_drop``; ``strict`` raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autoplay_base.agent_stream import DroppedEvents, RunStream
from autoplay_base.backends.redis import RedisBackend
from autoplay_base.errors import BackendUnavailableError
from tests._fixtures.redis import free_port

S = {"session_id": "s1", "product_id": "p1"}


@pytest.fixture
def dead_backend() -> Iterator[RedisBackend]:
    """A backend whose server is not there (nothing listens on the port)."""
    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="dead")
    yield backend
    backend.client.close()


def test_an_outage_costs_the_events_not_the_run(dead_backend: RedisBackend) -> None:
    dropped: list[DroppedEvents] = []
    stream = RunStream(dead_backend, close_timeout=0.2, history=False, on_drop=dropped.append)
    with stream.run(**S) as run:
        assert run.text_delta("a") is True
        run.tool_output("c1", 1)
    stats = stream.stats
    assert stats.start_errors == 1 and stats.write_errors >= 1
    assert stats.events_lost == 4  # start, delta, tool output, finished
    assert dropped == [DroppedEvents(run.run_id, 4, "unavailable")]


def test_strict_raises_at_the_start(dead_backend: RedisBackend) -> None:
    stream = RunStream(dead_backend, strict=True)
    with pytest.raises(BackendUnavailableError), stream.run(**S):
        raise AssertionError("not reached")
    with pytest.raises(BackendUnavailableError):
        list(stream.listen("0" * 32, **S))
