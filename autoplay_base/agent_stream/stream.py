"""``RunStream`` / ``AsyncRunStream`` and ``Run``: lifecycle and wiring (see the package docstring).

The twins share :class:`_Streams` (options, the local registry of runs, counters,
the pure decisions) and differ by ``await``: the sync twin calls a transport's
``start``/``read``/``pause``/... and the async twin its ``astart``/``aread``/
``apause``/... Emitting is the same on both: :class:`Run`'s helpers append to
the run's bounded buffer and wake its sink, O(1), never waiting on a network.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from autoplay_base.agent_stream import _events as ev
from autoplay_base.agent_stream._errors import RunCancelledError, RunLiveError
from autoplay_base.agent_stream._events import RunEvent, format_cursor, parse_cursor
from autoplay_base.agent_stream._history import ai_entry, human_entry
from autoplay_base.agent_stream._memory import MemoryTransport
from autoplay_base.agent_stream._state import (
    SUCCESS,
    ListenState,
    Outcome,
    Pending,
    RunBuffer,
    outcome,
)
from autoplay_base.agent_stream._transport import LiveRun, RunRef, Sink, Started, Transport
from autoplay_base.backends.base import Backend, SessionKey
from autoplay_base.errors import BackendUnavailableError, ConfigError

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT_SECONDS",
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_BUFFERED_EVENTS",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_RUNS",
    "DEFAULT_MAX_TEXT_CHARS",
    "DEFAULT_POLL_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "AsyncRunStream",
    "DroppedEvents",
    "IfLive",
    "LiveRun",
    "Run",
    "RunStream",
    "RunStreamStats",
]

logger = logging.getLogger("autoplay_base.agent_stream")

DEFAULT_MAX_EVENTS = 10_000
"""Events kept per run (in-process: exactly; Redis: ``XADD MAXLEN ~``, approximately)."""
DEFAULT_RETENTION_SECONDS = 600.0
"""How long a run stays readable after its last write (sliding while live, then after the end)."""
DEFAULT_LEASE_SECONDS = 5.0
"""The producer's lease (Redis): a run whose process died is ``producer_lost`` this long after."""
DEFAULT_HEARTBEAT_SECONDS = 0.025
"""The Redis writer's idle round trip: lease renewal and the cancel check (cancel latency)."""
DEFAULT_POLL_SECONDS = 0.05
"""How often a Redis listener reads again while nothing new arrived."""
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
_READ_COUNT = 500
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

IfLive = Literal["reject", "cancel_previous"]
"""What ``run()`` does when a run of the session is live: raise ``RunLiveError``, or cancel it."""


class DroppedEvents(NamedTuple):
    """What ``on_drop`` receives: ``count`` events of ``run_id`` lost for ``reason``
    (``"buffer_full"``: deltas the full buffer could not coalesce; ``"unavailable"``:
    Redis did not answer before the close deadline)."""

    run_id: str
    count: int
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

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Run:
    """One live agent run: emit helpers (O(1), never blocking), cancellation, its ids.

    Made by ``stream.run(...)``; every helper may be called from any thread. Values
    of any type are accepted (see :func:`~autoplay_base.agent_stream._events.to_json_value`).
    """

    def __init__(
        self, ref: RunRef, user_id: str | None, buffer: RunBuffer, clock: Callable[[], float]
    ) -> None:
        self.run_id = ref.run_id
        self.session_id = ref.session_id
        self.product_id = ref.product_id
        self.ref = ref
        self._user_id = user_id
        self._buffer = buffer
        self._clock = clock
        self._sink: Sink | None = None
        self._cancelled = threading.Event()
        self._interrupted = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()
        self._on_lost: Callable[[int, str], None] = lambda count, reason: None

    def __repr__(self) -> str:
        return (
            f"Run(run_id={self.run_id!r}, session_id={self.session_id!r}, "
            f"product_id={self.product_id!r})"
        )

    # -- emit ---------------------------------------------------------------------------------
    def _emit(self, type_: str, data: dict[str, Any]) -> bool:
        if not self._buffer.push(type_, self._clock(), data):
            return False
        if self._sink is not None:
            self._sink.notify()
        return True

    def text_delta(self, text: str) -> bool:
        """Stream a piece of the answer. False when it was dropped (buffer full, or run ended)."""
        return self._emit(ev.TEXT_DELTA, {"text": str(text)})

    def reasoning_delta(self, text: str) -> bool:
        """Stream a piece of the model's reasoning."""
        return self._emit(ev.REASONING_DELTA, {"text": str(text)})

    def tool_input_delta(self, call_id: str, name: str, chunk: str) -> bool:
        """Stream a chunk of a tool call's arguments as the model writes them.

        Chunks are text (``''``, ``'{"ci'``, ``'ty": "NYC"}'``): never parsed here.
        Call :meth:`tool_input` with the parsed arguments once they are complete.
        """
        return self._emit(
            ev.TOOL_INPUT_DELTA, {"call_id": str(call_id), "name": str(name), "chunk": str(chunk)}
        )

    def tool_input(self, call_id: str, name: str, input: Any) -> bool:
        """The tool call's complete arguments (any value; encoded safely)."""
        data = {"call_id": str(call_id), "name": str(name), "input": ev.to_json_value(input)}
        return self._emit(ev.TOOL_INPUT, data)

    def tool_started(self, call_id: str, name: str) -> bool:
        """The tool began to run."""
        return self._emit(ev.TOOL_STARTED, {"call_id": str(call_id), "name": str(name)})

    def tool_output(self, call_id: str, output: Any) -> bool:
        """The tool's result (any value: datetimes, models, bytes... encoded safely)."""
        return self._emit(
            ev.TOOL_OUTPUT, {"call_id": str(call_id), "output": ev.to_json_value(output)}
        )

    def tool_error(self, call_id: str, error: str | BaseException) -> bool:
        """The tool failed; an exception gives its class name only (its text may hold secrets)."""
        text = type(error).__name__ if isinstance(error, BaseException) else str(error)
        return self._emit(ev.TOOL_ERROR, {"call_id": str(call_id), "error": text})

    def step_started(self, name: str | None = None) -> bool:
        """A model call (or graph node) begins."""
        return self._emit(ev.STEP_STARTED, {"name": name})

    def step_finished(self, usage: Any = None) -> bool:
        """A model call ends; ``usage`` is any token-usage value (encoded safely)."""
        return self._emit(ev.STEP_FINISHED, {"usage": ev.to_json_value(usage)})

    def custom(self, name: str, data: Any) -> bool:
        """An application event (Vercel: ``data-<name>``); ``name``: 1-64 of ``[A-Za-z0-9_.-]``."""
        if not isinstance(name, str) or _CUSTOM_NAME.fullmatch(name) is None:
            raise ConfigError("custom event names are 1-64 characters of A-Z a-z 0-9 _ . -")
        return self._emit(ev.CUSTOM, {"name": name, "data": ev.to_json_value(data)})

    # -- cancellation -------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """Whether a cancel request reached this run (from any process)."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`RunCancelledError` when cancelled (the block ends as ``cancelled``)."""
        if self._cancelled.is_set():
            raise RunCancelledError(self.run_id)

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout``; whether it was cancelled."""
        return self._cancelled.wait(timeout)

    async def await_cancelled(self, timeout: float | None = None) -> bool:
        """Async twin of :meth:`wait_cancelled` (``asyncio.wait`` it beside the model's stream)."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._cancelled.is_set():
                return True
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return self._cancelled.is_set()

    def mark_cancelled(self) -> None:
        """Record a cancel request and wake every waiter (thread-safe; what ``cancel`` calls)."""
        with self._lock:
            self._cancelled.set()
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop is closed
                continue

    def interrupt(self) -> None:
        """Mark the run interrupted: leaving the block normally ends it as ``interrupted``."""
        self._interrupted = True

    # -- what the sink needs --------------------------------------------------------------------
    @property
    def user_id(self) -> str | None:
        """The user the run answers (for the per-user live index), or None."""
        return self._user_id

    @property
    def ended(self) -> bool:
        """Whether the terminal event is buffered."""
        return self._buffer.ended

    @property
    def text(self) -> str:
        """The answer's text so far (the text deltas, joined)."""
        return self._buffer.text

    def drain(self) -> list[Pending]:
        """The buffered events, numbered (the sink's side of the buffer)."""
        return self._buffer.drain()

    def lost(self, count: int, reason: str) -> None:
        """The sink could not write ``count`` events."""
        self._on_lost(count, reason)


@dataclass
class _RunArgs:
    session_id: str
    product_id: str
    user_id: str | None
    if_live: IfLive
    user_message: str | None


class _Streams:
    """What the twins share: options, transport, registry of this process's runs, counters."""

    def __init__(
        self,
        backend: Any = None,
        *,
        history: Backend | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_buffered_events: int = DEFAULT_MAX_BUFFERED_EVENTS,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_runs: int = DEFAULT_MAX_RUNS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
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
                clock=clock,
                on_write_error=self._write_failed,
                on_undecodable=lambda: self._count("undecodable_events"),
            )
            self._errors = redis_transport.errors
            self.transport = redis_transport
            if history is None:
                history = backend
        self.history = history
        """Where the user's message and the answer are appended (``append_messages``), or None."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(transport={type(self.transport).__name__})"

    # -- counters -----------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _write_failed(self, exc: BaseException) -> None:
        self._count("write_errors")
        logger.warning("run stream: a write to Redis failed (%s); retrying", type(exc).__name__)

    def _lost(self, run_id: str, count: int, reason: str) -> None:
        if count <= 0:
            return
        if reason != "buffer_full":  # buffer drops are counted in events_dropped already
            self._count("events_lost", count)
        logger.warning("run stream: run %s lost %d event(s) (%s)", run_id, count, reason)
        if self.on_drop is not None:
            self.on_drop(DroppedEvents(run_id, count, reason))

    # -- pure steps of the run lifecycle ------------------------------------------------------
    def _ref(self, args: _RunArgs) -> RunRef:
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

    def _started(self, ref: RunRef, started: Started, args: _RunArgs) -> list[RunRef]:
        """Raise when refused; the runs to cancel first (``cancel_previous``)."""
        if not started.started:
            self._count("runs_rejected")
            raise RunLiveError(started.live)
        self._count("runs_started")
        if args.if_live != "cancel_previous":
            return []
        return [RunRef(ref.product_id, ref.session_id, r) for r in started.live if r != ref.run_id]

    def _begin(self, ref: RunRef, args: _RunArgs) -> Run:
        buffer = RunBuffer(self.max_buffered_events, self.max_event_bytes, self.max_text_chars)
        run = Run(ref, args.user_id, buffer, self._clock)
        run._on_lost = lambda count, reason: self._lost(ref.run_id, count, reason)
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
        self._count("events_after_end", counters.after_end)
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


class _RunBlock:
    """``with stream.run(...) as run:`` (sync)."""

    def __init__(self, stream: RunStream, args: _RunArgs) -> None:
        self._stream = stream
        self._args = args
        self._run: Run | None = None

    def __enter__(self) -> Run:
        self._run = self._stream._enter(self._args)
        return self._run

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self._run is not None
        return self._stream._exit(self._run, exc)


class _AsyncRunBlock:
    """``async with stream.run(...) as run:``."""

    def __init__(self, stream: AsyncRunStream, args: _RunArgs) -> None:
        self._stream = stream
        self._args = args
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._run = await self._stream._enter(self._args)
        return self._run

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self._run is not None
        return await self._stream._exit(self._run, exc)


class RunStream(_Streams):
    """Agent run streams, sync twin: ``with stream.run(...)``, ``for e in stream.listen(...)``.

    ``backend=None`` keeps runs in this process; a ``RedisBackend`` shares them with
    every process on its server or cluster (see the package docstring for the options).
    """

    def run(
        self,
        *,
        session_id: str,
        product_id: str,
        user_id: str | None = None,
        if_live: IfLive = "reject",
        user_message: str | None = None,
    ) -> _RunBlock:
        """A context manager yielding a new live :class:`Run` of the session."""
        return _RunBlock(self, _RunArgs(session_id, product_id, user_id, if_live, user_message))

    def _enter(self, args: _RunArgs) -> Run:
        ref = self._ref(args)
        try:
            started = self.transport.start(
                ref,
                user_id=args.user_id,
                reject_if_live=args.if_live == "reject",
                now=self._clock(),
            )
        except self._errors as exc:
            started = self._start_failed(exc)
        previous = self._started(ref, started, args)
        if previous:
            self._cancel_refs(previous)
        if args.user_message is not None and self.history is not None:
            entry = human_entry(args.user_message, at=self._clock())
            self.history.append_messages(SessionKey(ref.product_id, ref.session_id), [entry])
        return self._begin(ref, args)

    def _exit(self, run: Run, exc: BaseException | None) -> bool:
        result = self._finish(run, exc)
        assert run._sink is not None
        written = run._sink.close(self.close_timeout)
        answer = self._answer(run, result)
        if answer and self.history is not None:
            self.history.append_messages(SessionKey(run.product_id, run.session_id), answer)
        self._closed(run, written)
        return result.swallow

    def listen(
        self, run_id: str, *, session_id: str, product_id: str, after: str | None = None
    ) -> Iterator[RunEvent]:
        """The run's events from the start (or strictly after the cursor ``after``).

        Ends after the terminal event, or with a synthesized ``producer_lost`` /
        ``unknown_run``; a trimmed stretch is announced by a ``gap`` event first.
        """
        state = self._listen_state(run_id, after)
        ref = RunRef(product_id, session_id, run_id)
        if not ev.is_run_id(run_id):
            yield from state.feed([], live=False, exists=False, now=self._clock())
            return
        while not state.done:
            try:
                read = self.transport.read(ref, state.next_seq, _READ_COUNT)
            except self._errors as exc:
                raise BackendUnavailableError("run stream: Redis unavailable") from exc
            out = state.feed(read.events, live=read.live, exists=read.exists, now=self._clock())
            yield from out
            if not out:
                self.transport.pause(ref, self.poll_seconds)

    def follow(
        self, session_id: str, *, product_id: str, after: str | None = None
    ) -> Iterator[RunEvent]:
        """The session's runs one after the other, each from its start (or after ``after``).

        Starts with the session's newest run (``after=None``) and never ends by
        itself: when a run ends it waits for the next one (stop by breaking out).
        """
        current, seq = self._follow_start(after)
        while True:
            try:
                runs = self.transport.runs(product_id, session_id)
            except self._errors as exc:
                raise BackendUnavailableError("run stream: Redis unavailable") from exc
            nxt = _next_run(runs, current, seq)
            if nxt is None:
                self.transport.pause(None, self.poll_seconds)
                continue
            current, cursor = nxt
            yield from self.listen(
                current, session_id=session_id, product_id=product_id, after=cursor
            )
            seq = -1  # this run is done: the next one comes after it

    def cancel(self, run_id: str | None = None, *, session_id: str, product_id: str) -> bool:
        """Cancel the session's live run (``run_id``) or all of them; whether one was live."""
        try:
            live = self.transport.live_runs(product_id, session_id, self._clock())
        except self._errors as exc:
            live, error = [], exc
        else:
            error = None
        local, remote = self._cancel_targets(live, run_id, product_id, session_id)
        if error is not None and not local:
            raise BackendUnavailableError("run stream: Redis unavailable") from error
        if remote:
            self._cancel_refs(remote)
        return bool(local or remote)

    def _cancel_refs(self, refs: list[RunRef]) -> None:
        try:
            self.transport.request_cancel(refs)
        except self._errors as exc:
            raise BackendUnavailableError("run stream: Redis unavailable") from exc

    def live_sessions(self, user_id: str, *, product_id: str) -> list[LiveRun]:
        """The user's live runs under ``product_id`` (``LiveRun(session_id, run_id)``)."""
        try:
            return self.transport.live_sessions(product_id, user_id, self._clock())
        except self._errors as exc:
            raise BackendUnavailableError("run stream: Redis unavailable") from exc


class AsyncRunStream(_Streams):
    """Agent run streams, async twin: ``async with stream.run(...)``, ``async for ... listen(...)``.

    Emitting is the same synchronous, O(1) call as on :class:`RunStream`.
    """

    def run(
        self,
        *,
        session_id: str,
        product_id: str,
        user_id: str | None = None,
        if_live: IfLive = "reject",
        user_message: str | None = None,
    ) -> _AsyncRunBlock:
        """An async context manager yielding a new live :class:`Run` of the session."""
        return _AsyncRunBlock(
            self, _RunArgs(session_id, product_id, user_id, if_live, user_message)
        )

    async def _enter(self, args: _RunArgs) -> Run:
        ref = self._ref(args)
        try:
            started = await self.transport.astart(
                ref,
                user_id=args.user_id,
                reject_if_live=args.if_live == "reject",
                now=self._clock(),
            )
        except self._errors as exc:
            started = self._start_failed(exc)
        previous = self._started(ref, started, args)
        if previous:
            await self._cancel_refs(previous)
        if args.user_message is not None and self.history is not None:
            entry = human_entry(args.user_message, at=self._clock())
            await self.history.aappend_messages(SessionKey(ref.product_id, ref.session_id), [entry])
        return self._begin(ref, args)

    async def _exit(self, run: Run, exc: BaseException | None) -> bool:
        result = self._finish(run, exc)
        assert run._sink is not None
        written = await asyncio.to_thread(run._sink.close, self.close_timeout)
        answer = self._answer(run, result)
        if answer and self.history is not None:
            await self.history.aappend_messages(SessionKey(run.product_id, run.session_id), answer)
        self._closed(run, written)
        return result.swallow

    async def listen(
        self, run_id: str, *, session_id: str, product_id: str, after: str | None = None
    ) -> AsyncIterator[RunEvent]:
        """Async twin of :meth:`RunStream.listen`."""
        state = self._listen_state(run_id, after)
        ref = RunRef(product_id, session_id, run_id)
        if not ev.is_run_id(run_id):
            for event in state.feed([], live=False, exists=False, now=self._clock()):
                yield event
            return
        while not state.done:
            try:
                read = await self.transport.aread(ref, state.next_seq, _READ_COUNT)
            except self._errors as exc:
                raise BackendUnavailableError("run stream: Redis unavailable") from exc
            out = state.feed(read.events, live=read.live, exists=read.exists, now=self._clock())
            for event in out:
                yield event
            if not out:
                await self.transport.apause(ref, self.poll_seconds)

    async def follow(
        self, session_id: str, *, product_id: str, after: str | None = None
    ) -> AsyncIterator[RunEvent]:
        """Async twin of :meth:`RunStream.follow`."""
        current, seq = self._follow_start(after)
        while True:
            try:
                runs = await self.transport.aruns(product_id, session_id)
            except self._errors as exc:
                raise BackendUnavailableError("run stream: Redis unavailable") from exc
            nxt = _next_run(runs, current, seq)
            if nxt is None:
                await self.transport.apause(None, self.poll_seconds)
                continue
            current, cursor = nxt
            async for event in self.listen(
                current, session_id=session_id, product_id=product_id, after=cursor
            ):
                yield event
            seq = -1  # this run is done: the next one comes after it

    async def cancel(self, run_id: str | None = None, *, session_id: str, product_id: str) -> bool:
        """Async twin of :meth:`RunStream.cancel`."""
        try:
            live = await self.transport.alive_runs(product_id, session_id, self._clock())
        except self._errors as exc:
            live, error = [], exc
        else:
            error = None
        local, remote = self._cancel_targets(live, run_id, product_id, session_id)
        if error is not None and not local:
            raise BackendUnavailableError("run stream: Redis unavailable") from error
        if remote:
            await self._cancel_refs(remote)
        return bool(local or remote)

    async def _cancel_refs(self, refs: list[RunRef]) -> None:
        try:
            await self.transport.arequest_cancel(refs)
        except self._errors as exc:
            raise BackendUnavailableError("run stream: Redis unavailable") from exc

    async def live_sessions(self, user_id: str, *, product_id: str) -> list[LiveRun]:
        """Async twin of :meth:`RunStream.live_sessions`."""
        try:
            return await self.transport.alive_sessions(product_id, user_id, self._clock())
        except self._errors as exc:
            raise BackendUnavailableError("run stream: Redis unavailable") from exc


def _next_run(runs: list[str], current: str | None, seq: int) -> tuple[str, str | None] | None:
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
