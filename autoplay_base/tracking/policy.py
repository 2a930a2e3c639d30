"""When to send a batch and what to do with its answer: the tracker's decisions, without I/O.

Everything here takes values and returns values (the clock and the randomness
are passed in), so it is tested without sockets; the lanes in
:mod:`autoplay_base.tracking._lanes` only carry the decisions out.

Batching (:class:`BatchPolicy`): a lane sends as soon as ``batch_size`` events
wait, or when the oldest waiting event is ``flush_interval`` seconds old, or at
once while a flush or a close is asking for it. It then takes everything that
waits, up to ``max_batch_events`` (1,000 by default; an explicit ``batch_size``
alone keeps every batch at exactly that size): a lane has one request in flight, so when
its queue backs up (a slow receiver, a burst, the end of an outage) the batches
grow instead of the backlog, and throughput follows the receiver's latency
(100 events per 100 ms round trip is 1,000 events/s at best; 1,000 per round
trip is ten times that) while order and the accounting stay those of one
sequence of requests. A batch is then cut into chunks of at most
``max_batch_bytes`` of encoded events (:func:`chunk_by_bytes`; an event larger
than that travels alone), sent one after the other.

Delivery (:func:`delivery_flow`, driven by one sync and one async runner): a
generator that yields :class:`Send` and :class:`Wait` commands and receives
each send's :class:`Outcome`; it yields :class:`Settled` for every chunk that is
finished, delivered or failed, in order. The rules (:meth:`RetryPolicy.decide`):

* success → delivered;
* 413 (too large) → the chunk is split in halves, each sent in turn; a single
  event answered 413 fails;
* a network error, 408, 425, 429 or 5xx → retried, waiting ``Backoff.delay(n)``
  (capped, jittered: :class:`autoplay_base._reconnect.Backoff`) and never less
  than the answer's ``Retry-After`` (itself capped at ``Backoff.maximum``, so a
  server cannot park a lane). By default without a count limit: an outage must
  not turn events into ``failed`` while the outbox still has room, so the
  lane keeps its batch and retries until the receiver is back, the outbox
  bound drops (and counts) what does not fit meanwhile, and ``flush``/``close``
  still return by their deadlines. ``max_retries=N`` opts into giving up
  after ``N`` retries (the chunk fails, counted, ``on_error``);
* any other status (400, 401, 403, 404, 422, ...) or a local error fails the
  chunk at once (counted, ``on_error``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from autoplay_base._reconnect import Backoff
from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_EVENTS",
    "DEFAULT_MAX_RETRIES",
    "RETRYABLE_STATUSES",
    "Action",
    "BatchPolicy",
    "Decision",
    "DeliveryFlow",
    "Outcome",
    "RetryPolicy",
    "Send",
    "Settled",
    "Wait",
    "chunk_by_bytes",
    "delivery_flow",
    "idempotency_key",
]

DEFAULT_BATCH_SIZE = 100
"""Events per batch (``batch_size``)."""
DEFAULT_MAX_BATCH_BYTES = 512 * 1024
"""Encoded bytes per request (``max_batch_bytes``)."""
DEFAULT_MAX_BATCH_EVENTS = 1000
"""Events one batch may carry when more than ``batch_size`` wait, with the default
``batch_size`` (``max_batch_events``). A tracked turn is a few hundred bytes, so
1,000 of them still fit in one ``max_batch_bytes`` request."""
DEFAULT_FLUSH_INTERVAL = 1.0
"""Seconds the oldest waiting event may wait for its batch to fill (``flush_interval``)."""
DEFAULT_MAX_RETRIES: int | None = None
"""Retries of one chunk after the first attempt (``max_retries``): ``None``, no
count limit for retryable failures (see the module docstring)."""
DEFAULT_INITIAL_BACKOFF = 0.5
"""Seconds before the first retry."""
DEFAULT_MAX_BACKOFF = 30.0
"""Cap on any wait between retries, ``Retry-After`` included."""
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth another attempt (with any other 5xx)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt at sending a chunk gave.

    Attributes:
        status: the HTTP status (``None`` when there was no answer or no HTTP).
        network_error: the transport failed (connect, read, timeout, reset): retried.
        retry_after: the answer's ``Retry-After``, seconds, already parsed.
        error: a short description for logs and ``on_error`` (never a secret).
    """

    status: int | None = None
    network_error: bool = False
    retry_after: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The chunk was accepted."""
        return (
            self.error is None
            and not self.network_error
            and (self.status is None or 200 <= self.status < 300)
        )


OK = Outcome()
"""A successful attempt without an HTTP status (Redis, OTel, the context store)."""


class Action(Enum):
    """What to do after an attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    SPLIT = "split"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    """An :class:`Action` and, for a retry, the seconds to wait first."""

    action: Action
    delay: float = 0.0


class RetryPolicy:
    """The retry rules of the module docstring.

    Args:
        max_retries: retries after the first attempt (>= 0), or ``None`` (the
            default) for no count limit on retryable failures.
        backoff: delays between retries; its ``maximum`` caps ``Retry-After`` too.
    """

    __slots__ = ("backoff", "max_retries")

    def __init__(
        self, max_retries: int | None = DEFAULT_MAX_RETRIES, backoff: Backoff | None = None
    ) -> None:
        if max_retries is not None and not max_retries >= 0:
            raise ConfigError(f"max_retries must be >= 0 or None, got {max_retries!r}")
        self.max_retries = max_retries
        self.backoff = (
            backoff
            if backoff is not None
            else Backoff(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF)
        )

    @staticmethod
    def retryable(outcome: Outcome) -> bool:
        """A network error, 408, 425, 429 or any 5xx."""
        status = outcome.status
        if outcome.network_error:
            return True
        return status is not None and (status in RETRYABLE_STATUSES or 500 <= status <= 599)

    def decide(self, outcome: Outcome, failures: int, size: int) -> Decision:
        """The next step for a chunk of ``size`` events after an attempt gave ``outcome``.

        ``failures`` counts this attempt if it failed (1 after the first failure).
        """
        if outcome.ok:
            return Decision(Action.DELIVERED)
        if outcome.status == 413:
            return Decision(Action.SPLIT if size > 1 else Action.FAIL)
        if not self.retryable(outcome):
            return Decision(Action.FAIL)
        if self.max_retries is not None and failures > self.max_retries:
            return Decision(Action.FAIL)
        maximum = self.backoff.maximum
        delay = self.backoff.delay(failures)
        hint = outcome.retry_after
        if hint is not None and hint >= 0:  # (False for NaN)
            delay = max(delay, min(hint, maximum))
        return Decision(Action.RETRY, min(max(delay, 0.0), maximum))


class BatchPolicy:
    """When a lane sends, and how much (see the module docstring).

    Args:
        batch_size: events waiting that make a batch worth sending now (>= 1);
            ``None`` (the default) is :data:`DEFAULT_BATCH_SIZE`.
        max_batch_bytes: encoded bytes per chunk (>= 1).
        flush_interval: seconds the oldest event waits for a full batch (> 0).
        max_batch_events: the most events one batch takes when more wait (a
            backed-up queue; >= ``batch_size``). ``None`` (the default) is
            :data:`DEFAULT_MAX_BATCH_EVENTS` when ``batch_size`` is the default,
            and ``batch_size`` itself when one is given: an explicit
            ``batch_size`` keeps meaning "batches of exactly this many"
            (a receiver that wants one event per request says ``batch_size=1``).
    """

    __slots__ = ("batch_size", "flush_interval", "max_batch_bytes", "max_batch_events")

    def __init__(
        self,
        batch_size: int | None = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_batch_events: int | None = None,
    ) -> None:
        if max_batch_events is None:
            max_batch_events = DEFAULT_MAX_BATCH_EVENTS if batch_size is None else batch_size
        if batch_size is None:
            batch_size = min(DEFAULT_BATCH_SIZE, max_batch_events)
        if not batch_size >= 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        if not max_batch_bytes >= 1:
            raise ConfigError(f"max_batch_bytes must be >= 1, got {max_batch_bytes!r}")
        if not 0 < flush_interval < 86_400:
            raise ConfigError(f"flush_interval must be within (0, 86400), got {flush_interval!r}")
        if not max_batch_events >= batch_size:
            raise ConfigError(
                f"max_batch_events must be >= batch_size ({batch_size}), got {max_batch_events!r}"
            )
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.max_batch_events = max_batch_events

    def wait_time(self, waiting: int, oldest_at: float, now: float, urgent: bool) -> float | None:
        """Seconds to wait before sending (``0.0``: send now; ``None``: nothing waits).

        ``waiting`` events wait, the oldest since ``oldest_at``; ``urgent`` is a
        flush or a close asking for everything at once.
        """
        if waiting <= 0:
            return None
        if urgent or waiting >= self.batch_size:
            return 0.0
        # Capped: a wall clock set back must not park a batch for longer than the interval.
        return min(self.flush_interval, max(0.0, oldest_at + self.flush_interval - now))

    def take_size(self, waiting: int) -> int:
        """How many of ``waiting`` events the batch sent now takes (all, up to the cap)."""
        return min(waiting, self.max_batch_events)


def chunk_by_bytes(sizes: Sequence[int], max_bytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of ``sizes`` whose sums stay within ``max_bytes``.

    Order is kept; an item larger than ``max_bytes`` gets a range of its own.
    """
    ranges: list[tuple[int, int]] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and total + size > max_bytes:
            ranges.append((start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


def idempotency_key(event_ids: Sequence[str]) -> str:
    """A key naming exactly these events: the same on every retry, another for each half."""
    digest = hashlib.sha256("\n".join(event_ids).encode("ascii", "replace"))
    return digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Send:
    """Command: send events ``start:stop`` of the batch; reply with an :class:`Outcome`."""

    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Command: wait ``seconds`` before the next attempt (the runner may give up instead).

    ``failures`` and ``outcome`` say why: the failed attempts of events
    ``start:stop`` so far and the last one's outcome (for counters and logs).
    """

    seconds: float
    # Not part of the command's identity (a Wait is equal to another of the same length).
    failures: int = field(default=0, compare=False)
    outcome: Outcome | None = field(default=None, compare=False)
    start: int = field(default=0, compare=False)
    stop: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Settled:
    """Events ``start:stop`` are finished: ``delivered``, or failed with ``outcome``."""

    start: int
    stop: int
    delivered: bool
    outcome: Outcome
    attempts: int


Command = Send | Wait | Settled
DeliveryFlow = Generator[Command, Outcome | None, None]
"""What :func:`delivery_flow` returns: reply an ``Outcome`` to a :class:`Send`, else ``None``."""


def delivery_flow(ranges: Sequence[tuple[int, int]], policy: RetryPolicy) -> DeliveryFlow:
    """Deliver each range in order by the rules of :class:`RetryPolicy`.

    Yields :class:`Send` (reply with its :class:`Outcome`), :class:`Wait` and
    :class:`Settled` (reply ``None``). A range answered 413 is split in halves
    that are settled separately, in order.
    """
    todo = deque(ranges)
    while todo:
        start, stop = todo.popleft()
        failures = 0
        while True:
            outcome = yield Send(start, stop)
            assert outcome is not None, "reply to Send with an Outcome"
            if not outcome.ok:
                failures += 1
            decision = policy.decide(outcome, failures, stop - start)
            if decision.action is Action.RETRY:
                yield Wait(decision.delay, failures, outcome, start, stop)
                continue
            if decision.action is Action.SPLIT:
                middle = start + (stop - start) // 2
                todo.extendleft([(middle, stop), (start, middle)])
                break
            delivered = decision.action is Action.DELIVERED
            yield Settled(start, stop, delivered, outcome, failures + (1 if delivered else 0))
            break
