"""The langchain-tests standard suites (langchain-tests==1.1.9) for the retriever and tool."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import Runnable
from langchain_tests.integration_tests import RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from autoplay_base.context_store import ContextStore
from langchain_autoplay.retrievers import AutoplayRetriever
from langchain_autoplay.tools import SessionActivityTool, create_session_activity_tool
from tests.langchain_autoplay._support import PRODUCT, actions, kb_retriever, summary


def _store_with_session() -> ContextStore:
    store = ContextStore()
    store.add(actions("s1", "Opened dashboard", "Opened billing settings", "Clicked Upgrade plan"))
    store.add(summary("s1", "User is on the billing page."))
    return store


class TestWrappingRetrieverStandard(RetrieversIntegrationTests):
    """Wrapping a vector store retriever, called without a session (pure pass-through)."""

    @property
    def retriever_constructor(self) -> type[AutoplayRetriever]:
        return AutoplayRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"store": _store_with_session(), "retriever": kb_retriever()}

    @property
    def retriever_query_example(self) -> str:
        return "How do I upgrade?"


def _bound_to_session(**params: Any) -> Runnable[str, Any]:
    # The suite calls invoke(query, None, k=...) on whatever the constructor returns;
    # binding the session through configurable is how a chain would scope the call.
    return AutoplayRetriever(**params).with_config(
        configurable={"session_id": "s1", "product_id": PRODUCT}
    )


class TestSessionRetrieverStandard(RetrieversIntegrationTests):
    """Enriching a vector store retriever with the context document, for a live session."""

    @property
    def retriever_constructor(self) -> Any:
        return _bound_to_session

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "store": _store_with_session(),
            "retriever": kb_retriever(),
            "include_context_document": True,
        }

    @property
    def retriever_query_example(self) -> str:
        return "How do I upgrade?"


class TestStandaloneRetrieverStandard(RetrieversIntegrationTests):
    """No wrapped retriever: the session's own context (summary + 3 actions) as documents."""

    @property
    def retriever_constructor(self) -> Any:
        return _bound_to_session

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"store": _store_with_session()}

    @property
    def retriever_query_example(self) -> str:
        return "What is the user doing?"


def _tool_store() -> ContextStore:
    return _store_with_session()


class TestSessionActivityToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[SessionActivityTool]:
        return SessionActivityTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"store": _tool_store()}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"max_actions": 2}


class TestSessionActivityToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> SessionActivityTool:
        return create_session_activity_tool(_tool_store())

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"max_actions": 2, "lookback_seconds": 300.0}
