"""Pure conversions from ``autoplay_base`` values to LangChain values, shared by the adapters.

Nothing here does I/O or holds state: each adapter makes one store call and hands
the result to one of these functions.

Every text here is cleaned: ``page_content`` is store output or an event's
``to_text()`` (both laid out and cleaned by :mod:`autoplay_base.formatting`), and
every string metadata value passes through
:func:`~autoplay_base.formatting.clean_metadata`, because LangChain has no way to
hide a metadata key from a prompt (a ``document_prompt`` may show any of them).
No document gets an id; the metadata ids (``session_id``, ``product_id``,
``event_id``) are separate keys, never joined into one string.
"""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document

from autoplay_base.backends.base import SessionView
from autoplay_base.events import Event
from autoplay_base.formatting import clean_metadata
from autoplay_base.sources import (
    LIVE_CONTEXT_SOURCE,
    SessionSnapshot,
    event_metadata,
    session_metadata,
)

__all__ = [
    "LIVE_CONTEXT_SOURCE",
    "context_document",
    "event_document",
    "session_documents",
    "snapshot_document",
]


def _metadata(session_id: str, product_id: str | None, **extra: Any) -> dict[str, Any]:
    return clean_metadata(
        {
            "source": LIVE_CONTEXT_SOURCE,
            "session_id": session_id,
            "product_id": product_id,
            **extra,
        }
    )


def context_document(context: str, session_id: str, product_id: str | None) -> Document:
    """One document holding a session's whole live context (the retriever's prepended doc)."""
    return Document(page_content=context, metadata=_metadata(session_id, product_id))


def session_documents(
    view: SessionView | None,
    session_id: str,
    product_id: str | None,
    *,
    k: int | None = None,
) -> list[Document]:
    """A session's context as documents: the summary first, then one per action, oldest first.

    With ``k``, at most ``k`` documents are returned, keeping the summary and the
    most recent actions (the ones most likely to explain the user's question).
    Action documents carry ``metadata["kind"] == "action"`` and their 1-based
    ``position`` in the numbered ``Recent activity`` list; the summary has
    ``kind == "summary"``.
    """
    if view is None or k == 0:
        return []
    docs: list[Document] = []
    if view.summary:
        docs.append(
            Document(
                page_content=view.summary,
                metadata=_metadata(session_id, product_id, kind="summary"),
            )
        )
    actions = list(view.actions)
    first = 0
    if k is not None:
        first = max(0, len(actions) - (k - len(docs)))
    docs.extend(
        Document(
            page_content=line,
            metadata=_metadata(session_id, product_id, kind="action", position=i),
        )
        for i, line in enumerate(actions[first:], first + 1)
    )
    return docs


def event_document(event: Event) -> Document:
    """One event as a document: its ``to_text()`` and its :func:`event_metadata`, cleaned."""
    return Document(page_content=event.to_text(), metadata=clean_metadata(event_metadata(event)))


def snapshot_document(snapshot: SessionSnapshot) -> Document:
    """One session's context as a document: the body and its :func:`session_metadata`, cleaned."""
    return Document(page_content=snapshot.text, metadata=clean_metadata(session_metadata(snapshot)))
