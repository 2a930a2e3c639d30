"""Rolling session summaries written by an LLM, off the ingest and read paths.

``SessionSummarizer`` (threads) and ``AsyncSessionSummarizer`` (asyncio tasks)
collect each session's new actions; once ``threshold`` of them are pending, they
ask the LLM for a summary of the *whole* session (the prompt carries the
previous summary and the new actions), then hand the result on:

* to the store they are bound to, as a ``SummaryPayload`` whose ``replaces`` is
  the number of actions it covers, so those leave "Recent activity";
* to ``on_summary(session_id, summary)``, the ``autoplay-sdk`` callback.

``ContextStore(summarizer=s)`` binds both directions. Summarizing never blocks
``add`` or ``enrich``: at most one LLM call per session is in flight, each with
a timeout; a failing LLM is retried with exponential backoff (not on every new
event), and after ``max_retries`` the session waits ``max_backoff`` seconds
before new actions can trigger another try. Pending actions stay visible in the
store until a summary replaces them.

``llm`` may be a callable ``str -> str`` (``async`` for the async summarizer) or
any LangChain ``Runnable``/chat model (``invoke``/``ainvoke``, duck-typed: no
LangChain dependency). Chat-model messages are reduced to their text.

Threads. A sync LLM call runs on the summarizer's own worker pool, never on one
thread per session and never on the event loop's default executor (which the
application, ``getaddrinfo`` and ``asyncio.run()``'s shutdown share):

* at most ``max_concurrency`` daemon worker threads run calls, started lazily and
  reused across sessions, plus one timer thread that enforces ``timeout``;
* calls wait in a bounded queue (one job per session; ``max_sessions`` in all);
* a call still running after ``timeout`` is abandoned: the job fails with
  :class:`~autoplay_base.errors.SummarizerTimeoutError` (counted in ``timeouts``,
  retried by the policy) and its thread counts as *hung* until the call returns
  (its late answer is dropped, counted in ``late_results``), then rejoins;
* a hung thread is replaced while the pool holds fewer than
  ``2 * max_concurrency`` worker threads, so a hanging LLM can never grow the
  thread count past that; once every one of them is hung, new calls fail at
  once (counted in ``rejected``, retried by the policy) instead of waiting
  forever, so ``flush()`` still ends;
* ``close()``/``aclose()`` return by their deadline (``DEFAULT_CLOSE_TIMEOUT``);
  what they abandon is counted in ``abandoned`` and logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypedDict

from typing_extensions import Unpack

from autoplay_base._reconnect import Backoff
from autoplay_base.backends.base import SessionKey
from autoplay_base.errors import ConfigError, SummarizerError, SummarizerTimeoutError
from autoplay_base.events import ActionsPayload, SummaryPayload
from autoplay_base.formatting import action_lines, number_lines

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_PROMPT",
    "AsyncSessionSummarizer",
    "SessionSummarizer",
    "SummarizerCounters",
    "SummarizerOptions",
]

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = """\
You are summarising a user's in-app session for an assistant that helps this user.
Write a concise 2-3 sentence summary of the whole session so far: the pages they
visited, what they did, and what they seem to be trying to achieve.

Summary so far:
{previous_summary}

New actions:
{actions}

Updated summary:"""
"""Default prompt; a custom one must contain ``{actions}`` and may use ``{previous_summary}``."""

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 60.0
DEFAULT_MAX_SESSIONS = 100_000
DEFAULT_MAX_PENDING = 200
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds ``close()``/``aclose()`` wait for calls in flight before abandoning them."""
_NO_PREVIOUS_SUMMARY = "(none yet)"
_WORKER_NAME = "autoplay-summarizer-worker"
_TIMER_NAME = "autoplay-summarizer-timer"


class SummarizerCounters:
    """What the summarizer did; all counters only grow.

    ``failures`` counts every failed try (``timeouts`` and ``rejected`` are
    among them); ``late_results`` counts timed-out calls that returned later
    (their answer is dropped); ``abandoned`` counts jobs that ``close()`` or
    ``aclose()`` gave up on.
    """

    __slots__ = (
        "abandoned",
        "failures",
        "late_results",
        "pending_trimmed",
        "rejected",
        "retries",
        "sessions_evicted",
        "summaries",
        "timeouts",
    )

    def __init__(self) -> None:
        self.summaries = 0
        self.failures = 0
        self.timeouts = 0
        self.retries = 0
        self.pending_trimmed = 0
        self.sessions_evicted = 0
        self.rejected = 0
        self.late_results = 0
        self.abandoned = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__}


# -- the pure core: who is pending, who is running, what to retry ------------------------------


class _SessionState:
    __slots__ = ("failures", "pending", "previous", "retry_at", "running")

    def __init__(self) -> None:
        self.previous: str | None = None
        self.pending: list[str] = []
        self.running = False
        self.failures = 0
        self.retry_at = 0.0


@dataclass(frozen=True, slots=True)
class _Job:
    key: SessionKey
    previous: str | None
    lines: tuple[str, ...]
    # The state the job was started for: after a reset (or an LRU eviction) the
    # session gets a new state, and the old job's answer must not land on it.
    state: _SessionState = field(compare=False, repr=False)


class _Book:
    """Per-session bookkeeping; no I/O, no clock of its own, guarded by the caller.

    Every job the book starts ends exactly once, through :meth:`finished`,
    :meth:`failed` (when it gives up) or :meth:`dropped`; ``active`` counts the
    jobs between the two, so ``flush`` knows when the work it waits for is done.
    """

    def __init__(
        self,
        *,
        threshold: int,
        max_retries: int,
        initial_backoff: float,
        max_backoff: float,
        max_sessions: int,
        max_pending: int,
        counters: SummarizerCounters,
    ) -> None:
        self.threshold = threshold
        self.max_retries = max_retries
        # No jitter: retries are per session, there is no reconnect storm to spread.
        self.backoff = Backoff(initial_backoff, max_backoff, jitter=0.0)
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.counters = counters
        self.states: OrderedDict[SessionKey, _SessionState] = OrderedDict()
        self.active = 0

    def _state(self, key: SessionKey) -> _SessionState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _SessionState()
            if len(self.states) > self.max_sessions:
                self.states.popitem(last=False)
                self.counters.sessions_evicted += 1
        else:
            self.states.move_to_end(key)
        return state

    def _maybe_start(self, key: SessionKey, state: _SessionState, now: float) -> _Job | None:
        if state.running or len(state.pending) < self.threshold or now < state.retry_at:
            return None
        state.running = True
        self.active += 1
        return _Job(key, state.previous, tuple(state.pending), state)

    def current(self, job: _Job) -> bool:
        """Whether ``job`` still belongs to its session (not reset or evicted since)."""
        return self.states.get(job.key) is job.state

    def record(self, key: SessionKey, lines: list[str], now: float) -> _Job | None:
        state = self._state(key)
        state.pending.extend(lines)
        overflow = len(state.pending) - self.max_pending
        if overflow > 0:
            del state.pending[:overflow]
            self.counters.pending_trimmed += overflow
        return self._maybe_start(key, state, now)

    def observe(self, key: SessionKey, summary: str, replaces: int) -> None:
        state = self._state(key)
        state.previous = summary
        del state.pending[:replaces]

    def finished(self, job: _Job, summary: str, now: float) -> _Job | None:
        """Adopt ``job``'s summary; the next job for the session, if one is due."""
        self.active -= 1
        if not self.current(job):  # reset while the LLM was thinking: drop the result
            return None
        state = job.state
        state.running = False
        state.failures = 0
        state.previous = summary
        del state.pending[: len(job.lines)]
        self.counters.summaries += 1
        return self._maybe_start(job.key, state, now)

    def failed(self, job: _Job, now: float) -> float | None:
        """The delay before retrying ``job``, or ``None`` to give up for now."""
        self.counters.failures += 1
        if not self.current(job):
            self.active -= 1
            return None
        state = job.state
        state.failures += 1
        if state.failures > self.max_retries:
            state.running = False
            state.failures = 0
            state.retry_at = now + self.backoff.maximum
            self.active -= 1
            return None
        self.counters.retries += 1
        return self.backoff.delay(state.failures)

    def dropped(self, job: _Job) -> None:
        """``job`` ends without an answer (stale, cancelled, abandoned); its actions stay."""
        self.active -= 1
        if self.current(job):
            job.state.running = False

    def reset(self, key: SessionKey) -> None:
        self.states.pop(key, None)


def _prompt_for(template: str, job: _Job) -> str:
    return template.format(
        actions=number_lines(job.lines), previous_summary=job.previous or _NO_PREVIOUS_SUMMARY
    )


def _as_text(result: object) -> str:
    """The text of an LLM result: a str, a chat message, or a completion response."""
    if isinstance(result, str):
        text = result
    else:
        content = getattr(result, "content", None)
        message = getattr(result, "message", None)
        if content is None and message is not None:
            content = getattr(message, "content", None)
        if content is None:
            content = getattr(result, "text", None)
        if isinstance(content, list):
            content = "".join(
                part if isinstance(part, str) else str(part.get("text", ""))
                for part in content
                if isinstance(part, (str, dict))
            )
        if not isinstance(content, str):
            raise SummarizerError(f"the LLM returned {type(result).__name__}, not text")
        text = content
    text = text.strip()
    if not text:
        raise SummarizerError("the LLM returned an empty summary")
    return text


_MAX_LOGGED_ERROR = 300
# An LLM client's error text may carry credentials: a key in a URL's query or
# userinfo, an Authorization header, a ``key=...`` pair. Those parts are masked.
_SECRET_PATTERNS = (
    (re.compile(r"(?i)\b(https?://)[^/\s@]+@"), r"\1***@"),
    (re.compile(r"(?i)\b(https?://[^\s?#]*)\?[^\s#]*"), r"\1?***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',]+"), r"\1 ***"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|key|token|secret|password|authorization)(\W{1,4})[^\s\"',&}]+"
        ),
        r"\1\2***",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***"),
)


def _loggable(exc: BaseException) -> str:
    """An error's type and text, safe for a log line: credentials masked, length capped."""
    text = str(exc)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > _MAX_LOGGED_ERROR:
        text = text[:_MAX_LOGGED_ERROR] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_prompt(prompt: str) -> str:
    if "{actions}" not in prompt:
        raise ConfigError("a summarizer prompt must contain the {actions} placeholder")
    try:
        prompt.format(actions="", previous_summary="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"the summarizer prompt has an unknown placeholder: {exc}") from None
    return prompt


def _key(payload: ActionsPayload | SummaryPayload) -> SessionKey | None:
    if not payload.session_id:
        return None
    return SessionKey(payload.product_id, payload.session_id)


def _summary_payload(job: _Job, summary: str, now: float) -> SummaryPayload:
    return SummaryPayload(
        product_id=job.key.product_id,
        session_id=job.key.session_id,
        summary=summary,
        replaces=len(job.lines),
        forwarded_at=now,
    )


def _is_async_llm(llm: object) -> bool:
    return inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(
        getattr(llm, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


# -- the worker pool: bounded daemon threads for sync LLM calls ---------------------------------

_Done = Callable[[object, "BaseException | None"], None]
"""How a call's outcome comes back: ``done(value, None)`` or ``done(None, error)``, once."""


class _RefusedError(SummarizerError):
    """The pool did not run the call (closed, queue full, every thread hung)."""


class _StaleJobError(SummarizerError):
    """The session was reset or evicted before its job's LLM call started."""


class _Call:
    __slots__ = ("deadline", "done", "fn", "state", "thread")

    def __init__(self, fn: Callable[[], object], done: _Done) -> None:
        self.fn = fn
        self.done = done
        self.state = "queued"  # -> "running" -> "done" | "expired"
        self.deadline = 0.0
        self.thread: threading.Thread | None = None


class _WorkerPool:
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
        self, *, size: int, timeout: float, max_queued: int, counters: SummarizerCounters
    ) -> None:
        self.size = size
        self.max_threads = 2 * size
        self.timeout = timeout
        self.max_queued = max_queued
        self._counters = counters
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._watch = threading.Condition(self._lock)  # the timer waits here
        self._queue: deque[_Call] = deque()
        self._delayed: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self._running: set[_Call] = set()
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

    def submit(self, fn: Callable[[], object], done: _Done, *, delay: float = 0.0) -> None:
        """Run ``fn`` on a worker (after ``delay`` seconds); its outcome goes to ``done``."""
        call = _Call(fn, done)
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
        refusal = _RefusedError("the summarizer closed before this call started")
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

    def _admit(self, call: _Call, delay: float) -> _RefusedError | None:
        if self._closed:
            return _RefusedError("the summarizer is closed")
        if len(self._queue) + len(self._delayed) >= self.max_queued:
            return _RefusedError(f"the summarizer's queue is full ({self.max_queued} calls)")
        if delay > 0:
            # Retries wait in the timer's heap, so a refusal can never burn them at once.
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), call))
            self._start_timer()
            self._watch.notify()
            return None
        return self._enqueue(call)

    def _enqueue(self, call: _Call) -> _RefusedError | None:
        if self._saturated():
            return _RefusedError(
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
            value, error = _run(call.fn)
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
                refused: list[tuple[_Call, _RefusedError]] = []
                while self._delayed and self._delayed[0][0] <= now:
                    call = heapq.heappop(self._delayed)[2]
                    refusal = self._enqueue(call)
                    if refusal is not None:
                        refused.append((call, refusal))
                if expired:
                    self._staff()  # replace hung threads while the bound allows
                    if self._saturated():
                        refusal = _RefusedError(
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
            timeout = SummarizerTimeoutError(f"the LLM call timed out after {self.timeout}s")
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
    def _deliver(call: _Call, value: object, error: BaseException | None) -> None:
        try:
            call.done(value, error)
        except Exception:  # our own handler: a bug there must not kill a pool thread
            logger.exception("summarizer: handling an LLM outcome raised")


def _run(fn: Callable[[], object]) -> tuple[object, BaseException | None]:
    try:
        return fn(), None
    except Exception as exc:
        return None, exc
    except BaseException as exc:  # SystemExit & co. from user code must not end a pool thread
        error = SummarizerError(f"the LLM call raised {type(exc).__name__}")
        error.__cause__ = exc
        return None, error


class SummarizerOptions(TypedDict, total=False):
    """Keyword options both summarizers take (see :class:`SessionSummarizer`)."""

    timeout: float
    max_retries: int
    initial_backoff: float
    max_backoff: float
    max_pending: int
    max_concurrency: int
    clock: Callable[[], float]


class _SummarizerBase:
    def __init__(
        self,
        llm: Any,
        *,
        threshold: int,
        prompt: str | None,
        max_sessions: int | None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold < 1:
            raise ConfigError(f"threshold must be >= 1, got {threshold!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {timeout!r}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries!r}")
        if max_pending < threshold:
            raise ConfigError("max_pending must be >= threshold")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        self._llm: Any = llm
        self.threshold = threshold
        self.prompt = _check_prompt(prompt or DEFAULT_PROMPT)
        self.timeout = timeout
        self.counters = SummarizerCounters()
        self._clock = clock
        # Guards the book. Held only for dict/list updates, never across I/O or an
        # await, so the async summarizer can take it from the loop at no risk.
        self._lock = threading.Lock()
        sessions = max_sessions or DEFAULT_MAX_SESSIONS
        self._book = _Book(
            threshold=threshold,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_sessions=sessions,
            max_pending=max_pending,
            counters=self.counters,
        )
        # No threads until the first call. One job per session, so the queue bound
        # only bites when evicted sessions' jobs are still waiting.
        self._pool = _WorkerPool(
            size=max_concurrency, timeout=timeout, max_queued=sessions, counters=self.counters
        )

    @property
    def hung_threads(self) -> int:
        """Worker threads still inside an LLM call that passed its ``timeout``."""
        return self._pool.hung

    def _invoke(self, job: _Job, prompt: str) -> object:
        """The LLM call itself, on a worker thread; skipped for a job gone stale while queued."""
        with self._lock:
            if not self._book.current(job):
                raise _StaleJobError("the session was reset before its summary started")
        llm = self._llm
        call = llm.invoke if hasattr(llm, "invoke") else llm
        return call(prompt)

    def _report(self, job: _Job, exc: BaseException) -> None:
        with self._lock:  # outcomes arrive on several threads at once
            if isinstance(exc, SummarizerTimeoutError):
                self.counters.timeouts += 1
            elif isinstance(exc, _RefusedError):
                self.counters.rejected += 1
        logger.warning(
            "summarizer: LLM call failed for session=%s product=%s: %s",
            job.key.session_id,
            job.key.product_id,
            _loggable(exc),
        )

    def _log_abandoned(self, abandoned: int, timeout: float | None) -> None:
        if abandoned:
            logger.warning(
                "summarizer: closed after %ss; summaries abandoned: %d (their actions "
                "stay in the store, unsummarised)",
                timeout,
                abandoned,
            )

    def _locate(self, session_id: str, product_id: str | None) -> list[SessionKey]:
        return [
            key
            for key in self._book.states
            if key.session_id == session_id and product_id in (None, key.product_id)
        ]

    def get_context(self, session_id: str, product_id: str | None = None) -> str:
        """The pending (not yet summarised) action lines of a session, numbered."""
        with self._lock:
            lines = [
                line
                for key in self._locate(session_id, product_id)
                for line in self._book.states[key].pending
            ]
        return number_lines(lines)

    def summary_of(self, session_id: str, product_id: str | None = None) -> str | None:
        """The latest summary the summarizer holds for a session."""
        with self._lock:
            for key in self._locate(session_id, product_id):
                return self._book.states[key].previous
        return None

    @property
    def active_sessions(self) -> list[str]:
        """Session ids with pending actions."""
        with self._lock:
            return sorted({k.session_id for k, s in self._book.states.items() if s.pending})


class SessionSummarizer(_SummarizerBase):
    """Rolling summaries on a bounded pool of threads (for :class:`~autoplay_base.ContextStore`).

    Args:
        llm: ``str -> str`` callable, or an object with ``invoke`` (a LangChain
            Runnable or chat model).
        threshold: pending actions that trigger a summary (default 10).
        prompt: template with ``{actions}`` and optionally ``{previous_summary}``.
        on_summary: ``(session_id, summary) -> None``, called after each summary
            (on a worker thread).
        timeout: seconds one LLM call may run once a worker has started it; a
            late answer is dropped and the call counts as a timeout (a sync call
            cannot be interrupted, so its thread counts as hung until it returns).
        max_retries, initial_backoff, max_backoff: the retry policy.
        max_sessions, max_pending: memory bounds (LRU sessions; oldest pending
            actions past the cap are dropped and counted).
        max_concurrency: worker threads running LLM calls (default 4); with hung
            ones replaced, the pool never holds more than twice that, plus one
            timer thread.
    """

    def __init__(
        self,
        llm: Callable[[str], Any] | Any,
        threshold: int = 10,
        prompt: str | None = None,
        on_summary: Callable[[str, str], None] | None = None,
        max_sessions: int | None = None,
        **options: Unpack[SummarizerOptions],
    ) -> None:
        if _is_async_llm(llm):
            raise ConfigError("llm is async: use AsyncSessionSummarizer")
        super().__init__(
            llm, threshold=threshold, prompt=prompt, max_sessions=max_sessions, **options
        )
        self.on_summary = on_summary
        self._sink: Callable[[SummaryPayload], None] | None = None
        self._closing = threading.Event()
        self._closed = False  # past close()'s deadline: late answers are dropped
        self._idle = threading.Condition(self._lock)  # notified when no job is active
        self._delivering = 0  # summaries handed to the sink/on_summary right now

    def bind(self, sink: Callable[[SummaryPayload], None]) -> None:
        """Send summaries to ``sink``; ``ContextStore(summarizer=...)`` does this."""
        if self._sink is not None:
            raise ConfigError("this summarizer is already bound to a store")
        self._sink = sink

    def add(self, payload: ActionsPayload) -> None:
        """Record a batch of actions; start a summary in the background once enough are pending."""
        key = _key(payload)
        if key is None or self._closing.is_set():
            return
        lines = action_lines(payload.actions)
        with self._lock:
            job = self._book.record(key, lines, self._clock())
        if job is not None:
            self._submit(job)

    def observe_summary(self, payload: SummaryPayload) -> None:
        """Adopt a summary that arrived from elsewhere (the connector) as the rolling one."""
        key = _key(payload)
        if key is not None:
            with self._lock:
                self._book.observe(key, payload.summary, payload.replaces)

    def reset(self, session_id: str, product_id: str | None = None) -> None:
        """Forget a session's pending actions and summary (a running call's result is dropped)."""
        with self._lock:
            for key in self._locate(session_id, product_id):
                self._book.reset(key)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the summaries already started (and any they chain into) are done.

        Returns ``True`` if they are, ``False`` if ``timeout`` seconds passed first.
        ``None`` waits as long as it takes: every call has its ``timeout`` and
        retries are bounded, so that ends once new actions stop arriving.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._wait_idle(deadline)

    def close(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Stop retrying, wait up to ``timeout`` seconds for calls in flight, abandon the rest.

        Jobs not started yet and jobs waiting to retry are abandoned at once;
        every abandoned job is counted in ``counters.abandoned`` and logged once.
        A call abandoned while running finishes on its daemon thread and its
        answer is dropped. ``None`` waits without a deadline.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        before = self.counters.abandoned
        self._closing.set()
        self._pool.close()
        self._wait_idle(deadline)
        with self._lock:
            self._closed = True
            self.counters.abandoned += self._book.active
        self._log_abandoned(self.counters.abandoned - before, timeout)
        self._pool.join(deadline)

    def _wait_idle(self, deadline: float | None) -> bool:
        with self._idle:
            while self._book.active or self._delivering:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _ended(self) -> None:
        # Lock held, after the book ended a job or a summary was delivered.
        if not self._book.active and not self._delivering:
            self._idle.notify_all()

    def _submit(self, job: _Job, delay: float = 0.0) -> None:
        prompt = _prompt_for(self.prompt, job)
        self._pool.submit(partial(self._invoke, job, prompt), partial(self._done, job), delay=delay)

    def _done(self, job: _Job, value: object, error: BaseException | None) -> None:
        """A call's outcome, on a worker thread (a timeout: on the timer thread)."""
        if error is None:
            try:
                summary = _as_text(value)
            except SummarizerError as exc:
                error = exc
        if error is not None:
            self._failed(job, error)
            return
        with self._lock:
            if self._closed:  # already counted as abandoned
                return
            current = self._book.current(job)
            following = self._book.finished(job, summary, self._clock())
            self._delivering += 1  # flush() waits for the delivery too
        try:
            if current:
                self._emit(job, summary)
            if following is not None:
                self._submit(following)
        finally:
            with self._lock:
                self._delivering -= 1
                self._ended()

    def _failed(self, job: _Job, error: BaseException) -> None:
        stale = isinstance(error, _StaleJobError)
        closing = self._closing.is_set()
        # A call refused because close() began is not an LLM failure: only abandoned.
        reported = not stale and not (closing and isinstance(error, _RefusedError))
        if reported:
            self._report(job, error)
        delay = None
        with self._lock:
            if self._closed:  # close() already counted it as abandoned
                return
            if stale or closing:  # no retry: the job ends here
                self._book.dropped(job)
                self.counters.failures += reported
                self.counters.abandoned += not stale
            else:
                delay = self._book.failed(job, self._clock())
            self._ended()
        if delay is not None:
            self._submit(job, delay)

    def _emit(self, job: _Job, summary: str) -> None:
        try:
            if self._sink is not None:
                self._sink(_summary_payload(job, summary, self._clock()))
            if self.on_summary is not None:
                self.on_summary(job.key.session_id, summary)
        except Exception:
            logger.exception("summarizer: delivering a summary raised")


def _resolve(future: asyncio.Future[object], value: object, error: BaseException | None) -> None:
    if future.done():  # the waiting task was cancelled (reset, aclose)
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


class AsyncSessionSummarizer(_SummarizerBase):
    """Rolling summaries as asyncio tasks (for :class:`~autoplay_base.AsyncContextStore`).

    Same options as :class:`SessionSummarizer`. ``llm`` may be an async callable,
    an object with ``ainvoke``, or a plain sync callable: that one runs on the
    summarizer's own bounded worker threads (as in :class:`SessionSummarizer`),
    never on the loop's default executor, so a hung call cannot starve
    ``to_thread``, ``getaddrinfo`` or ``asyncio.run()``'s shutdown. ``add`` only
    records and schedules: it returns at once. ``flush()`` waits for started
    summaries; ``aclose()`` cancels them.
    """

    def __init__(
        self,
        llm: Callable[[str], Awaitable[Any]] | Callable[[str], Any] | Any,
        threshold: int = 10,
        prompt: str | None = None,
        on_summary: Callable[[str, str], Awaitable[None]] | None = None,
        max_sessions: int | None = None,
        **options: Unpack[SummarizerOptions],
    ) -> None:
        super().__init__(
            llm, threshold=threshold, prompt=prompt, max_sessions=max_sessions, **options
        )
        self.on_summary = on_summary
        self._sink: Callable[[SummaryPayload], Awaitable[None]] | None = None
        self._tasks: dict[SessionKey, asyncio.Task[None]] = {}
        self._closing = False

    def bind(self, sink: Callable[[SummaryPayload], Awaitable[None]]) -> None:
        """Send summaries to ``sink``; ``AsyncContextStore(summarizer=...)`` does this."""
        if self._sink is not None:
            raise ConfigError("this summarizer is already bound to a store")
        self._sink = sink

    async def add(self, payload: ActionsPayload) -> None:
        """Record a batch of actions; start a summary task once enough are pending."""
        key = _key(payload)
        if key is None or self._closing:
            return
        lines = action_lines(payload.actions)
        with self._lock:
            job = self._book.record(key, lines, self._clock())
        if job is not None:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(job))

    def observe_summary(self, payload: SummaryPayload) -> None:
        """Adopt a summary that arrived from elsewhere (the connector) as the rolling one."""
        key = _key(payload)
        if key is not None:
            with self._lock:
                self._book.observe(key, payload.summary, payload.replaces)

    def reset(self, session_id: str, product_id: str | None = None) -> None:
        """Forget a session's pending actions and summary, cancelling its running summary."""
        with self._lock:
            keys = self._locate(session_id, product_id)
            for key in keys:
                self._book.reset(key)
        for key in keys:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the summaries already started (and any they chain into) are done.

        Returns ``True`` if they are, ``False`` if ``timeout`` seconds passed first
        (nothing is cancelled then). ``None`` waits as long as it takes: every
        call has its ``timeout`` and retries are bounded.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(list(self._tasks.values()), timeout=remaining)
        return True

    async def aclose(self, timeout: float | None = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Cancel summaries in flight and wait up to ``timeout`` seconds for them to unwind.

        Each cancelled summary is counted in ``counters.abandoned`` and logged; a
        sync LLM call already running finishes on its (daemon) thread, unawaited.
        """
        self._closing = True
        self._pool.close()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.counters.abandoned += len(tasks)
        self._log_abandoned(len(tasks), timeout)

    async def _call(self, job: _Job) -> str:
        prompt = _prompt_for(self.prompt, job)
        llm = self._llm
        if hasattr(llm, "ainvoke"):
            result = llm.ainvoke(prompt)
        elif _is_async_llm(llm):
            result = llm(prompt)
        else:
            # A sync LLM would block the loop; our pool enforces its timeout.
            return _as_text(await self._on_worker(job, prompt))
        try:
            return _as_text(await asyncio.wait_for(result, self.timeout))
        except asyncio.TimeoutError:
            raise SummarizerTimeoutError(f"the LLM call timed out after {self.timeout}s") from None

    def _on_worker(self, job: _Job, prompt: str) -> asyncio.Future[object]:
        """Run a sync LLM call on the pool; its outcome comes back on the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()

        def done(value: object, error: BaseException | None) -> None:
            # RuntimeError: the loop is closed, so nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, value, error)

        self._pool.submit(partial(self._invoke, job, prompt), done)
        return future

    async def _run(self, first: _Job) -> None:
        job: _Job | None = first
        try:
            while job is not None:
                try:
                    summary = await self._call(job)
                except _StaleJobError:
                    return
                except Exception as exc:
                    self._report(job, exc)
                    with self._lock:
                        delay = self._book.failed(job, self._clock())
                    if delay is None:
                        job = None
                        return
                    await asyncio.sleep(delay)
                    continue
                with self._lock:
                    current = self._book.current(job)
                    following = self._book.finished(job, summary, self._clock())
                done, job = job, following
                if current:
                    await self._emit(done, summary)
        finally:
            if job is not None:  # cancelled or stale: the job ends without an answer
                with self._lock:
                    self._book.dropped(job)
            if self._tasks.get(first.key) is asyncio.current_task():
                del self._tasks[first.key]

    async def _emit(self, job: _Job, summary: str) -> None:
        try:
            if self._sink is not None:
                await self._sink(_summary_payload(job, summary, self._clock()))
            if self.on_summary is not None:
                await self.on_summary(job.key.session_id, summary)
        except Exception:
            logger.exception("summarizer: delivering a summary raised")
