"""What ``RunStream`` and ``AsyncRunStream`` share: options and defaults, counters, the
registry of this process's runs, and the pure steps of a run's lifecycle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from autoplay_base.agent_stream import _events as ev
from autoplay_base.agent_stream._errors import RunCancelledError, RunLiveError
from autoplay_base.agent_stream._events import format_cursor, parse_cursor
from autoplay_base.agent_stream._history import ai_entry
from autoplay_base.agent_stream._memory import MemoryTransport
from autoplay_base.agent_stream._run import Run
from autoplay_base.agent_stream._state import SUCCESS, ListenState, Outcome, RunBuffer, outcome
from autoplay_base.agent_stream._transport import RunRef, Started, Transport
from autoplay_base.backends.base import Backend
from autoplay_base.errors import BackendUnavailableError, ConfigError

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT_SECONDS",
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_BLOCKING_LISTENERS",
    "DEFAULT_MAX_BUFFERED_EVENTS",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_MAX_TEXT_CHARS",
    "DEFAULT_POLL_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "READ_COUNT",
    "DroppedEvents",
    "IfLive",
    "RunArgs",
    "RunStreamStats",
    "Streams",
    "next_run",
]

logger = logging.getLogger("autoplay_base.agent_stream")

DEFAULT_MAX_EVENTS = 10_000
"""Events kept per run (in-process: exactly; Redis: ``XADD MAXLEN ~``, approximately)."""
DEFAULT_RETENTION_SECONDS = 600.0
"""How long a run stays readable after its last write (sliding while live, then after the end)."""
DEFAULT_LEASE_SECONDS = 5.0
"""The producer's lease (Redis): a run whose process died is ``producer_lost`` this long after."""
DEFAULT_HEARTBEAT_SECONDS = 0.025
"""The Redis writer's idle round trip: every live run's cancel check (an idle run's cancel
latency); the lease is renewed every third of ``lease_seconds`` (at least every heartbeat)."""
DEFAULT_POLL_SECONDS = 0.05
"""The longest one listener wait lasts before the lease is checked again (Redis: ``XREAD
BLOCK``, also capped at half the client's ``socket_timeout``); how often ``follow`` looks
for the session's next run. A written event ends the wait at once: not a latency."""
DEFAULT_MAX_BLOCKING_LISTENERS = 64
"""Redis: listeners of one stream waiting at once (sync or on a Cluster each holds a pooled
connection in its ``XREAD``; async on a standalone server they share one reader's ``XREAD``,
whose size this bounds); one more sleeps ``poll_seconds`` and reads again instead."""
DEFAULT_MAX_BUFFERED_EVENTS = 1_000
"""Events one run buffers for its writer; past it deltas coalesce or drop (tool/terminal never)."""
DEFAULT_MAX_EVENT_BYTES = 64 * 1024
"""One event's JSON; larger values are cut and the event marked ``truncated``."""
DEFAULT_MAX_RUNS = 1_000
"""In-process: runs kept in all (the oldest ended first). Redis: runs indexed per session."""
DEFAULT_MAX_TEXT_CHARS = 200_000
"""The assistant text kept per run for the chat history."""
DEFAULT_CLOSE_TIMEOUT_SECONDS = 2.0
"""How long leaving a run's block waits for its writer to send the rest (Redis down: then lost)."""
READ_COUNT = 500
"""Events one listener read asks for."""

IfLive = Literal["reject", "cancel_previous"]
"""What ``run()`` does when a run of the session is live: raise ``RunLiveError``, or cancel it."""


class DroppedEvents(NamedTuple):
    """What ``on_drop`` receives: ``dropped`` events of ``run_id`` lost for ``reason``
    (``"buffer_full"``: deltas the full buffer could not coalesce; ``"unavailable"``:
    Redis did not answer before the close deadline)."""

    run_id: str
    dropped: int
    reason: str


@dataclass
class RunStreamStats:
    """Counters of one stream (``stream.stats``); every bound that drops something counts it."""

    runs_started: int = 0
    runs_rejected: int = 0
    runs_evicted: int = 0
    events_coalesced: int = 0
    events_dropped: int = 0
    events_truncated: int = 0
    events_after_end: int = 0
    events_lost: int = 0
    write_errors: int = 0
    start_errors: int = 0
    invalid_cursors: int = 0
    undecodable_events: int = 0
    cancel_requests: int = 0
    listen_wait_errors: int = 0
    listener_slots_full: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class RunArgs:
    session_id: str
    product_id: str
    user_id: str | None
    if_live: IfLive
    user_message: str | None


class Streams:
    """What the twins share: options, transport, registry of this process's runs, counters."""

    def __init__(
        self,
        backend: Any = None,
        *,
        history: Backend | Literal[False] | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_buffered_events: int = DEFAULT_MAX_BUFFERED_EVENTS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_runs: int = DEFAULT_MAX_RUNS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        max_blocking_listeners: int = DEFAULT_MAX_BLOCKING_LISTENERS,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_SECONDS,
        expose_errors: bool = False,
        strict: bool = False,
        on_drop: Callable[[DroppedEvents], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("max_events", max_events),
            ("max_buffered_events", max_buffered_events),
            ("max_event_bytes", max_event_bytes),
            ("max_runs", max_runs),
            ("max_text_chars", max_text_chars),
            ("max_blocking_listeners", max_blocking_listeners),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        for name, seconds in (
            ("retention_seconds", retention_seconds),
            ("lease_seconds", lease_seconds),
            ("heartbeat_seconds", heartbeat_seconds),
            ("poll_seconds", poll_seconds),
            ("close_timeout", close_timeout),
        ):
            if not seconds > 0:
                raise ConfigError(f"{name} must be > 0, got {seconds!r}")
        if heartbeat_seconds >= lease_seconds:
            raise ConfigError("heartbeat_seconds must be shorter than lease_seconds")
        self.stats = RunStreamStats()
        self._stats_lock = threading.Lock()
        self.max_buffered_events = max_buffered_events
        self.max_event_bytes = max_event_bytes
        self.max_text_chars = max_text_chars
        self.poll_seconds = poll_seconds
        self.close_timeout = close_timeout
        self.expose_errors = expose_errors
        self.strict = strict
        self.on_drop = on_drop
        self._clock = clock
        self._local: dict[RunRef, Run] = {}
        self._local_lock = threading.Lock()
        self.transport: Transport
        if backend is None:
            self.transport = MemoryTransport(
                max_runs=max_runs,
                max_events=max_events,
                retention_seconds=retention_seconds,
                clock=clock,
                on_evict=lambda: self._count("runs_evicted"),
            )
            self._errors: tuple[type[BaseException], ...] = ()
        else:
            from autoplay_base.agent_stream._redis import RedisTransport  # noqa: PLC0415

            redis_transport = RedisTransport(
                backend,
                max_events=max_events,
                max_runs=max_runs,
                retention_seconds=retention_seconds,
                lease_seconds=lease_seconds,
                heartbeat_seconds=heartbeat_seconds,
                poll_seconds=poll_seconds,
                max_blocking_listeners=max_blocking_listeners,
                read_count=READ_COUNT,
                clock=clock,
                on_write_error=self._write_failed,
                on_undecodable=lambda: self._count("undecodable_events"),
                on_wait_error=self._wait_failed,
                on_slots_full=lambda: self._count("listener_slots_full"),
            )
            self._errors = redis_transport.errors
            self.transport = redis_transport
            if history is None:
                history = backend
        self.history: Backend | None = None if history is False else history
        """Where the user's message and the answer are appended (``append_messages``), or None:
        ``history=`` a backend (e.g. a ``ContextStore``'s), by default the Redis backend
        itself (in-process: none), ``False`` for none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={type(self.transport).__name__})"

    # -- counters -----------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _write_failed(self, exc: BaseException) -> None:
        self._count("write_errors")
        logger.warning("run stream: a write to Redis failed (%s); retrying", type(exc).__name__)

    def _wait_failed(self, exc: BaseException) -> None:
        self._count("listen_wait_errors")
        logger.warning(
            "run stream: a listener's blocking read failed (%s); reading again",
            type(exc).__name__,
        )

    def _lost(self, run_id: str, count: int, reason: str) -> None:
        if count <= 0:
            return
        if reason != "buffer_full":  # buffer drops are counted in events_dropped already
            self._count("events_lost", count)
        logger.warning("run stream: run %s lost %d event(s) (%s)", run_id, count, reason)
        if self.on_drop is not None:
            self.on_drop(DroppedEvents(run_id, count, reason))

    # -- pure steps of the run lifecycle ------------------------------------------------------
    def _ref(self, args: RunArgs) -> RunRef:
        if not args.session_id or not args.product_id:
            raise ConfigError("session_id and product_id must be non-empty strings")
        if args.if_live not in ("reject", "cancel_previous"):
            raise ConfigError(
                f"if_live must be 'reject' or 'cancel_previous', got {args.if_live!r}"
            )
        return RunRef(args.product_id, args.session_id, ev.new_run_id())

    def _start_failed(self, exc: BaseException) -> Started:
        self._count("start_errors")
        if self.strict:
            raise BackendUnavailableError("run stream: Redis unavailable at run start") from exc
        logger.warning(
            "run stream: starting a run in Redis failed (%s); streaming anyway", type(exc).__name__
        )
        return Started(True, [])

    def _started(self, ref: RunRef, started: Started, args: RunArgs) -> list[str]:
        """Raise when refused; the live runs to cancel first (``cancel_previous``)."""
        if not started.started:
            self._count("runs_rejected")
            raise RunLiveError(started.live)
        self._count("runs_started")
        if args.if_live != "cancel_previous":
            return []
        return [r for r in started.live if r != ref.run_id]

    def _begin(self, ref: RunRef, args: RunArgs) -> Run:
        buffer = RunBuffer(self.max_buffered_events, self.max_event_bytes, self.max_text_chars)
        run = Run(ref, args.user_id, buffer, self._clock)
        run._on_lost = lambda count, reason: self._lost(ref.run_id, count, reason)
        run._on_late = lambda: self._count("events_after_end")
        with self._local_lock:
            self._local[ref] = run
        run._sink = self.transport.sink(ref, run)
        run._emit(ev.START, {})
        return run

    def _finish(self, run: Run, exc: BaseException | None) -> Outcome:
        result = outcome(
            exc,
            cancelled=run.cancelled,
            interrupted=run._interrupted,
            cancel_error=RunCancelledError,
            expose_errors=self.expose_errors,
        )
        if not isinstance(exc, RunCancelledError) or exc.run_id == run.run_id:
            run._emit(result.type, result.data)
        else:  # another run's cancellation passing through: this run failed because of it
            run._emit(ev.ERROR, {"code": "run_failed", "message": "cancelled by another run"})
            result = result._replace(swallow=False)
        return result

    def _closed(self, run: Run, written: bool) -> None:
        with self._local_lock:
            self._local.pop(run.ref, None)
        counters = run._buffer.counters
        self._count("events_coalesced", counters.coalesced)
        self._count("events_truncated", counters.truncated)
        self._count("events_dropped", counters.dropped)
        if counters.dropped:
            self._lost(run.run_id, counters.dropped, "buffer_full")
        if not written and self.strict:
            raise BackendUnavailableError(
                "run stream: Redis unavailable, the run's end was not written"
            )

    def _answer(self, run: Run, result: Outcome) -> list[str]:
        text = run.text
        if self.history is None or (not text and result.status == SUCCESS):
            return []
        return [ai_entry(text, at=self._clock(), run_id=run.run_id, status=result.status)]

    # -- listening (pure parts) ---------------------------------------------------------------
    def _listen_state(self, run_id: str, after: str | None) -> ListenState:
        after_seq = 0
        if after is not None:
            parsed = parse_cursor(after)
            if parsed is None or parsed[0] != run_id:
                self._count("invalid_cursors")
                logger.warning(
                    "run stream: ignored a cursor that is not one of run %s", run_id[:64]
                )
            else:
                after_seq = parsed[1]
        return ListenState(run_id, after_seq)

    def cursor_seq(self, run_id: str, after: str | None) -> int:
        """The ``seq`` a cursor of ``run_id`` points at (0: none, or a foreign one: counted)."""
        return self._listen_state(run_id, after).next_seq - 1

    def _follow_start(self, after: str | None) -> tuple[str | None, int]:
        if after is None:
            return None, 0
        parsed = parse_cursor(after)
        if parsed is None:
            self._count("invalid_cursors")
            logger.warning("run stream: follow ignored an invalid cursor")
            return None, 0
        return parsed

    def _cancel_targets(
        self, live: list[str], run_id: str | None, product_id: str, session_id: str
    ) -> tuple[list[Run], list[RunRef]]:
        """``(local, remote)``: this process's runs cancelled at once, others by the transport."""
        self._count("cancel_requests")
        with self._local_lock:
            local = [
                run
                for ref, run in self._local.items()
                if ref.product_id == product_id
                and ref.session_id == session_id
                and (run_id is None or ref.run_id == run_id)
            ]
        for run in local:  # the fast path: no round trip for this process's runs
            run.mark_cancelled()
        taken = {run.run_id for run in local}
        remote = [
            RunRef(product_id, session_id, r)
            for r in live
            if r not in taken and (run_id is None or r == run_id)
        ]
        return local, remote


def next_run(runs: list[str], current: str | None, seq: int) -> tuple[str, str | None] | None:
    """The run ``follow`` listens to next and the cursor to start after (pure).

    ``seq >= 0``: ``current`` is to be (re)joined after that event (``current``
    None: the newest run). ``seq == -1``: ``current`` ended, take the one after it
    (when ``current`` fell out of the index, the oldest one kept: all are newer).
    """
    if seq >= 0:
        if current is None:
            return (runs[-1], None) if runs else None
        return current, format_cursor(current, seq) if seq else None
    if current in runs:
        index = runs.index(current)
        return (runs[index + 1], None) if index + 1 < len(runs) else None
    return (runs[0], None) if runs else None
