"""LangChain conversation tracking under real ``create_agent`` agents (only the model is fake).

Every event goes through a real ``HttpBatchSink`` to the loopback ingest receiver
(or a real ``ContextStoreSink``), so each test asserts what a collector receives:
exact types, order, names and token sums.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from autoplay_base import ContextStore
from autoplay_base.emulator.receiver import IngestReceiver
from autoplay_base.tracking import AsyncTracker, ContextStoreSink, HttpBatchSink, Tracker
from langchain_autoplay import _context_turn
from langchain_autoplay._tracking import result_usage
from langchain_autoplay.tracking import (
    TURN_INCOMPLETE,
    AutoplayTrackingHandler,
    tracking_session,
)
from langchain_autoplay.tracking_middleware import AutoplayTrackingMiddleware
from tests._fixtures.receiver import received
from tests.langchain_autoplay._support import soft_failing_tool

MODEL = "fake-model-1"


class ToolCallingFakeModel(GenericFakeChatModel):
    """``GenericFakeChatModel`` that agents can bind tools to (it replays its script)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        return self


def scripted_model(tool_name: str, query: str) -> ToolCallingFakeModel:
    """First call: ``tool_name(q=query)`` (10 in / 3 out tokens); second: the answer (20 / 5)."""
    call = {"name": tool_name, "args": {"q": query}, "id": "call-1", "type": "tool_call"}
    return ToolCallingFakeModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[call],
                    usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
                    response_metadata={"model_name": MODEL},
                ),
                AIMessage(
                    f"Open Reports, then {query}.",
                    usage_metadata={"input_tokens": 20, "output_tokens": 5, "total_tokens": 25},
                    response_metadata={"model_name": MODEL},
                ),
            ]
        )
    )


@tool
def lookup(q: str) -> str:
    """Look a feature up in the help center."""
    return f"Reports has {q}"


@tool
async def alookup(q: str) -> str:
    """Look a feature up in the help center (async, yields to the loop first)."""
    await asyncio.sleep(0)
    return f"Reports has {q}"


@tool
def broken(q: str) -> str:
    """A tool that fails."""
    raise ValueError(f"backend down, token=sk-secret {q}")


@tool
def approve(q: str) -> str:
    """Ask a human to approve (a LangGraph interrupt)."""
    answer = interrupt({"approve": q})
    return f"approved: {answer}"


def expected_turn(user: str, query: str, tool: str = "lookup") -> list[tuple[Any, ...]]:
    """The events of one completed scripted agent call, as :func:`summary` shows them."""
    return [
        ("usage", MODEL, 10, 3),
        ("tool_call", tool, {"q": query}, f"Reports has {query}", None),
        ("usage", MODEL, 20, 5),
        ("turn", user, f"Open Reports, then {query}.", (MODEL, 30, 8)),
    ]


def sessions(receiver: IngestReceiver) -> set[tuple[str, str]]:
    """The ``(session_id, product_id)`` pairs the received events carry."""
    return {(e["session_id"], e["product_id"]) for e in receiver.unique_events()}


def meta(session_id: str, product_id: str = "acme") -> dict[str, str]:
    return {"session_id": session_id, "product_id": product_id}


def question(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


@pytest.fixture
def tracker(receiver: IngestReceiver) -> Iterator[Tracker]:
    with Tracker([HttpBatchSink(receiver.url)]) as t:
        yield t


def delivered(tracker: Tracker, count: int) -> None:
    result = tracker.flush(timeout=5.0)
    assert (result.delivered, result.pending, result.failed, result.dropped) == (count, 0, 0, 0)


# -- the callback handler ------------------------------------------------------------------
def test_handler_records_an_agent_turn_with_tools_and_summed_usage(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    agent = create_agent(scripted_model("lookup", "export"), tools=[lookup])
    config: RunnableConfig = {"callbacks": [handler], "metadata": meta("ps_1")}

    output = agent.invoke(question("How do I export?"), config=config)

    assert output["messages"][-1].content == "Open Reports, then export."
    delivered(tracker, 4)
    assert received(receiver) == expected_turn("How do I export?", "export")
    assert sessions(receiver) == {("ps_1", "acme")}
    assert handler.stats() == {
        "hook_errors": 0,
        "open_runs": 0,
        "open_runs_dropped": 0,
        "untracked_runs": 0,
    }


async def test_handler_records_an_async_agent_turn_with_an_async_tracker(
    receiver: IngestReceiver,
) -> None:
    async with AsyncTracker([HttpBatchSink(receiver.url)]) as tracker:
        handler = AutoplayTrackingHandler(tracker, conversation_id="c_9")
        agent = create_agent(scripted_model("alookup", "share"), tools=[alookup])
        await agent.ainvoke(
            question("Can I share it?"),
            config={"callbacks": [handler], "metadata": meta("ps_2")},
        )
        result = await tracker.aflush(timeout=5.0)
    assert (result.delivered, result.pending) == (4, 0)
    assert received(receiver) == expected_turn("Can I share it?", "share", tool="alookup")
    assert {e["conversation_id"] for e in receiver.unique_events()} == {"c_9"}


async def test_two_concurrent_async_agents_sharing_one_handler_get_their_own_turns(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    calls = [("ps_a", "How do I export?", "export"), ("ps_b", "How do I share?", "share")]

    async def call(session_id: str, text: str, query: str) -> None:
        agent = create_agent(scripted_model("alookup", query), tools=[alookup])
        await agent.ainvoke(
            question(text), config={"callbacks": [handler], "metadata": meta(session_id)}
        )

    await asyncio.gather(*(call(*c) for c in calls))

    delivered(tracker, 8)
    for session_id, text, query in calls:
        assert received(receiver, session_id) == expected_turn(text, query, tool="alookup")
    assert handler.stats()["open_runs"] == 0


def test_two_agents_in_threads_sharing_one_handler_get_their_own_turns(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    both = threading.Barrier(2, timeout=10)

    @tool
    def rendezvous(q: str) -> str:
        """Wait until the other agent's tool runs too, so both turns are open at once."""
        both.wait()
        return f"Reports has {q}"

    def call(session_id: str, text: str, query: str) -> None:
        agent = create_agent(scripted_model("rendezvous", query), tools=[rendezvous])
        agent.invoke(question(text), config={"callbacks": [handler], "metadata": meta(session_id)})

    calls = [("ps_a", "How do I export?", "export"), ("ps_b", "How do I share?", "share")]
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(call, *c) for c in calls]:
            future.result(timeout=30)

    delivered(tracker, 8)
    for session_id, text, query in calls:
        assert received(receiver, session_id) == expected_turn(text, query, tool="rendezvous")


def test_a_chat_model_called_alone_is_one_turn(receiver: IngestReceiver, tracker: Tracker) -> None:
    handler = AutoplayTrackingHandler(tracker, session_id="ps_1", product_id="acme")
    model = scripted_model("lookup", "export")
    next(model.messages)  # skip the tool call: the answer only

    model.invoke([HumanMessage("Export?")], config={"callbacks": [handler]})

    delivered(tracker, 2)
    assert received(receiver) == [
        ("usage", MODEL, 20, 5),
        ("turn", "Export?", "Open Reports, then export.", (MODEL, 20, 5)),
    ]


def test_usage_from_llm_output_token_usage_and_invocation_model() -> None:
    response = LLMResult(
        generations=[[Generation(text="hi")]],
        llm_output={"token_usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    )
    usage = result_usage(response, "gpt-from-params")
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.calls) == (
        "gpt-from-params",
        7,
        2,
        1,
    )
    message = AIMessage(
        "hi", usage_metadata={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    )
    both = result_usage(
        LLMResult(
            generations=[[ChatGeneration(message=message)], [ChatGeneration(message=message)]],
            llm_output={"model_name": "gpt-named", "token_usage": {"prompt_tokens": 99}},
        )
    )
    # Messages' own metadata wins over llm_output's totals; the name comes from llm_output.
    assert (both.model, both.input_tokens, both.output_tokens, both.calls) == ("gpt-named", 6, 2, 2)
    assert result_usage(LLMResult(generations=[[Generation(text="x")]])).as_dict() is None
    # n=2 choices of one call: langchain-openai copies the call's usage onto each.
    choices = LLMResult(
        generations=[[ChatGeneration(message=message), ChatGeneration(message=message)]]
    )
    once = result_usage(choices)
    assert (once.input_tokens, once.output_tokens, once.calls) == (3, 1, 1)


SOFT_TURN = [
    ("usage", MODEL, 10, 3),
    ("tool_call", "soft", {"q": "export"}, None, True),
    ("usage", MODEL, 20, 5),
    ("turn", "How do I export?", "Open Reports, then export.", (MODEL, 30, 8)),
]


@pytest.mark.parametrize(
    "user",
    [
        {"role": "user", "content": "How do I export?"},  # the LangChain v1 docs' form
        "How do I export?",
        ("user", "How do I export?"),
    ],
)
def test_a_tool_failure_the_model_reads_is_a_failed_tool_call_in_any_input_form(
    receiver: IngestReceiver, tracker: Tracker, user: Any
) -> None:
    # handle_tool_error (and LangGraph's ToolNode) hand a failure to the model as a
    # ToolMessage with status="error": the turn completes, the tool call failed.
    handler = AutoplayTrackingHandler(tracker)
    agent = create_agent(scripted_model("soft", "export"), tools=[soft_failing_tool])
    config: RunnableConfig = {"callbacks": [handler], "metadata": meta("ps_1")}
    inputs = {"messages": user} if isinstance(user, str) else {"messages": [user]}
    output = agent.invoke(inputs, config=config)
    assert output["messages"][-1].content == "Open Reports, then export."
    delivered(tracker, 4)
    assert received(receiver) == SOFT_TURN
    assert "sk-secret" not in str(receiver.unique_events())  # errors are not recorded here


def test_middleware_records_a_tool_failure_the_model_reads(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    agent = create_agent(
        scripted_model("soft", "export"),
        tools=[soft_failing_tool],
        middleware=[AutoplayTrackingMiddleware(tracker)],
    )
    agent.invoke(question("How do I export?"), config={"configurable": meta("ps_1")})
    delivered(tracker, 4)
    assert received(receiver) == SOFT_TURN
    assert "sk-secret" not in str(receiver.unique_events())  # errors are not recorded here


# -- where the session comes from ----------------------------------------------------------
def test_tracking_session_attaches_the_handler_to_every_run_in_the_block(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    with tracking_session(tracker, session_id="ps_blk", product_id="acme") as handler:
        agent = create_agent(scripted_model("lookup", "export"), tools=[lookup])
        agent.invoke(question("How do I export?"))
        # A run's metadata still names its own session.
        other = create_agent(scripted_model("lookup", "share"), tools=[lookup])
        other.invoke(question("How do I share?"), config={"metadata": meta("ps_meta", "beta")})
    # Outside the block nothing is attached any more.
    create_agent(scripted_model("lookup", "print"), tools=[lookup]).invoke(question("Print?"))

    delivered(tracker, 8)
    assert received(receiver, "ps_blk") == expected_turn("How do I export?", "export")
    assert received(receiver, "ps_meta") == expected_turn("How do I share?", "share")
    assert sessions(receiver) == {("ps_blk", "acme"), ("ps_meta", "beta")}
    assert handler.stats()["open_runs"] == 0


async def test_tracking_session_reaches_async_runs_and_stays_in_its_task(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    async def call(session_id: str, query: str) -> None:
        with tracking_session(tracker, session_id=session_id, product_id="acme"):
            agent = create_agent(scripted_model("alookup", query), tools=[alookup])
            await agent.ainvoke(question(f"{query}?"))

    await asyncio.gather(call("ps_x", "export"), call("ps_y", "share"))

    delivered(tracker, 8)
    assert received(receiver, "ps_x") == expected_turn("export?", "export", tool="alookup")
    assert received(receiver, "ps_y") == expected_turn("share?", "share", tool="alookup")


def test_a_run_without_a_session_records_nothing_counted_and_logged_once(
    receiver: IngestReceiver, tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
        for query in ("export", "share"):
            agent = create_agent(scripted_model("lookup", query), tools=[lookup])
            agent.invoke(question("?"), config={"callbacks": [handler]})

    delivered(tracker, 0)
    assert handler.stats()["untracked_runs"] == 2
    assert handler.stats()["open_runs"] == 0
    assert [r.message for r in caplog.records if "untracked_runs" in r.message] == [
        "AutoplayTrackingHandler: a run named no session_id/product_id in its metadata and "
        "the handler has no default; not tracked (counted in untracked_runs)"
    ]


def test_a_bug_in_a_hook_never_aborts_the_agent(
    receiver: IngestReceiver, tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    agent = create_agent(scripted_model("lookup", "export"), tools=[lookup])
    # A session id that is not a string: tracker.session() raises ConfigError inside the hook.
    config: RunnableConfig = {
        "callbacks": [handler],
        "metadata": {"session_id": 12345, "product_id": "acme"},
    }
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
        output = agent.invoke(question("How do I export?"), config=config)

    assert output["messages"][-1].content == "Open Reports, then export."
    assert handler.stats()["hook_errors"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "langchain_autoplay"] == [
        "AutoplayTrackingHandler: the session lookup raised ConfigError; tracking skipped it "
        "(counted in hook_errors)"
    ]
    assert "12345" not in caplog.text


class FailingTracker(Tracker):
    """A tracker whose hot path raises (a fault no real tracker has: it tests the guards)."""

    def _capture(self, kind: str, scope: Any, data: dict[str, Any]) -> None:
        raise RuntimeError(f"capture failed for {data!r}")


@pytest.mark.parametrize("adapter", ["handler", "middleware"])
def test_a_hook_that_raises_is_counted_and_logged_once_and_the_agent_goes_on(
    receiver: IngestReceiver, adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FailingTracker([HttpBatchSink(receiver.url)]) as failing:
        handler = AutoplayTrackingHandler(failing)
        middleware = AutoplayTrackingMiddleware(failing)
        agent = create_agent(
            scripted_model("lookup", "export"),
            tools=[lookup],
            middleware=[middleware] if adapter == "middleware" else [],
        )
        config: RunnableConfig = {"metadata": meta("ps_1"), "configurable": meta("ps_1")}
        if adapter == "handler":
            config["callbacks"] = [handler]
        with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
            output = agent.invoke(question("How do I export?"), config=config)

    assert output["messages"][-1].content == "Open Reports, then export."
    used = handler if adapter == "handler" else middleware
    # usage, tool call, usage, turn: four failed captures, one log line without the values.
    assert used.stats()["hook_errors"] == 4
    logged = [r.getMessage() for r in caplog.records if r.name == "langchain_autoplay"]
    assert len(logged) == 1 and "raised RuntimeError" in logged[0]
    assert "export" not in caplog.text


def test_open_runs_are_bounded_and_the_oldest_dropped_is_counted(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    handler = AutoplayTrackingHandler(
        tracker, session_id="ps_1", product_id="acme", max_open_runs=2
    )
    runs = [uuid.uuid4() for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="langchain_autoplay"):
        for run_id in runs:  # roots that never end (a crashed worker, a lost callback)
            handler.on_chain_start({}, {"input": "hi"}, run_id=run_id)

    assert handler.stats()["open_runs"] == 2
    assert handler.stats()["open_runs_dropped"] == 3
    assert list(handler.open.runs) == runs[3:]
    assert sum("open_runs_dropped" in r.message for r in caplog.records) == 1
    # The end of a dropped run is ignored; the end of a kept one is a turn.
    handler.on_chain_end({"output": "dropped"}, run_id=runs[0])
    handler.on_chain_end({"output": "kept"}, run_id=runs[4])
    delivered(tracker, 1)


# -- statuses ------------------------------------------------------------------------------
def test_a_tool_error_is_a_failed_tool_call_and_an_incomplete_turn(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    agent = create_agent(scripted_model("broken", "export"), tools=[broken])
    with pytest.raises(ValueError, match="backend down"):
        agent.invoke(question("Export?"), config={"callbacks": [handler], "metadata": meta("ps_1")})

    delivered(tracker, 3)
    assert received(receiver) == [
        ("usage", MODEL, 10, 3),
        ("tool_call", "broken", {"q": "export"}, None, True),
        (
            "event",
            TURN_INCOMPLETE,
            {
                "status": "error",
                "error": "ValueError",
                "usage": {"model": MODEL, "input_tokens": 10, "output_tokens": 3},
            },
        ),
    ]
    assert "sk-secret" not in str(receiver.unique_events())
    assert handler.stats()["open_runs"] == 0


def test_an_interrupted_run_is_recorded_as_interrupted_and_the_resumed_run_as_a_turn(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    model = scripted_model("approve", "refund")
    agent = create_agent(model, tools=[approve], checkpointer=InMemorySaver())
    config: RunnableConfig = {
        "callbacks": [handler],
        "metadata": meta("ps_1"),
        "configurable": {"thread_id": "t1"},
    }

    paused = agent.invoke(question("Refund me"), config=config)
    assert [i.value for i in paused["__interrupt__"]] == [{"approve": "refund"}]
    done = agent.invoke(Command(resume="yes"), config=config)
    assert done["messages"][-1].content == "Open Reports, then refund."

    delivered(tracker, 6)
    interrupted = {"model": MODEL, "input_tokens": 10, "output_tokens": 3}
    assert received(receiver) == [
        ("usage", MODEL, 10, 3),
        ("tool_call", "approve", {"q": "refund"}, None, True),
        (
            "event",
            TURN_INCOMPLETE,
            {"status": "interrupted", "error": "GraphInterrupt", "usage": interrupted},
        ),
        # The resumed run: the tool completes, the model answers; its input is a Command.
        ("tool_call", "approve", {"q": "refund"}, "approved: yes", None),
        ("usage", MODEL, 20, 5),
        ("turn", "", "Open Reports, then refund.", (MODEL, 20, 5)),
    ]


async def test_a_cancelled_async_run_is_recorded_as_cancelled(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    started = asyncio.Event()

    @tool
    async def slow(q: str) -> str:
        """A tool that never finishes on its own."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    agent = create_agent(scripted_model("slow", "export"), tools=[slow])
    task = asyncio.create_task(
        agent.ainvoke(
            question("Export?"), config={"callbacks": [handler], "metadata": meta("ps_1")}
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    delivered(tracker, 3)
    assert received(receiver) == [
        ("usage", MODEL, 10, 3),
        ("tool_call", "slow", {"q": "export"}, None, True),
        (
            "event",
            TURN_INCOMPLETE,
            {
                "status": "cancelled",
                "error": "CancelledError",
                "usage": {"model": MODEL, "input_tokens": 10, "output_tokens": 3},
            },
        ),
    ]
    assert handler.stats()["open_runs"] == 0


# -- the middleware ------------------------------------------------------------------------
@dataclass
class SupportContext:
    session_id: str
    product_id: str


def test_middleware_records_exactly_one_turn_per_agent_call(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    middleware = AutoplayTrackingMiddleware(tracker)
    agent = create_agent(
        scripted_model("lookup", "export"),
        tools=[lookup],
        middleware=[middleware],
        context_schema=SupportContext,
    )
    output = agent.invoke(question("How do I export?"), context=SupportContext("ps_mw", "acme"))

    assert output["messages"][-1].content == "Open Reports, then export."
    assert "autoplay_tracking" not in output
    delivered(tracker, 4)
    assert received(receiver) == expected_turn("How do I export?", "export")
    assert sessions(receiver) == {("ps_mw", "acme")}
    assert middleware.stats() == {"hook_errors": 0, "untracked_runs": 0}


async def test_middleware_async_concurrent_calls_each_get_their_turn(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    middleware = AutoplayTrackingMiddleware(tracker, product_id="acme")

    async def call(session_id: str, query: str) -> None:
        agent = create_agent(
            scripted_model("alookup", query), tools=[alookup], middleware=[middleware]
        )
        await agent.ainvoke(
            question(f"{query}?"), config={"configurable": {"session_id": session_id}}
        )

    await asyncio.gather(call("ps_a", "export"), call("ps_b", "share"))

    delivered(tracker, 8)
    assert received(receiver, "ps_a") == expected_turn("export?", "export", tool="alookup")
    assert received(receiver, "ps_b") == expected_turn("share?", "share", tool="alookup")


def test_middleware_second_call_on_a_thread_counts_only_its_own_messages(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    model = ToolCallingFakeModel(
        messages=iter(
            [
                AIMessage(
                    "One.",
                    usage_metadata={"input_tokens": 4, "output_tokens": 1, "total_tokens": 5},
                ),
                AIMessage(
                    "Two.",
                    usage_metadata={"input_tokens": 9, "output_tokens": 2, "total_tokens": 11},
                ),
            ]
        )
    )
    agent = create_agent(
        model, middleware=[AutoplayTrackingMiddleware(tracker)], checkpointer=InMemorySaver()
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t", **meta("ps_1")}}
    agent.invoke(question("First?"), config=config)
    agent.invoke(question("Second?"), config=config)

    delivered(tracker, 4)
    assert received(receiver) == [
        ("usage", None, 4, 1),
        ("turn", "First?", "One.", (None, 4, 1)),
        ("usage", None, 9, 2),
        ("turn", "Second?", "Two.", (None, 9, 2)),
    ]


def test_middleware_records_a_failed_tool_and_no_turn(
    receiver: IngestReceiver, tracker: Tracker
) -> None:
    agent = create_agent(
        scripted_model("broken", "export"),
        tools=[broken],
        middleware=[AutoplayTrackingMiddleware(tracker)],
    )
    with pytest.raises(ValueError, match="backend down"):
        agent.invoke(question("Export?"), config={"configurable": meta("ps_1")})

    delivered(tracker, 2)
    assert received(receiver) == [
        ("usage", MODEL, 10, 3),
        ("tool_call", "broken", {"q": "export"}, None, True),
    ]


# -- fed back into the live context ----------------------------------------------------------
def test_the_agents_answer_appears_in_the_next_enrich(receiver: IngestReceiver) -> None:
    store = ContextStore()
    with Tracker([ContextStoreSink(store), HttpBatchSink(receiver.url)]) as tracker:
        handler = AutoplayTrackingHandler(tracker)
        agent = create_agent(scripted_model("lookup", "export"), tools=[lookup])
        agent.invoke(
            question("How do I export?"), config={"callbacks": [handler], "metadata": meta("ps_1")}
        )
        result = tracker.flush(timeout=5.0)
    assert (result.delivered, result.pending) == (8, 0)

    assert store.enrich("ps_1", "It still fails", product_id="acme") == (
        "[Session context]\n"
        "Recent activity:\n"
        "1. Assistant used tool lookup\n"
        "2. Assistant answered: Open Reports, then export.\n"
        "\n"
        "[Query]\n"
        "It still fails"
    )


# -- runs started without their parent's config (create_agent's model on Python 3.10) -------
@pytest.fixture
def marks_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Roots mark their context on this Python too (they do by themselves on 3.10 only)."""
    monkeypatch.setattr(_context_turn, "NEEDED", True)


def configless_agent(model: Runnable[Any, Any]) -> Any:
    """A graph whose node calls ``model`` with no config and none in the context.

    What a ``create_agent`` model call is on Python 3.10 in an async graph (LangGraph
    cannot set the node's config in the context there), reproduced on every version.
    """

    async def think(state: MessagesState) -> dict[str, Any]:
        token = var_child_runnable_config.set(None)
        try:
            reply = await model.ainvoke(state["messages"])
        finally:
            var_child_runnable_config.reset(token)
        return {"messages": [reply]}

    graph = StateGraph(MessagesState)
    graph.add_node("think", think)
    graph.add_edge(START, "think")
    graph.add_edge("think", END)
    return graph.compile()


def answer_model() -> ToolCallingFakeModel:
    return ToolCallingFakeModel(
        messages=iter(
            [
                AIMessage(
                    "Open Reports.",
                    usage_metadata={"input_tokens": 20, "output_tokens": 5, "total_tokens": 25},
                    response_metadata={"model_name": MODEL},
                )
            ]
        )
    )


CONFIGLESS_TURN = [
    ("usage", MODEL, 20, 5),
    ("turn", "Export?", "Open Reports.", (MODEL, 20, 5)),
]


async def test_a_model_called_without_a_config_is_part_of_the_turn(
    receiver: IngestReceiver, tracker: Tracker, marks_contexts: None
) -> None:
    handler = AutoplayTrackingHandler(tracker)
    config: Any = {"callbacks": [handler], "metadata": meta("ps_1")}
    await configless_agent(answer_model()).ainvoke(question("Export?"), config=config)

    delivered(tracker, 2)
    assert received(receiver) == CONFIGLESS_TURN
    assert handler.stats()["open_runs"] == 0


async def test_tracking_session_adopts_a_model_called_without_a_config(
    receiver: IngestReceiver, tracker: Tracker, marks_contexts: None
) -> None:
    with tracking_session(tracker, session_id="ps_1", product_id="acme") as handler:
        await configless_agent(answer_model()).ainvoke(question("Export?"))

    delivered(tracker, 2)
    assert received(receiver) == CONFIGLESS_TURN
    assert handler.stats()["open_runs"] == 0


def test_a_root_that_never_ended_adopts_nothing_later(
    receiver: IngestReceiver, tracker: Tracker, marks_contexts: None
) -> None:
    stale = AutoplayTrackingHandler(tracker, session_id="ps_1", product_id="acme", max_open_runs=1)

    def in_one_context() -> None:
        # A root that never ends (a lost callback), then dropped from the bounded map by
        # the next root: the context it marked adopts nothing afterwards.
        stale.on_chain_start({}, {"input": "lost"}, run_id=uuid.uuid4())
        stale.on_chain_start({}, {"input": "also lost"}, run_id=uuid.uuid4())
        stale.open.runs.clear()
        asyncio.run(configless_agent(answer_model()).ainvoke(question("Export?")))

    contextvars.copy_context().run(in_one_context)
    delivered(tracker, 0)
    assert stale.stats()["open_runs"] == 0
