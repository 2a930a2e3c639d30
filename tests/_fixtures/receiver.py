"""Pytest fixtures that start the ingest receiver on a free loopback port.

* ``receiver`` — an :class:`IngestReceiver` on a background thread (``POST /v1/batch``);
  works from sync and async tests.
* ``receiver_factory`` — ``receiver_factory(token="t", max_body_bytes=..., ...)``
  for receivers with other options (all closed at teardown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from autoplay_base.emulator.receiver import IngestReceiver

__all__ = ["ReceiverFactory", "received", "receiver", "receiver_factory", "summary"]

ReceiverFactory = Callable[..., IngestReceiver]


@pytest.fixture
def receiver_factory() -> Iterator[ReceiverFactory]:
    """Start receivers with custom options on background threads; all stop at teardown."""
    started: list[IngestReceiver] = []

    def make(**options: Any) -> IngestReceiver:
        server = IngestReceiver(**options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.release()  # hung requests end before the loop stops
        server.close()


@pytest.fixture
def receiver(receiver_factory: ReceiverFactory) -> IngestReceiver:
    """An ingest receiver on a background thread."""
    return receiver_factory()


def summary(event: dict[str, Any]) -> tuple[Any, ...]:
    """One received tracking event as a comparable tuple (a tool call's runtime checked, then
    left out), for exact assertions on what the adapters recorded."""
    data = event["data"]
    kind = event["type"]
    if kind == "usage":
        return (kind, data["model"], data["input_tokens"], data["output_tokens"])
    if kind == "tool_call":
        runtime = data["runtime_ms"]
        assert isinstance(runtime, float) and 0 <= runtime < 60_000, runtime
        return (kind, data["name"], data["args"], data.get("result"), data["error"])
    if kind == "turn":
        usage = data.get("usage")
        totals = (usage["model"], usage["input_tokens"], usage["output_tokens"]) if usage else None
        return (kind, data["user"], data["assistant"], totals)
    return (kind, data["name"], data["properties"])


def received(receiver: IngestReceiver, session_id: str | None = None) -> list[tuple[Any, ...]]:
    """What reached the receiver (once per event id), in order, optionally for one session."""
    return [
        summary(event)
        for event in receiver.unique_events()
        if session_id is None or event["session_id"] == session_id
    ]
