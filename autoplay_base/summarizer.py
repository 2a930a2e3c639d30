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
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypedDict, TypeVar

from typing_extensions import Unpack

from autoplay_base._summary_book import (
    Book,
    Job,
    SummarizerCounters,
    as_text,
    check_prompt,
    is_async_llm,
    loggable,
    payload_key,
    prompt_for,
    summary_payload,
)
from autoplay_base._workers import RefusedError, WorkerPool, timeout_error
from autoplay_base.backends.base import SessionKey
from autoplay_base.errors import ConfigError, SummarizerError, SummarizerTimeoutError
from autoplay_base.events import ActionsPayload, SummaryPayload
from autoplay_base.formatting import action_lines, number_lines
from autoplay_base.metrics import MetricsHooks

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

# The summarizer's own retry policy: named apart from the connector client's
# (``_reconnect.DEFAULT_INITIAL_BACKOFF`` / ``DEFAULT_MAX_BACKOFF``, 1 s / 30 s), which
# is another policy with another cap.
DEFAULT_TIMEOUT_SECONDS = 30.0
"""Seconds one LLM call may run."""
DEFAULT_MAX_RETRIES = 3
"""Retries of a failed summary before the session waits ``max_backoff``."""
DEFAULT_SUMMARY_INITIAL_BACKOFF = 1.0
"""Seconds before the first retry of a failed summary (doubling after each failure)."""
DEFAULT_SUMMARY_MAX_BACKOFF = 60.0
"""Cap on a retry's delay, and how long a session waits once its retries are spent."""
DEFAULT_SUMMARY_MAX_SESSIONS = 100_000
"""Sessions the summarizer tracks (least recently active evicted first)."""
DEFAULT_MAX_PENDING = 200
"""Pending action lines kept per session (the oldest past it are dropped, counted)."""
DEFAULT_MAX_CONCURRENCY = 4
"""Worker threads running sync LLM calls."""
DEFAULT_CLOSE_TIMEOUT = 5.0
"""Seconds ``close()``/``aclose()`` wait for calls in flight before abandoning them."""


class _StaleJobError(SummarizerError):
    """The session was reset or evicted before its job's LLM call started."""


class SummarizerOptions(TypedDict, total=False):
    """Keyword options both summarizers take (see :class:`SessionSummarizer`)."""

    timeout: float
    max_retries: int
    initial_backoff: float
    max_backoff: float
    max_pending: int
    max_concurrency: int
    clock: Callable[[], float]
    metrics: object | None


Sink = TypeVar(
    "Sink", Callable[[SummaryPayload], None], Callable[[SummaryPayload], Awaitable[None]]
)
"""Where a summarizer sends its summaries: a store's sync or async writer."""


class _SummarizerBase(Generic[Sink]):
    """What both summarizers share: options, the book, the pool, the reads and the wiring."""

    def __init__(
        self,
        llm: Any,
        *,
        threshold: int,
        prompt: str | None,
        max_sessions: int | None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_SUMMARY_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_SUMMARY_MAX_BACKOFF,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        metrics: object | None = None,
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
        self.prompt = check_prompt(prompt or DEFAULT_PROMPT)
        self.timeout = timeout
        self.counters = SummarizerCounters()
        self._metrics = MetricsHooks.of(metrics)  # summaries delivered, LLM calls failed
        self._clock = clock
        self._sink: Sink | None = None
        # An Event, not a bool: the sync close() sets it while worker threads read it.
        self._closing = threading.Event()
        # Guards the book. Held only for dict/list updates, never across I/O or an
        # await, so the async summarizer can take it from the loop at no risk.
        self._lock = threading.Lock()
        sessions = max_sessions or DEFAULT_SUMMARY_MAX_SESSIONS
        self._book = Book(
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
        self._pool = WorkerPool(
            size=max_concurrency, timeout=timeout, max_queued=sessions, counters=self.counters
        )

    def bind(self, sink: Sink) -> None:
        """Send summaries to ``sink``; the store's constructor (``summarizer=...``) does this."""
        if self._sink is not None:
            raise ConfigError("this summarizer is already bound to a store")
        self._sink = sink

    def observe_summary(self, payload: SummaryPayload) -> None:
        """Adopt a summary that arrived from elsewhere (the connector) as the rolling one."""
        key = payload_key(payload)
        if key is not None:
            with self._lock:
                self._book.observe(key, payload.summary, payload.replaces)

    def _record(self, payload: ActionsPayload) -> Job | None:
        """Book a batch of actions; the job to start now, if the batch completes one."""
        key = payload_key(payload)
        if key is None or self._closing.is_set():
            return None
        lines = action_lines(payload.actions)
        with self._lock:
            return self._book.record(key, lines, self._clock())

    @property
    def metrics_hook_errors(self) -> int:
        """Calls of the ``metrics=`` hook that raised (each swallowed; logged once per method)."""
        return self._metrics.errors

    @property
    def hung_threads(self) -> int:
        """Worker threads still inside an LLM call that passed its ``timeout``."""
        return self._pool.hung

    def _invoke(self, job: Job, prompt: str) -> object:
        """The LLM call itself, on a worker thread; skipped for a job gone stale while queued."""
        with self._lock:
            if not self._book.current(job):
                raise _StaleJobError("the session was reset before its summary started")
        llm = self._llm
        call = llm.invoke if hasattr(llm, "invoke") else llm
        return call(prompt)

    def _report(self, job: Job, exc: BaseException) -> None:
        with self._lock:  # outcomes arrive on several threads at once
            if isinstance(exc, SummarizerTimeoutError):
                self.counters.timeouts += 1
            elif isinstance(exc, RefusedError):
                self.counters.rejected += 1
        if self._metrics:
            self._metrics.emit("record_counter", "summary_failures", 1)
        logger.warning(
            "summarizer: LLM call failed for session=%r product=%r: %s",
            job.key.session_id,
            job.key.product_id,
            loggable(exc),
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


class SessionSummarizer(_SummarizerBase[Callable[[SummaryPayload], None]]):
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
        if is_async_llm(llm):
            raise ConfigError("llm is async: use AsyncSessionSummarizer")
        super().__init__(
            llm, threshold=threshold, prompt=prompt, max_sessions=max_sessions, **options
        )
        self.on_summary = on_summary
        self._closed = False  # past close()'s deadline: late answers are dropped
        self._idle = threading.Condition(self._lock)  # notified when no job is active
        self._delivering = 0  # summaries handed to the sink/on_summary right now

    def add(self, payload: ActionsPayload) -> None:
        """Record a batch of actions; start a summary in the background once enough are pending."""
        job = self._record(payload)
        if job is not None:
            self._submit(job)

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

    def _submit(self, job: Job, delay: float = 0.0) -> None:
        prompt = prompt_for(self.prompt, job)
        self._pool.submit(partial(self._invoke, job, prompt), partial(self._done, job), delay=delay)

    def _done(self, job: Job, value: object, error: BaseException | None) -> None:
        """A call's outcome, on a worker thread (a timeout: on the timer thread)."""
        if error is None:
            try:
                summary = as_text(value)
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

    def _failed(self, job: Job, error: BaseException) -> None:
        stale = isinstance(error, _StaleJobError)
        closing = self._closing.is_set()
        # A call refused because close() began is not an LLM failure: only abandoned.
        reported = not stale and not (closing and isinstance(error, RefusedError))
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

    def _emit(self, job: Job, summary: str) -> None:
        try:
            if self._sink is not None:
                self._sink(summary_payload(job, summary, self._clock()))
            if self.on_summary is not None:
                self.on_summary(job.key.session_id, summary)
            if self._metrics:
                self._metrics.emit("record_counter", "summaries", 1)
        except Exception:
            logger.exception("summarizer: delivering a summary raised")


def _resolve(future: asyncio.Future[object], value: object, error: BaseException | None) -> None:
    if future.done():  # the waiting task was cancelled (reset, aclose)
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


class AsyncSessionSummarizer(_SummarizerBase[Callable[[SummaryPayload], Awaitable[None]]]):
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
        self._tasks: dict[SessionKey, asyncio.Task[None]] = {}

    async def add(self, payload: ActionsPayload) -> None:
        """Record a batch of actions; start a summary task once enough are pending."""
        job = self._record(payload)
        if job is not None:
            self._tasks[job.key] = asyncio.get_running_loop().create_task(self._run(job))

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
        self._closing.set()
        self._pool.close()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self.counters.abandoned += len(tasks)
        self._log_abandoned(len(tasks), timeout)

    async def _call(self, job: Job) -> str:
        prompt = prompt_for(self.prompt, job)
        llm = self._llm
        if hasattr(llm, "ainvoke"):
            result = llm.ainvoke(prompt)
        elif is_async_llm(llm):
            result = llm(prompt)
        else:
            # A sync LLM would block the loop; our pool enforces its timeout.
            return as_text(await self._on_worker(job, prompt))
        try:
            return as_text(await asyncio.wait_for(result, self.timeout))
        except asyncio.TimeoutError:
            raise timeout_error(self.timeout) from None

    def _on_worker(self, job: Job, prompt: str) -> asyncio.Future[object]:
        """Run a sync LLM call on the pool; its outcome comes back on the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()

        def done(value: object, error: BaseException | None) -> None:
            # RuntimeError: the loop is closed, so nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, value, error)

        self._pool.submit(partial(self._invoke, job, prompt), done)
        return future

    async def _run(self, first: Job) -> None:
        job: Job | None = first
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
                if self._closing.is_set():
                    # aclose() abandoned it. An LLM that swallows the cancellation still
                    # answers, and from 3.12 on ``wait_for`` then returns that answer
                    # instead of raising: it is dropped like any abandoned one.
                    return
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

    async def _emit(self, job: Job, summary: str) -> None:
        try:
            if self._sink is not None:
                await self._sink(summary_payload(job, summary, self._clock()))
            if self.on_summary is not None:
                await self.on_summary(job.key.session_id, summary)
            if self._metrics:
                self._metrics.emit("record_counter", "summaries", 1)
        except Exception:
            logger.exception("summarizer: delivering a summary raised")
