"""``Run``: one live agent run's emit helpers, cancellation and ids (shared by both twins).

Every helper appends to the run's bounded :class:`~._state.RunBuffer` and wakes
its sink: O(1), callable from any thread, never waiting on a network.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from typing import Any

from autoplay_base.agent_stream import _events as ev
from autoplay_base.agent_stream._errors import RunCancelledError
from autoplay_base.agent_stream._state import Pending, RunBuffer
from autoplay_base.agent_stream._transport import RunRef, Sink
from autoplay_base.errors import ConfigError

__all__ = ["Run"]

_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
        self._on_late: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return (
            f"Run(run_id={self.run_id!r}, session_id={self.session_id!r}, "
            f"product_id={self.product_id!r})"
        )

    # -- emit ---------------------------------------------------------------------------------
    def _emit(self, type_: str, data: dict[str, Any]) -> bool:
        if not self._buffer.push(type_, self._clock(), data):
            if self._buffer.ended:
                self._on_late()
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
