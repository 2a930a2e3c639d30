"""The values the tracker hands back: flush results, delivery errors, drop notices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DeliveryError", "DropNotice", "FlushResult"]


@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Events one sink could not deliver (kept in ``get_errors()``, passed to ``on_error``).

    Attributes:
        sink: the sink's name (``stats()`` key).
        events: how many events this failure covers.
        status: the HTTP status, when there was one.
        message: what failed, without secrets (no token, no URL query, no body).
        attempts: how many times the chunk was sent.
        at: UNIX time of the failure.
    """

    sink: str
    events: int
    status: int | None
    message: str
    attempts: int
    at: float


@dataclass(frozen=True, slots=True)
class DropNotice:
    """Events one sink dropped (passed to ``on_drop``).

    ``reason`` is ``"queue_full"`` (the sink's outbox held ``max_queue`` events)
    or ``"closed"`` (still waiting when ``close`` reached its deadline).
    """

    sink: str
    events: int
    reason: str


@dataclass(frozen=True, slots=True)
class FlushResult:
    """Where every event stood when ``flush``/``close`` returned, summed over the sinks.

    Counts are per (event, sink): an event tracked with two sinks counts twice.
    They are cumulative since the tracker started (or since a fork, in the
    child), and for each sink ``enqueued == delivered + dropped + failed +
    pending``; ``by_sink`` has each sink's own counts. ``timed_out`` is true
    when some event tracked before the call was still pending at the deadline.
    """

    delivered: int
    pending: int
    dropped: int
    failed: int
    timed_out: bool
    by_sink: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def enqueued(self) -> int:
        """Every event handed to a sink: the sum of the four counts."""
        return self.delivered + self.pending + self.dropped + self.failed
