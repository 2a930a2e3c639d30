"""LangChain / LangGraph runs streamed into run streams: real agents, graphs and chains.

The agents are real (``create_agent``, a ``StateGraph`` with ``interrupt()``, an
LCEL chain) over :class:`ScriptedChatModel`, which streams text, tool-call
chunks and usage; the run stream is the real in-process one (Redis in one test,
read by a listener while the run streams). Events are compared whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypedDict
from uuid import uuid4

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from pydantic import ConfigDict, Field

from autoplay_base.agent_stream import AsyncRunStream, RunEvent, RunStream
from autoplay_base.errors import ConfigError
from langchain_autoplay.agent_stream import AutoplayRunStreamHandler, astream_agent, stream_agent
from tests.langchain_autoplay._support import soft_failing_tool

# -- a scripted streaming chat model ----------------------------------------------------------
# Each call plays the next script entry: a list of ``AIMessageChunk``s yielded one by one
# through ``_stream`` / ``_astream`` (so LangChain fires ``on_llm_new_token`` for each),
# the last carrying ``usage_metadata``. ``produced`` counts the chunks yielded, so a
# cancel test can count what came after the cancel; ``pause`` paces an endless answer
# (the model's speed, not a synchronisation).
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


SCOPE = {"session_id": "s1", "product_id": "p1"}
WAIT = 10.0


@tool
def weather(city: str) -> dict[str, Any]:
    """The weather of a city."""
    return {"city": city, "temp": 21}


@tool
def broken(city: str) -> str:
    """A tool that fails."""
    raise RuntimeError("secret-token-123 leaked")


def weather_agent(*turns: Any) -> tuple[Any, ScriptedChatModel]:
    model = ScriptedChatModel(script=list(turns))
    return create_agent(model, [weather, broken]), model


def collect_sync(stream: RunStream) -> list[RunEvent]:
    """The session's newest run, start to end."""
    out: list[RunEvent] = []
    for event in stream.follow("s1", product_id="p1"):
        out.append(event)
        if event.terminal:
            return out
    raise AssertionError("unreachable")


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


USAGE_DATA = {"usage": USAGE}
WEATHER_RUN = [
    (1, "start", {}),
    (2, "step_started", {"name": "model"}),
    (3, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": ""}),
    (4, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": '{"ci'}),
    (5, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": 'ty": "NYC"}'}),
    (6, "tool_input", {"call_id": "c1", "name": "weather", "input": {"city": "NYC"}}),
    (7, "step_finished", USAGE_DATA),
    (8, "tool_started", {"call_id": "c1", "name": "weather"}),
    (9, "tool_output", {"call_id": "c1", "output": '{"city": "NYC", "temp": 21}'}),
    (10, "step_started", {"name": "model"}),
    (11, "text_delta", {"text": "It is "}),
    (12, "text_delta", {"text": "21 degrees."}),
    (13, "step_finished", USAGE_DATA),
    (14, "finished", {"status": "success"}),
]
WEATHER_INPUT = {"messages": [HumanMessage("Weather in NYC?")]}


def weather_turns() -> list[Any]:
    return [tool_turn("c1", "weather", '{"ci', 'ty": "NYC"}'), text_turn("It is ", "21 degrees.")]


async def test_create_agent_async_streams_every_event_in_order() -> None:
    agent, _ = weather_agent(*weather_turns())
    stream = AsyncRunStream()
    state = await astream_agent(stream, agent, WEATHER_INPUT, **SCOPE, user_message="Weather?")
    assert state["messages"][-1].content == "It is 21 degrees."
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert shape(await collect(stream)) == WEATHER_RUN


def test_create_agent_sync_streams_the_same_events() -> None:
    agent, _ = weather_agent(*weather_turns())
    stream = RunStream()
    state = stream_agent(stream, agent, WEATHER_INPUT, **SCOPE)
    assert state["messages"][-1].content == "It is 21 degrees."
    assert shape(collect_sync(stream)) == WEATHER_RUN


async def test_tool_error_is_its_class_name_only() -> None:
    agent, _ = weather_agent(tool_turn("c9", "broken", '{"city": "X"}'), text_turn("Sorry."))
    stream = AsyncRunStream()
    with pytest.raises(RuntimeError):
        await astream_agent(stream, agent, WEATHER_INPUT, **SCOPE)
    events = await collect(stream)
    assert [(e.type, e.data) for e in events if e.type.startswith("tool")][-2:] == [
        ("tool_started", {"call_id": "c9", "name": "broken"}),
        ("tool_error", {"call_id": "c9", "error": "RuntimeError"}),
    ]
    assert events[-1].type == "error"
    assert events[-1].data == {
        "code": "run_failed",
        "message": "The assistant could not finish this answer.",
    }
    assert "secret-token" not in repr(events)


async def test_reasoning_blocks_and_lcel_chain_folded_output() -> None:
    model = ScriptedChatModel(
        script=[
            [
                AIMessageChunk(content=[{"type": "reasoning", "reasoning": "Think. "}]),
                AIMessageChunk(content=[{"type": "thinking", "thinking": "Hard."}]),
                AIMessageChunk(content=[{"type": "text", "text": "Hel"}, "lo"]),
                AIMessageChunk(content="", usage_metadata=USAGE),  # type: ignore[arg-type]
            ]
        ]
    )
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
    stream = AsyncRunStream()
    out = await astream_agent(stream, chain, {"q": "hi"}, **SCOPE)
    assert isinstance(out, AIMessageChunk)
    assert out.text == "Hello"
    assert shape(await collect(stream))[1:] == [
        (2, "step_started", {"name": "ScriptedChatModel"}),
        (3, "reasoning_delta", {"text": "Think. "}),
        (4, "reasoning_delta", {"text": "Hard."}),
        (5, "text_delta", {"text": "Hel"}),
        (6, "text_delta", {"text": "lo"}),
        (7, "step_finished", USAGE_DATA),
        (8, "finished", {"status": "success"}),
    ]


def test_handler_under_invoke_makes_the_model_stream() -> None:
    """A create_agent graph under invoke fires token callbacks only for a streaming handler."""
    agent, _ = weather_agent(text_turn("A", "B"))
    stream = RunStream()
    with stream.run(**SCOPE) as run:
        agent.invoke(WEATHER_INPUT, {"callbacks": [AutoplayRunStreamHandler(run)]})
    assert [(e.type, e.data) for e in collect_sync(stream) if e.type == "text_delta"] == [
        ("text_delta", {"text": "A"}),
        ("text_delta", {"text": "B"}),
    ]


def test_a_bug_in_the_handler_is_counted_logged_once_and_never_aborts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = RunStream()
    bad = ChatGenerationChunk(message=AIMessageChunk(content=[{"type": "reasoning", "summary": 5}]))
    good = ChatGenerationChunk(message=AIMessageChunk(content="ok"))
    with (
        caplog.at_level(logging.WARNING, "langchain_autoplay.agent_stream"),
        stream.run(**SCOPE) as run,
    ):
        handler = AutoplayRunStreamHandler(run)
        rid = uuid4()
        handler.on_chat_model_start({}, [[]], run_id=rid, name="m")
        handler.on_llm_new_token("", chunk=bad, run_id=rid)
        handler.on_llm_new_token("", chunk=bad, run_id=rid)
        handler.on_llm_new_token("ok", chunk=good, run_id=rid)
    assert handler.errors == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        f"run stream handler: TypeError in on_llm_new_token ignored (run {run.run_id}; "
        "later ones counted only)"
    ]
    assert [e.type for e in collect_sync(stream)] == [
        "start",
        "step_started",
        "text_delta",
        "finished",
    ]


def test_drivers_refuse_the_wrong_twin() -> None:
    agent, _ = weather_agent()
    with pytest.raises(ConfigError):
        stream_agent(AsyncRunStream(), agent, WEATHER_INPUT, **SCOPE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        asyncio.run(astream_agent(RunStream(), agent, WEATHER_INPUT, **SCOPE))  # type: ignore[arg-type]


# -- interrupt (human in the loop) ----------------------------------------------------------
class AskState(TypedDict, total=False):
    question: str
    city: str
    answer: str


def ask_graph(model: ScriptedChatModel) -> Any:
    def think(state: AskState, config: RunnableConfig) -> AskState:
        reply = model.invoke([HumanMessage(state["question"])], config)
        return {"answer": reply.text}

    def ask(state: AskState, config: RunnableConfig) -> AskState:
        # interrupt() reads the node's config from the context, which LangGraph cannot
        # set for a node of an async graph on Python 3.10: seed it from the argument (what
        # LangChain's own human-in-the-loop middleware does there).
        token = var_child_runnable_config.set(config)
        try:
            return {"city": interrupt({"ask": "Which city?"})}
        finally:
            var_child_runnable_config.reset(token)

    graph = StateGraph(AskState)
    graph.add_node("think", think)
    graph.add_node("ask", ask)
    graph.add_edge(START, "think")
    graph.add_edge("think", "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=InMemorySaver())


def ask_run(interrupt_id: str) -> list[tuple[Any, ...]]:
    """The events of :func:`ask_graph`'s first run, up to its interrupt."""
    return [
        (1, "start", {}),
        (2, "step_started", {"name": "think"}),
        (3, "text_delta", {"text": "Let me "}),
        (4, "text_delta", {"text": "ask."}),
        (5, "step_finished", USAGE_DATA),
        (
            6,
            "custom",
            {"name": "interrupt", "data": [{"id": interrupt_id, "value": {"ask": "Which city?"}}]},
        ),
        (7, "finished", {"status": "interrupted"}),
    ]


async def test_interrupt_ends_the_run_interrupted_and_resume_finishes() -> None:
    model = ScriptedChatModel(script=[text_turn("Let me ", "ask.")])
    graph = ask_graph(model)
    config: Any = {"configurable": {"thread_id": "t1"}}
    stream = AsyncRunStream()
    state = await astream_agent(stream, graph, {"question": "Weather?"}, **SCOPE, config=config)
    # what graph.invoke returns too: the state, and the pending interrupt
    assert state["__interrupt__"][0].value == {"ask": "Which city?"}
    assert {k: v for k, v in state.items() if k != "__interrupt__"} == {
        "question": "Weather?",
        "answer": "Let me ask.",
    }
    events = await collect(stream)
    assert shape(events) == ask_run(events[-2].data["data"][0]["id"])
    resumed = await astream_agent(stream, graph, Command(resume="NYC"), **SCOPE, config=config)
    assert resumed == {"question": "Weather?", "answer": "Let me ask.", "city": "NYC"}
    assert shape(await collect(stream)) == [
        (1, "start", {}),
        (2, "finished", {"status": "success"}),
    ]


# -- cancellation ---------------------------------------------------------------------------
def endless_agent() -> tuple[Any, ScriptedChatModel]:
    model = ScriptedChatModel(script=[endless_text()], pause=0.002)
    return create_agent(model, []), model


async def test_async_cancel_stops_tokens_at_once() -> None:
    agent, model = endless_agent()
    stream = AsyncRunStream()
    produced_at_cancel: list[int] = []

    async def listen_and_cancel() -> list[RunEvent]:
        out: list[RunEvent] = []
        async for event in stream.follow("s1", product_id="p1"):
            out.append(event)
            if event.type == "text_delta" and event.data["text"] == "t2 ":
                produced_at_cancel.append(model.produced)
                assert await stream.cancel(**SCOPE)
            if event.terminal:
                return out
        raise AssertionError("unreachable")

    listener = asyncio.ensure_future(listen_and_cancel())
    state = await asyncio.wait_for(astream_agent(stream, agent, WEATHER_INPUT, **SCOPE), WAIT)
    events = await asyncio.wait_for(listener, WAIT)
    assert state == {"messages": [HumanMessage("Weather in NYC?", id=state["messages"][0].id)]}
    assert model.produced - produced_at_cancel[0] <= 2
    texts = [e.data["text"] for e in events if e.type == "text_delta"]
    assert texts == [f"t{i} " for i in range(len(texts))]
    assert len(texts) <= produced_at_cancel[0] + 2
    assert events[-1].data == {"status": "cancelled"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_sync_cancel_stops_at_the_next_token() -> None:
    agent, model = endless_agent()
    stream = RunStream()
    produced_at_cancel: list[int] = []
    seen = threading.Event()

    def listen() -> list[RunEvent]:
        out: list[RunEvent] = []
        for event in stream.follow("s1", product_id="p1"):
            out.append(event)
            if event.type == "text_delta" and event.data["text"] == "t2 ":
                produced_at_cancel.append(model.produced)
                assert stream.cancel(**SCOPE)
                seen.set()
            if event.terminal:
                return out
        raise AssertionError("unreachable")

    result: list[list[RunEvent]] = []
    listener = threading.Thread(target=lambda: result.append(listen()))
    listener.start()
    stream_agent(stream, agent, WEATHER_INPUT, **SCOPE)
    listener.join(WAIT)
    assert seen.is_set()
    assert model.produced - produced_at_cancel[0] <= 2
    assert result[0][-1].data == {"status": "cancelled"}


async def test_asyncio_cancellation_ends_the_run_cancelled_and_propagates() -> None:
    agent, model = endless_agent()
    stream = AsyncRunStream()
    task = asyncio.ensure_future(astream_agent(stream, agent, WEATHER_INPUT, **SCOPE))
    async for event in stream.follow("s1", product_id="p1"):
        if event.type == "text_delta":
            task.cancel()
            break
    with pytest.raises(asyncio.CancelledError):
        await task
    produced = model.produced
    events = await collect(stream)
    assert events[-1].data == {"status": "cancelled"}
    assert len([e for e in events if e.type == "text_delta"]) <= produced


# -- Redis: a listener reads the run while it streams ----------------------------------------
async def test_redis_listener_reads_the_run_while_it_streams(
    make_redis_backend: Callable[..., Any],
) -> None:
    agent, _ = weather_agent(*weather_turns())
    stream = AsyncRunStream(make_redis_backend())
    listener = asyncio.ensure_future(collect(stream))
    await asyncio.sleep(0)  # let it make its first read before the run starts
    await astream_agent(stream, agent, WEATHER_INPUT, **SCOPE)
    assert shape(await listener) == WEATHER_RUN


def test_interrupt_with_the_sync_driver_ends_interrupted_and_resume_finishes() -> None:
    model = ScriptedChatModel(script=[text_turn("Let me ", "ask.")])
    graph = ask_graph(model)
    config: Any = {"configurable": {"thread_id": "t1"}}
    stream = RunStream()
    state = stream_agent(stream, graph, {"question": "Weather?"}, **SCOPE, config=config)
    assert state["__interrupt__"][0].value == {"ask": "Which city?"}
    events = collect_sync(stream)
    assert shape(events) == ask_run(events[-2].data["data"][0]["id"])
    resumed = stream_agent(stream, graph, Command(resume="NYC"), **SCOPE, config=config)
    assert resumed == {"question": "Weather?", "answer": "Let me ask.", "city": "NYC"}
    assert shape(collect_sync(stream)) == [(1, "start", {}), (2, "finished", {"status": "success"})]


# -- Redis, across processes: a cancel stops a streaming agent in another process -----------
AGENT_PROCESS = """
import asyncio, sys
from autoplay_base.agent_stream import AsyncRunStream
from autoplay_base.backends.redis import RedisBackend
from langchain_autoplay.agent_stream import astream_agent
from tests.langchain_autoplay.test_agent_stream import SCOPE, WEATHER_INPUT, endless_agent

async def main() -> None:
    backend = RedisBackend.from_url(sys.argv[1], prefix=sys.argv[2], socket_timeout=5.0)
    stream = AsyncRunStream(backend, history=False)
    agent, model = endless_agent()
    await astream_agent(stream, agent, WEATHER_INPUT, **SCOPE, user_id="u1")
    print("stopped", model.produced, flush=True)

asyncio.run(main())
"""


def test_a_cancel_from_another_process_stops_a_streaming_agent(
    redis_url: str, redis_prefix: str, make_redis_backend: Callable[..., Any]
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", AGENT_PROCESS, redis_url, redis_prefix],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        stream = RunStream(make_redis_backend(), history=False)
        events: list[RunEvent] = []
        cancelled_after: list[int] = []
        for event in stream.follow("s1", product_id="p1"):
            events.append(event)
            if event.type == "text_delta" and event.data["text"] == "t20 ":
                asked = time.monotonic()
                assert stream.cancel(**SCOPE) is True  # the run is the other process's
                cancelled_after.append(len(events))
            if event.terminal:
                ended = time.monotonic() - asked
                break
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert child.wait(WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT)
    assert line[0] == "stopped"
    assert events[-1].data == {"status": "cancelled"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    texts = [e.data["text"] for e in events if e.type == "text_delta"]
    assert texts == [f"t{i} " for i in range(len(texts))]
    # Every token the model produced reached the listener (one may be cut by the cancel
    # between the model yielding it and the handler emitting it).
    assert int(line[1]) - len(texts) in (0, 1)
    # Seen by the run's writer within one heartbeat (25 ms), then the model's next token
    # stops it; the bound leaves room for a loaded machine, a missed cancel would run on.
    assert ended < 2.0, f"the run ended {ended:.2f} s after the cancel"
    assert len(events) - cancelled_after[0] < 500


# -- a model called without its node's config (create_agent's model on Python 3.10) -------
class ThinkState(TypedDict, total=False):
    question: str
    answer: str


def configless_graph(model: ScriptedChatModel) -> Any:
    """A graph whose node calls the model with no config and none in the context.

    That is what a ``create_agent`` model call is on Python 3.10 in an async graph
    (LangGraph cannot set the node's config in the context there): reproduced on every
    version by emptying the context's config around the call.
    """

    async def think(state: ThinkState) -> ThinkState:
        token = var_child_runnable_config.set(None)
        try:
            reply = await model.ainvoke([HumanMessage(state["question"])])
        finally:
            var_child_runnable_config.reset(token)
        return {"answer": reply.text}

    graph = StateGraph(ThinkState)
    graph.add_node("think", think)
    graph.add_edge(START, "think")
    graph.add_edge("think", END)
    return graph.compile()


async def test_a_model_called_without_a_config_still_streams_under_its_node() -> None:
    model = ScriptedChatModel(script=[text_turn("Hello ", "there.")])
    stream = AsyncRunStream()
    state = await astream_agent(stream, configless_graph(model), {"question": "Hi?"}, **SCOPE)
    assert state == {"question": "Hi?", "answer": "Hello there."}
    assert shape(await collect(stream)) == [
        (1, "start", {}),
        (2, "step_started", {"name": "think"}),
        (3, "text_delta", {"text": "Hello "}),
        (4, "text_delta", {"text": "there."}),
        (5, "step_finished", USAGE_DATA),
        (6, "finished", {"status": "success"}),
    ]


async def test_the_driver_leaves_no_handler_behind_in_the_callers_context() -> None:
    model = ScriptedChatModel(script=[text_turn("One."), text_turn("Two.")])
    stream = AsyncRunStream()
    await astream_agent(stream, configless_graph(model), {"question": "Hi?"}, **SCOPE)
    first = await collect(stream)
    # The same graph run without the driver afterwards: nothing reaches the stream.
    assert await configless_graph(model).ainvoke({"question": "Again?"}) == {
        "question": "Again?",
        "answer": "Two.",
    }
    assert shape(await collect(stream)) == shape(first)
    assert len(first) == 5


# -- provider shapes ----------------------------------------------------------------------------
class WholeAnswerModel(ScriptedChatModel):
    """Answers whole, firing no token callback: a provider without streaming
    (``disable_streaming=True``), a cache hit."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return super()._generate(messages, stop, None, **kwargs)


def test_a_model_that_does_not_stream_still_gives_its_answer_and_tool_calls() -> None:
    model = WholeAnswerModel(script=weather_turns(), disable_streaming=True)
    stream = RunStream()
    state = stream_agent(stream, create_agent(model, [weather]), WEATHER_INPUT, **SCOPE)
    assert state["messages"][-1].content == "It is 21 degrees."
    assert shape(collect_sync(stream)) == [
        (1, "start", {}),
        (2, "step_started", {"name": "model"}),
        (3, "tool_input", {"call_id": "c1", "name": "weather", "input": {"city": "NYC"}}),
        (4, "step_finished", USAGE_DATA),
        (5, "tool_started", {"call_id": "c1", "name": "weather"}),
        (6, "tool_output", {"call_id": "c1", "output": '{"city": "NYC", "temp": 21}'}),
        (7, "step_started", {"name": "model"}),
        (8, "text_delta", {"text": "It is 21 degrees."}),
        (9, "step_finished", USAGE_DATA),
        (10, "finished", {"status": "success"}),
    ]


async def test_a_tool_failure_handed_to_the_model_is_a_tool_error_without_its_text() -> None:
    # handle_tool_error (and LangGraph's ToolNode) turn a failure into a ToolMessage with
    # status="error" that the model reads: the run goes on, the stream says it failed.
    model = ScriptedChatModel(script=[tool_turn("c7", "soft", '{"q": "X"}'), text_turn("Sorry.")])
    stream = AsyncRunStream()
    state = await astream_agent(
        stream, create_agent(model, [soft_failing_tool]), WEATHER_INPUT, **SCOPE
    )
    assert state["messages"][2].status == "error"
    events = await collect(stream)
    assert [(e.type, e.data) for e in events if e.type.startswith("tool_")][-2:] == [
        ("tool_started", {"call_id": "c7", "name": "soft"}),
        ("tool_error", {"call_id": "c7", "error": "the tool reported an error"}),
    ]
    assert events[-1].data == {"status": "success"}
    assert "sk-secret" not in repr(events)


def chunk_stream(*contents: Any, **kwargs: Any) -> list[RunEvent]:
    """The reasoning and text events of one model call streaming chunks of ``contents``."""
    stream = RunStream()
    with stream.run(**SCOPE) as run:
        handler = AutoplayRunStreamHandler(run)
        model_run = uuid4()
        handler.on_chat_model_start({}, [[]], run_id=model_run, name="m")
        for content in contents:
            message = AIMessageChunk(content=content, **kwargs)
            handler.on_llm_new_token(
                "", chunk=ChatGenerationChunk(message=message), run_id=model_run
            )
    return [e for e in collect_sync(stream) if e.type in ("text_delta", "reasoning_delta")]


def test_reasoning_in_each_providers_shape_is_sent_once() -> None:
    mistral = {"type": "thinking", "thinking": [{"type": "text", "text": "A."}]}
    bedrock = {"type": "reasoning_content", "reasoning_content": {"text": "B.", "signature": "s"}}
    events = chunk_stream([mistral], [bedrock], [{"type": "text", "text": "C"}])
    assert [(e.type, e.data["text"]) for e in events] == [
        ("reasoning_delta", "A."),
        ("reasoning_delta", "B."),
        ("text_delta", "C"),
    ]
    # output_version="v1": LangChain copies additional_kwargs' reasoning into a block.
    v1 = chunk_stream(
        [{"type": "reasoning", "reasoning": "Let me think."}],
        additional_kwargs={"reasoning_content": "Let me think."},
    )
    assert [(e.type, e.data["text"]) for e in v1] == [("reasoning_delta", "Let me think.")]
    # Beside plain content (DeepSeek, Ollama): still sent.
    beside = chunk_stream("", additional_kwargs={"reasoning_content": "Hm."})
    assert [(e.type, e.data["text"]) for e in beside] == [("reasoning_delta", "Hm.")]
