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

__all__ = ["ReceiverFactory", "receiver", "receiver_factory"]

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
