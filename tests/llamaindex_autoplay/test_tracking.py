"""LlamaIndex conversation tracking through the root dispatcher, with real engines and agents.

Only the LLM is fake: a small ``FunctionCallingLLM`` that calls one tool when the
user has spoken and answers once the tool has; it reports token usage the way
LlamaIndex's OpenAI integration does (``additional_kwargs``). Every event goes
through a real ``HttpBatchSink`` to the loopback receiver (or a ``ContextStoreSink``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.schema import TextNode
from llama_index.core.tools import FunctionTool
from workflows.errors import WorkflowCancelledByUser

from autoplay_base import ContextStore
from autoplay_base.emulator.receiver import IngestReceiver
from autoplay_base.tracking import AsyncTracker, ContextStoreSink, HttpBatchSink, Tracker
from llamaindex_autoplay import autoplay_session
from llamaindex_autoplay.tracking import (
    TURN_INCOMPLETE,
    TrackingInstrumentation,
    instrument_tracking,
)
from tests._fixtures.receiver import received

MODEL = "fake-li-1"

# Building a FunctionAgent walks its members with inspect.getmembers (workflow step
# discovery), which touches pydantic's deprecated attributes: LlamaIndex's warnings, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]


class ScriptedLLM(FunctionCallingLLM):
    """Calls ``tool_name(q=query)`` when the last message is the user's (10 in / 3 out tokens),
    answers ``"Open Reports, then <query>."`` otherwise (20 / 5)."""

    tool_name: str = "lookup"
    query: str = "export"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, is_function_calling_model=True, model_name=MODEL)

    def _reply(self, messages: Sequence[ChatMessage], tools: bool) -> ChatResponse:
        if tools and messages[-1].role == MessageRole.USER:
            call = {"id": "call-1", "name": self.tool_name, "args": {"q": self.query}}
            message = ChatMessage(
                role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}
            )
            counts = {"prompt_tokens": 10, "completion_tokens": 3}
        else:
            message = ChatMessage(
                role=MessageRole.ASSISTANT, content=f"Open Reports, then {self.query}."
            )
            counts = {"prompt_tokens": 20, "completion_tokens": 5}
        return ChatResponse(
            message=message, delta=message.content, additional_kwargs=counts, raw={"model": MODEL}
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages, bool(kwargs.get("tools")))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._reply(messages, bool(kwargs.get("tools")))

    @llm_chat_callback()
    def stream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> Generator[ChatResponse, None, None]:
        reply = self._reply(messages, bool(kwargs.get("tools")))

        def gen() -> Generator[ChatResponse, None, None]:
            yield reply

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> AsyncGenerator[ChatResponse, None]:
        reply = self._reply(messages, bool(kwargs.get("tools")))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield reply

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(
            text=f"Open Reports, then {self.query}.",
            additional_kwargs={"prompt_tokens": 7, "completion_tokens": 2},
        )

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return self.complete(prompt)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Generator[CompletionResponse, None, None]:
        def gen() -> Generator[CompletionResponse, None, None]:
            yield self.complete(prompt)

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> AsyncGenerator[CompletionResponse, None]:
        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            yield self.complete(prompt)

        return gen()

    def _prepare_chat_with_tools(  # noqa: PLR0917 - the base class's signature
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        return {"messages": messages, "tools": tools}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        return [
            ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
            for c in calls
        ]


def lookup(q: str) -> str:
    """Look a feature up in the help center."""
    return f"Reports has {q}"


def broken(q: str) -> str:
    """A tool that fails."""
    raise ValueError(f"backend down, token=sk-secret {q}")


def agent(query: str, tool: Any = lookup) -> FunctionAgent:
    return FunctionAgent(
        tools=[FunctionTool.from_defaults(tool)],
        llm=ScriptedLLM(tool_name=tool.__name__, query=query),
    )


def expected_agent_turn(user: str, query: str) -> list[tuple[Any, ...]]:
    return [
        ("usage", MODEL, 10, 3),
        ("tool_call", "lookup", {"q": query}, f"Reports has {query}", None),
        ("usage", MODEL, 20, 5),
        ("turn", user, f"Open Reports, then {query}.", (MODEL, 30, 8)),
    ]


@pytest.fixture
def tracker(receiver: IngestReceiver) -> Iterator[Tracker]:
    with Tracker([HttpBatchSink(receiver.url)]) as t:
        yield t


@pytest.fixture
def instrumented(tracker: Tracker) -> Iterator[TrackingInstrumentation]:
    handle = instrument_tracking(tracker, product_id="acme")
    try:
        yield handle
    finally:
        handle.uninstrument()


def delivered(tracker: Tracker, count: int) -> None:
    result = tracker.flush(timeout=5.0)
    assert (result.delivered, result.pending, result.failed, result.dropped) == (count, 0, 0, 0)


# -- agents ----------------------------------------------------------------------------------
async def test_a_function_agent_run_is_one_turn_with_its_tool_and_summed_usage(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    with autoplay_session("ps_1", product_id="acme"):
        output = await agent("export").run(user_msg="How do I export?")

    assert str(output) == "Open Reports, then export."
    delivered(tracker, 4)
    assert received(receiver) == expected_agent_turn("How do I export?", "export")
    assert {(e["session_id"], e["product_id"]) for e in receiver.unique_events()} == {
        ("ps_1", "acme")
    }
    assert instrumented.stats() == {
        "hook_errors": 0,
        "open_spans": 0,
        "open_spans_dropped": 0,
        "untracked_runs": 0,
    }


async def test_two_concurrent_agents_each_get_their_own_turn(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    async def call(session_id: str, query: str) -> None:
        with autoplay_session(session_id):  # the product comes from instrument_tracking
            await agent(query).run(user_msg=f"{query}?")

    await asyncio.gather(call("ps_a", "export"), call("ps_b", "share"))

    delivered(tracker, 8)
    assert received(receiver, "ps_a") == expected_agent_turn("export?", "export")
    assert received(receiver, "ps_b") == expected_agent_turn("share?", "share")
    assert instrumented.stats()["open_spans"] == 0


async def test_two_concurrent_agents_with_an_async_tracker_each_get_their_own_turn(
    receiver: IngestReceiver,
) -> None:
    async with AsyncTracker([HttpBatchSink(receiver.url)]) as tracker:
        handle = instrument_tracking(tracker, product_id="acme")
        try:

            async def call(session_id: str, query: str) -> str:
                with autoplay_session(session_id):
                    return str(await agent(query).run(user_msg=f"{query}?"))

            answers = await asyncio.gather(call("ps_a", "export"), call("ps_b", "share"))
        finally:
            handle.uninstrument()
        result = await tracker.aflush(timeout=5.0)
    assert answers == ["Open Reports, then export.", "Open Reports, then share."]
    assert (result.delivered, result.pending, result.failed, result.dropped) == (8, 0, 0, 0)
    assert received(receiver, "ps_a") == expected_agent_turn("export?", "export")
    assert received(receiver, "ps_b") == expected_agent_turn("share?", "share")
    assert handle.stats()["open_spans"] == 0


def test_agents_run_from_sync_code_in_threads_each_get_their_own_turn(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    # A sync application drives the (async-only) FunctionAgent with asyncio.run, one
    # loop per thread; the sync Tracker and one instrumentation serve both.
    answers: dict[str, str] = {}
    errors: list[BaseException] = []

    async def run(query: str) -> str:
        return str(await agent(query).run(user_msg=f"{query}?"))

    def call(session_id: str, query: str) -> None:
        try:
            with autoplay_session(session_id):
                answers[session_id] = asyncio.run(run(query))
        except BaseException as exc:  # surfaced below: a thread must not swallow it
            errors.append(exc)

    threads = [
        threading.Thread(target=call, args=args) for args in (("ps_a", "export"), ("ps_b", "share"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert answers == {"ps_a": "Open Reports, then export.", "ps_b": "Open Reports, then share."}
    delivered(tracker, 8)
    assert received(receiver, "ps_a") == expected_agent_turn("export?", "export")
    assert received(receiver, "ps_b") == expected_agent_turn("share?", "share")
    assert instrumented.stats()["open_spans"] == 0


async def test_a_failing_tool_is_a_failed_tool_call_and_the_agent_still_answers(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    with autoplay_session("ps_1", product_id="acme"):
        output = await agent("export", tool=broken).run(user_msg="Export?")

    assert str(output) == "Open Reports, then export."
    delivered(tracker, 4)
    assert received(receiver) == [
        ("usage", MODEL, 10, 3),
        ("tool_call", "broken", {"q": "export"}, None, True),
        ("usage", MODEL, 20, 5),
        ("turn", "Export?", "Open Reports, then export.", (MODEL, 30, 8)),
    ]
    assert "sk-secret" not in str(receiver.unique_events())


async def hanging_run() -> Any:
    """A ``FunctionAgent`` run (session ``ps_1``) whose tool waits for ever, once it waits."""
    started = asyncio.Event()

    async def wait_forever(q: str) -> str:
        """A tool that never finishes on its own."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    wait_forever.__name__ = "lookup"
    with autoplay_session("ps_1", product_id="acme"):
        handler = agent("export", tool=wait_forever).run(user_msg="Export?")
    await asyncio.wait_for(started.wait(), 10)
    return handler


def cancelled_turn(error: str) -> list[tuple[Any, ...]]:
    """What :func:`hanging_run` records when cancelled with ``error``."""
    return [
        ("usage", MODEL, 10, 3),
        ("tool_call", "lookup", {"q": "export"}, None, True),
        (
            "event",
            TURN_INCOMPLETE,
            {
                "status": "cancelled",
                "error": error,
                "usage": {"model": MODEL, "input_tokens": 10, "output_tokens": 3},
            },
        ),
    ]


@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="on 3.13 an asyncio cancellation of a workflow run (even handler.cancel()) does "
    "not reach its control loop, which goes on; cancel_run, the supported way, is tested below",
)
async def test_a_cancelled_agent_run_is_recorded_as_cancelled(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    handler = await hanging_run()
    # The hard cancel (an asyncio cancellation of the run; deprecated for cancel_run).
    with pytest.warns(DeprecationWarning, match="cancel_run"):
        handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler

    delivered(tracker, 3)
    assert received(receiver) == cancelled_turn("CancelledError")
    assert instrumented.stats()["open_spans"] == 0


async def test_a_run_ended_by_cancel_run_is_recorded_as_cancelled_not_as_a_turn(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation
) -> None:
    handler = await hanging_run()
    await handler.cancel_run()  # LlamaIndex's own way: the run span exits without a result
    with pytest.raises(WorkflowCancelledByUser):
        await handler

    delivered(tracker, 3)
    assert received(receiver) == cancelled_turn("WorkflowCancelledByUser")
    assert instrumented.stats()["open_spans"] == 0


# -- engines -----------------------------------------------------------------------------------
@pytest.fixture
def query_engine() -> Any:
    node = TextNode(text="Reports: Export CSV", embedding=[1.0] * 8)
    return VectorStoreIndex([node]).as_query_engine(llm=ScriptedLLM(query="export"))


def test_a_query_is_one_turn_with_its_usage(
    receiver: IngestReceiver,
    tracker: Tracker,
    instrumented: TrackingInstrumentation,
    query_engine: Any,
) -> None:
    with autoplay_session("ps_q", product_id="beta"):
        response = query_engine.query("How do I export?")

    assert str(response) == "Open Reports, then export."
    delivered(tracker, 2)
    assert received(receiver) == [
        ("usage", MODEL, 20, 5),
        ("turn", "How do I export?", "Open Reports, then export.", (MODEL, 20, 5)),
    ]
    assert {(e["session_id"], e["product_id"]) for e in receiver.unique_events()} == {
        ("ps_q", "beta")
    }


async def test_an_async_query_with_an_async_tracker(
    receiver: IngestReceiver, query_engine: Any
) -> None:
    async with AsyncTracker([HttpBatchSink(receiver.url)]) as tracker:
        handle = instrument_tracking(tracker, product_id="acme")
        try:
            with autoplay_session("ps_q"):
                await query_engine.aquery("How do I export?")
        finally:
            handle.uninstrument()
        result = await tracker.aflush(timeout=5.0)
    assert (result.delivered, result.pending) == (2, 0)
    assert received(receiver) == [
        ("usage", MODEL, 20, 5),
        ("turn", "How do I export?", "Open Reports, then export.", (MODEL, 20, 5)),
    ]


@pytest.mark.parametrize("mode", ["chat", "achat"])
async def test_a_chat_engine_message_is_one_turn(
    receiver: IngestReceiver, tracker: Tracker, instrumented: TrackingInstrumentation, mode: str
) -> None:
    engine = SimpleChatEngine.from_defaults(llm=ScriptedLLM(query="invite"))
    with autoplay_session("ps_c", product_id="acme"):
        if mode == "chat":
            response = engine.chat("How do I invite?")
        else:
            response = await engine.achat("How do I invite?")

    assert str(response) == "Open Reports, then invite."
    delivered(tracker, 2)
    assert received(receiver) == [
        ("usage", MODEL, 20, 5),
        ("turn", "How do I invite?", "Open Reports, then invite.", (MODEL, 20, 5)),
    ]


# -- installing, sessions, bounds ----------------------------------------------------------------
def test_instrumenting_is_idempotent_and_uninstrument_removes_both_handlers(
    receiver: IngestReceiver, tracker: Tracker, query_engine: Any
) -> None:
    dispatcher = get_dispatcher()
    before = (list(dispatcher.span_handlers), list(dispatcher.event_handlers))
    handle = instrument_tracking(tracker, product_id="acme")
    assert instrument_tracking(tracker) is handle
    assert len(dispatcher.span_handlers) == len(before[0]) + 1
    assert len(dispatcher.event_handlers) == len(before[1]) + 1
    with autoplay_session("ps_1"):
        query_engine.query("Once?")
    handle.uninstrument()
    handle.uninstrument()
    assert (dispatcher.span_handlers, dispatcher.event_handlers) == before
    with autoplay_session("ps_1"):
        query_engine.query("Not tracked")

    delivered(tracker, 2)  # one turn and its usage, recorded once
    assert [e[0] for e in received(receiver)] == ["usage", "turn"]
    # After uninstrument a new handle can be installed again.
    again = instrument_tracking(tracker, product_id="acme")
    assert again is not handle
    assert again.installed
    again.uninstrument()


def test_a_call_outside_any_session_records_nothing_counted_and_logged_once(
    receiver: IngestReceiver, tracker: Tracker, query_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handle = instrument_tracking(tracker)  # no default product either
    try:
        with caplog.at_level(logging.WARNING, logger="llamaindex_autoplay"):
            VectorStoreIndex([TextNode(text="built outside any session")])  # not a miss
            query_engine.query("Who am I?")
            with autoplay_session("ps_no_product"):
                query_engine.query("Which product?")
    finally:
        handle.uninstrument()

    delivered(tracker, 0)
    assert handle.stats()["untracked_runs"] == 2  # one per root span: the two queries
    assert handle.stats()["open_spans"] == 0
    assert [r.getMessage() for r in caplog.records if r.name == "llamaindex_autoplay"] == [
        "llamaindex tracking: a call ran outside autoplay_session(...) or without a product; "
        "not tracked (counted in untracked_runs)"
    ]


class FailingTracker(Tracker):
    """A tracker whose hot path raises (a fault no real tracker has: it tests the guards)."""

    def _capture(self, kind: str, scope: Any, data: dict[str, Any]) -> None:
        raise RuntimeError(f"capture failed for {data!r}")


async def test_a_hook_that_raises_is_counted_and_logged_once_and_the_agent_goes_on(
    receiver: IngestReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    with FailingTracker([HttpBatchSink(receiver.url)]) as failing:
        handle = instrument_tracking(failing, product_id="acme")
        try:
            with (
                caplog.at_level(logging.WARNING, logger="llamaindex_autoplay"),
                autoplay_session("ps_1"),
            ):
                output = await agent("export").run(user_msg="How do I export?")
        finally:
            handle.uninstrument()

    assert str(output) == "Open Reports, then export."
    assert handle.stats()["hook_errors"] == 4  # usage, tool call, usage, turn
    logged = [r.getMessage() for r in caplog.records if r.name == "llamaindex_autoplay"]
    assert len(logged) == 1
    assert "raised RuntimeError" in logged[0]
    assert "export" not in caplog.text


def test_open_spans_are_bounded_and_the_oldest_dropped_is_counted(
    tracker: Tracker, query_engine: Any
) -> None:
    handle = instrument_tracking(tracker, product_id="acme", max_open_spans=3)
    try:
        with autoplay_session("ps_1"):
            query_engine.query("How do I export?")  # nine spans deep at the LLM call
    finally:
        handle.uninstrument()
    stats = handle.stats()
    assert stats["open_spans"] == 0
    assert stats["open_spans_dropped"] == 6
    delivered(tracker, 1)  # the LLM's usage; the root was dropped, so no turn


# -- fed back into the live context ------------------------------------------------------------
async def test_the_agents_answer_appears_in_the_next_enrich(receiver: IngestReceiver) -> None:
    store = ContextStore()
    with Tracker([ContextStoreSink(store), HttpBatchSink(receiver.url)]) as tracker:
        handle = instrument_tracking(tracker, product_id="acme")
        try:
            with autoplay_session("ps_1"):
                await agent("export").run(user_msg="How do I export?")
        finally:
            handle.uninstrument()
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
