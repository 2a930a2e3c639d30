"""Helpers for the LangChain adapter tests: a manual clock, payload builders, a real vector
store retriever, and callback recorders (the only stand-in anywhere is the LLM)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.vectorstores import InMemoryVectorStore, VectorStoreRetriever
from pydantic import Field

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.events import ActionsPayload, SlimAction, SummaryPayload

PRODUCT = "acme"

KB_TEXTS = [
    "Invite a team member from Settings > Team.",
    "Upgrade your plan from Settings > Billing.",
    "Export a CSV report from the Dashboard.",
    "Reset your password from the login page.",
    "Connect Slack from Settings > Integrations.",
]


class ManualClock:
    """A ``time.time`` stand-in that only moves when a test says so."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def actions(session_id: str, *descriptions: str, product_id: str = PRODUCT) -> ActionsPayload:
    """An actions payload with one action per description, all on ``/<session_id>``."""
    return ActionsPayload(
        product_id=product_id,
        session_id=session_id,
        user_id=f"user-{session_id}",
        forwarded_at=1.0,
        actions=tuple(
            SlimAction(title=d, description=d, canonical_url=f"/{session_id}") for d in descriptions
        ),
    )


def summary(session_id: str, text: str, replaces: int = 0) -> SummaryPayload:
    """A summary payload for ``session_id`` under :data:`PRODUCT`."""
    return SummaryPayload(
        product_id=PRODUCT, session_id=session_id, summary=text, replaces=replaces, forwarded_at=2.0
    )


async def fill(store: ContextStore | AsyncContextStore, *payloads: Any) -> None:
    """Add payloads through the store's own (sync or async) ``add``."""
    for payload in payloads:
        if isinstance(store, AsyncContextStore):
            await store.add(payload)
        else:
            store.add(payload)


def kb_retriever(k: int = 4) -> VectorStoreRetriever:
    """A real in-memory vector store over :data:`KB_TEXTS` with a deterministic embedding."""
    vectorstore = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    vectorstore.add_documents(
        [Document(page_content=t, metadata={"n": i}, id=f"kb{i}") for i, t in enumerate(KB_TEXTS)]
    )
    return vectorstore.as_retriever(search_kwargs={"k": k})


class RetrieverRunRecorder(BaseCallbackHandler):
    """Records every retriever run start: ``(run_id, parent_run_id, query)``."""

    def __init__(self) -> None:
        self.starts: list[tuple[UUID, UUID | None, str]] = []

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append((run_id, parent_run_id, query))


class ChatInputRecorder(BaseCallbackHandler):
    """Records the messages every chat model call received."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        self.calls.extend(messages)


class EchoChatModel(BaseChatModel):
    """The stand-in LLM: replies with every message it received, one ``<type>: <content>`` line
    each, so a test can assert exactly what reached the model from the reply alone."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "\n".join(f"{m.type}: {m.content}" for m in messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    @property
    def _llm_type(self) -> str:
        return "echo-fake-chat-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        """Agents bind their tools; the echo model ignores them."""
        return self


class ToolCallingEchoModel(EchoChatModel):
    """Calls ``tool_name`` with ``tool_args`` when the last message is the user's, then echoes."""

    tool_name: str = "get_session_activity"
    tool_args: dict[str, Any] = Field(default_factory=dict)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if isinstance(messages[-1], HumanMessage):
            call = {"name": self.tool_name, "args": self.tool_args, "id": "call-1"}
            message = AIMessage(content="", tool_calls=[{**call, "type": "tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=message)])
        return super()._generate(messages, stop, run_manager, **kwargs)


def _soft_failure(q: str) -> str:
    raise ToolException("upstream 503, key=sk-secret-77")


soft_failing_tool = StructuredTool.from_function(
    _soft_failure,
    name="soft",
    description="A tool whose failure the model sees.",
    handle_tool_error=True,
)
"""A tool whose failure ``handle_tool_error`` hands to the model: a ``ToolMessage`` with
``status="error"`` and the exception's text, ``upstream 503, key=sk-secret-77``."""
