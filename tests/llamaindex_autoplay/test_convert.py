"""The pure conversions behind the adapters: URLs, boosting, context nodes, documents."""

from __future__ import annotations

import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from autoplay_base.backends.base import SessionKey, SessionView
from autoplay_base.events import SummaryPayload, UnknownEvent
from autoplay_base.formatting import action_line
from autoplay_base.sources import SessionSnapshot
from llamaindex_autoplay._convert import (
    action_url,
    boost_nodes,
    context_node,
    context_text,
    event_document,
    insert_context,
    recency,
    snapshot_document,
    url_key,
    visited_pages,
)
from llamaindex_autoplay.session import SessionScope
from tests.llamaindex_autoplay._corpus import ALICE_CONTEXT, ALICE_STEPS, ALICE_SUMMARY, actions


class TestUrls:
    @pytest.mark.parametrize(
        ("line", "url"),
        [
            ("Opened billing settings — /settings/billing", "/settings/billing"),
            ("Viewed — Dashboard — https://app.example.com/dash", "https://app.example.com/dash"),
            ("Clicked Save — not a url", None),
            ("Clicked Save", None),
            ("Clicked Save — ", None),
            ("Opened billing settings\x1f/settings/billing", "/settings/billing"),
            ("Viewed — Dashboard\x1fhttps://app.example.com/dash", "https://app.example.com/dash"),
            ("Viewed — /fake\x1fhttps://app.example.com/dash", "https://app.example.com/dash"),
        ],
    )
    def test_action_url(self, line: str, url: str | None) -> None:
        assert action_url(line) == url

    def test_action_url_reads_what_the_store_writes(self) -> None:
        payload = actions("s", *ALICE_STEPS)
        lines = [action_line(a) for a in payload.actions]
        assert [action_url(line) for line in lines] == [url for _, url in ALICE_STEPS]

    @pytest.mark.parametrize(
        ("url", "key"),
        [
            ("https://app.example.com/settings/billing/", "/settings/billing"),
            ("/settings/billing", "/settings/billing"),
            ("https://docs.example.com/settings/billing?tab=plan#top", "/settings/billing"),
            ("https://app.example.com", "/"),
            ("/", "/"),
            ("  /padded  ", "/padded"),
            ("settings/billing", None),
            ("docs/billing.md", None),
            ("", None),
            ("mailto:someone@example.com", None),
        ],
    )
    def test_url_key(self, url: str, key: str | None) -> None:
        assert url_key(url) == key

    def test_visited_pages_rank_distinct_pages_newest_first(self) -> None:
        lines = [
            "A — /one",
            "B — /two/",
            "C — no url here",
            "D",
            "E — https://app.example.com/one",
        ]
        assert visited_pages(lines) == {"/one": 0, "/two": 1}
        assert visited_pages([]) == {}

    def test_recency(self) -> None:
        assert [recency(r) for r in range(4)] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]


def scored(node_id: str, score: float | None, **metadata: str) -> NodeWithScore:
    return NodeWithScore(node=TextNode(id_=node_id, text=node_id, metadata=metadata), score=score)


class TestBoost:
    def test_boost_adds_weighted_recency_and_sorts(self) -> None:
        nodes = [
            scored("a", 0.9),
            scored("b", 0.5, url="/two"),
            scored("c", 0.4, path="/one"),
            scored("d", None, url="/nope", canonical_url="https://x.io/one"),
        ]
        result = boost_nodes(
            nodes,
            {"/one": 0, "/two": 1},
            weight=1.0,
            metadata_keys=["url", "path", "canonical_url"],
        )
        # Ties keep their retrieved order (the sort is stable).
        assert [(n.node.node_id, n.score) for n in result] == [
            ("c", 1.4),
            ("b", 1.0),
            ("d", 1.0),
            ("a", 0.9),
        ]

    def test_best_match_counts_once(self) -> None:
        nodes = [scored("a", 0.0, url="/two", path="/one")]
        result = boost_nodes(
            nodes, {"/one": 0, "/two": 1}, weight=1.0, metadata_keys=["url", "path"]
        )
        assert result[0].score == 1.0

    def test_no_weight_or_pages_keeps_the_order(self) -> None:
        nodes = [scored("a", 0.1), scored("b", 0.9, url="/one")]
        assert boost_nodes(nodes, {"/one": 0}, weight=0.0, metadata_keys=["url"]) == nodes
        assert boost_nodes(nodes, {}, weight=1.0, metadata_keys=["url"]) == nodes

    def test_no_match_keeps_the_order(self) -> None:
        nodes = [scored("a", 0.1), scored("b", 0.9, url="/other")]
        result = boost_nodes(nodes, {"/one": 0}, weight=1.0, metadata_keys=["url"])
        assert [n.node.node_id for n in result] == ["a", "b"]

    def test_non_string_metadata_is_ignored(self) -> None:
        node = NodeWithScore(node=TextNode(id_="a", text="a", metadata={"url": 3}), score=0.1)
        assert boost_nodes([node], {"/one": 0}, weight=1.0, metadata_keys=["url"])[0].score == 0.1


class TestContextNode:
    def test_context_text(self) -> None:
        lines = [f"{d} — {u}" for d, u in ALICE_STEPS]
        assert context_text(ALICE_SUMMARY, lines) == ALICE_CONTEXT
        assert context_text(None, []) == ""
        assert context_text("Just a summary.", []) == "[Session context]\nSummary: Just a summary."

    def test_node_text_is_exactly_the_context_in_every_mode(self) -> None:
        item = context_node("[Session context]\nX", SessionScope("s", "p"), score=0.3)
        assert item.score == 0.3
        assert item.node.node_id == "autoplay-live-context:p:s"
        for mode in MetadataMode:
            assert item.node.get_content(metadata_mode=mode) == (
                "[Session context]\nX"
                if mode is not MetadataMode.ALL
                else "source: autoplay_live_context\nsession_id: s\nproduct_id: p\n\n"
                "[Session context]\nX"
            )

    def test_insert_context(self) -> None:
        nodes = [scored("a", 1.0)]
        context = scored("ctx", 1.0)
        assert insert_context(nodes, context, "first") == [context, *nodes]
        assert insert_context(nodes, context, "last") == [*nodes, context]
        assert insert_context(nodes, None, "first") is nodes


class TestDocuments:
    def test_actions_event(self) -> None:
        event = actions("ps_1", *ALICE_STEPS[1:], user_id="u1", event_id="42", forwarded_at=5.0)
        doc = event_document(event)
        assert doc.doc_id == "autoplay-event:acme:42"
        assert doc.text == (
            "Session ps_1 — 2 actions\n"
            "1. Opened billing settings — /settings/billing\n"
            "2. Clicked Upgrade plan — /settings/billing"
        )
        assert doc.metadata == {
            "session_id": "ps_1",
            "product_id": "acme",
            "user_id": "u1",
            "event_id": "42",
            "type": "actions",
            "forwarded_at": 5.0,
        }
        assert doc.get_content(metadata_mode=MetadataMode.EMBED) == (
            f"session_id: ps_1\nproduct_id: acme\ntype: actions\n\n{doc.text}"
        )

    def test_summary_and_unknown_events(self) -> None:
        summary = SummaryPayload(
            product_id="acme", session_id="ps_1", summary="Did things.", forwarded_at=3.0
        )
        doc = event_document(summary)
        assert (doc.text, doc.metadata["type"], "user_id" in doc.metadata) == (
            "Did things.",
            "summary",
            False,
        )
        unknown = UnknownEvent(type="usertour_trigger", data={"type": "usertour_trigger", "b": 1})
        doc = event_document(unknown)
        assert doc.text == '{"b":1,"type":"usertour_trigger"}'
        assert doc.metadata["type"] == "usertour_trigger"
        assert "forwarded_at" not in doc.metadata

    def test_snapshot(self) -> None:
        view = SessionView(summary=None, actions=["A — /a"], last_activity_at=9.0)
        doc = snapshot_document(SessionSnapshot(SessionKey("acme", "ps_1"), view))
        assert doc.doc_id == "autoplay-session:acme:ps_1"
        assert doc.text == "Recent activity:\n1. A — /a"
        assert doc.metadata == {
            "session_id": "ps_1",
            "product_id": "acme",
            "type": "session",
            "source": "autoplay_live_context",
            "last_activity_at": 9.0,
        }
