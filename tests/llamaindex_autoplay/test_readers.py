"""AutoplayReader: recordings, store snapshots and live stream windows into LlamaIndex."""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document
from llama_index.core.storage.docstore import SimpleDocumentStore

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.emulator import EmulatorServer
from autoplay_base.errors import ConfigError, ConnectorError, EventDecodeError
from autoplay_base.events import SummaryPayload, UnknownEvent
from autoplay_base.recording import RecordingWriter
from llamaindex_autoplay.readers import AutoplayReader
from tests.autoplay_base.test_sources import BAD_SOURCE_OPTIONS, refusals
from tests.autoplay_base.test_stream_window import dead_url
from tests.llamaindex_autoplay._corpus import (
    ACME,
    ALICE_STEPS,
    BOB_STEPS,
    GLOBEX,
    START,
    actions,
)

WAIT = 10.0

ALICE_TEXT = (
    "Session ps_alice — 3 actions\n"
    "1. Viewed the Dashboard page — https://app.example.com/dashboard\n"
    "2. Opened billing settings — /settings/billing\n"
    "3. Clicked Upgrade plan — /settings/billing"
)
BOB_TEXT = "Session ps_bob — 1 action\n1. Opened team settings — /settings/team"
SUMMARY_TEXT = "User exported a CSV from the Dashboard."
UNKNOWN_TEXT = '{"product_id":"acme","session_id":"ps_bob","type":"usertour_trigger"}'


def meta(
    session_id: str | None,
    kind: str,
    *,
    user_id: str | None = None,
    event_id: str | None = None,
    forwarded_at: float | None = START,
    product_id: str | None = ACME,
) -> dict[str, Any]:
    metadata = {
        "session_id": session_id,
        "product_id": product_id,
        "user_id": user_id,
        "event_id": event_id,
        "type": kind,
        "forwarded_at": forwarded_at,
    }
    # Unknown values are left out (vector stores reject None), see sources.event_metadata.
    return {key: value for key, value in metadata.items() if value is not None}


EXPECTED_EVENTS = [
    (ALICE_TEXT, meta("ps_alice", "actions", user_id="u_alice", event_id="1")),
    (SUMMARY_TEXT, meta("ps_alice", "summary", event_id="2", forwarded_at=START + 1)),
    (BOB_TEXT, meta("ps_bob", "actions", user_id="u_bob", event_id="3")),
    (UNKNOWN_TEXT, meta("ps_bob", "usertour_trigger", event_id="4", forwarded_at=None)),
]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "session.jsonl"
    with RecordingWriter(path) as writer:
        writer(actions("ps_alice", *ALICE_STEPS, user_id="u_alice", event_id="1"))
        writer(
            SummaryPayload(
                product_id=ACME,
                session_id="ps_alice",
                summary=SUMMARY_TEXT,
                forwarded_at=START + 1,
                event_id="2",
            )
        )
        writer(actions("ps_bob", *BOB_STEPS, user_id="u_bob", event_id="3"))
        writer(
            UnknownEvent(
                type="usertour_trigger",
                data={"type": "usertour_trigger", "product_id": ACME, "session_id": "ps_bob"},
                event_id="4",
            )
        )
    return path


def texts_and_metadata(docs: list[Document]) -> list[tuple[str, dict[str, Any]]]:
    return [(doc.text, doc.metadata) for doc in docs]


class TestRecording:
    def test_load_data(self, recording: Path) -> None:
        docs = AutoplayReader(path=str(recording)).load_data()
        assert texts_and_metadata(docs) == EXPECTED_EVENTS
        assert [doc.doc_id for doc in docs] == [f"autoplay-event:acme:{i}" for i in "1234"]

    async def test_aload_data(self, recording: Path) -> None:
        docs = await AutoplayReader(path=str(recording)).aload_data()
        assert texts_and_metadata(docs) == EXPECTED_EVENTS

    def test_lazy_load_is_lazy(self, recording: Path) -> None:
        docs = AutoplayReader(path=str(recording)).lazy_load_data()
        first = next(iter(docs))
        assert first.text == ALICE_TEXT

    async def test_alazy_load_data(self, recording: Path) -> None:
        reader = AutoplayReader(path=str(recording))
        seen = [doc.text async for doc in reader.alazy_load_data(max_events=2)]
        assert seen == [ALICE_TEXT, SUMMARY_TEXT]

    def test_per_call_max_events_wins(self, recording: Path) -> None:
        reader = AutoplayReader(path=str(recording), max_events=3)
        assert len(reader.load_data()) == 3
        assert [d.text for d in reader.load_data(max_events=1)] == [ALICE_TEXT]

    def test_invalid_line_raises(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.jsonl"
        path.write_text('{"id": "1", "event": "actions", "data": {"type": "actions"}}\n')
        with pytest.raises(EventDecodeError, match=r"bad\.jsonl line 1"):
            AutoplayReader(path=str(path)).load_data()

    def test_documents_feed_an_index_and_a_query_engine(self, recording: Path) -> None:
        index = VectorStoreIndex.from_documents(AutoplayReader(path=str(recording)).load_data())
        response = index.as_query_engine(similarity_top_k=4).query("What did Bob do?")
        assert sorted(n.node.get_content() for n in response.source_nodes) == sorted(
            text for text, _ in EXPECTED_EVENTS
        )
        # ids and clocks stay out of what is embedded and what the LLM reads
        node = next(n.node for n in response.source_nodes if n.node.get_content() == BOB_TEXT)
        assert node.get_content(metadata_mode="llm") == (  # type: ignore[arg-type]
            f"session_id: ps_bob\nproduct_id: acme\ntype: actions\n\n{BOB_TEXT}"
        )

    def test_ingestion_pipeline_dedupes_a_reread(self, recording: Path) -> None:
        reader = AutoplayReader(path=str(recording))
        pipeline = IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=256)],
            docstore=SimpleDocumentStore(),
            docstore_strategy=DocstoreStrategy.DUPLICATES_ONLY,
        )
        assert len(pipeline.run(documents=reader.load_data())) == 4
        assert pipeline.run(documents=reader.load_data()) == []


class TestSnapshot:
    def test_one_document_per_session(self, any_store: ContextStore | AsyncContextStore) -> None:
        docs = AutoplayReader(store=any_store).load_data()
        assert [(d.doc_id, d.text) for d in docs] == [
            (
                "autoplay-session:acme:ps_alice",
                "Summary: User exported a CSV from the Dashboard.\n\nRecent activity:\n"
                "1. Viewed the Dashboard page — https://app.example.com/dashboard\n"
                "2. Opened billing settings — /settings/billing\n"
                "3. Clicked Upgrade plan — /settings/billing",
            ),
            (
                "autoplay-session:acme:ps_bob",
                "Recent activity:\n1. Opened team settings — /settings/team",
            ),
            ("autoplay-session:acme:ps_carol", "Recent activity:\n1. Opened API keys — /developer"),
            ("autoplay-session:globex:ps_carol", "Recent activity:\n1. Opened reports — /reports"),
        ]
        assert docs[0].metadata == {
            "session_id": "ps_alice",
            "product_id": ACME,
            "type": "session",
            "source": "autoplay_live_context",
            "last_activity_at": START,
        }

    async def test_async_snapshot_with_product_filter_and_overrides(
        self, any_store: ContextStore | AsyncContextStore
    ) -> None:
        reader = AutoplayReader(store=any_store, read_overrides={"include_summary": False})
        docs = await reader.aload_data(product_id=GLOBEX)
        assert [(d.doc_id, d.text) for d in docs] == [
            ("autoplay-session:globex:ps_carol", "Recent activity:\n1. Opened reports — /reports")
        ]
        alice = (await reader.aload_data(product_id=ACME))[0]
        assert alice.text.startswith("Recent activity:\n1. Viewed the Dashboard page")

    def test_snapshot_feeds_an_index(self, store: ContextStore) -> None:
        index = VectorStoreIndex.from_documents(
            AutoplayReader(store=store, product_id=ACME).load_data()
        )
        retrieved = index.as_retriever(similarity_top_k=10).retrieve("who is on billing?")
        assert sorted(n.node.metadata["session_id"] for n in retrieved) == [
            "ps_alice",
            "ps_bob",
            "ps_carol",
        ]


class TestLiveStream:
    """Against the project's emulator over a loopback socket."""

    def publish_when_connected(self, emulator: EmulatorServer, count: int) -> threading.Thread:
        # Failures surface in the test (no events read), not as a thread exception.
        def publish() -> None:
            if not emulator.wait_for(lambda s: s.streams_active >= 1, WAIT):
                return
            for i in range(count):
                emulator.publish(
                    ACME,
                    actions(f"ps_{i}", ("Opened team settings", "/settings/team")).model_dump(
                        mode="json"
                    ),
                )

        thread = threading.Thread(target=publish)
        thread.start()
        return thread

    def test_load_a_bounded_window(self, emulator: EmulatorServer) -> None:
        reader = AutoplayReader(url=emulator.url_for(ACME), max_events=2, timeout=WAIT)
        assert reader.is_remote is True
        publisher = self.publish_when_connected(emulator, 3)
        docs = reader.load_data()
        publisher.join(WAIT)
        assert [d.metadata["session_id"] for d in docs] == ["ps_0", "ps_1"]
        assert [d.metadata["event_id"] for d in docs] == ["1", "2"]
        assert docs[0].text == "Session ps_0 — 1 action\n1. Opened team settings — /settings/team"

    async def test_aload_a_bounded_window(self, emulator: EmulatorServer) -> None:
        reader = AutoplayReader(url=emulator.url_for(ACME), max_events=3, timeout=WAIT)

        async def publish() -> None:
            assert await emulator.await_for(lambda s: s.streams_active >= 1, WAIT)
            for i in range(3):
                emulator.publish(
                    ACME, actions(f"ps_{i}", ("Opened reports", "/reports")).model_dump(mode="json")
                )

        docs, _ = await asyncio.wait_for(asyncio.gather(reader.aload_data(), publish()), WAIT)
        assert [d.metadata["session_id"] for d in docs] == ["ps_0", "ps_1", "ps_2"]

    def test_timeout_ends_an_idle_window(self, emulator: EmulatorServer) -> None:
        reader = AutoplayReader(url=emulator.url_for(ACME), max_events=10, timeout=0.3)
        publisher = self.publish_when_connected(emulator, 1)
        docs = reader.load_data()
        publisher.join(WAIT)
        assert [d.metadata["session_id"] for d in docs] == ["ps_0"]

    def test_a_connector_that_is_down_is_an_error_not_zero_documents(self) -> None:
        reader = AutoplayReader(url=dead_url(), max_events=5, timeout=0.3)
        with pytest.raises(ConnectorError, match="did not answer with an event stream"):
            reader.load_data()

    async def test_async_a_connector_that_is_down_is_an_error(self) -> None:
        reader = AutoplayReader(url=dead_url(), max_events=5, timeout=0.3)
        with pytest.raises(ConnectorError, match="did not answer with an event stream"):
            await reader.aload_data()

    async def test_a_quiet_connector_is_zero_documents(self, emulator: EmulatorServer) -> None:
        reader = AutoplayReader(url=emulator.url_for(ACME), max_events=5, timeout=0.3)
        assert reader.load_data() == []
        assert await reader.aload_data() == []


class TestConfiguration:
    def test_exactly_one_source(self, recording: Path, store: ContextStore) -> None:
        with pytest.raises(ConfigError, match=r"exactly one source.*got none"):
            AutoplayReader()
        with pytest.raises(ConfigError, match="got path, store"):
            AutoplayReader(path=str(recording), store=store)

    def test_live_stream_needs_a_bound(self) -> None:
        with pytest.raises(ConfigError, match="needs a bound"):
            AutoplayReader(url="http://127.0.0.1:9/stream/acme")
        reader = AutoplayReader(url="http://127.0.0.1:9/stream/acme", max_events=1)
        with pytest.raises(ConfigError, match="needs a bound"):
            reader.load_data(max_events=None)

    def test_bad_options(self, recording: Path) -> None:
        reader = AutoplayReader(path=str(recording))
        with pytest.raises(ConfigError, match=r"unknown load option.*max_event"):
            reader.load_data(max_event=1)
        with pytest.raises(ConfigError, match="keyword-only"):
            reader.load_data(1)
        with pytest.raises(ConfigError, match="needs store="):
            reader.load_data(product_id=ACME)
        with pytest.raises(ConfigError, match="needs store="):
            AutoplayReader(path=str(recording), product_id=ACME)
        with pytest.raises(ConfigError, match="max_events must be"):
            reader.load_data(max_events=-1)
        with pytest.raises(ConfigError, match="timeout must be"):
            reader.load_data(timeout=0)
        with pytest.raises(ValueError, match="max_events"):
            AutoplayReader(path=str(recording), max_events=-1)

    def test_serialization_leaves_out_the_token_and_store(self) -> None:
        reader = AutoplayReader(url="http://x/stream/acme", token="uk_secret", timeout=5)
        data = reader.to_dict()
        assert AutoplayReader.class_name() == "AutoplayReader"
        assert data["class_name"] == "AutoplayReader"
        assert "token" not in data
        assert "store" not in data
        assert data["is_remote"] is True
        assert "uk_secret" not in repr(reader)
        assert AutoplayReader.from_dict(data).url == "http://x/stream/acme"
        assert AutoplayReader(path="x.jsonl").is_remote is False


def test_bad_source_options_match_the_loader() -> None:
    # One SourceOptions behind both adapters: the same values fail with the same message
    # (the LangChain loader's tests check the same table), before pydantic coerces them.
    assert refusals(AutoplayReader) == BAD_SOURCE_OPTIONS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (kwargs, message)
        for kwargs, message in BAD_SOURCE_OPTIONS
        if set(kwargs) & {"max_events", "timeout", "product_id"}
    ],
)
def test_bad_per_call_options_match_the_loader(
    recording: Path, kwargs: dict[str, Any], message: str
) -> None:
    reader = AutoplayReader(path=str(recording))
    call = {name: value for name, value in kwargs.items() if name != "path"}
    with pytest.raises(ConfigError) as info:
        reader.load_data(**call)
    assert str(info.value) == message


def test_context_options_and_their_former_name() -> None:
    store = ContextStore()
    store.add(actions("ps_alice", *ALICE_STEPS))
    expected = [f"Recent activity:\n1. {ALICE_STEPS[-1][0]} — {ALICE_STEPS[-1][1]}"]
    for reader in (
        AutoplayReader(store=store, context_options={"max_actions": 1}),
        AutoplayReader(store=store, read_overrides={"max_actions": 1}),
    ):
        assert reader.context_options == reader.read_overrides == {"max_actions": 1}
        assert [d.text for d in reader.load_data()] == expected
    reader = AutoplayReader(store=store)
    reader.read_overrides = {"max_actions": 1}
    assert [d.text for d in reader.load_data()] == expected
    data = AutoplayReader(path="x.jsonl", context_options={"max_actions": 2}).to_dict()
    assert data["context_options"] == {"max_actions": 2}
    assert "read_overrides" not in data
    legacy = {**data, "read_overrides": data.pop("context_options")}
    assert AutoplayReader.from_dict(legacy).context_options == {"max_actions": 2}


# -- copies and serialization: the configuration travels, a store does not --------------------
LIVE = {
    "url": "http://127.0.0.1:9/stream/acme",
    "max_events": 7,
    "timeout": 2.5,
    "context_options": {"max_actions": 3},
}


def _config(reader: AutoplayReader) -> tuple[Any, ...]:
    return (
        reader.path,
        reader.url,
        reader.max_events,
        reader.timeout,
        reader.product_id,
        reader.context_options,
        reader.is_remote,
    )


def test_pickle_and_deepcopy_carry_the_configuration_and_the_token() -> None:
    reader = AutoplayReader(**LIVE, token="uk_secret")
    expected = ("http://127.0.0.1:9/stream/acme", 7, 2.5, {"max_actions": 3}, True)
    for clone in (pickle.loads(pickle.dumps(reader)), copy.deepcopy(reader)):
        assert clone is not reader
        assert _config(clone) == (None, *expected[:3], None, *expected[3:])
        assert clone.token == "uk_secret"  # a copy must be able to read the stream
        assert clone.context_options is not reader.context_options


def test_to_dict_round_trips_the_configuration_never_the_token() -> None:
    reader = AutoplayReader(**LIVE, token="uk_secret")
    data = reader.to_dict()
    assert "uk_secret" not in reader.to_json()
    assert _config(AutoplayReader.from_dict(data)) == _config(reader)
    assert _config(AutoplayReader.from_json(reader.to_json())) == _config(reader)
    assert AutoplayReader.from_dict(data).token == ""  # then $AUTOPLAY_APP_UNKEY_TOKEN


def test_a_snapshot_reader_shares_its_store_in_copies_and_refuses_pickling(
    store: ContextStore,
) -> None:
    reader = AutoplayReader(store=store, product_id=ACME)
    assert copy.deepcopy(reader).store is store
    assert copy.copy(reader).store is store
    with pytest.raises(
        TypeError, match="AutoplayReader holds a live context store, which cannot be pickled"
    ):
        pickle.dumps(reader)
    assert reader.store is store  # LlamaIndex's pickling used to drop it from the original
    # The dict holds no store: it is given back when loading.
    data = reader.to_dict()
    assert "store" not in data
    assert AutoplayReader.from_dict(data, store=store).store is store
    assert AutoplayReader.from_dict(data, store=store).product_id == ACME


def test_the_constructor_signature_is_typed(tmp_path: Path) -> None:
    # Run mypy --strict on a user's module: wrong types and unknown options are errors.
    snippet = (
        "from llamaindex_autoplay import AutoplayReader\n"
        "ok = AutoplayReader(url='http://127.0.0.1:1/stream/acme', max_events=5, timeout=3.0)\n"
        "also_ok = AutoplayReader(path='x.jsonl', read_overrides={'max_actions': 2})\n"
        "bad_events = AutoplayReader(url='http://127.0.0.1:1/stream/acme', max_events='5')\n"
        "bad_url = AutoplayReader(url=8765, timeout=3)\n"
        "typo = AutoplayReader(path='x.jsonl', max_event=5)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MYPYPATH": str(root)}
    command = [sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml"]
    user_module = tmp_path / "user_module.py"
    user_module.write_text(snippet, encoding="utf-8")
    command += ["--no-error-summary", "--hide-error-context", str(user_module)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    errors = [
        line.split(": error: ", 1)[1] for line in done.stdout.splitlines() if ": error: " in line
    ]
    assert errors == [
        'Argument "max_events" to "AutoplayReader" has incompatible type "str"; '
        'expected "int | None"  [arg-type]',
        'Argument "url" to "AutoplayReader" has incompatible type "int"; '
        'expected "str | None"  [arg-type]',
        'Unexpected keyword argument "max_event" for "AutoplayReader"; '
        'did you mean "max_events"?  [call-arg]',
    ]
