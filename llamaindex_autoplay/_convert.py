"""Pure conversions from autoplay values to LlamaIndex nodes and documents.

No I/O and no store access: every adapter reads the store once and hands the
result to one of these functions, so the sync and async hooks differ only by
``await``.

Boosting (:func:`boost_nodes`): the store keeps each action as a description and
its ``canonical_url`` (shown as ``<description> — <canonical_url>``);
:func:`visited_pages` reads the URLs back with
:func:`~autoplay_base.formatting.parse_action_line` (the line format is known only
to :mod:`autoplay_base.formatting`), newest first, and gives each distinct page a
rank ``r`` (0 = the page of the latest action). A retrieved node whose metadata URL
(any of the configured keys) names one of those pages gets::

    score = (score or 0.0) + weight * 1 / (1 + r)

so the current page adds the full ``weight``, the page before it half of it, and
so on; only the best-ranked match counts. Pages are compared by URL path with
the trailing slash removed (``https://app.example.com/settings/billing/`` and
``/settings/billing`` are the same page); hosts, queries and fragments are
ignored because docs and app usually live on different hosts but mirror routes.

Ids and shown metadata: every id built here comes from
:func:`~autoplay_base.formatting.compose_id` (each part escaped), so two tenants
can never share a document or node id, whatever ``:`` their ids contain, and a
docstore upserting by id never overwrites one tenant with another. Metadata the
LLM or the embedding sees (``session_id``, ``product_id``, ``type``, ...) is
cleaned like any other untrusted text (one line, capped); metadata hidden from
both (``user_id``, ``event_id``, times, and everything on the context node) keeps
the exact values, for code that inspects ``source_nodes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from llama_index.core.schema import Document, NodeWithScore, TextNode

from autoplay_base.events import Event
from autoplay_base.formatting import (
    clean_metadata,
    compose_id,
    format_context,
    format_context_block,
    parse_action_line,
)
from autoplay_base.sources import (
    LIVE_CONTEXT_SOURCE,
    SessionSnapshot,
    event_metadata,
    session_metadata,
)
from llamaindex_autoplay.session import SessionScope

# What the adapters of this package import (plain names: this module is private).
__all__ = [
    "CONTEXT_NODE_ID_PREFIX",
    "EVENT_ID_PREFIX",
    "SESSION_ID_PREFIX",
    "Position",
    "action_url",
    "boost_nodes",
    "context_node",
    "context_node_id",
    "context_text",
    "event_document",
    "event_document_id",
    "insert_context",
    "recency",
    "session_document_id",
    "snapshot_document",
    "url_key",
    "visited_pages",
]

Position = Literal["first", "last"]

CONTEXT_NODE_ID_PREFIX = "autoplay-live-context"
EVENT_ID_PREFIX = "autoplay-event"
SESSION_ID_PREFIX = "autoplay-session"
_EVENT_HIDDEN_KEYS = ["user_id", "event_id", "forwarded_at"]  # ids and clocks only add noise
_SESSION_HIDDEN_KEYS = ["last_activity_at"]


def _shown(metadata: Mapping[str, Any], hidden: Sequence[str]) -> dict[str, Any]:
    """``metadata`` with every value the LLM or the embedding sees cleaned."""
    return clean_metadata(metadata, [key for key in metadata if key not in hidden])


def context_node_id(product_id: str | None, session_id: str) -> str:
    """The context node's id: ``autoplay-live-context:<product>:<session>``, parts escaped."""
    return compose_id(CONTEXT_NODE_ID_PREFIX, product_id, session_id)


def event_document_id(product_id: str | None, event_id: str) -> str:
    """An event document's id: ``autoplay-event:<product>:<event_id>``, parts escaped."""
    return compose_id(EVENT_ID_PREFIX, product_id, event_id)


def session_document_id(product_id: str, session_id: str) -> str:
    """A session document's id: ``autoplay-session:<product>:<session>``, parts escaped."""
    return compose_id(SESSION_ID_PREFIX, product_id, session_id)


def context_text(summary: str | None, actions: Sequence[str]) -> str:
    """``[Session context]`` and the context body, or ``""`` when there is nothing to say."""
    return format_context_block(format_context(summary, actions))


def context_node(text: str, scope: SessionScope, *, score: float | None) -> NodeWithScore:
    """The node that carries a session's live context into the prompt.

    Its metadata marks it (``source``, ``session_id``, ``product_id`` when known)
    for code that inspects ``source_nodes``; none of it is shown to the LLM or
    embedded, so the node's prompt text is exactly ``text``.
    """
    metadata: dict[str, Any] = {"source": LIVE_CONTEXT_SOURCE, "session_id": scope.session_id}
    if scope.product_id is not None:
        metadata["product_id"] = scope.product_id
    node = TextNode(
        id_=context_node_id(scope.product_id, scope.session_id),
        text=text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=score)


def action_url(line: str) -> str | None:
    """The URL of an action line (stored or display), or ``None`` when it has none.

    Read with :func:`~autoplay_base.formatting.parse_action_line`. In a display
    line (``<description> — <url>``) the description may itself contain `` — ``,
    so the text after the last one only counts when it looks like a URL
    (absolute, or a path from ``/``).
    """
    _, tail = parse_action_line(line)
    return tail if tail is not None and url_key(tail) is not None else None


# Sessions revisit the same few pages, so most lookups hit; the cache is bounded.
@lru_cache(maxsize=4096)
def url_key(url: str) -> str | None:
    """The comparable form of a page URL: its path without trailing slash; ``None`` if not a URL."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc) and not url.startswith("/"):
        return None
    return parts.path.rstrip("/") or "/"


def visited_pages(actions: Sequence[str]) -> dict[str, int]:
    """Distinct visited pages (by :func:`url_key`) mapped to their recency rank, 0 = latest."""
    ranks: dict[str, int] = {}
    for line in reversed(actions):
        _, tail = parse_action_line(line)
        key = url_key(tail) if tail is not None else None
        if key is not None and key not in ranks:
            ranks[key] = len(ranks)
    return ranks


def recency(rank: int) -> float:
    """The boost factor of a page visited ``rank`` distinct pages ago."""
    return 1.0 / (1 + rank)


def _best_rank(metadata: Mapping[str, Any], keys: Iterable[str], pages: Mapping[str, int]) -> int:
    best = -1
    for name in keys:
        value = metadata.get(name)
        if isinstance(value, str):
            rank = pages.get(url_key(value) or "", -1)
            if rank >= 0 and (best < 0 or rank < best):
                best = rank
    return best


def boost_nodes(
    nodes: Sequence[NodeWithScore],
    pages: Mapping[str, int],
    *,
    weight: float,
    metadata_keys: Sequence[str],
) -> list[NodeWithScore]:
    """Add the recency boost to nodes about visited pages, then sort by score (stable).

    Boosted nodes are new ``NodeWithScore`` objects; the caller's are untouched.
    Without a weight or visited pages the nodes come back in their own order.
    """
    if weight <= 0 or not pages:
        return list(nodes)
    boosted = False
    result = []
    for item in nodes:
        rank = _best_rank(item.node.metadata, metadata_keys, pages)
        if rank < 0:
            result.append(item)
            continue
        boosted = True
        score = (item.score or 0.0) + weight * recency(rank)
        result.append(NodeWithScore(node=item.node, score=score))
    if boosted:
        result.sort(key=lambda n: n.score or 0.0, reverse=True)
    return result


def insert_context(
    nodes: list[NodeWithScore], context: NodeWithScore | None, position: Position
) -> list[NodeWithScore]:
    """``nodes`` with the context node first or last (unchanged when there is none)."""
    if context is None:
        return nodes
    return [context, *nodes] if position == "first" else [*nodes, context]


def event_document(event: Event) -> Document:
    """One event as a ``Document``: text ``event.to_text()``, metadata from ``event_metadata``.

    The id is derived from ``(product_id, event_id)`` when the event has one
    (:func:`event_document_id`), so re-reading a recording or stream replays into
    an ``IngestionPipeline``'s docstore as the same documents instead of new ones.
    The metadata the LLM and the embedding see is cleaned (see the module docstring).
    """
    metadata = _shown(event_metadata(event), _EVENT_HIDDEN_KEYS)
    extra: dict[str, Any] = {}
    if event.event_id:
        extra["id_"] = event_document_id(event.product_id, event.event_id)
    return Document(
        text=event.to_text(),
        metadata=metadata,
        excluded_embed_metadata_keys=list(_EVENT_HIDDEN_KEYS),
        excluded_llm_metadata_keys=list(_EVENT_HIDDEN_KEYS),
        **extra,
    )


def snapshot_document(snapshot: SessionSnapshot) -> Document:
    """One session's current context as a ``Document`` (one per session, stable id).

    The id is :func:`session_document_id`; the shown metadata is cleaned.
    """
    return Document(
        id_=session_document_id(snapshot.key.product_id, snapshot.key.session_id),
        text=snapshot.text,
        metadata=_shown(session_metadata(snapshot), _SESSION_HIDDEN_KEYS),
        excluded_embed_metadata_keys=list(_SESSION_HIDDEN_KEYS),
        excluded_llm_metadata_keys=list(_SESSION_HIDDEN_KEYS),
    )
