"""The get_session_activity tool: direct calls, tool calls, and inside a ``create_agent`` agent."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from pydantic import ValidationError

from autoplay_base.context_store import AsyncContextStore, ContextStore
from langchain_autoplay.tools import (
    NO_ACTIVITY,
    NO_SESSION,
    SessionActivityTool,
    create_session_activity_tool,
)
from tests.langchain_autoplay._support import (
    PRODUCT,
    ToolCallingEchoModel,
    actions,
    fill,
    summary,
)

AnyStore = ContextStore | AsyncContextStore
MODES = pytest.mark.parametrize("mode", ["sync", "async"])
QUESTION = "What was I doing?"
FULL = (
    "[Session context]\n"
    "Summary: User is upgrading.\n\n"
    "Recent activity:\n"
    "1. Opened billing settings — /s1\n"
    "2. Clicked Upgrade plan — /s1"
)


async def _session(store: AnyStore) -> None:
    await fill(
        store,
        actions("s1", "Opened billing settings", "Clicked Upgrade plan"),
        summary("s1", "User is upgrading."),
    )


async def _call(tool: SessionActivityTool, args: Any, mode: str, **kw: Any) -> Any:
    return tool.invoke(args, **kw) if mode == "sync" else await tool.ainvoke(args, **kw)


def _cfg(session: str | None, product: str | None = PRODUCT) -> RunnableConfig:
    return {"configurable": {"session_id": session, "product_id": product}}


def test_schema_and_name(store: ContextStore) -> None:
    tool = create_session_activity_tool(store)
    assert tool.name == "get_session_activity"
    assert set(tool.args) == {"max_actions", "lookback_seconds"}


@MODES
async def test_reads_the_configured_session(any_store: AnyStore, mode: str) -> None:
    await _session(any_store)
    tool = create_session_activity_tool(any_store)
    assert await _call(tool, {}, mode, config=_cfg("s1")) == FULL
    assert await _call(tool, {"max_actions": 1}, mode, config=_cfg("s1")) == (
        "[Session context]\nSummary: User is upgrading.\n\n"
        "Recent activity:\n1. Clicked Upgrade plan — /s1"
    )
    assert await _call(tool, {}, mode, config=_cfg("unknown")) == NO_ACTIVITY


@MODES
async def test_tool_call_returns_a_tool_message(any_store: AnyStore, mode: str) -> None:
    await _session(any_store)
    tool = create_session_activity_tool(any_store, context_options={"include_summary": False})
    call = {"name": tool.name, "args": {}, "id": "c1", "type": "tool_call"}
    message = await _call(tool, call, mode, config=_cfg("s1"))
    assert message == ToolMessage(
        content=(
            "[Session context]\nRecent activity:\n"
            "1. Opened billing settings — /s1\n2. Clicked Upgrade plan — /s1"
        ),
        name="get_session_activity",
        tool_call_id="c1",
    )


@MODES
async def test_without_a_session_it_says_so_and_logs(
    any_store: AnyStore, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _session(any_store)
    tool = create_session_activity_tool(any_store)
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay.tools"):
        assert await _call(tool, {}, mode) == NO_SESSION
    assert [r.getMessage() for r in caplog.records] == [
        "get_session_activity called without a session id in the runtime context or "
        "config['configurable']"
    ]


@MODES
async def test_bad_arguments_from_the_model_are_rejected(any_store: AnyStore, mode: str) -> None:
    tool = create_session_activity_tool(any_store)
    with pytest.raises(ValidationError, match="max_actions"):
        await _call(tool, {"max_actions": 0}, mode, config=_cfg("s1"))
    with pytest.raises(ValidationError, match="lookback_seconds"):
        await _call(tool, {"lookback_seconds": -5}, mode, config=_cfg("s1"))


# -- inside an agent -----------------------------------------------------------------------
@dataclass
class SupportContext:
    session_id: str
    product_id: str | None = None


def _agent(store: AnyStore, **tool_args: Any) -> Any:
    return create_agent(
        ToolCallingEchoModel(tool_args=tool_args),
        tools=[create_session_activity_tool(store)],
        context_schema=SupportContext,
    )


async def _ask(agent: Any, question: str, context: SupportContext, mode: str) -> list[Any]:
    state = {"messages": [HumanMessage(content=question)]}
    if mode == "sync":
        out = agent.invoke(state, context=context)
    else:
        out = await agent.ainvoke(state, context=context)
    return list(out["messages"])


@MODES
async def test_agent_calls_the_tool_for_its_runtime_session(any_store: AnyStore, mode: str) -> None:
    await _session(any_store)
    await fill(any_store, actions("s2", "Opened team page"))
    messages = await _ask(_agent(any_store), QUESTION, SupportContext("s1", PRODUCT), mode)
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[2].content == FULL
    assert messages[-1].content == f"human: {QUESTION}\nai: \ntool: {FULL}"


async def test_concurrent_agents_read_only_their_session(any_store: AnyStore) -> None:
    sessions = [f"sess-{i:02d}" for i in range(20)]
    for s in sessions:
        await fill(any_store, actions(s, f"Opened {s}", f"Clicked {s}"))
    agent = _agent(any_store, max_actions=1)
    runs = await asyncio.wait_for(
        asyncio.gather(*(_ask(agent, QUESTION, SupportContext(s), "async") for s in sessions)),
        timeout=30,
    )
    assert [run[2].content for run in runs] == [
        f"[Session context]\nRecent activity:\n1. Clicked {s} — /{s}" for s in sessions
    ]
