"""A scripted streaming chat model for the run stream tests: text, tool-call chunks, usage.

Each call of the model plays the next script entry: a list of ``AIMessageChunk``s,
yielded one by one through ``_stream`` / ``_astream`` (so LangChain fires
``on_llm_new_token`` for each), the last carrying ``usage_metadata``. ``produced``
counts the chunks yielded, so a cancel test can count what came after the cancel;
``pause`` paces an endless answer (it is the model's speed, not a synchronisation).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

USAGE = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}


def text_turn(*pieces: str, usage: dict[str, int] | None = None) -> list[AIMessageChunk]:
    """A turn answering with ``pieces`` of text, the last chunk carrying ``usage``."""
    chunks = [AIMessageChunk(content=p) for p in pieces]
    chunks.append(AIMessageChunk(content="", usage_metadata=usage or USAGE))  # type: ignore[arg-type]
    return chunks


def tool_turn(call_id: str, name: str, *args: str) -> list[AIMessageChunk]:
    """A turn calling tool ``name`` with its arguments streamed as ``args`` pieces."""
    chunks = [
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": name, "args": "", "id": call_id, "index": 0}],
        )
    ]
    chunks += [
        AIMessageChunk(
            content="", tool_call_chunks=[{"name": None, "args": a, "id": None, "index": 0}]
        )
        for a in args
    ]
    chunks.append(AIMessageChunk(content="", usage_metadata=USAGE))  # type: ignore[arg-type]
    return chunks


def endless_text() -> Iterator[AIMessageChunk]:
    """``t0 t1 t2 ...`` for ever (a cancel test stops it)."""
    for i in itertools.count():
        yield AIMessageChunk(content=f"t{i} ")


class ScriptedChatModel(BaseChatModel):
    """Plays ``script`` one turn per call (see the module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[Any]
    pause: float = 0.0
    produced: int = 0
    calls: int = 0
    bound: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        self.bound = list(tools)
        return self

    def _turn(self) -> Any:
        turn = self.script[self.calls]
        self.calls += 1
        return turn

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: Any = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        return ChatResult(generations=[ChatGeneration(message=merged.message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for message in self._turn():
            if self.pause:
                time.sleep(self.pause)
            chunk = ChatGenerationChunk(message=message)
            self.produced += 1
            if run_manager is not None:
                run_manager.on_llm_new_token(message.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for message in self._turn():
            if self.pause:
                await asyncio.sleep(self.pause)
            chunk = ChatGenerationChunk(message=message)
            self.produced += 1
            if run_manager is not None:
                await run_manager.on_llm_new_token(message.text, chunk=chunk)
            yield chunk
