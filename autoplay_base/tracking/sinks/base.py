"""What a sink is: one destination of tracking events, driven by its own lane.

A sink only turns a chunk of encoded events into one attempt at delivering
them and says how it went (an :class:`~autoplay_base.tracking.policy.Outcome`);
batching, retries, ordering, accounting and callbacks belong to its lane
(:mod:`autoplay_base.tracking._lanes`), so every sink gets them the same way.
A sink translates its library's errors at this boundary: a transport failure
is ``Outcome(network_error=True)``, a refusal ``Outcome(status=...)``; an
exception that escapes is a local failure (the chunk fails, not retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autoplay_base.errors import ConfigError
from autoplay_base.tracking.events import TrackingEvent
from autoplay_base.tracking.policy import BatchPolicy, Outcome, RetryPolicy

__all__ = ["Encoded", "Sink"]

Encoded = tuple[TrackingEvent, bytes]
"""An event and its JSON (:meth:`TrackingEvent.to_json`), built once for every sink."""


class Sink:
    """Base class of the sinks. Subclasses implement :meth:`send` and/or :meth:`asend`.

    ``name`` is the sink's key in ``stats()`` (made unique by the tracker).
    ``sync_capable``/``async_capable`` say which tracker can drive it; the
    default :meth:`asend` runs :meth:`send` in a thread, so it never blocks the loop.
    ``batching`` and ``retry`` are the policies its lane follows (each sink
    class sets its own from its constructor's options).
    """

    name: str = "sink"
    sync_capable: bool = True
    async_capable: bool = True
    batching: BatchPolicy = BatchPolicy()
    retry: RetryPolicy = RetryPolicy()

    def send(self, events: Sequence[Encoded]) -> Outcome:
        """Deliver ``events`` once (called from the sink's worker thread)."""
        raise NotImplementedError

    async def asend(self, events: Sequence[Encoded]) -> Outcome:
        """Deliver ``events`` once (called from the sink's task)."""
        return await asyncio.to_thread(self.send, events)

    def close(self) -> None:
        """Release what the sink opened (not what it was given)."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def after_fork(self) -> None:
        """In a forked child: forget connections inherited from the parent (never close them)."""

    def check_driver(self, *, asynchronous: bool) -> None:
        """Raise :class:`ConfigError` when this tracker kind cannot drive the sink."""
        if asynchronous and not self.async_capable:
            raise ConfigError(f"{type(self).__name__} cannot be used with AsyncTracker")
        if not asynchronous and not self.sync_capable:
            raise ConfigError(
                f"{type(self).__name__} holds an asyncio client: use it with AsyncTracker"
            )
