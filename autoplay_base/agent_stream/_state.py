"""Run state (pure): the bounded emit buffer of one run, and a listener's cursor policy.

:class:`RunBuffer` is what a producer's emit helpers append to and what the
background writer drains; it takes values and returns values (the caller passes
``ts``), with a lock because the agent's thread appends while the writer's
thread drains. :class:`ListenState` decides, from what a transport read, which
events a listener yields next and when it stops. Both are tested without I/O.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autoplay_base.agent_stream._events import (
    DELTA_TYPES,
    ERROR,
    FINISHED,
    GAP,
    NEVER_DROPPED,
    PRODUCER_LOST,
    TERMINAL,
    TEXT_DELTA,
    UNKNOWN_RUN,
    RunEvent,
    bound_data,
    dumps,
    fits,
    format_cursor,
)

__all__ = [
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
    "SAFE_ERROR_MESSAGE",
    "SUCCESS",
    "BufferCounters",
    "ListenState",
    "Outcome",
    "Pending",
    "RunBuffer",
    "outcome",
]


@dataclass(slots=True)
class Pending:
    """One event waiting for the writer.

    Nothing is encoded when it is emitted: :meth:`RunBuffer.drain` bounds its data
    (encoding only what :func:`~._events.fits` cannot vouch for) and :attr:`json`
    is built once, on the writer's side, when a transport asks for it (the Redis
    writer thread; the in-process transport never does).
    """

    type: str
    ts: float
    data: dict[str, Any]
    seq: int = 0  # assigned when drained, so coalescing never leaves a hole
    encoded: str | None = None  # the JSON of ``data``, once built

    @property
    def json(self) -> str:
        """The compact JSON of :attr:`data` (built on first use, then kept)."""
        if self.encoded is None:
            self.encoded = dumps(self.data)
        return self.encoded

    def event(self, run_id: str) -> RunEvent:
        """The event as listeners see it (after :meth:`RunBuffer.drain` set ``seq``)."""
        return RunEvent(
            format_cursor(run_id, self.seq), self.seq, self.type, self.ts, self.data, run_id
        )


@dataclass
class BufferCounters:
    """What one run's buffer had to do to stay bounded."""

    coalesced: int = 0
    dropped: int = 0
    truncated: int = 0


@dataclass
class RunBuffer:
    """The bounded, thread-safe emit buffer of one run.

    ``push`` is O(1), encodes nothing and never blocks on I/O; ``drain`` bounds
    each event to ``max_event_bytes`` (see :class:`Pending`). When ``max_buffered`` events wait
    (the writer is behind or Redis is down), a text or reasoning delta is merged
    into the previous buffered delta of the same type when that one is the last
    (coalescing keeps every character), otherwise dropped and counted; tool,
    start and terminal events are always accepted. Events pushed after the
    terminal one are refused. The assistant's text
    is kept (up to ``max_text_chars``) for the chat history.
    """

    max_buffered: int
    max_event_bytes: int
    max_text_chars: int
    counters: BufferCounters = field(default_factory=BufferCounters)
    _queue: deque[Pending] = field(default_factory=deque)
    _next_seq: int = 1
    _ended: bool = False
    _text: list[str] = field(default_factory=list)
    _text_len: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, type_: str, ts: float, data: dict[str, Any]) -> bool:
        """Buffer one event; False when it was dropped (counted)."""
        with self._lock:
            if self._ended:  # the run counts it (a late emit comes after its counters are summed)
                return False
            # The history's text, kept here (not in a helper): this is the per-token path.
            room = self.max_text_chars - self._text_len
            if type_ == TEXT_DELTA and room > 0:
                text = str(data.get("text", ""))[:room]
                self._text.append(text)
                self._text_len += len(text)
            if type_ in TERMINAL:
                self._ended = True
            queue = self._queue
            if len(queue) >= self.max_buffered and type_ not in NEVER_DROPPED:
                return self._squeeze(type_, data)
            queue.append(Pending(type_, ts, data))
            return True

    def _squeeze(self, type_: str, data: dict[str, Any]) -> bool:
        last = self._queue[-1] if self._queue else None
        if type_ in DELTA_TYPES and last is not None and last.type == type_:
            text = str(last.data.get("text", "")) + str(data.get("text", ""))
            merged = {**last.data, "text": text}
            # Merged only while it fits whole: coalescing keeps every character.
            if fits(merged, self.max_event_bytes) or not self._cut(merged):
                last.data, last.encoded = merged, None
                self.counters.coalesced += 1
                return True
        self.counters.dropped += 1
        return False

    def _cut(self, data: dict[str, Any]) -> bool:
        return bound_data(data, self.max_event_bytes)[2]

    def drain(self) -> list[Pending]:
        """Everything buffered, oldest first, numbered ``seq`` from where the last drain ended,
        each cut to ``max_event_bytes`` (counted in ``counters.truncated``)."""
        # Only the hand-over holds the lock the agent's emit takes: cutting an oversized
        # event (JSON-encoding a large tool output) runs after it, so an emit never
        # waits for the writer to encode one.
        with self._lock:
            queue = self._queue
            if not queue:
                return []
            batch = list(queue)
            queue.clear()  # not a new deque: one allocation less per drain (per token in-process)
            seq = self._next_seq
            self._next_seq = seq + len(batch)
        limit = self.max_event_bytes
        truncated = 0
        for pending in batch:
            pending.seq = seq
            seq += 1
            if not fits(pending.data, limit):
                pending.data, pending.encoded, cut = bound_data(pending.data, limit)
                truncated += cut
        if truncated:
            with self._lock:
                self.counters.truncated += truncated
        return batch

    @property
    def ended(self) -> bool:
        """Whether the terminal event was pushed."""
        return self._ended

    @property
    def text(self) -> str:
        """The assistant's text so far (the ``text_delta`` events joined, bounded)."""
        with self._lock:
            return "".join(self._text)

    def __len__(self) -> int:
        return len(self._queue)


class ListenState:
    """A listener's cursor over one run: which events to yield, when to stop.

    Feed it each read (the events after :attr:`next_seq` - 1, whether the run's
    lease was alive *before* the events were read, and whether the run exists at
    all). It yields what was read; a hole before the first event (trimmed by
    ``MAXLEN`` or retention) first yields a ``gap`` event; it stops after the
    terminal event, or with ``producer_lost`` (no lease, nothing new, no terminal:
    the producer died) or ``unknown_run`` (no such run in this scope, or expired). A
    listener whose cursor is the terminal event itself (a reconnect after the end)
    gets nothing: the read says the run ``ended``.
    Reading the lease before the events is what makes ``producer_lost`` exact: a
    producer writes its terminal event before it drops its lease.
    """

    __slots__ = ("done", "next_seq", "run_id", "seen")

    def __init__(self, run_id: str, after_seq: int = 0) -> None:
        self.run_id = run_id
        self.next_seq = after_seq + 1
        self.done = False
        self.seen = after_seq > 0

    def _synthesized(self, type_: str, ts: float, **data: Any) -> RunEvent:
        return RunEvent(None, 0, type_, ts, data, self.run_id)

    def feed(
        self,
        events: list[RunEvent],
        *,
        live: bool,
        exists: bool,
        now: float,
        ended: bool = False,
    ) -> list[RunEvent]:
        """The events to yield for one read (empty: wait and read again, unless ``done``)."""
        out: list[RunEvent] = []
        if self.done:
            return out
        for event in events:
            if event.seq < self.next_seq:
                continue  # a duplicate read: already yielded
            if event.seq > self.next_seq:
                out.append(
                    self._synthesized(
                        GAP, now, after=self.next_seq - 1, missing=event.seq - self.next_seq
                    )
                )
            out.append(event)
            self.seen = True
            self.next_seq = event.seq + 1
            if event.type in TERMINAL:
                self.done = True
                return out
        if out or live:
            return out
        self.done = True
        if exists and ended:
            # The cursor is the terminal event (a client reconnecting after the end, as a
            # browser's EventSource does): nothing follows it, and the producer did not die.
            return out
        if exists:
            return [self._synthesized(PRODUCER_LOST, now, after=self.next_seq - 1)]
        return [self._synthesized(UNKNOWN_RUN, now)]


# -- how a run ended -------------------------------------------------------------------------
SUCCESS = "success"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"
FAILED = "error"

SAFE_ERROR_MESSAGE = "The assistant could not finish this answer."
"""The message an ``error`` event carries unless the stream was built with ``expose_errors``."""


class Outcome(NamedTuple):
    """The terminal event of a run, its status, and whether the block's exception is swallowed."""

    type: str
    data: dict[str, Any]
    status: str
    swallow: bool


def outcome(
    exc: BaseException | None,
    *,
    cancelled: bool,
    interrupted: bool,
    cancel_error: type[BaseException],
    expose_errors: bool,
) -> Outcome:
    """Map how the ``with`` block was left to exactly one terminal event.

    A normal exit is ``finished`` with ``success``, ``interrupted`` (``run.interrupt()``)
    or ``cancelled`` (a cancel request was seen). ``cancel_error`` (what
    ``run.raise_if_cancelled()`` raises) is ``cancelled`` and swallowed; an
    ``asyncio.CancelledError`` is ``cancelled`` too but propagates (never a normal
    end, the seed's failure); ``KeyboardInterrupt``/``SystemExit``/``GeneratorExit``
    are ``interrupted`` and propagate. Any other exception is an ``error`` event with
    code ``run_failed`` and :data:`SAFE_ERROR_MESSAGE`: the exception's text reaches
    listeners only with ``expose_errors=True``.
    """
    if exc is None:
        status = CANCELLED if cancelled else INTERRUPTED if interrupted else SUCCESS
        return Outcome(FINISHED, {"status": status}, status, False)
    if isinstance(exc, cancel_error):
        return Outcome(FINISHED, {"status": CANCELLED}, CANCELLED, True)
    if isinstance(exc, asyncio.CancelledError):
        return Outcome(FINISHED, {"status": CANCELLED}, CANCELLED, False)
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return Outcome(FINISHED, {"status": INTERRUPTED}, INTERRUPTED, False)
    code = "timeout" if isinstance(exc, TimeoutError) else "run_failed"
    message = f"{type(exc).__name__}: {exc}" if expose_errors else SAFE_ERROR_MESSAGE
    return Outcome(ERROR, {"code": code, "message": message}, FAILED, False)
