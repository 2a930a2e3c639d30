"""What the adapters inject passes the real message formatting of Anthropic, OpenAI and
Mistral (their own conversion code, offline: fake keys, no request is ever sent)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_mistralai import ChatMistralAI
from langchain_openai import ChatOpenAI

from autoplay_base.context_store import ContextStore
from langchain_autoplay.chat_message_histories import AutoplayChatMessageHistory
from langchain_autoplay.middleware import AutoplayContextMiddleware
from tests.langchain_autoplay._support import PRODUCT, ChatInputRecorder, EchoChatModel, actions

pytestmark = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")

BLOCK1 = "[Session context]\nRecent activity:\n1. Opened billing — /s1"
BLOCK2 = "[Session context]\nRecent activity:\n1. Clicked Upgrade — /s1"


def anthropic(messages: list[BaseMessage]) -> Any:
    payload = ChatAnthropic(model="claude-sonnet-4-5", api_key="fake")._get_request_payload(
        messages
    )
    return payload.get("system"), payload["messages"]


def openai(messages: list[BaseMessage]) -> Any:
    return ChatOpenAI(model="gpt-4o-mini", api_key="fake")._get_request_payload(messages)[
        "messages"
    ]


def mistral(messages: list[BaseMessage]) -> Any:
    model = ChatMistralAI(model="mistral-small-latest", api_key="fake")  # type: ignore[call-arg]
    return model._create_message_dicts(messages, None)[0]


def _two_turns(store: ContextStore, clock: Any, live_context: Any) -> list[list[BaseMessage]]:
    """The messages the model got on two turns of a RunnableWithMessageHistory chain."""
    recorder = ChatInputRecorder()
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | EchoChatModel(),
        lambda session_id: AutoplayChatMessageHistory(
            store, session_id, product_id=PRODUCT, live_context=live_context, clock=clock
        ),
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(id="session_id", annotation=str, is_shared=True)
        ],
    )
    config: RunnableConfig = {"configurable": {"session_id": "s1"}, "callbacks": [recorder]}
    store.add(actions("s1", "Opened billing"))
    clock.advance()
    chain.invoke({"question": "How do I upgrade?"}, config)
    clock.advance()
    store.add(actions("s1", "Clicked Upgrade"))
    clock.advance()
    chain.invoke({"question": "And now?"}, config)
    return recorder.calls


def test_old_system_message_placement_is_rejected_by_anthropic(
    store: ContextStore, clock: Any
) -> None:
    # The 0.x placement, kept as "system_message": a system message after the history.
    _, second = _two_turns(store, clock, "system_message")
    with pytest.raises(ValueError, match="multiple non-consecutive system messages"):
        anthropic(second)


def test_human_message_placement_passes_every_formatter(store: ContextStore, clock: Any) -> None:
    first, second = _two_turns(store, clock, True)  # True: the default placement
    reply1 = "\n".join(f"{m.type}: {m.content}" for m in first)
    assert anthropic(second) == (
        "Be brief.",
        [
            {"role": "user", "content": "How do I upgrade?"},  # stored turns stay plain
            {"role": "assistant", "content": reply1},
            {
                "role": "user",
                "content": [{"type": "text", "text": BLOCK2}, {"type": "text", "text": "And now?"}],
            },
        ],
    )
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I upgrade?"},
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": BLOCK2},
        {"role": "user", "content": "And now?"},
    ]
    assert [{"role": m["role"], "content": m["content"]} for m in openai(second)] == expected
    assert [{"role": m["role"], "content": m["content"]} for m in mistral(second)] == expected
    # The cached prefix: turn 2 starts with turn 1's system prompt and question unchanged.
    assert [m.content for m in second[:2]] == ["Be brief.", "How do I upgrade?"]


def test_system_prompt_placement_passes_every_formatter(store: ContextStore, clock: Any) -> None:
    _, second = _two_turns(store, clock, "system_prompt")
    system, messages = anthropic(second)
    assert system == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": BLOCK2}]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    for formatted in (openai(second), mistral(second)):
        assert [(m["role"], m["content"]) for m in formatted[:3]] == [
            ("system", "Be brief."),
            ("system", BLOCK2),
            ("user", "How do I upgrade?"),
        ]


@pytest.mark.parametrize("placement", ["system_prompt", "human_message"])
def test_middleware_placements_pass_every_formatter(store: ContextStore, placement: str) -> None:
    store.add(actions("s1", "Opened billing"))
    recorder = ChatInputRecorder()
    agent = create_agent(
        EchoChatModel(),
        system_prompt="Be brief.",
        middleware=[AutoplayContextMiddleware(store, placement=placement)],  # type: ignore[arg-type]
    )
    config: RunnableConfig = {
        "configurable": {"session_id": "s1", "product_id": PRODUCT},
        "callbacks": [recorder],
    }
    out = agent.invoke({"messages": [HumanMessage("hi")]}, config)
    agent.invoke({"messages": [*out["messages"], HumanMessage("again")]}, config)
    second = recorder.calls[1]
    system, messages = anthropic(second)
    if placement == "system_prompt":
        assert system == f"Be brief.\n\n{BLOCK1}"
        assert messages[-1] == {"role": "user", "content": "again"}
    else:
        assert system == "Be brief."
        assert messages[-1] == {"role": "user", "content": f"{BLOCK1}\n\nagain"}
        assert messages[0] == {"role": "user", "content": "hi"}  # earlier turns unchanged
    assert [m["role"] for m in openai(second)] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in mistral(second)] == ["system", "user", "assistant", "user"]
