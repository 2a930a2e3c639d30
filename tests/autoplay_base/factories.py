"""Small builders for payloads used across the base tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from autoplay_base import ActionsPayload, SlimAction, SummaryPayload


class Twin:
    """Calls ``name`` (sync mode) or ``aname`` (async mode) of a backend with the same arguments."""

    def __init__(self, backend: Any, mode: str) -> None:
        self.backend = backend
        self.mode = mode

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.mode == "async":
                return await getattr(self.backend, f"a{name}")(*args, **kwargs)
            return getattr(self.backend, name)(*args, **kwargs)

        return call


class FakeClock:
    """A settable clock: tests move time explicitly instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def action(description: str, url: str = "/page", title: str = "") -> SlimAction:
    return SlimAction(title=title or description, description=description, canonical_url=url)


def actions(
    session_id: str | None,
    *descriptions: str,
    product_id: str = "p1",
    user_id: str | None = None,
    email: str | None = None,
    url: str = "/page",
    event_id: str | None = None,
) -> ActionsPayload:
    return ActionsPayload(
        product_id=product_id,
        session_id=session_id,
        user_id=user_id,
        email=email,
        actions=tuple(action(d, url) for d in descriptions),
        forwarded_at=1.0,
        event_id=event_id,
    )


def summary(
    session_id: str,
    text: str,
    replaces: int = 0,
    product_id: str = "p1",
    event_id: str | None = None,
) -> SummaryPayload:
    return SummaryPayload(
        product_id=product_id,
        session_id=session_id,
        summary=text,
        replaces=replaces,
        forwarded_at=2.0,
        event_id=event_id,
    )
