"""AutoplayMemoryBlock inside LlamaIndex's ``Memory``, chat engines and a function agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLMWithChatMemoryOfLastCall
from llama_index.core.memory import Memory
from llama_index.core.memory.memory import InsertMethod
from llama_index.core.tools import RetrieverTool

from autoplay_base.backends.memory import InMemoryBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousSessionError, ConfigError
from llamaindex_autoplay.memory import AutoplayMemoryBlock
from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor
from llamaindex_autoplay.session import autoplay_session
from tests.llamaindex_autoplay._corpus import (
    ACME,
    ALICE_MEMORY,
    BOB_CONTEXT,
    GLOBEX,
    FakeClock,
    actions,
    fill,
)

WAIT = 10.0
BOB_MEMORY = "Recent activity:\n1. Opened team settings — /settings/team"
CAROL_GLOBEX_MEMORY = "Recent activity:\n1. Opened reports — /reports"


def rendered(content: str, name: str = "live_context") -> str:
    """How ``Memory``'s default template renders one text block."""
    return f"<memory>\n<{name}>\n{content}\n</{name}>\n</memory>"


_OPEN_MEMORIES: list[Memory] = []


def new_memory(**options: Any) -> Memory:
    """``Memory.from_defaults``, remembered so the test closes its SQLite engine."""
    memory = Memory.from_defaults(**options)
    _OPEN_MEMORIES.append(memory)
    return memory


@pytest.fixture(autouse=True)
async def _close_memories() -> AsyncIterator[None]:
    """Dispose each Memory's aiosqlite engine while the test's loop still runs.

    Left to the garbage collector, its connection thread can finish after the
    loop closed and report an error from another test.
    """
    yield
    while _OPEN_MEMORIES:
        engine = getattr(_OPEN_MEMORIES.pop().sql_store, "_async_engine", None)
        if engine is not None:
            await engine.dispose()


def memory_for(
    store: ContextStore | AsyncContextStore, memory_session: str = "ps_bob", **fields: Any
) -> Memory:
    return new_memory(
        session_id=memory_session, memory_blocks=[AutoplayMemoryBlock(store=store, **fields)]
    )


async def ready(*memories: Memory) -> None:
    """Let each Memory create its SQLite chat table before concurrent use.

    LlamaIndex's default chat store creates its table lazily and two first
    reads racing on one store can miss it; that is a property of the chat store,
    not of the block under test.
    """
    for memory in memories:
        await memory.aget_all()


def roles_and_text(messages: list[ChatMessage]) -> list[tuple[str, str | None]]:
    return [(m.role.value, m.content) for m in messages]


class SyncGetForbidden(ContextStore):
    """A real store whose sync reads fail, to prove the block only uses ``aget``."""

    def get(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("sync store read in a memory block")

    def view(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sync store read in a memory block")


class TestMemoryContent:
    async def test_block_content_lands_in_a_system_message(
        self, any_store: ContextStore | AsyncContextStore
    ) -> None:
        memory = memory_for(any_store, "ps_bob")
        assert roles_and_text(await memory.aget()) == [("system", rendered(BOB_MEMORY))]

    async def test_merged_into_the_existing_system_message_before_the_chat(
        self, store: ContextStore
    ) -> None:
        memory = memory_for(store, "ps_alice")
        await memory.aput_messages(
            [
                ChatMessage(role=MessageRole.SYSTEM, content="You are a helpful assistant."),
                ChatMessage(role=MessageRole.USER, content="Hi"),
            ]
        )
        messages = await memory.aget()
        assert [m.role.value for m in messages] == ["system", "user"]
        assert [b.text for b in messages[0].blocks] == [  # type: ignore[union-attr]
            rendered(ALICE_MEMORY),
            "You are a helpful assistant.",
        ]
        assert messages[1].content == "Hi"

    async def test_user_insert_method_puts_it_on_the_latest_user_message(
        self, store: ContextStore
    ) -> None:
        memory = new_memory(
            session_id="ps_bob",
            memory_blocks=[AutoplayMemoryBlock(store=store)],
            insert_method=InsertMethod.USER,
        )
        await memory.aput(ChatMessage(role=MessageRole.USER, content="What now?"))
        messages = await memory.aget()
        assert [m.role.value for m in messages] == ["user"]
        assert [b.text for b in messages[0].blocks] == [  # type: ignore[union-attr]
            rendered(BOB_MEMORY),
            "What now?",
        ]

    async def test_custom_name_is_the_tag(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_bob", name="user_activity")
        assert roles_and_text(await memory.aget()) == [
            ("system", rendered(BOB_MEMORY, "user_activity"))
        ]

    async def test_content_is_live(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_bob")
        await memory.aget()
        store.add(actions("ps_bob", ("Clicked Invite", "/settings/team/invite"), event_id="e9"))
        assert roles_and_text(await memory.aget()) == [
            ("system", rendered(BOB_MEMORY + "\n2. Clicked Invite — /settings/team/invite"))
        ]

    async def test_read_overrides(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_alice", read_overrides={"include_actions": False})
        assert roles_and_text(await memory.aget()) == [
            ("system", rendered("Summary: User exported a CSV from the Dashboard."))
        ]

    async def test_bad_read_override_is_a_config_error(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_alice", read_overrides={"lookback_seconds": -1})
        with pytest.raises(ConfigError, match="lookback_seconds"):
            await memory.aget()

    async def test_unknown_session_adds_nothing(self, store: ContextStore) -> None:
        memory = memory_for(store, "chat-key-not-a-session")
        await memory.aput(ChatMessage(role=MessageRole.USER, content="Hi"))
        assert roles_and_text(await memory.aget()) == [("user", "Hi")]

    async def test_reads_only_through_the_async_store_api(
        self, backend: InMemoryBackend, clock: FakeClock, store: ContextStore
    ) -> None:
        memory = memory_for(SyncGetForbidden(backend=backend, clock=clock), "ps_bob")
        assert roles_and_text(await memory.aget()) == [("system", rendered(BOB_MEMORY))]

    async def test_chat_messages_are_not_stored_as_activity(self, store: ContextStore) -> None:
        # A tiny token limit makes Memory flush old messages to its blocks.
        memory = new_memory(
            session_id="ps_bob",
            memory_blocks=[AutoplayMemoryBlock(store=store)],
            token_limit=60,
            chat_history_token_ratio=0.5,
        )
        for i in range(6):
            await memory.aput(ChatMessage(role=MessageRole.USER, content=f"question {i} " * 5))
            await memory.aput(ChatMessage(role=MessageRole.ASSISTANT, content=f"answer {i} " * 5))
        messages = await memory.aget()
        assert len(await memory.aget_all()) == 12
        assert len(messages) < 12  # some were flushed to the blocks
        assert messages[0].content == rendered(BOB_MEMORY)
        assert store.get("ps_bob", ACME) == BOB_MEMORY


class TestSessionSources:
    async def test_scope_wins_over_the_memory_session(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_bob")
        with autoplay_session("ps_alice", product_id=ACME):
            assert roles_and_text(await memory.aget()) == [("system", rendered(ALICE_MEMORY))]
        assert roles_and_text(await memory.aget()) == [("system", rendered(BOB_MEMORY))]

    async def test_field_session_when_memory_key_is_not_a_session(
        self, store: ContextStore
    ) -> None:
        memory = memory_for(store, "chat-1", session_id="ps_bob", use_memory_session_id=False)
        assert roles_and_text(await memory.aget()) == [("system", rendered(BOB_MEMORY))]

    async def test_memory_session_wins_over_the_field(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_alice", session_id="ps_bob")
        assert roles_and_text(await memory.aget()) == [("system", rendered(ALICE_MEMORY))]

    async def test_field_product_completes_the_memory_session(self, store: ContextStore) -> None:
        memory = memory_for(store, "ps_carol", product_id=GLOBEX)
        assert roles_and_text(await memory.aget()) == [("system", rendered(CAROL_GLOBEX_MEMORY))]

    async def test_ambiguous_session_raises(self, store: ContextStore) -> None:
        with pytest.raises(AmbiguousSessionError):
            await memory_for(store, "ps_carol").aget()

    async def test_standalone_block(self, store: ContextStore) -> None:
        assert await AutoplayMemoryBlock(store=store).aget() == ""
        assert await AutoplayMemoryBlock(store=store, session_id="ps_bob").aget() == BOB_MEMORY

    async def test_concurrent_memories_get_their_own_session(
        self, any_store: ContextStore | AsyncContextStore
    ) -> None:
        block = AutoplayMemoryBlock(store=any_store, product_id=ACME)
        alice = new_memory(session_id="ps_alice", memory_blocks=[block])
        bob = new_memory(session_id="ps_bob", memory_blocks=[block])
        await ready(alice, bob)
        results = await asyncio.wait_for(
            asyncio.gather(*[m.aget() for m in (alice, bob, alice, bob)]), WAIT
        )
        assert [roles_and_text(r) for r in results] == [
            [("system", rendered(ALICE_MEMORY))],
            [("system", rendered(BOB_MEMORY))],
        ] * 2

    async def test_concurrent_scopes_on_one_memory(self, store: ContextStore) -> None:
        memory = memory_for(store, "chat-1", use_memory_session_id=False)
        await ready(memory)

        async def read(session_id: str) -> list[ChatMessage]:
            with autoplay_session(session_id, product_id=ACME):
                return await memory.aget()

        alice, bob = await asyncio.wait_for(asyncio.gather(read("ps_alice"), read("ps_bob")), WAIT)
        assert roles_and_text(alice) == [("system", rendered(ALICE_MEMORY))]
        assert roles_and_text(bob) == [("system", rendered(BOB_MEMORY))]


class TestEngines:
    def test_simple_chat_engine_sync(self, store: ContextStore) -> None:
        chat_engine = SimpleChatEngine.from_defaults(memory=memory_for(store), llm=MockLLM())
        response = chat_engine.chat("What now?")
        # MockLLM answers with the prompt it was given.
        assert str(response) == f"system: {rendered(BOB_MEMORY)}\nuser: What now?\nassistant: "

    def test_sync_chat_engine_inside_a_scope(self, store: ContextStore) -> None:
        # Memory.get runs its async core through llama_index's asyncio_run; the scope follows.
        memory = memory_for(store, "chat-1", use_memory_session_id=False)
        chat_engine = SimpleChatEngine.from_defaults(memory=memory, llm=MockLLM())
        with autoplay_session("ps_alice", product_id=ACME):
            response = chat_engine.chat("What now?")
        assert str(response) == f"system: {rendered(ALICE_MEMORY)}\nuser: What now?\nassistant: "

    async def test_simple_chat_engine_async(self, store: ContextStore) -> None:
        chat_engine = SimpleChatEngine.from_defaults(
            memory=memory_for(store, "ps_alice"), llm=MockLLM()
        )
        response = await chat_engine.achat("What now?")
        assert str(response) == f"system: {rendered(ALICE_MEMORY)}\nuser: What now?\nassistant: "

    async def test_context_chat_engine_gets_memory_and_retrieval_context(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        chat_engine = index.as_chat_engine(
            chat_mode=ChatMode.CONTEXT,
            memory=memory_for(store, "ps_bob"),
            node_postprocessors=[AutoplayNodePostprocessor(store=store, session_id="ps_bob")],
        )
        response = await chat_engine.achat("What now?")
        text = str(response)
        # The engine's own system message (retrieved context) comes first, then Memory's.
        assert text.startswith("system: ")
        assert text.count(BOB_CONTEXT) == 1
        assert text.index(BOB_CONTEXT) < text.index(rendered(BOB_MEMORY))
        assert text.endswith(f"\nsystem: {rendered(BOB_MEMORY)}\nuser: What now?\nassistant: ")

    # The agent workflow inspects the tools' pydantic models with ``inspect.getmembers``,
    # which trips pydantic's deprecation warnings inside llama_index, not in this package.
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    async def test_function_agent_with_memory_block_and_retriever_tool(
        self, index: VectorStoreIndex, store: ContextStore
    ) -> None:
        """One scope feeds both the agent's memory and its retrieval tool."""
        llm = MockFunctionCallingLLMWithChatMemoryOfLastCall()
        tool = RetrieverTool.from_defaults(
            retriever=index.as_retriever(similarity_top_k=1),
            node_postprocessors=[AutoplayNodePostprocessor(store=store)],
            name="docs",
            description="Search the product docs.",
        )
        agent = FunctionAgent(tools=[tool], llm=llm)
        memory = memory_for(store, "chat-1", use_memory_session_id=False)
        with autoplay_session("ps_bob", product_id=ACME):
            result = await asyncio.wait_for(agent.run("What now?", memory=memory), WAIT)
        assert str(result) == "Tool calls complete."
        sent = llm.last_chat_messages
        assert sent is not None
        assert [m.role.value for m in sent] == ["system", "user", "assistant", "tool"]
        assert sent[0].content == rendered(BOB_MEMORY)
        assert sent[1].content == "What now?"
        assert sent[3].content is not None
        assert sent[3].content.startswith(BOB_CONTEXT + "\n\n")


def test_fields_and_defaults(store: ContextStore) -> None:
    block = AutoplayMemoryBlock(store=store)
    assert block.name == "live_context"
    assert block.accept_short_term_memory is False
    assert block.priority == 0
    assert "store" not in block.model_dump()
    with pytest.raises(ValueError, match="store"):
        AutoplayMemoryBlock(store="not a store")  # type: ignore[arg-type]


async def test_redis_backed_store(make_redis_backend: Any) -> None:
    """The block over a store whose backend is a real Redis-protocol server."""
    backend = make_redis_backend()
    fill(ContextStore(backend=backend))
    memory = memory_for(AsyncContextStore(backend=backend), "ps_alice")
    assert roles_and_text(await memory.aget()) == [("system", rendered(ALICE_MEMORY))]


@pytest.mark.parametrize("name", ["context_options", "read_overrides"])
async def test_context_options_under_either_name(store: ContextStore, name: str) -> None:
    # ``context_options`` is the name every adapter uses; ``read_overrides`` still works.
    memory = memory_for(store, "ps_alice", **{name: {"include_actions": False}})
    assert roles_and_text(await memory.aget()) == [
        ("system", rendered("Summary: User exported a CSV from the Dashboard."))
    ]
    block = AutoplayMemoryBlock(store=store, **{name: {"max_actions": 1}})
    assert block.context_options == block.read_overrides == {"max_actions": 1}
