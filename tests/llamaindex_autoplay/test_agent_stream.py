"""LlamaIndex agent workflows streamed into run streams: a real ``FunctionAgent``.

The model is :class:`ScriptedLLM`, a ``FunctionCallingLLM`` whose
``astream_chat_with_tools`` plays one scripted turn per call: text deltas, tool
calls (as LlamaIndex hands them over, parsed), usage in ``raw``. The run stream
is the real in-process one; events are compared whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

import pytest
from llama_index.core.agent.workflow import (
    AgentOutput,
    AgentStream,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool, ToolOutput, ToolSelection
from pydantic import Field

from autoplay_base.agent_stream import AsyncRunStream, RunEvent, RunStream
from autoplay_base.errors import ConfigError
from llamaindex_autoplay._react_text import ReActText
from llamaindex_autoplay.agent_stream import WorkflowEvents, astream_workflow

# The agent workflow inspects the tools' pydantic models with ``inspect.getmembers``,
# which trips pydantic's deprecation warnings inside llama_index, not in this package.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCOPE = {"session_id": "s1", "product_id": "p1"}
WAIT = 10.0
USAGE = {"input_tokens": 12, "output_tokens": 5}


def text_turn(*pieces: str) -> list[ChatResponse]:
    out, text = [], ""
    for piece in pieces:
        text += piece
        out.append(ChatResponse(message=ChatMessage(role="assistant", content=text), delta=piece))
    out[-1].raw = {"usage": USAGE}
    return out


def tool_turn(call_id: str, name: str, kwargs: dict[str, Any]) -> list[ChatResponse]:
    call = ToolSelection(tool_id=call_id, tool_name=name, tool_kwargs=kwargs)
    message = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})
    return [ChatResponse(message=message, delta="", raw={"usage": USAGE})]


def endless_turn() -> Iterator[ChatResponse]:
    text = ""
    for i in itertools.count():
        text += f"t{i} "
        yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta=f"t{i} ")


class ScriptedLLM(MockFunctionCallingLLM):
    """Plays ``script`` one turn per model call (see the module docstring)."""

    script: list[Any] = Field(default_factory=list)
    pause: float = 0.0
    produced: int = 0
    calls: int = 0

    async def astream_chat_with_tools(  # type: ignore[override]
        self, tools: Sequence[Any], chat_history: list[ChatMessage] | None = None, **kwargs: Any
    ) -> AsyncGenerator[ChatResponse, None]:
        turn = self.script[self.calls]
        self.calls += 1

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for response in turn:
                if self.pause:
                    await asyncio.sleep(self.pause)
                self.produced += 1
                yield response

        return gen()


def weather(city: str) -> dict[str, Any]:
    """The weather of a city."""
    return {"city": city, "temp": 21}


def broken(city: str) -> str:
    """A tool that fails."""
    raise RuntimeError("secret-token-123 leaked")


def agent_with(llm: ScriptedLLM) -> FunctionAgent:
    tools = [FunctionTool.from_defaults(weather), FunctionTool.from_defaults(broken)]
    return FunctionAgent(tools=tools, llm=llm, name="helper")


async def collect(stream: AsyncRunStream) -> list[RunEvent]:
    async def go() -> list[RunEvent]:
        out: list[RunEvent] = []
        async for event in stream.follow("s1", product_id="p1"):
            out.append(event)
            if event.terminal:
                break
        return out

    return await asyncio.wait_for(go(), WAIT)


def shape(events: list[RunEvent]) -> list[tuple[Any, ...]]:
    return [(e.seq, e.type, e.data) for e in events]


async def test_function_agent_streams_every_event_in_order() -> None:
    llm = ScriptedLLM(
        script=[tool_turn("c1", "weather", {"city": "NYC"}), text_turn("It is ", "21.")]
    )
    stream = AsyncRunStream()
    handler = agent_with(llm).run("Weather in NYC?")
    result = await asyncio.wait_for(astream_workflow(stream, handler, **SCOPE), WAIT)
    assert isinstance(result, AgentOutput)
    assert result.response.content == "It is 21."
    assert shape(await collect(stream)) == [
        (1, "start", {}),
        (2, "step_started", {"name": "helper"}),
        (3, "tool_input", {"call_id": "c1", "name": "weather", "input": {"city": "NYC"}}),
        (4, "step_finished", {"usage": USAGE}),
        (5, "tool_started", {"call_id": "c1", "name": "weather"}),
        (6, "tool_output", {"call_id": "c1", "output": "{'city': 'NYC', 'temp': 21}"}),
        (7, "step_started", {"name": "helper"}),
        (8, "text_delta", {"text": "It is "}),
        (9, "text_delta", {"text": "21."}),
        (10, "step_finished", {"usage": USAGE}),
        (11, "finished", {"status": "success"}),
    ]


async def test_tool_error_is_its_class_name_only() -> None:
    llm = ScriptedLLM(script=[tool_turn("c9", "broken", {"city": "X"}), text_turn("Sorry.")])
    stream = AsyncRunStream()
    await asyncio.wait_for(astream_workflow(stream, agent_with(llm).run("Hi"), **SCOPE), WAIT)
    events = await collect(stream)
    assert [(e.type, e.data) for e in events if e.type.startswith("tool_")] == [
        ("tool_input", {"call_id": "c9", "name": "broken", "input": {"city": "X"}}),
        ("tool_started", {"call_id": "c9", "name": "broken"}),
        ("tool_error", {"call_id": "c9", "error": "RuntimeError"}),
    ]
    assert "secret-token" not in repr(events)
    assert events[-1].data == {"status": "success"}


async def test_cancel_stops_the_workflow_at_once() -> None:
    llm = ScriptedLLM(script=[endless_turn()], pause=0.002)
    stream = AsyncRunStream()
    produced_at_cancel: list[int] = []

    async def listen_and_cancel() -> list[RunEvent]:
        out: list[RunEvent] = []
        async for event in stream.follow("s1", product_id="p1"):
            out.append(event)
            if event.type == "text_delta" and event.data["text"] == "t2 ":
                produced_at_cancel.append(llm.produced)
                assert await stream.cancel(**SCOPE)
            if event.terminal:
                return out
        raise AssertionError("unreachable")

    listener = asyncio.ensure_future(listen_and_cancel())
    handler = agent_with(llm).run("Go on")
    result = await asyncio.wait_for(astream_workflow(stream, handler, **SCOPE), WAIT)
    events = await asyncio.wait_for(listener, WAIT)
    assert result is None
    assert llm.produced - produced_at_cancel[0] <= 2
    texts = [e.data["text"] for e in events if e.type == "text_delta"]
    assert texts == [f"t{i} " for i in range(len(texts))]
    assert events[-1].data == {"status": "cancelled"}


async def test_asyncio_cancellation_cancels_the_workflow_and_propagates() -> None:
    llm = ScriptedLLM(script=[endless_turn()], pause=0.002)
    stream = AsyncRunStream()
    handler = agent_with(llm).run("Go on")
    task = asyncio.ensure_future(astream_workflow(stream, handler, **SCOPE))
    async for event in stream.follow("s1", product_id="p1"):
        if event.type == "text_delta":
            task.cancel()
            break
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    produced = llm.produced
    events = await collect(stream)
    assert events[-1].data == {"status": "cancelled"}
    await asyncio.sleep(0.05)  # the model's pace: a live workflow would produce ~25 more
    assert llm.produced == produced


async def test_workflow_exception_ends_the_run_with_the_safe_error() -> None:
    llm = ScriptedLLM(script=[])  # the first model call fails: IndexError
    stream = AsyncRunStream()
    with pytest.raises(IndexError):
        await asyncio.wait_for(astream_workflow(stream, agent_with(llm).run("Hi"), **SCOPE), WAIT)
    events = await collect(stream)
    assert events[-1].type == "error"
    assert events[-1].data == {
        "code": "run_failed",
        "message": "The assistant could not finish this answer.",
    }


def test_a_mapping_bug_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    stream = RunStream()
    # tool_calls that are not a list: iterating them is the mapping's bug, not the workflow's
    bad = AgentOutput.model_construct(
        response=ChatMessage(content="x"), tool_calls=5, raw=None, current_agent_name="a"
    )
    good = AgentStream(delta="ok", response="ok", current_agent_name="a")
    with (
        caplog.at_level(logging.WARNING, "llamaindex_autoplay.agent_stream"),
        stream.run(**SCOPE) as run,
    ):
        events = WorkflowEvents(run)
        events.add(bad)
        events.add(bad)
        events.add(good)
    assert events.errors == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"run stream workflow events: TypeError on AgentOutput ignored (run {run.run_id}; "
        "later ones counted)"
    ]
    assert [e.type for e in stream.listen(run.run_id, **SCOPE)] == [
        "start",
        "text_delta",
        "finished",
    ]


async def test_refuses_a_sync_stream() -> None:
    with pytest.raises(ConfigError):
        await astream_workflow(RunStream(), object(), **SCOPE)  # type: ignore[arg-type]


async def test_thinking_deltas_are_reasoning() -> None:
    thinking = ChatResponse(
        message=ChatMessage(role="assistant", content=""),
        delta="",
        additional_kwargs={"thinking_delta": "Hm. "},
    )
    llm = ScriptedLLM(script=[[thinking, *text_turn("Yes.")]])
    stream = AsyncRunStream()
    await asyncio.wait_for(astream_workflow(stream, agent_with(llm).run("Hi"), **SCOPE), WAIT)
    assert [(e.type, e.data) for e in await collect(stream) if e.type.endswith("_delta")] == [
        ("reasoning_delta", {"text": "Hm. "}),
        ("text_delta", {"text": "Yes."}),
    ]


def test_an_early_stopping_answer_does_not_replay_the_calls_already_made() -> None:
    # ``early_stopping_method="generate"`` (and the last step of a normal run) extend the
    # final AgentOutput's tool_calls with the run's ToolCallResults; their input went out
    # when they were called.
    done = ToolCallResult(
        tool_name="weather",
        tool_kwargs={"city": "NYC"},
        tool_id="c1",
        tool_output=ToolOutput(tool_name="weather", content="21", raw_input={}, raw_output="21"),
        return_direct=False,
    )
    fresh = ToolSelection(tool_id="c2", tool_name="weather", tool_kwargs={"city": "LA"})
    out = AgentOutput(
        response=ChatMessage(role="assistant", content="It is 21."),
        current_agent_name="a",
        tool_calls=[fresh],
    )
    out.tool_calls.extend([done])  # type: ignore[list-item]  # what base_agent.py does
    stream = RunStream()
    with stream.run(**SCOPE) as run:
        WorkflowEvents(run).add(out)
    events = list(stream.listen(run.run_id, **SCOPE))
    assert [(e.type, e.data) for e in events if e.type == "tool_input"] == [
        ("tool_input", {"call_id": "c2", "name": "weather", "input": {"city": "LA"}}),
    ]


# -- ReAct: the scratchpad is reasoning, the answer is what follows "Answer:" ------------------
@pytest.mark.parametrize(
    ("deltas", "pieces"),
    [
        # The marker split across deltas; the answer's leading space dropped.
        (
            ["Tho", "ught: easy.\nAns", "wer: It is", " 21."],
            [
                ("reasoning", "Thought: eas"),  # the last 6 held: "Answer:" may start there
                ("reasoning", "y.\n"),
                ("text", "It is"),
                ("text", " 21."),
            ],
        ),
        # A tool step: all reasoning (the end held back until the step ends).
        (
            ["Thought: look it up.\nAction: weather\n", 'Action Input: {"city": "NYC"}'],
            [
                ("reasoning", "Thought: look it up.\nAction: we"),
                ("reasoning", 'ather\nAction Input: {"city": '),
                ("reasoning", '"NYC"}'),
            ],
        ),
        # Any other text is the answer as it comes (held only while it could be "Thought:").
        (["Th", "e answer.", " Done."], [("text", "The answer."), ("text", " Done.")]),
        (["Th"], [("text", "Th")]),
        (["Thought: x\nAnswer:", "  ", "Yes"], [("reasoning", "Thought: x\n"), ("text", "Yes")]),
    ],
)
def test_react_text_splits_a_step_into_reasoning_and_answer(
    deltas: list[str], pieces: list[tuple[str, str]]
) -> None:
    text = ReActText()
    got = [piece for delta in deltas for piece in text.feed(delta)] + text.flush()
    assert got == pieces


class ReActLLM(ScriptedLLM):
    """Plays ``script`` through ``astream_chat`` (what ``ReActAgent`` calls)."""

    async def astream_chat(  # type: ignore[override]
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> AsyncGenerator[ChatResponse, None]:
        return await self.astream_chat_with_tools([], list(messages))


async def test_a_react_agents_scratchpad_is_reasoning_and_its_answer_the_text() -> None:
    llm = ReActLLM(
        script=[
            text_turn(
                "Thought: I need the weather.\nAction: weather\n", 'Action Input: {"city": "NYC"}'
            ),
            text_turn("Thought: I can answer.\nAns", "wer: It is 21."),
        ]
    )
    agent = ReActAgent(tools=[FunctionTool.from_defaults(weather)], llm=llm, name="react")
    stream = AsyncRunStream()
    handler = agent.run("Weather in NYC?")
    await asyncio.wait_for(
        astream_workflow(stream, handler, **SCOPE, user_message="Weather in NYC?"), WAIT
    )
    events = await collect(stream)
    said = [(e.type, e.data["text"]) for e in events if e.type in ("text_delta", "reasoning_delta")]
    reasoning = "".join(t for kind, t in said if kind == "reasoning_delta")
    assert reasoning == (
        'Thought: I need the weather.\nAction: weather\nAction Input: {"city": "NYC"}'
        "Thought: I can answer.\n"
    )
    assert [t for kind, t in said if kind == "text_delta"] == ["It is 21."]
    assert [e.type for e in events if e.type.startswith("tool_")] == [
        "tool_input",
        "tool_started",
        "tool_output",
    ]
