"""``AutoplayNodePostprocessor``: the user's live session context in every retrieval.

Drop it into any LlamaIndex pipeline that takes ``node_postprocessors``::

    store = ContextStore(lookback_seconds=300, max_actions=20)   # fed by the stream
    live = AutoplayNodePostprocessor(store=store, boost_weight=0.2)
    query_engine = index.as_query_engine(node_postprocessors=[live])

    with autoplay_session(session_id, product_id=product_id):
        response = query_engine.query("How do I add a team member?")

It adds one ``TextNode`` holding the session's context (``[Session context]``,
then the summary and recent actions exactly as ``ContextStore.get`` formats
them) and, with ``boost_weight > 0``, raises the score of retrieved nodes about
pages the user just visited, then re-sorts them (stable, by score).

Scoring: the distinct pages of the session's recent actions are ranked newest
first (``r = 0`` for the page of the latest action). A node whose metadata
(any key in ``url_metadata_keys``) names one of them gets::

    score = (score or 0.0) + boost_weight / (1 + r)

(only its best-ranked page counts). Pages compare by URL path without the
trailing slash, so ``https://docs.example.com/settings/billing/`` matches a
visit to ``https://app.example.com/settings/billing``; values that are neither
absolute URLs nor paths starting with ``/`` never match. Choose the weight on
your retriever's score scale (cosine similarities: 0.05-0.2; BM25 scores are
larger and unbounded).

Which session: the first of these that names one wins, per call —

1. an :class:`AutoplayQueryBundle` passed to ``query()``/``retrieve()``;
2. the enclosing ``with autoplay_session(...)`` block (the only one that reaches
   the postprocessor through chat engines and ``RetrieverTool``, which build a
   new ``QueryBundle`` from the message);
3. the ``session_id`` field given to the constructor.

``product_id`` travels with the session it came with and falls back to the
constructor's ``product_id``; when both are ``None`` the store resolves it, and
raises :class:`~autoplay_base.errors.AmbiguousSessionError` if the session
exists under several products (it propagates: guessing would leak context
across products). With no session at all, or a session the store does not
know, the nodes pass through unchanged.

``strict=True`` raises instead of passing the nodes through:
:class:`~autoplay_base.errors.ConfigError` when no session is named,
:class:`~autoplay_base.errors.SessionLookupError` when the store does not know it
(the store counts those in ``stats()["sessions_not_found"]`` either way).

Serialization: ``to_dict()`` leaves the store out, so
``AutoplayNodePostprocessor.from_dict(data, store=store)`` rebuilds it;
``copy.deepcopy`` shares the store and ``pickle`` raises ``TypeError``.

Put it after filtering postprocessors (similarity cutoffs, rerankers) in the
list, so they cannot drop the context node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from autoplay_base.backends.base import SessionView
from autoplay_base.context_store import AsyncContextStore, ContextStore
from llamaindex_autoplay._convert import (
    Position,
    boost_nodes,
    context_node,
    context_text,
    insert_context,
    visited_pages,
)
from llamaindex_autoplay._fields import (
    ReadOverridesAlias,
    StoreOnLoad,
    context_options_field,
    strict_errors,
)
from llamaindex_autoplay.session import SessionScope, current_session, resolve_session

__all__ = ["DEFAULT_URL_METADATA_KEYS", "AutoplayNodePostprocessor", "AutoplayQueryBundle"]

logger = logging.getLogger(__name__)

DEFAULT_URL_METADATA_KEYS = ("url", "path", "canonical_url")
"""Node metadata keys checked for a page URL when boosting."""


@dataclass
class AutoplayQueryBundle(QueryBundle):
    """A ``QueryBundle`` that names the session whose context to inject.

    Pass it to ``query_engine.query(...)`` or ``retriever.retrieve(...)``; it
    wins over ``autoplay_session`` and the constructor. Chat engines and
    ``RetrieverTool`` rebuild the bundle, so use ``autoplay_session`` there.
    """

    session_id: str | None = None
    product_id: str | None = None


class AutoplayNodePostprocessor(StoreOnLoad, ReadOverridesAlias, BaseNodePostprocessor):
    """Injects the user's live session context into retrieved nodes (see the module docs)."""

    store: ContextStore | AsyncContextStore = Field(
        exclude=True, description="The context store to read (sync or async; both are used)."
    )
    session_id: str | None = Field(
        default=None, description="Session used when neither the bundle nor a scope names one."
    )
    product_id: str | None = Field(
        default=None, description="Product used when the chosen session source has none."
    )
    position: Position = Field(
        default="first", description="Where the context node goes: 'first' or 'last'."
    )
    context_score: float | None = Field(default=1.0, description="Score of the context node.")
    add_context_node: bool = Field(
        default=True, description="Add the context node (False: only boost)."
    )
    boost_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Score added to a node about the latest visited page (0 disables boosting).",
    )
    url_metadata_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_URL_METADATA_KEYS),
        description="Node metadata keys holding the node's page URL or path.",
    )
    context_options: dict[str, Any] = context_options_field(
        "Store read options (lookback_seconds, max_actions, include_summary, ...); "
        "also accepted as read_overrides."
    )
    strict: bool = Field(
        default=False, description="Raise when no session is named or the store lacks it."
    )

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this component under."""
        return "AutoplayNodePostprocessor"

    def _scope(self, query_bundle: QueryBundle | None) -> SessionScope | None:
        scoped = current_session()
        scope = resolve_session(
            (query_bundle.session_id, query_bundle.product_id)
            if isinstance(query_bundle, AutoplayQueryBundle)
            else (None, None),
            (scoped.session_id, scoped.product_id) if scoped is not None else (None, None),
            (self.session_id, self.product_id),
            default_product_id=self.product_id,
        )
        if scope is None:
            if self.strict:
                strict_errors(type(self).__name__, None, None, None)
            logger.debug("autoplay postprocessor: no session for this query; nodes unchanged")
        return scope

    def _apply(
        self, nodes: list[NodeWithScore], view: SessionView | None, scope: SessionScope
    ) -> list[NodeWithScore]:
        if self.strict:
            strict_errors(type(self).__name__, scope.session_id, scope.product_id, view)
        if view is None:
            return nodes
        if self.boost_weight > 0:
            nodes = boost_nodes(
                nodes,
                visited_pages(view.actions),
                weight=self.boost_weight,
                metadata_keys=self.url_metadata_keys,
            )
        text = context_text(view.summary, view.actions) if self.add_context_node else ""
        context = context_node(text, scope, score=self.context_score) if text else None
        return insert_context(nodes, context, self.position)

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        scope = self._scope(query_bundle)
        if scope is None:
            return nodes
        view = self.store.view(scope.session_id, scope.product_id, **self.context_options)
        return self._apply(nodes, view, scope)

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        scope = self._scope(query_bundle)
        if scope is None:
            return nodes
        view = await self.store.aview(scope.session_id, scope.product_id, **self.context_options)
        return self._apply(nodes, view, scope)
