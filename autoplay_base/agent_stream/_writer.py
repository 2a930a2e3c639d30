"""The Redis writer: one thread per transport sends every live run's events, batched.

A run's :class:`RedisSink` is its place in the transport's :class:`RedisWriter`:
an emit marks the run dirty and wakes the writer (O(1), never waiting on the
network). Each round trip of the writer is one pipeline holding one call of the
transport's write script for every dirty run (one per slot on a Cluster): for each
run the ``XADD`` of whatever it buffered, then its cancel check (one command per
round trip, not one per run or per event); once per
``heartbeat_seconds`` every live run's cancel check (a cancel from another
process reaches a streaming run at its next write, an idle one within one
heartbeat); and once per ``renew_seconds`` (a third of the lease, at least one
heartbeat) every live run's renewal (sliding expiry, lease, live indexes). The
terminal event goes in the run's last part, before its lease is dropped.

Why the renewal is not on every heartbeat: with 20 runs streaming, renewing each
run's lease every 25 ms was three commands per run per heartbeat (2,400 a second,
more than half as many as the tokens' ``XADD``s) for a lease of 5 s; a third of
the lease still leaves two renewals of slack before it can expire.

Why one thread for all runs and not one per run: a process streaming 20 answers
at once had 20 writer threads contending for the GIL with the event loop that
produces and listens (each thread waking for its own one-event pipeline), which
put tokens hundreds of milliseconds late; one writer batches what all runs
buffered into one round trip and leaves the loop the interpreter.

A failed round trip is retried with the same parts (the write script skips an
``XADD`` answered "ID equal or smaller": an attempt whose answer was lost applied
it); one run's
failing part does not hold back the others. Meanwhile emits coalesce or drop in
each run's bounded buffer. A run being closed keeps being retried until its
deadline, then what it could not write is reported lost. The thread ends when no
run is live and starts again with the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from autoplay_base.agent_stream._events import TERMINAL
from autoplay_base.agent_stream._state import Pending
from autoplay_base.agent_stream._transport import RunRef, SinkOwner

__all__ = ["RedisSink", "RedisWriter", "Replies", "WriteCommands", "WritePart"]

CLOSE_GRACE_SECONDS = 1.0
"""How much longer than its deadline ``close`` waits for the writer to report back."""


class WritePart(NamedTuple):
    """One run's part of a round trip: its events, whether they end with the terminal
    one, and whether it renews (its sliding expiry, lease and live indexes)."""

    ref: RunRef
    user_id: str | None
    batch: Sequence[Pending]
    final: bool
    renew: bool


Replies = Callable[[list[Any]], list[list[Any]]]
"""Splits a round trip's pipeline replies into each part's (its write script's answer first)."""


class WriteCommands(Protocol):
    """What the writer needs from the Redis transport: a client and the write builders."""

    heartbeat_seconds: float
    renew_seconds: float
    errors: tuple[type[BaseException], ...]

    @property
    def client(self) -> Any: ...
    def queue_writes(self, pipe: Any, parts: Sequence[WritePart]) -> Replies: ...
    def write_result(self, results: list[Any], *, final: bool) -> bool: ...
    def write_failed(self, exc: BaseException) -> None: ...


class RedisSink:
    """One live run in its transport's writer (see the module docstring)."""

    __slots__ = ("_deadline", "_done", "_ok", "_writer", "inflight", "ref", "renewed", "run")

    def __init__(self, writer: RedisWriter, ref: RunRef, run: SinkOwner) -> None:
        self._writer = writer
        self.ref = ref
        self.run = run
        self.inflight: list[Pending] = []  # drained, not yet acknowledged by Redis
        # Its first part renews, whenever the writer's next renewal is due: the XADD
        # creates the stream, which must never be left without its expiry.
        self.renewed = False
        self._deadline: float | None = None
        self._done = threading.Event()
        self._ok = True
        writer.add(self)

    def notify(self) -> None:
        """Mark the run dirty and wake the writer (O(1); the writer batches what accumulated).

        Already dirty (each token while the writer is in a round trip): a set lookup
        here, not a call, on the per-token path (see :meth:`RedisWriter.dirty`).
        """
        writer = self._writer
        if self not in writer._dirty:
            writer.dirty(self)

    def close(self, timeout: float) -> bool:
        """Let the writer send the rest (terminal last) until ``timeout``; False if any was lost."""
        self._deadline = time.monotonic() + timeout
        self._writer.dirty(self)
        self._done.wait(timeout + self._writer.heartbeat_seconds + CLOSE_GRACE_SECONDS)
        return self._ok and self._done.is_set()

    # -- the writer's side ----------------------------------------------------------------------
    def take(self) -> tuple[list[Pending], bool]:
        """What this round trip sends for the run (a retry resends its last part) and
        whether it ends with the terminal event."""
        if not self.inflight:
            self.inflight = self.run.drain()
        return self.inflight, bool(self.inflight) and self.inflight[-1].type in TERMINAL

    def written(self, *, cancelled: bool, final: bool) -> bool:
        """Its part was applied; True when the run is done (its terminal event written)."""
        self.inflight = []
        if cancelled:
            self.run.mark_cancelled()
        if final:
            self._done.set()
        return final

    def failed(self, now: float) -> bool:
        """Its part failed; True when its close deadline passed (then the rest is lost)."""
        deadline = self._deadline
        if deadline is None or now < deadline:
            return False
        self._ok = False
        self.run.lost(len(self.inflight) + len(self.run.drain()), "unavailable")
        self._done.set()
        return True


class RedisWriter:
    """The writer thread of one Redis transport (see the module docstring)."""

    def __init__(self, commands: WriteCommands) -> None:
        self._commands = commands
        self.heartbeat_seconds = commands.heartbeat_seconds
        self.renew_seconds = commands.renew_seconds
        self._lock = threading.Lock()
        self._live: set[RedisSink] = set()
        self._dirty: set[RedisSink] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, sink: RedisSink) -> None:
        """A run went live: renew it from now on (and start the thread if it had ended)."""
        with self._lock:
            self._live.add(sink)
            self._dirty.add(sink)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="autoplay-run-writer", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def dirty(self, sink: RedisSink) -> None:
        """``sink`` buffered something: send it in the next round trip.

        Already dirty: nothing to do (a read, no lock), since the writer drains a run
        only after it took the dirty set, and this emit was buffered before this check.
        The writer clears the wake-up flag *before* it takes the dirty runs, so an
        emit that sees the flag set is in that round trip: no second ``set`` needed.
        """
        if sink in self._dirty:
            return
        with self._lock:
            self._dirty.add(sink)
        if not self._wake.is_set():
            self._wake.set()

    def _next(self, tick: bool) -> list[RedisSink] | None:
        """The runs of this round trip (all live ones on a heartbeat), None: none live."""
        with self._lock:
            if not self._live:
                self._thread = None  # ends; ``add`` starts a new one
                return None
            todo = list(self._live) if tick else [s for s in self._dirty if s in self._live]
            self._dirty.clear()
            return todo

    def _loop(self) -> None:
        commands = self._commands
        tick_at = renew_at = 0.0
        while True:
            self._wake.wait(max(0.0, tick_at - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            tick = now >= tick_at  # every live run's cancel check
            renew = tick and now >= renew_at  # and its renewal (only with a tick: all runs)
            todo = self._next(tick)
            if todo is None:
                return
            if self._round_trip(commands, todo, tick=tick, renew=renew):
                if tick:
                    tick_at = now + self.heartbeat_seconds
                if renew:
                    renew_at = now + self.renew_seconds
            else:
                # An outage answers at once: without a pause the emits' wake-ups would spin.
                time.sleep(self.heartbeat_seconds)

    def _round_trip(
        self, commands: WriteCommands, todo: list[RedisSink], *, tick: bool, renew: bool
    ) -> bool:
        """One pipeline for ``todo`` (on a ``tick`` idle runs too, for their cancel
        check; ``renew``: every run's renewal); False when it failed as a whole (retried)."""
        pipe = commands.client.pipeline(transaction=False)
        parts: list[tuple[RedisSink, WritePart]] = []
        for sink in todo:
            batch, final = sink.take()
            if not batch and not tick:
                continue
            renews = renew or not sink.renewed
            parts.append((sink, WritePart(sink.ref, sink.run.user_id, batch, final, renews)))
        if not parts:
            return True
        replies = commands.queue_writes(pipe, [part for _, part in parts])
        try:
            results = pipe.execute(raise_on_error=False)
        except commands.errors as exc:
            commands.write_failed(exc)
            self._failed([sink for sink, _ in parts])
            return False
        failed: list[RedisSink] = []
        for (sink, part), mine in zip(parts, replies(results), strict=True):
            try:
                cancelled = commands.write_result(mine, final=part.final)
            except commands.errors as exc:
                commands.write_failed(exc)
                failed.append(sink)
                continue
            sink.renewed = sink.renewed or part.renew
            if sink.written(cancelled=cancelled, final=part.final):
                self._forget(sink)
        self._failed(failed)
        return True

    def _failed(self, sinks: list[RedisSink]) -> None:
        now = time.monotonic()
        for sink in sinks:
            if sink.failed(now):
                self._forget(sink)
            else:
                with self._lock:
                    self._dirty.add(sink)  # retried in the next round trip

    def _forget(self, sink: RedisSink) -> None:
        with self._lock:
            self._live.discard(sink)
            self._dirty.discard(sink)
