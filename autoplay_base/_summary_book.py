"""The summarizers' pure core: per-session bookkeeping, prompts, LLM answers, no I/O.

:class:`Book` decides who is pending, who runs, what to retry and what a reset
drops; the functions build prompts and turn an LLM's answer into text. Both
summarizers in :mod:`autoplay_base.summarizer` drive it under their own lock.
"""

from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from autoplay_base._counters import Counters
from autoplay_base._reconnect import Backoff
from autoplay_base.backends.base import SessionKey
from autoplay_base.errors import ConfigError, SummarizerError
from autoplay_base.events import ActionsPayload, SummaryPayload
from autoplay_base.formatting import number_lines

__all__ = [
    "Book",
    "Job",
    "SessionState",
    "SummarizerCounters",
    "as_text",
    "check_prompt",
    "is_async_llm",
    "loggable",
    "payload_key",
    "prompt_for",
    "summary_payload",
]

_NO_PREVIOUS_SUMMARY = "(none yet)"


class SummarizerCounters(Counters):
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
    abandoned: int
    failures: int
    late_results: int
    pending_trimmed: int
    rejected: int
    retries: int
    sessions_evicted: int
    summaries: int
    timeouts: int


class SessionState:
    __slots__ = ("failures", "pending", "previous", "retry_at", "running")

    def __init__(self) -> None:
        self.previous: str | None = None
        self.pending: list[str] = []
        self.running = False
        self.failures = 0
        self.retry_at = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    key: SessionKey
    previous: str | None
    lines: tuple[str, ...]
    # The state the job was started for: after a reset (or an LRU eviction) the
    # session gets a new state, and the old job's answer must not land on it.
    state: SessionState = field(compare=False, repr=False)


class Book:
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
        self.states: OrderedDict[SessionKey, SessionState] = OrderedDict()
        self.active = 0

    def _state(self, key: SessionKey) -> SessionState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = SessionState()
            if len(self.states) > self.max_sessions:
                self.states.popitem(last=False)
                self.counters.sessions_evicted += 1
        else:
            self.states.move_to_end(key)
        return state

    def _maybe_start(self, key: SessionKey, state: SessionState, now: float) -> Job | None:
        if state.running or len(state.pending) < self.threshold or now < state.retry_at:
            return None
        state.running = True
        self.active += 1
        return Job(key, state.previous, tuple(state.pending), state)

    def current(self, job: Job) -> bool:
        """Whether ``job`` still belongs to its session (not reset or evicted since)."""
        return self.states.get(job.key) is job.state

    def record(self, key: SessionKey, lines: list[str], now: float) -> Job | None:
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

    def finished(self, job: Job, summary: str, now: float) -> Job | None:
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

    def failed(self, job: Job, now: float) -> float | None:
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

    def dropped(self, job: Job) -> None:
        """``job`` ends without an answer (stale, cancelled, abandoned); its actions stay."""
        self.active -= 1
        if self.current(job):
            job.state.running = False

    def reset(self, key: SessionKey) -> None:
        self.states.pop(key, None)


def prompt_for(template: str, job: Job) -> str:
    return template.format(
        actions=number_lines(job.lines), previous_summary=job.previous or _NO_PREVIOUS_SUMMARY
    )


def as_text(result: object) -> str:
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


def loggable(exc: BaseException) -> str:
    """An error's type and text, safe for a log line: credentials masked, length capped."""
    text = str(exc)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > _MAX_LOGGED_ERROR:
        text = text[:_MAX_LOGGED_ERROR] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_prompt(prompt: str) -> str:
    if "{actions}" not in prompt:
        raise ConfigError("a summarizer prompt must contain the {actions} placeholder")
    try:
        prompt.format(actions="", previous_summary="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"the summarizer prompt has an unknown placeholder: {exc}") from None
    return prompt


def payload_key(payload: ActionsPayload | SummaryPayload) -> SessionKey | None:
    if not payload.session_id:
        return None
    return SessionKey(payload.product_id, payload.session_id)


def summary_payload(job: Job, summary: str, now: float) -> SummaryPayload:
    return SummaryPayload(
        product_id=job.key.product_id,
        session_id=job.key.session_id,
        summary=summary,
        replaces=len(job.lines),
        forwarded_at=now,
    )


def is_async_llm(llm: object) -> bool:
    return inspect.iscoroutinefunction(llm) or inspect.iscoroutinefunction(
        getattr(llm, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
