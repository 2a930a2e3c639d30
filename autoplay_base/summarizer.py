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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from typing_extensions import Unpack

from autoplay_base.backends.base import SessionKey
from autoplay_base.errors import ConfigError, SummarizerError
from autoplay_base.events import ActionsPayload, SummaryPayload
from autoplay_base.formatting import action_lines, number_lines

__all__ = [
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
_NO_PREVIOUS_SUMMARY = "(none yet)"


class SummarizerCounters:
    """What the summarizer did; all counters only grow."""

    __slots__ = (
        "failures",
        "pending_trimmed",
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

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__}


# -- the pure core: who is pending, who is running, what to retry ------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    key: SessionKey
    previous: str | None
    lines: tuple[str, ...]


class _SessionState:
    __slots__ = ("failures", "pending", "previous", "retry_at", "running")

    def __init__(self) -> None:
        self.previous: str | None = None
        self.pending: list[str] = []
        self.running = False
        self.failures = 0
        self.retry_at = 0.0


class _Book:
    """Per-session bookkeeping; no I/O, no clock of its own, guarded by the caller."""

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
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.counters = counters
        self.states: OrderedDict[SessionKey, _SessionState] = OrderedDict()

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
        return _Job(key, state.previous, tuple(state.pending))

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
        state = self.states.get(job.key)
        if state is None:  # reset while the LLM was thinking: drop the result's bookkeeping
            return None
        state.running = False
        state.failures = 0
        state.previous = summary
        del state.pending[: len(job.lines)]
        self.counters.summaries += 1
        return self._maybe_start(job.key, state, now)

    def failed(self, job: _Job, now: float) -> float | None:
        """The delay before retrying ``job``, or ``None`` to give up for now."""
        state = self.states.get(job.key)
        self.counters.failures += 1
        if state is None:
            return None
        state.failures += 1
        if state.failures > self.max_retries:
            state.running = False
            state.failures = 0
            state.retry_at = now + self.max_backoff
            return None
        self.counters.retries += 1
        delay: float = self.initial_backoff * 2 ** (state.failures - 1)
        return min(delay, self.max_backoff)

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


class SummarizerOptions(TypedDict, total=False):
    """Keyword options both summarizers take (see :class:`SessionSummarizer`)."""

    timeout: float
    max_retries: int
    initial_backoff: float
    max_backoff: float
    max_pending: int
    clock: Callable[[], float]


class _SummarizerBase:
    def __init__(
        self,
        *,
        threshold: int,
        prompt: str | None,
        max_sessions: int | None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_pending: int = DEFAULT_MAX_PENDING,
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
        self.threshold = threshold
        self.prompt = _check_prompt(prompt or DEFAULT_PROMPT)
        self.timeout = timeout
        self.counters = SummarizerCounters()
        self._clock = clock
        # Guards the book. Held only for dict/list updates, never across I/O or an
        # await, so the async summarizer can take it from the loop at no risk.
        self._lock = threading.Lock()
        self._book = _Book(
            threshold=threshold,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_sessions=max_sessions or DEFAULT_MAX_SESSIONS,
            max_pending=max_pending,
            counters=self.counters,
        )

    def _report(self, job: _Job, exc: BaseException) -> None:
        if isinstance(exc, SummarizerError) and "timed out" in str(exc):
            self.counters.timeouts += 1
        logger.warning(
            "summarizer: LLM call failed for session=%s product=%s: %s",
            job.key.session_id,
            job.key.product_id,
            exc,
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
    """Rolling summaries on worker threads (for :class:`~autoplay_base.ContextStore`).

    Args:
        llm: ``str -> str`` callable, or an object with ``invoke`` (a LangChain
            Runnable or chat model).
        threshold: pending actions that trigger a summary (default 10).
        prompt: template with ``{actions}`` and optionally ``{previous_summary}``.
        on_summary: ``(session_id, summary) -> None``, called after each summary.
        timeout: seconds one LLM call may take; a late answer is discarded and
            counted as a failure (a sync call cannot be interrupted, so it
            finishes on its own thread).
        max_retries, initial_backoff, max_backoff: the retry policy.
        max_sessions, max_pending: memory bounds (LRU sessions; oldest pending
            actions past the cap are dropped and counted).
        max_concurrency: LLM calls in flight across sessions.
    """

    def __init__(
        self,
        llm: Callable[[str], Any] | Any,
        threshold: int = 10,
        prompt: str | None = None,
        on_summary: Callable[[str, str], None] | None = None,
        max_sessions: int | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **options: Unpack[SummarizerOptions],
    ) -> None:
        super().__init__(threshold=threshold, prompt=prompt, max_sessions=max_sessions, **options)
        if inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(
            getattr(llm, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            raise ConfigError("llm is async: use AsyncSessionSummarizer")
        self._llm = llm
        self.on_summary = on_summary
        self._sink: Callable[[SummaryPayload], None] | None = None
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        self._closing = threading.Event()
        # Daemon threads, not an executor: an executor's threads are joined when the
        # interpreter exits, so one LLM call that never returns would hang the exit.
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._running: set[threading.Thread] = set()

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
            self._start(job)

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

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the summaries already started (and any they chain into) are done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                running = list(self._running)
            if not running:
                return
            for thread in running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                thread.join(remaining)

    def close(self, timeout: float | None = None) -> None:
        """Stop retrying and wait for calls in flight (up to ``timeout``)."""
        self._closing.set()
        self.flush(timeout)

    def _start(self, job: _Job) -> None:
        thread = threading.Thread(
            target=self._run, args=(job,), name="autoplay-summarizer", daemon=True
        )
        with self._lock:
            self._running.add(thread)
        thread.start()

    def _call(self, prompt: str) -> str:
        """One LLM call on its own daemon thread, abandoned (and counted) after ``timeout``."""
        llm = self._llm
        call = llm.invoke if hasattr(llm, "invoke") else llm
        outcome: list[Any] = []
        done = threading.Event()

        def invoke() -> None:
            try:
                outcome.append(("ok", call(prompt)))
            except BaseException as exc:  # handed to the waiting thread below
                outcome.append(("error", exc))
            done.set()

        threading.Thread(target=invoke, name="autoplay-llm", daemon=True).start()
        if not done.wait(self.timeout):
            raise SummarizerError(f"the LLM call timed out after {self.timeout}s")
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return _as_text(value)

    def _run(self, first: _Job) -> None:
        try:
            with self._slots:
                self._run_chain(first)
        finally:
            with self._lock:
                self._running.discard(threading.current_thread())

    def _run_chain(self, first: _Job) -> None:
        job: _Job | None = first
        while job is not None and not self._closing.is_set():
            try:
                summary = self._call(_prompt_for(self.prompt, job))
            except Exception as exc:
                self._report(job, exc)
                with self._lock:
                    delay = self._book.failed(job, self._clock())
                if delay is None or self._closing.wait(delay):
                    return
                continue
            with self._lock:
                following = self._book.finished(job, summary, self._clock())
            self._emit(job, summary)
            job = following

    def _emit(self, job: _Job, summary: str) -> None:
        try:
            if self._sink is not None:
                self._sink(_summary_payload(job, summary, self._clock()))
            if self.on_summary is not None:
                self.on_summary(job.key.session_id, summary)
        except Exception:
            logger.exception("summarizer: delivering a summary raised")


class AsyncSessionSummarizer(_SummarizerBase):
    """Rolling summaries as asyncio tasks (for :class:`~autoplay_base.AsyncContextStore`).

    Same options as :class:`SessionSummarizer`. ``llm`` may be an async callable,
    an object with ``ainvoke``, or a plain sync callable (run on a worker thread
    so it cannot block the loop). ``add`` only records and schedules: it returns
    at once. ``flush()`` waits for started summaries; ``aclose()`` cancels them.
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
        super().__init__(threshold=threshold, prompt=prompt, max_sessions=max_sessions, **options)
        self._llm = llm
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

    async def flush(self) -> None:
        """Wait until the summaries already started (and any they chain into) are done."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel summaries in flight and wait for them to unwind."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _call(self, prompt: str) -> str:
        llm = self._llm
        if hasattr(llm, "ainvoke"):
            result = llm.ainvoke(prompt)
        elif inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(
            getattr(llm, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            result = llm(prompt)
        else:
            # A sync LLM would block the loop for seconds; off the hot path, a thread is right.
            result = asyncio.to_thread(llm, prompt)
        try:
            return _as_text(await asyncio.wait_for(result, self.timeout))
        except asyncio.TimeoutError:
            raise SummarizerError(f"the LLM call timed out after {self.timeout}s") from None

    async def _run(self, first: _Job) -> None:
        job: _Job | None = first
        try:
            while job is not None:
                try:
                    summary = await self._call(_prompt_for(self.prompt, job))
                except Exception as exc:
                    self._report(job, exc)
                    with self._lock:
                        delay = self._book.failed(job, self._clock())
                    if delay is None:
                        return
                    await asyncio.sleep(delay)
                    continue
                with self._lock:
                    following = self._book.finished(job, summary, self._clock())
                await self._emit(job, summary)
                job = following
        finally:
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
