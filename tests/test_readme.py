"""The README's examples run, against the emulator, so they cannot go stale.

Each ``<!-- example: name -->`` block is executed as written. The names it
takes as given (``STREAM_URL``, ``API_TOKEN``, ``vector_store``, ``llm``,
``help_articles``) are real parts built here: the emulator with a token, an
in-memory vector store over the bundled help centre, and a "model" that returns
its prompt so the test can read what the model would have been sent.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document as LlamaDocument
from llama_index.core import Settings
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from autoplay_base.demo import load_help_center
from tests._fixtures.emulator import EmulatorFactory

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", re.DOTALL)
TOKEN = "uk_test_readme"
WAIT = 10.0


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(README.read_text(encoding="utf-8")))


def test_the_readme_has_the_examples_we_run() -> None:
    found = examples()
    assert sorted(found) == [
        "agent-stream",
        "base-connect",
        "base-enrich",
        "langchain",
        "llamaindex",
        "tracking",
    ]
    for name in ("langchain", "llamaindex"):
        code_lines = [line for line in found[name].splitlines() if line.strip()]
        assert len(code_lines) <= 10, name


@pytest.fixture
def connected(emulator_factory: EmulatorFactory) -> Iterator[dict[str, Any]]:
    """Run the README's connect block against an emulator that played the invite script."""
    server = emulator_factory(products=("demo",), token=TOKEN, replay_from_start=True)
    total = server.play("demo", "invite_team_member", speed=0).result(WAIT)
    namespace: dict[str, Any] = {"STREAM_URL": server.url_for("demo"), "API_TOKEN": TOKEN}
    exec(examples()["base-connect"], namespace)
    client = namespace["client"]
    assert _delivered(client, total), client.counters.as_dict()
    yield namespace
    client.stop()


def _delivered(client: Any, total: int) -> bool:
    """Wait (bounded) until the client has delivered ``total`` events to the store."""
    deadline = time.monotonic() + WAIT
    tick = threading.Event()
    while client.counters.delivered < total:
        if time.monotonic() > deadline:
            return False
        tick.wait(0.005)  # the condition is the counter; this only paces the check
    return True


def test_base_example_enriches_the_query(connected: dict[str, Any]) -> None:
    exec(examples()["base-enrich"], connected)
    enriched: str = connected["enriched"]
    assert enriched.startswith(
        "[Session context]\n"
        "Summary: The user keeps hitting the seat limit when inviting a teammate; they read "
        "the 'Managing seats' help article and revoked an expired invite, but the invite "
        "still fails.\n\nRecent activity:\n"
    )
    assert enriched.endswith(
        "3. Saw the error 'Seat limit reached for your plan' — "
        "https://app.flowdesk.io/settings/team/invite\n"
        "4. Opened the support chat — https://app.flowdesk.io/settings/team/invite\n\n"
        "[Query]\nHow do I do this?"
    )
    assert connected["client"].counters.dropped == 0


def test_langchain_example_sends_the_context_to_the_model(connected: dict[str, Any]) -> None:
    articles = load_help_center()
    vector_store = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    vector_store.add_documents(
        [Document(page_content=a.body, metadata={"title": a.title}) for a in articles]
    )
    connected["vector_store"] = vector_store
    connected["llm"] = RunnableLambda(lambda prompt: prompt.to_string())
    exec(examples()["langchain"], connected)
    answer: str = connected["answer"]
    assert answer.startswith("Human: Help articles:\n")
    assert answer.endswith("\n\nQuestion: How do I do this?")
    # The wrapped retriever was asked with the live context: the seat-limit error is in it.
    queries: list[str] = []
    wrapped = connected["retriever"].retriever
    original = wrapped.invoke

    def spy(query: str, *args: Any, **kwargs: Any) -> Any:
        queries.append(query)
        return original(query, *args, **kwargs)

    object.__setattr__(wrapped, "invoke", spy)
    connected["chain"].invoke("How do I do this?", config=connected["session"])
    assert len(queries) == 1
    assert "Saw the error 'Seat limit reached for your plan'" in queries[0]
    assert queries[0].endswith("[Query]\nHow do I do this?")


@pytest.fixture
def llama_settings() -> Iterator[None]:
    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield
    Settings._llm, Settings._embed_model = previous_llm, previous_embed


def test_llamaindex_example_puts_the_context_first(
    connected: dict[str, Any], llama_settings: None
) -> None:
    connected["help_articles"] = [
        LlamaDocument(text=a.body, metadata={"title": a.title, "url": a.url})
        for a in load_help_center()
    ]
    exec(examples()["llamaindex"], connected)
    nodes = connected["response"].source_nodes
    first = nodes[0]
    assert first.node.metadata["source"] == "autoplay_live_context"
    assert first.node.metadata["session_id"] == "ps_invite_7f3a"
    assert "Seat limit reached for your plan" in first.node.get_content()
    assert len(nodes) == 3  # the context node and the engine's two retrieved articles


def test_tracking_example_delivers_and_feeds_the_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exec(examples()["tracking"], {})
    assert capsys.readouterr().out == (
        "6 0 3\n[Session context]\nRecent activity:\n"
        "1. Assistant answered: Open Settings, Team, then Invite.\n"
        "2. Assistant used tool search_help\n\n[Query]\nIt still fails\n"
    )


def test_agent_stream_example_streams_resumes_and_ends_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exec(examples()["agent-stream"], {})
    printed = capsys.readouterr().out
    assert printed.startswith("[(1, 'start'), (2, 'tool_input_delta'), (3, 'tool_input_delta'), ")
    assert printed.endswith("(8, 'text_delta'), (9, 'finished')]\n")
