"""A turn's runs that start without their parent's config, adopted through the context.

A run started without its parent's config has no callbacks and no parent id. That is
what happens to the model ``create_agent`` calls (it passes no config) in an async
graph on Python 3.10: LangGraph hands a node's config down through the context only
with ``asyncio.create_task(context=)``, which is 3.11+. The tracking handler would
never see those calls, or see them as turns of their own.

So the handler marks the context its root run started in with a :class:`ContextTurn`
(through LangChain's configure hook, which adds it to every callback manager
configured in that context and the tasks started from it). The stand-in forwards to
the handler what the handler cannot see itself: a model or tool run with no parent,
as a child of the open root, and the runs under it. (Where the handler *is*
attached to such a run, by :func:`~langchain_autoplay.tracking.tracking_session`,
it asks :func:`current` for the open root itself.) Everything the handler already
has (its own run ids) it leaves alone, so nothing is counted twice where the config
does reach the run (3.11+). Once the root ended, or was dropped from the handler's
bounded map, the stand-in adopts nothing more: a mark left behind in a context whose
root never ended is inert.

Only where it is needed (:data:`NEEDED`, Python < 3.11): on 3.11+ LangGraph hands every
node its config through the context, so no run of an agent starts without its parent,
and the stand-in would only cost (it sits in every callback manager of the turn,
about 300k instructions per ``create_agent`` turn, three times the handler's own).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook

__all__ = ["NEEDED", "ContextTurn", "current", "enter", "leave"]

NEEDED = sys.version_info < (3, 11)
"""Whether roots mark their context: LangGraph's own test (``create_task(context=)``)."""


class ContextTurn(BaseCallbackHandler):
    """Forward the orphan runs of one open root (and the runs under them) to ``owner``.

    ``is_open(run_id)`` says whether ``owner`` holds that run open; ``limit`` bounds
    the adopted run ids remembered (runs that never end cannot leak).
    """

    run_inline = True
    """Called in the run's own thread or task, in order, like the owner."""

    def __init__(
        self,
        owner: BaseCallbackHandler,
        root_id: UUID,
        is_open: Callable[[UUID], bool],
        limit: int,
    ) -> None:
        self.owner = owner
        self.root_id = root_id
        self.is_open = is_open
        self.limit = limit
        self.adopted: dict[UUID, None] = {}

    def _start(  # noqa: PLR0917 - one private call shape for four hooks
        self,
        hook: str,
        orphans: bool,
        args: tuple[Any, ...],
        run_id: UUID,
        parent_run_id: UUID | None,
        kwargs: dict[str, Any],
    ) -> None:
        if self.is_open(run_id):
            return  # the owner is attached to this run itself (it comes first in the list)
        if parent_run_id is None:
            if not orphans or not self.is_open(self.root_id):
                return
            parent_run_id = self.root_id
        elif parent_run_id not in self.adopted:
            return
        self.adopted[run_id] = None
        if len(self.adopted) > self.limit:
            self.adopted.pop(next(iter(self.adopted)), None)
        getattr(self.owner, hook)(*args, run_id=run_id, parent_run_id=parent_run_id, **kwargs)

    def _end(self, hook: str, value: Any, run_id: UUID, kwargs: dict[str, Any]) -> None:
        if self.adopted.pop(run_id, 0) is None:
            getattr(self.owner, hook)(value, run_id=run_id, **kwargs)

    # -- starts: a model or tool with no parent is adopted; a chain only under one ------------
    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """An orphan chat model call becomes the open turn's."""
        self._start(
            "on_chat_model_start", True, (serialized, messages), run_id, parent_run_id, kwargs
        )

    def on_llm_start(
        self,
        serialized: Any,
        prompts: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """An orphan LLM call becomes the open turn's."""
        self._start("on_llm_start", True, (serialized, prompts), run_id, parent_run_id, kwargs)

    def on_tool_start(
        self,
        serialized: Any,
        input_str: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """An orphan tool call becomes the open turn's."""
        self._start("on_tool_start", True, (serialized, input_str), run_id, parent_run_id, kwargs)

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A chain under an adopted run (a chain with no parent is a turn of its own)."""
        self._start("on_chain_start", False, (serialized, inputs), run_id, parent_run_id, kwargs)

    # -- ends: only of adopted runs ------------------------------------------------------------
    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted model call ended."""
        self._end("on_llm_end", response, run_id, kwargs)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted model call failed."""
        self._end("on_llm_error", error, run_id, kwargs)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted tool call ended."""
        self._end("on_tool_end", output, run_id, kwargs)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted tool call failed."""
        self._end("on_tool_error", error, run_id, kwargs)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted chain ended."""
        self._end("on_chain_end", outputs, run_id, kwargs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """An adopted chain failed."""
        self._end("on_chain_error", error, run_id, kwargs)


_CURRENT: ContextVar[ContextTurn | None] = ContextVar("autoplay_context_turn", default=None)
register_configure_hook(_CURRENT, inheritable=True)


def current() -> ContextTurn | None:
    """The turn the current context is marked with, if any."""
    return _CURRENT.get()


def enter(turn: ContextTurn) -> Token[ContextTurn | None]:
    """Mark the current context with ``turn`` (undo with :func:`leave`)."""
    return _CURRENT.set(turn)


def leave(mark: Token[ContextTurn | None]) -> None:
    """Undo :func:`enter`; nothing when the root ends in another context than it began."""
    with contextlib.suppress(ValueError):  # the marked context went with its task/thread
        _CURRENT.reset(mark)
