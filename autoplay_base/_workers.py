"""The summarizers' worker pool: bounded daemon threads for sync calls that may hang.

:class:`WorkerPool` runs sync LLM calls for both summarizers (the rules are in
:mod:`autoplay_base.summarizer`'s docstring): at most ``size`` worker threads,
started lazily and reused; a call past its ``timeout`` is failed with
:class:`~autoplay_base.errors.SummarizerTimeoutError` and its thread counted as
hung until the call returns; hung threads are replaced up to ``2 * size``
threads, after which new calls are refused at once rather than left waiting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from autoplay_base.errors import SummarizerError, SummarizerTimeoutError

__all__ = [
    "Call",
    "Done",
    "LateResults",
    "RefusedError",
    "WorkerPool",
    "run_call",
    "timeout_error",
]

# The summarizer's logger: these lines are the summarizer's story to its users.
logger = logging.getLogger("autoplay_base.summarizer")

_WORKER_NAME = "autoplay-summarizer-worker"
_TIMER_NAME = "autoplay-summarizer-timer"


class LateResults(Protocol):
    """Where the pool counts answers that came back after their call timed out."""

    late_results: int


Done = Callable[[object, "BaseException | None"], None]
"""How a call's outcome comes back: ``done(value, None)`` or ``done(None, error)``, once."""


class RefusedError(SummarizerError):
    """The pool did not run the call (closed, queue full, every thread hung)."""


class Call:
    __slots__ = ("deadline", "done", "fn", "state", "thread")

    def __init__(self, fn: Callable[[], object], done: Done) -> None:
        self.fn = fn
        self.done = done
        self.state = "queued"  # -> "running" -> "done" | "expired"
        self.deadline = 0.0
        self.thread: threading.Thread | None = None


class WorkerPool:
    """At most ``size`` daemon threads running sync calls, each call bounded by ``timeout``.

    Written here rather than taken from ``concurrent.futures``: a
    ``ThreadPoolExecutor``'s threads are joined at interpreter exit (one call
    that never returns would hang the exit), it cannot tell a hung thread from
    a busy one, and the loop's default executor is shared with the whole
    application. The rules are in the module docstring. Outcomes are delivered
    through each call's ``done`` on a worker thread (or on the timer thread for
    a timeout, or on the caller's thread for a refusal), never under the lock.
    """

    def __init__(
        self, *, size: int, timeout: float, max_queued: int, counters: LateResults
    ) -> None:
        self.size = size
        self.max_threads = 2 * size
        self.timeout = timeout
        self.max_queued = max_queued
        self._counters = counters
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._watch = threading.Condition(self._lock)  # the timer waits here
        self._queue: deque[Call] = deque()
        self._delayed: list[tuple[float, int, Call]] = []
        self._order = itertools.count()
        self._running: set[Call] = set()
        self._threads: set[threading.Thread] = set()
        self._hung: set[threading.Thread] = set()
        self._working = 0  # live threads not hung: idle or running a call
        self._idle = 0
        self._timer: threading.Thread | None = None
        self._closed = False
        self._saturation_logged = False

    @property
    def hung(self) -> int:
        """Threads still inside a call that passed its timeout."""
        with self._lock:
            return len(self._hung)

    def submit(self, fn: Callable[[], object], done: Done, *, delay: float = 0.0) -> None:
        """Run ``fn`` on a worker (after ``delay`` seconds); its outcome goes to ``done``."""
        call = Call(fn, done)
        with self._lock:
            refusal = self._admit(call, delay)
        if refusal is not None:
            self._deliver(call, None, refusal)

    def close(self) -> None:
        """Refuse new calls and fail the ones not started; running calls go on."""
        with self._lock:
            self._closed = True
            dropped = [*self._queue, *(call for _, _, call in self._delayed)]
            self._queue.clear()
            self._delayed.clear()
            self._work.notify_all()
            self._watch.notify_all()
        refusal = RefusedError("the summarizer closed before this call started")
        for call in dropped:
            self._deliver(call, None, refusal)

    def join(self, deadline: float | None) -> None:
        """Wait, until ``deadline``, for the exiting threads (all but the hung ones)."""
        with self._lock:
            threads = [t for t in self._threads if t not in self._hung]
            if self._timer is not None:
                threads.append(self._timer)
        me = threading.current_thread()
        for thread in threads:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if thread is not me:
                thread.join(remaining)

    # Lock held in the helpers below.

    def _admit(self, call: Call, delay: float) -> RefusedError | None:
        if self._closed:
            return RefusedError("the summarizer is closed")
        if len(self._queue) + len(self._delayed) >= self.max_queued:
            return RefusedError(f"the summarizer's queue is full ({self.max_queued} calls)")
        if delay > 0:
            # Retries wait in the timer's heap, so a refusal can never burn them at once.
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), call))
            self._start_timer()
            self._watch.notify()
            return None
        return self._enqueue(call)

    def _enqueue(self, call: Call) -> RefusedError | None:
        if self._saturated():
            return RefusedError(
                f"all {len(self._hung)} summarizer threads are stuck in LLM calls past "
                "their timeout"
            )
        self._queue.append(call)
        self._staff()
        self._work.notify()
        return None

    def _saturated(self) -> bool:
        return self._working == 0 and len(self._threads) >= self.max_threads

    def _staff(self) -> None:
        """Start workers for queued calls no idle worker will take, within the bounds."""
        while (
            len(self._queue) > self._idle
            and self._working < self.size
            and len(self._threads) < self.max_threads
        ):
            thread = threading.Thread(target=self._serve, name=_WORKER_NAME, daemon=True)
            self._threads.add(thread)
            self._working += 1
            self._idle += 1  # counted idle until it takes its first call
            thread.start()
            self._start_timer()

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Thread(target=self._time, name=_TIMER_NAME, daemon=True)
            self._timer.start()

    # The threads.

    def _serve(self) -> None:
        me = threading.current_thread()
        with self._lock:
            self._idle -= 1
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._work.wait()
                    self._idle -= 1
                if self._closed:  # close() already failed whatever was queued
                    self._working -= 1
                    self._threads.discard(me)
                    return
                call = self._queue.popleft()
                call.state = "running"
                call.thread = me
                call.deadline = time.monotonic() + self.timeout
                self._running.add(call)
                self._watch.notify()
            value, error = run_call(call.fn)
            with self._lock:
                on_time = call.state == "running"
                if on_time:
                    call.state = "done"
                    self._running.discard(call)
                else:  # the timer failed this call already and counted us as hung
                    self._hung.discard(me)
                    self._counters.late_results += 1
                    self._saturation_logged = False
                    rejoin = not self._closed and self._working < self.size
                    if rejoin:
                        self._working += 1
                    else:
                        self._threads.discard(me)
            if on_time:
                self._deliver(call, value, error)
                continue
            logger.info(
                "summarizer: a hung LLM call returned after its timeout; its answer was "
                "dropped and its thread %s",
                "rejoins the pool" if rejoin else "exits",
            )
            if not rejoin:
                return

    def _time(self) -> None:
        """Fail calls past their deadline, and queue retries whose delay has passed."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [call for call in self._running if call.deadline <= now]
                for call in expired:
                    self._running.discard(call)
                    call.state = "expired"
                    self._working -= 1
                    assert call.thread is not None
                    self._hung.add(call.thread)
                refused: list[tuple[Call, RefusedError]] = []
                while self._delayed and self._delayed[0][0] <= now:
                    call = heapq.heappop(self._delayed)[2]
                    refusal = self._enqueue(call)
                    if refusal is not None:
                        refused.append((call, refusal))
                if expired:
                    self._staff()  # replace hung threads while the bound allows
                    if self._saturated():
                        refusal = RefusedError(
                            f"all {len(self._hung)} summarizer threads are stuck in LLM "
                            "calls past their timeout"
                        )
                        refused.extend((call, refusal) for call in self._queue)
                        self._queue.clear()
                        self._log_saturation()
                if not expired and not refused:
                    wake = min((call.deadline for call in self._running), default=None)
                    if self._delayed:
                        first = self._delayed[0][0]
                        wake = first if wake is None else min(wake, first)
                    self._watch.wait(None if wake is None else wake - now)
                    continue
            timeout = timeout_error(self.timeout)
            for call in expired:
                self._deliver(call, None, timeout)
            for call, refusal in refused:
                self._deliver(call, None, refusal)

    def _log_saturation(self) -> None:
        if not self._saturation_logged:
            self._saturation_logged = True
            logger.warning(
                "summarizer: all %d worker threads are stuck in LLM calls past their "
                "timeout; new summaries fail until one returns",
                len(self._hung),
            )

    @staticmethod
    def _deliver(call: Call, value: object, error: BaseException | None) -> None:
        try:
            call.done(value, error)
        except Exception:  # our own handler: a bug there must not kill a pool thread
            logger.exception("summarizer: handling an LLM outcome raised")


def run_call(fn: Callable[[], object]) -> tuple[object, BaseException | None]:
    try:
        return fn(), None
    except Exception as exc:
        return None, exc
    except BaseException as exc:  # SystemExit & co. from user code must not end a pool thread
        error = SummarizerError(f"the LLM call raised {type(exc).__name__}")
        error.__cause__ = exc
        return None, error


def timeout_error(seconds: float) -> SummarizerTimeoutError:
    """The error of an LLM call past its ``timeout``, for a pool call and an awaited one alike.

    Callers tell a timeout by this type (``isinstance``), never by its text.
    """
    return SummarizerTimeoutError(f"the LLM call timed out after {seconds}s")
