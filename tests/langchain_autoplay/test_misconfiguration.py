"""Misconfiguration is visible (counter, log once, strict), named keys, and LangGraph threads."""

from __future__ import annotations

import copy
import logging
import pickle
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.load import dumpd
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.checkpoint.memory import InMemorySaver

from autoplay_base._recent import RecentKeys
from autoplay_base.context_store import ContextStore
from autoplay_base.errors import ConfigError, SessionNotFoundError
from langchain_autoplay import _scope
from langchain_autoplay._scope import lookalike_keys
from langchain_autoplay.chat_message_histories import AutoplayChatMessageHistory
from langchain_autoplay.middleware import AutoplayContextMiddleware
from langchain_autoplay.retrievers import AutoplayRetriever
from langchain_autoplay.tools import create_session_activity_tool
from tests.langchain_autoplay._support import PRODUCT, EchoChatModel, actions, kb_retriever

pytestmark = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no key warned about yet (the registry is per process)."""
    monkeypatch.setattr(_scope, "_warned", RecentKeys(_scope.WARNED_KEYS))


QUESTION = "How do I upgrade?"
BLOCK = "[Session context]\nRecent activity:\n1. Opened billing — /s1"


def test_unknown_sessions_are_counted_and_logged_once_per_key(
    store: ContextStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.add(actions("s1", "Opened billing"))
    with caplog.at_level(logging.DEBUG, logger="autoplay_base.context_store"):
        for _ in range(3):
            assert store.get("nope", PRODUCT) == ""
        assert store.get("s1", "wrong-product") == ""
        assert store.view("nope") is None  # product omitted, id unknown everywhere
        assert store.get("s1", PRODUCT) != ""
    assert store.stats()["sessions_not_found"] == 5
    assert [r.getMessage() for r in caplog.records] == [
        f"context_store: no live context for session_id={s!r} product_id={p!r} "
        "(unknown session, wrong product_id, or expired); counted in sessions_not_found"
        for s, p in (("nope", PRODUCT), ("s1", "wrong-product"), ("nope", None))
    ]


@pytest.mark.parametrize("key", ["sessionId", "session", "sid", "Session-ID"])
def test_misspelled_session_key_warns_once(
    store: ContextStore, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    store.add(actions("s1", "Opened billing"))
    retriever = AutoplayRetriever(store=store, retriever=kb_retriever(k=1))
    config: RunnableConfig = {"configurable": {key: "s1", "thread_id": "t"}}
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
        retriever.invoke(QUESTION, config=config)
        retriever.invoke(QUESTION, config=config)
    assert [r.getMessage() for r in caplog.records] == [
        f"autoplay: the call names no session under 'session_id' but has the key {key!r}; "
        f"no live context was added. Rename the key, or pass session_key={key!r} "
        "to the adapter if that is the session id"
    ]
    assert "s1" not in caplog.text  # the key's name only, never the user's id


def test_lookalike_keys() -> None:
    assert lookalike_keys({"sessionId": 1, "thread_id": 2, "session_id": 3, "sid": 4}) == [
        "sessionId",
        "sid",
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_strict_adapters_raise(store: ContextStore, mode: str) -> None:
    store.add(actions("s1", "Opened billing"))
    retriever = AutoplayRetriever(store=store, strict=True)
    tool = create_session_activity_tool(store, strict=True)
    agent = create_agent(
        EchoChatModel(), middleware=[AutoplayContextMiddleware(store, strict=True)]
    )
    unknown: RunnableConfig = {"configurable": {"session_id": "nope", "product_id": PRODUCT}}
    none: RunnableConfig = {"configurable": {}}
    state = {"messages": [HumanMessage(QUESTION)]}
    calls: list[Any] = [
        lambda c: (
            retriever.invoke(QUESTION, c) if mode == "sync" else retriever.ainvoke(QUESTION, c)
        ),
        lambda c: tool.invoke({}, c) if mode == "sync" else tool.ainvoke({}, c),
        lambda c: agent.invoke(state, c) if mode == "sync" else agent.ainvoke(state, c),
    ]
    for call in calls:
        for config, error in ((unknown, SessionNotFoundError), (none, ConfigError)):
            with pytest.raises(error, match=r"\(strict=True\)"):
                result = call(config)
                if mode == "async":
                    await result


def test_named_session_key_next_to_runnable_with_message_history(store: ContextStore) -> None:
    store.add(actions("s1", "Opened billing"))
    retriever = AutoplayRetriever(store=store, session_key="autoplay_session_id")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "{context}"), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def with_context(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        docs = retriever.invoke(inputs["question"], config)
        return {**inputs, "context": "\n".join(d.page_content for d in docs)}

    histories: dict[str, AutoplayChatMessageHistory] = {}
    chain = RunnableWithMessageHistory(
        RunnableLambda(with_context) | prompt | EchoChatModel(),
        lambda session_id: histories.setdefault(
            session_id, AutoplayChatMessageHistory(store, session_id, product_id=PRODUCT)
        ),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: RunnableConfig = {
        "configurable": {
            "session_id": "conv-42",
            "autoplay_session_id": "s1",
            "product_id": PRODUCT,
        }
    }
    reply = chain.invoke({"question": QUESTION}, config)
    assert reply.content == "system: Opened billing — /s1\nhuman: How do I upgrade?"
    assert list(histories) == ["conv-42"]  # the conversation id stayed the history's


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_create_agent_with_checkpointer_live_context_per_thread(
    store: ContextStore, mode: str
) -> None:
    store.add(actions("s1", "Opened billing"))
    store.add(actions("s2", "Opened team"))
    agent = create_agent(
        EchoChatModel(),
        system_prompt="Be brief.",
        middleware=[AutoplayContextMiddleware(store)],
        checkpointer=InMemorySaver(),
    )

    async def turn(thread: str, session: str, text: str) -> str:
        config: RunnableConfig = {
            "configurable": {"thread_id": thread, "session_id": session, "product_id": PRODUCT}
        }
        state = {"messages": [HumanMessage(text)]}
        out = agent.invoke(state, config) if mode == "sync" else await agent.ainvoke(state, config)
        content: str = out["messages"][-1].content
        return content

    a1 = await turn("t1", "s1", "hi")
    b1 = await turn("t2", "s2", "hello")
    assert a1 == f"system: Be brief.\n\n{BLOCK}\nhuman: hi"
    assert (
        b1 == "system: Be brief.\n\n[Session context]\nRecent activity:\n"
        "1. Opened team — /s2\nhuman: hello"
    )
    store.add(actions("s1", "Clicked Upgrade"))
    a2 = await turn("t1", "s1", "again")
    assert a2 == (
        f"system: Be brief.\n\n{BLOCK}\n2. Clicked Upgrade — /s1\nhuman: hi\nai: {a1}\nhuman: again"
    )
    state = agent.get_state({"configurable": {"thread_id": "t1"}})
    assert [m.type for m in state.values["messages"]] == ["human", "ai", "human", "ai"]
    assert "autoplay_scope" not in state.values  # never checkpointed


def test_thread_id_as_the_session_key(store: ContextStore) -> None:
    store.add(actions("t1", "Opened billing"))
    agent = create_agent(
        EchoChatModel(),
        middleware=[AutoplayContextMiddleware(store, session_key="thread_id")],
        checkpointer=InMemorySaver(),
    )
    out = agent.invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "t1"}})
    assert out["messages"][-1].content == (
        "system: [Session context]\nRecent activity:\n1. Opened billing — /t1\nhuman: hi"
    )


def test_copies_share_the_store_and_pickle_says_what_to_do(store: ContextStore) -> None:
    components: list[Any] = [
        AutoplayRetriever(store=store, retriever=kb_retriever(), k=2),
        create_session_activity_tool(store, context_options={"max_actions": 3}),
        AutoplayContextMiddleware(store, placement="human_message"),
        AutoplayChatMessageHistory(store, "s1", product_id=PRODUCT, live_context=True),
    ]
    for component in components:
        for clone in (copy.deepcopy(component), copy.copy(component)):
            assert type(clone) is type(component) and clone is not component
            assert clone.store is store
        with pytest.raises(TypeError, match="holds a live context store, which cannot be pickled"):
            pickle.dumps(component)
    assert copy.deepcopy(components[0]).k == 2
    assert copy.deepcopy(components[2]).placement == "human_message"
    assert dumpd(components[0])["type"] == "not_implemented"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_agent_with_a_misspelled_key_warns_once(
    store: ContextStore, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    store.add(actions("s1", "Opened billing"))
    agent = create_agent(EchoChatModel(), middleware=[AutoplayContextMiddleware(store)])
    key = "sessionID"
    config: RunnableConfig = {"configurable": {key: "s1"}}
    state = {"messages": [HumanMessage("hi")]}
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
        for _ in range(2):
            out = (
                agent.invoke(state, config)
                if mode == "sync"
                else await agent.ainvoke(state, config)
            )
            assert out["messages"][-1].content == "human: hi"
    assert [r.getMessage() for r in caplog.records] == [
        f"autoplay: the call names no session under 'session_id' but has the key {key!r}; "
        f"no live context was added. Rename the key, or pass session_key={key!r} "
        "to the adapter if that is the session id"
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_tool_reads_named_keys(store: ContextStore, mode: str) -> None:
    store.add(actions("s1", "Opened billing"))
    tool = create_session_activity_tool(
        store, session_key="autoplay_session_id", product_key="autoplay_product_id"
    )
    config: RunnableConfig = {
        "configurable": {
            "session_id": "conv-42",
            "autoplay_session_id": "s1",
            "autoplay_product_id": PRODUCT,
        }
    }
    answer = tool.invoke({}, config) if mode == "sync" else await tool.ainvoke({}, config)
    assert answer == BLOCK
