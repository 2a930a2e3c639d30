"""AutoplayContextMiddleware under a real ``create_agent`` agent (only the model is fake)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousSessionError
from langchain_autoplay.middleware import (
    AutoplayContextMiddleware,
    append_to_system_message,
    prepend_to_human_message,
)
from tests.langchain_autoplay._support import PRODUCT, EchoChatModel, actions, fill

AnyStore = ContextStore | AsyncContextStore
MODES = pytest.mark.parametrize("mode", ["sync", "async"])
PROMPT = "You are Acme's support assistant."
QUESTION = "How do I upgrade?"


@dataclass
class SupportContext:
    session_id: str | None = None
    product_id: str | None = None


def _agent(store: AnyStore, *, system_prompt: str | None = PROMPT, **mw: Any) -> Any:
    return create_agent(
        EchoChatModel(),
        system_prompt=system_prompt,
        middleware=[AutoplayContextMiddleware(store, **mw)],
        context_schema=SupportContext,
    )


async def _run(
    agent: Any,
    mode: str,
    *,
    context: Any = None,
    config: RunnableConfig | None = None,
    question: str = QUESTION,
) -> tuple[str, list[str]]:
    """The model's echo of what it received, and the message types left in the state."""
    state = {"messages": [HumanMessage(content=question)]}
    if mode == "sync":
        out = agent.invoke(state, config, context=context)
    else:
        out = await agent.ainvoke(state, config, context=context)
    return out["messages"][-1].content, [m.type for m in out["messages"]]


def _echo(system: str | None, question: str = QUESTION) -> str:
    lines = [f"system: {system}"] if system is not None else []
    return "\n".join([*lines, f"human: {question}"])


BILLING_BLOCK = "[Session context]\nRecent activity:\n1. Opened billing settings — /s1"


@MODES
async def test_context_is_appended_to_the_system_prompt(any_store: AnyStore, mode: str) -> None:
    await fill(any_store, actions("s1", "Opened billing settings"))
    agent = _agent(any_store)
    echo, types = await _run(agent, mode, context=SupportContext("s1", PRODUCT))
    assert echo == _echo(f"{PROMPT}\n\n{BILLING_BLOCK}")
    assert types == ["human", "ai"]  # nothing is written into the agent's state


@MODES
async def test_without_system_prompt_the_block_is_the_system_message(
    any_store: AnyStore, mode: str
) -> None:
    await fill(any_store, actions("s1", "Opened billing settings"))
    agent = _agent(any_store, system_prompt=None)
    echo, _ = await _run(agent, mode, context={"session_id": "s1"})
    assert echo == _echo(BILLING_BLOCK)


@MODES
async def test_session_from_config_configurable(any_store: AnyStore, mode: str) -> None:
    # Python 3.10 too: the middleware's before_model hook is handed the config (before
    # 3.11 LangGraph cannot set the config's context variable for async nodes).
    await fill(any_store, actions("s1", "Opened billing settings"))
    agent = _agent(any_store)
    config: RunnableConfig = {"configurable": {"session_id": "s1", "product_id": PRODUCT}}
    echo, _ = await _run(agent, mode, config=config)
    assert echo == _echo(f"{PROMPT}\n\n{BILLING_BLOCK}")


@MODES
async def test_no_session_or_no_context_leaves_the_request_alone(
    any_store: AnyStore, mode: str
) -> None:
    await fill(any_store, actions("s1", "Opened billing settings"))
    agent = _agent(any_store)
    assert (await _run(agent, mode))[0] == _echo(PROMPT)
    assert (await _run(agent, mode, context=SupportContext("unknown")))[0] == _echo(PROMPT)


@MODES
async def test_context_options_and_ambiguity(any_store: AnyStore, mode: str) -> None:
    await fill(
        any_store,
        actions("s1", "Opened billing settings", "Clicked Upgrade plan"),
        actions("s1", "Opened globex", product_id="globex"),
    )
    agent = _agent(any_store, context_options={"max_actions": 1})
    echo, _ = await _run(agent, mode, context=SupportContext("s1", PRODUCT))
    assert echo == _echo(
        f"{PROMPT}\n\n[Session context]\nRecent activity:\n1. Clicked Upgrade plan — /s1"
    )
    with pytest.raises(AmbiguousSessionError):
        await _run(agent, mode, context=SupportContext("s1"))


async def test_concurrent_agents_each_see_their_own_session(any_store: AnyStore) -> None:
    sessions = [f"sess-{i:02d}" for i in range(20)]
    for s in sessions:
        await fill(any_store, actions(s, f"Opened {s}"))
    agent = _agent(any_store)

    def expected(s: str) -> str:
        block = f"[Session context]\nRecent activity:\n1. Opened {s} — /{s}"
        return _echo(f"{PROMPT}\n\n{block}", f"I am {s}")

    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                _run(agent, "async", context=SupportContext(s, PRODUCT), question=f"I am {s}")
                for s in sessions
            )
        ),
        timeout=30,
    )
    assert [echo for echo, _ in results] == [expected(s) for s in sessions]

    def run_sync(s: str) -> str:
        out = agent.invoke(
            {"messages": [HumanMessage(content=f"I am {s}")]}, context=SupportContext(s, PRODUCT)
        )
        content: str = out["messages"][-1].content
        return content

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(run_sync, sessions)) == [expected(s) for s in sessions]


def test_append_to_system_message_shapes() -> None:
    assert append_to_system_message(None, "") is None
    assert append_to_system_message(None, "B") == SystemMessage(content="B")
    base = SystemMessage(content="A", id="sys")
    assert append_to_system_message(base, "") is base
    assert append_to_system_message(base, "B") == SystemMessage(content="A\n\nB", id="sys")
    assert append_to_system_message(SystemMessage(content=""), "B") == SystemMessage(content="B")
    blocks = SystemMessage(
        content=[{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]
    )
    assert append_to_system_message(blocks, "B") == SystemMessage(
        content=[
            {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "B"},
        ]
    )
    assert base.content == "A"  # the original is never modified


def test_prepend_to_human_message_shapes() -> None:
    first, reply = HumanMessage(content="hi", id="h1"), AIMessage(content="hello")
    last = HumanMessage(content=[{"type": "text", "text": "look"}, {"type": "image", "url": "u"}])
    messages: list[Any] = [first, reply, last]
    assert prepend_to_human_message(messages, "") is messages
    assert prepend_to_human_message(messages, "B") == [
        first,
        reply,
        HumanMessage(
            content=[
                {"type": "text", "text": "B"},
                {"type": "text", "text": "look"},
                {"type": "image", "url": "u"},
            ]
        ),
    ]
    assert prepend_to_human_message([first, reply], "B") == [
        HumanMessage(content="B\n\nhi", id="h1"),
        reply,
    ]
    assert prepend_to_human_message([reply], "B") == [reply]
    assert first.content == "hi"  # the original is never modified


@MODES
async def test_human_message_placement_leaves_the_system_prompt_alone(
    any_store: AnyStore, mode: str
) -> None:
    await fill(any_store, actions("s1", "Opened billing settings"))
    agent = _agent(any_store, placement="human_message")
    echo, types = await _run(agent, mode, context=SupportContext("s1", PRODUCT))
    assert echo == _echo(PROMPT, f"{BILLING_BLOCK}\n\n{QUESTION}")
    assert types == ["human", "ai"]
