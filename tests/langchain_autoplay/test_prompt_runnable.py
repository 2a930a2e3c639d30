"""``AutoplayPrompt`` in real LCEL chains (a fake chat model is the only stand-in).

The model receives one ``HumanMessage`` whose text is pinned here, equal to
``assemble_prompt`` of the same parts and to the bridge's own prompt for the
same store; scope comes from the input or ``config["configurable"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompt_values import StringPromptValue
from langchain_core.runnables import RunnableLambda

from autoplay_base.bridge import DEFAULT_SYSTEM_PROMPT, Turn, assemble_prompt, build_app
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousUserError, ConfigError, InvalidPayloadError
from autoplay_base.events import ActionsPayload, SlimAction
from autoplay_base.prompting._assembly import assistant_entry, human_entry
from autoplay_base.prompting._conversation import conversation_key
from langchain_autoplay.prompt import AutoplayPrompt
from tests.langchain_autoplay._support import ManualClock, fill

QUESTION = "How do I add a seat?"
KB = "Seats live under Settings."
CONFIG: Any = {"configurable": {"user_id": "u1"}}

EXPECTED = (
    f"{DEFAULT_SYSTEM_PROMPT}\n\n"
    "[Activity since the user's last message]\nSession s1 (acme):\nRecent activity:\n"
    "1. Opened seats — /seats\n\n"
    "[Recent activity]\nSession s1 (acme):\nRecent activity:\n"
    "1. Opened billing — /billing\n2. Opened seats — /seats\n\n"
    "[Conversation so far]\nUser: Where is billing?\nAssistant: In Settings.\n\n"
    "[Knowledge base]\n1. Mine first.\n2. Seats live under Settings.\n\n"
    "[Question]\nHow do I add a seat?"
)


def action(description: str, url: str, *, product_id: str = "acme") -> ActionsPayload:
    return ActionsPayload(
        product_id=product_id,
        session_id="s1",
        user_id="u1",
        forwarded_at=1.0,
        actions=(SlimAction(title=description, description=description, canonical_url=url),),
    )


async def history_with_a_later_action(
    store: ContextStore | AsyncContextStore, clock: ManualClock
) -> None:
    """Billing seen, one turn of conversation, then seats seen after the user's message."""
    await fill(store, action("Opened billing", "/billing"))
    asked = clock.advance()
    entries = [
        human_entry("Where is billing?", at=asked),
        assistant_entry("In Settings.", at=clock.advance()),
    ]
    if isinstance(store, AsyncContextStore):
        await store.backend.aappend_messages(conversation_key("acme", "u1"), entries)
    else:
        store.backend.append_messages(conversation_key("acme", "u1"), entries)
    clock.advance()
    await fill(store, action("Opened seats", "/seats"))


class Prompts(BaseCallbackHandler):
    """What the chat model was given, per call."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.calls.extend(messages)


def model() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage("Under Settings > Seats.")]))


def sync_kb(question: str) -> Sequence[str]:
    assert question == QUESTION
    return [KB]


async def async_kb(question: str) -> Sequence[str]:
    assert question == QUESTION
    return [KB]


async def test_the_chain_sends_the_bridges_prompt_as_one_human_message(clock: ManualClock) -> None:
    store = ContextStore(clock=clock)
    await history_with_a_later_action(store, clock)
    prompts = Prompts()
    chain = AutoplayPrompt(store, knowledge=sync_kb, clock=clock) | model()
    answer = chain.invoke(
        {"message": QUESTION, "knowledge": ["Mine first."]},
        config={**CONFIG, "callbacks": [prompts]},
    )
    assert answer.content == "Under Settings > Seats."
    assert prompts.calls == [[HumanMessage(EXPECTED)]]
    pure = assemble_prompt(
        QUESTION,
        since_last_message="Session s1 (acme):\nRecent activity:\n1. Opened seats — /seats",
        recent_activity="Session s1 (acme):\nRecent activity:\n"
        "1. Opened billing — /billing\n2. Opened seats — /seats",
        history=[Turn("human", "Where is billing?", 0.0), Turn("ai", "In Settings.", 0.0)],
        knowledge=["Mine first.", KB],
    )
    assert pure == EXPECTED
    assert "{" not in EXPECTED  # no placeholder left


async def test_ainvoke_equals_the_bridges_own_prompt_for_the_same_store(
    clock: ManualClock,
) -> None:
    store = AsyncContextStore(clock=clock)
    await history_with_a_later_action(store, clock)
    prompts = Prompts()
    runnable = AutoplayPrompt(store, knowledge=async_kb, clock=clock)
    value = await runnable.ainvoke({"message": QUESTION, "knowledge": ["Mine first."]}, CONFIG)
    assert value == StringPromptValue(text=EXPECTED)
    chain = runnable | model()
    await chain.ainvoke(
        {"message": QUESTION, "knowledge": ["Mine first."]},
        config={**CONFIG, "callbacks": [prompts]},
    )
    assert prompts.calls == [[HumanMessage(EXPECTED)]]
    bridge = build_app(
        store=store, api_token="a" * 20, webhook_secret="s" * 20, knowledge=async_kb, clock=clock
    ).state.bridge
    prompt, read_at = await bridge.prompt_for("u1", "acme", QUESTION, ["Mine first."])
    assert (prompt, read_at) == (EXPECTED, clock.now)


async def test_scope_comes_from_the_input_else_the_config(clock: ManualClock) -> None:
    store = ContextStore(clock=clock)
    await fill(store, action("Opened billing", "/billing"))
    await fill(store, action("Opened globex", "/g", product_id="globex"))
    runnable = AutoplayPrompt(store, system_prompt="S", clock=clock)
    billing = "S\n\n[Recent activity]\nSession s1 (acme):\nRecent activity:\n1. Opened billing"
    scoped = runnable.invoke(
        {"message": "hi", "user_id": "u1", "product_id": "acme"},
        {"configurable": {"user_id": "other", "product_id": "globex"}},
    )
    assert scoped.to_string() == f"{billing} — /billing\n\n[Question]\nhi"
    configured = runnable.invoke("hi", {"configurable": {"user_id": "u1", "product_id": "globex"}})
    assert configured.to_string() == (
        "S\n\n[Recent activity]\nSession s1 (globex):\nRecent activity:\n1. Opened globex — /g"
        "\n\n[Question]\nhi"
    )
    with pytest.raises(AmbiguousUserError):
        runnable.invoke("hi", CONFIG)  # u1 is known under acme and globex
    unknown = runnable.invoke("hi", {"configurable": {"user_id": "nobody"}})
    assert unknown.to_string() == "S\n\n[Question]\nhi"


@pytest.mark.parametrize(
    ("value", "config", "error", "message"),
    [
        ("hi", {}, ConfigError, "the call names no user"),
        ({"message": ""}, CONFIG, InvalidPayloadError, "message must be a non-empty string"),
        ({"message": 3}, CONFIG, InvalidPayloadError, "message must be a string"),
        (["hi"], CONFIG, InvalidPayloadError, "the input must be a string or a mapping"),
        ({"message": "hi", "knowledge": "x"}, CONFIG, InvalidPayloadError, "list of strings"),
        ({"message": "hi", "user_id": 7}, CONFIG, InvalidPayloadError, "user_id must be a string"),
    ],
)
def test_bad_input_is_refused_with_a_named_error(
    store: ContextStore, value: Any, config: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        AutoplayPrompt(store).invoke(value, config)


async def test_a_failing_or_async_knowledge_base_costs_only_the_excerpts(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = ContextStore(clock=clock)

    def down(question: str) -> Sequence[str]:
        raise RuntimeError("vector store down: key sk-123")

    with caplog.at_level(logging.WARNING, logger="autoplay_base.bridge"):
        failed = AutoplayPrompt(store, knowledge=down, system_prompt="S").invoke("q", CONFIG)
        # An async knowledge base under the sync driver cannot run: refused the same way.
        unawaited = AutoplayPrompt(store, knowledge=async_kb, system_prompt="S").invoke("q", CONFIG)
    assert failed.to_string() == unawaited.to_string() == "S\n\n[Question]\nq"
    assert [r.getMessage() for r in caplog.records] == [
        "bridge: the knowledge base failed (RuntimeError)",
        "bridge: the knowledge base failed (TypeError)",
    ]


async def test_undecodable_history_entries_are_counted_and_skipped(clock: ManualClock) -> None:
    store = ContextStore(clock=clock)
    store.backend.append_messages(
        conversation_key("", "u1"), ["{not json", human_entry("Earlier", at=clock.now)]
    )
    chain = AutoplayPrompt(store, system_prompt="S") | RunnableLambda(lambda v: v.to_string())
    assert (
        chain.invoke("now", CONFIG)
        == "S\n\n[Conversation so far]\nUser: Earlier\n\n[Question]\nnow"
    )
    assert store.stats()["chat_history_entries_undecodable"] == 1


async def test_a_chain_on_another_worker_uses_the_bridges_watermark_from_redis(
    make_redis_backend: Callable[..., Any], clock: ManualClock
) -> None:
    bridge_store = AsyncContextStore(backend=make_redis_backend(strict=True), clock=clock)
    app = build_app(
        store=bridge_store,
        api_token="a" * 20,
        webhook_secret="s" * 20,
        llm=lambda prompt: "Noted.",
        clock=clock,
    )
    await bridge_store.add(action("Opened billing", "/billing"))
    clock.advance()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        reply = await client.post(
            "/reply/u1", json={"message": "Hi"}, headers={"authorization": "Bearer " + "a" * 20}
        )
    assert reply.json() == {"user_id": "u1", "product_id": "acme", "reply": "Noted."}
    clock.advance()
    await bridge_store.add(action("Opened seats", "/seats"))
    # Another process: its own store and backend on the same Redis, a sync chain.
    worker_store = ContextStore(backend=make_redis_backend(strict=True), clock=clock)
    chain = AutoplayPrompt(worker_store, system_prompt="S", clock=clock) | RunnableLambda(
        lambda value: value.to_string()
    )
    assert chain.invoke("Now?", CONFIG) == (
        "S\n\n"
        "[Activity since the user's last message]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened seats — /seats\n\n"
        "[Recent activity]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened billing — /billing\n2. Opened seats — /seats\n\n"
        "[Conversation so far]\nUser: Hi\nAssistant: Noted.\n\n"
        "[Question]\nNow?"
    )
