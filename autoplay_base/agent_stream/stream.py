"""``RunStream`` / ``AsyncRunStream``: lifecycle and wiring (see the package docstring).

The twins share :class:`~._streams.Streams` (options, the registry of this
process's runs, counters, the pure decisions) and differ by ``await``: the sync
twin calls a transport's ``start``/``read``/``pause``/... and the async twin its
``astart``/``aread``/``apause``/... Emitting is the same on both: :class:`Run`'s
helpers append to the run's bounded buffer and wake its sink, O(1), never
waiting on a network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from autoplay_base.agent_stream import _events as ev
from autoplay_base.agent_stream._events import RunEvent
from autoplay_base.agent_stream._history import human_entry
from autoplay_base.agent_stream._run import Run
from autoplay_base.agent_stream._state import ListenState
from autoplay_base.agent_stream._streams import (
    DEFAULT_CLOSE_TIMEOUT_SECONDS,
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_BLOCKING_LISTENERS,
    DEFAULT_MAX_BUFFERED_EVENTS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_RUNS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_POLL_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    READ_COUNT,
    DroppedEvents,
    IfLive,
    RunArgs,
    RunStreamStats,
    Streams,
    next_run,
)
from autoplay_base.agent_stream._transport import LiveRun, Read, RunRef
from autoplay_base.backends.base import SessionKey
from autoplay_base.errors import BackendUnavailableError

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
    "AsyncRunStream",
    "DroppedEvents",
    "IfLive",
    "LiveRun",
    "Run",
    "RunStream",
    "RunStreamStats",
]


def _fed(state: ListenState, read: Read, now: float) -> list[RunEvent]:
    """What ``state`` yields for ``read`` (both twins' listen loop)."""
    return state.feed(read.events, live=read.live, exists=read.exists, now=now, ended=read.ended)


def _at_tail(read: Read) -> bool:
    """Whether a listener's read reached the end of what is written: then it waits.

    A page short of ``READ_COUNT`` ends at the tail, and so does what a wait read:
    the listener waits next (Redis: ``XREAD BLOCK`` after its cursor, which answers
    at once when more was written meanwhile) instead of reading again. Reading again
    cost a three-command pipeline (the lease, ``XRANGE``, ``EXISTS``) per page at the
    tail, where a wait costs one ``XREAD``; the lease is read after each wait that
    timed out, so ``producer_lost`` comes as soon as before.
    """
    return len(read.events) < READ_COUNT


class _RunBlock:
    """``with stream.run(...) as run:`` (sync)."""

    def __init__(self, stream: RunStream, args: RunArgs) -> None:
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

    def __init__(self, stream: AsyncRunStream, args: RunArgs) -> None:
        self._stream = stream
        self._args = args
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._run = await self._stream._enter(self._args)
        return self._run

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self._run is not None
        return await self._stream._exit(self._run, exc)


class RunStream(Streams):
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
        return _RunBlock(self, RunArgs(session_id, product_id, user_id, if_live, user_message))

    def _enter(self, args: RunArgs) -> Run:
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
            _, remote = self._cancel_targets(previous, None, ref.product_id, ref.session_id)
            if remote:
                self._cancel_refs(remote)
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
        ``unknown_run``; a trimmed stretch is announced by a ``gap`` event first. A
        cursor that is the terminal event itself yields nothing: the run is over.
        """
        state = self._listen_state(run_id, after)
        ref = RunRef(product_id, session_id, run_id)
        if not ev.is_run_id(run_id):
            yield from state.feed([], live=False, exists=False, now=self._clock())
            return
        waited: list[RunEvent] = []
        while not state.done:
            if waited:  # what the wait read: the run is being written, no lease to check
                read = Read(waited, True, True)
            else:
                try:
                    read = self.transport.read(ref, state.next_seq, READ_COUNT)
                except self._errors as exc:
                    raise BackendUnavailableError("run stream: Redis unavailable") from exc
            out = _fed(state, read, self._clock())
            yield from out
            if not state.done and _at_tail(read):  # else read on: a full page, more is there
                waited = self.transport.pause(ref, self.poll_seconds, state.next_seq)

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
            nxt = next_run(runs, current, seq)
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
        live: list[str] = []
        error: BaseException | None = None
        try:
            live = self.transport.live_runs(product_id, session_id, self._clock())
        except self._errors as exc:
            error = exc
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


class AsyncRunStream(Streams):
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
        return _AsyncRunBlock(self, RunArgs(session_id, product_id, user_id, if_live, user_message))

    async def _enter(self, args: RunArgs) -> Run:
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
            _, remote = self._cancel_targets(previous, None, ref.product_id, ref.session_id)
            if remote:
                await self._cancel_refs(remote)
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
        waited: list[RunEvent] = []
        while not state.done:
            if waited:  # what the wait read: the run is being written, no lease to check
                read = Read(waited, True, True)
            else:
                try:
                    read = await self.transport.aread(ref, state.next_seq, READ_COUNT)
                except self._errors as exc:
                    raise BackendUnavailableError("run stream: Redis unavailable") from exc
            out = _fed(state, read, self._clock())
            for event in out:
                yield event
            if not state.done and _at_tail(read):  # else read on: a full page, more is there
                waited = await self.transport.apause(ref, self.poll_seconds, state.next_seq)

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
            nxt = next_run(runs, current, seq)
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
        live: list[str] = []
        error: BaseException | None = None
        try:
            live = await self.transport.alive_runs(product_id, session_id, self._clock())
        except self._errors as exc:
            error = exc
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
