"""Fixtures for the LangChain adapter tests (helpers are in ``_support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autoplay_base.context_store import AsyncContextStore, ContextStore
from tests.langchain_autoplay._support import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> Iterator[ContextStore]:
    with ContextStore(clock=clock) as s:
        yield s


@pytest.fixture
def astore(clock: ManualClock) -> AsyncContextStore:
    return AsyncContextStore(clock=clock)


@pytest.fixture(params=["sync_store", "async_store"])
def any_store(
    request: pytest.FixtureRequest, clock: ManualClock
) -> ContextStore | AsyncContextStore:
    """Either store flavour, filled through its own write path by the tests' helpers."""
    if request.param == "sync_store":
        return ContextStore(clock=clock)
    return AsyncContextStore(clock=clock)
