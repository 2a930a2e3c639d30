"""The text that reaches a prompt, in one place.

Two jobs: make untrusted text safe to embed (:func:`clean_text`, :func:`action_line`)
and lay out the context blocks (:func:`format_context`, :func:`format_enriched`).

The layout is the one ``autoplay-sdk`` documents, so prompts and embeddings built
on it keep working::

    [Session context]
    Summary: User navigated to the Dashboard and exported a CSV.

    Recent activity:
    1. Opened billing settings — /settings/billing
    2. Clicked Upgrade plan — /settings/billing

    [Query]
    How do I add a team member?

``get()`` returns the part between the headers; ``enrich()`` adds the headers and
the query, or returns the query unchanged when there is no context.
"""

from __future__ import annotations

from collections.abc import Sequence

from autoplay_base.events import SlimAction

__all__ = [
    "CONTEXT_HEADER",
    "MAX_FIELD_CHARS",
    "MAX_SUMMARY_CHARS",
    "QUERY_HEADER",
    "action_line",
    "clean_text",
    "format_context",
    "format_enriched",
    "format_user_activity",
]

CONTEXT_HEADER = "[Session context]"
QUERY_HEADER = "[Query]"
MAX_FIELD_CHARS = 300
"""Cap on one action's description or URL once cleaned."""
MAX_SUMMARY_CHARS = 4000
"""Cap on a summary once cleaned."""

# C0 and C1 control characters other than whitespace become nothing; whitespace
# (including newlines and the Unicode line separators) is folded to single spaces
# by ``split``, so untrusted text can never start a new line inside the block.
_DROP_CONTROLS = {
    c: None for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if chr(c) not in "\t\n\r\x0b\x0c"
}
_ELLIPSIS = "…"


def clean_text(text: str, max_chars: int) -> str:
    """Strip control characters, fold whitespace to single spaces, cap at ``max_chars``."""
    if text.isprintable() and "  " not in text and len(text) <= max_chars:
        return text.strip()  # the common case costs one scan
    cleaned = " ".join(text.translate(_DROP_CONTROLS).split())
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 1].rstrip() + _ELLIPSIS
    return cleaned


def action_line(action: SlimAction) -> str:
    """The cleaned ``<description> — <canonical_url>`` line stored for one action."""
    what = clean_text(action.description or action.title, MAX_FIELD_CHARS)
    where = clean_text(action.canonical_url, MAX_FIELD_CHARS)
    return f"{what} — {where}" if where else what


def format_context(summary: str | None, lines: Sequence[str]) -> str:
    """The context body: ``Summary: …`` and the numbered ``Recent activity:`` list."""
    if lines:
        numbered = "\n".join([f"{i}. {line}" for i, line in enumerate(lines, 1)])
        activity = f"Recent activity:\n{numbered}"
        return f"Summary: {summary}\n\n{activity}" if summary else activity
    return f"Summary: {summary}" if summary else ""


def format_enriched(context: str, query: str) -> str:
    """Wrap a context body and the user's query; the query alone when there is no context."""
    if not context:
        return query
    return f"{CONTEXT_HEADER}\n{context}\n\n{QUERY_HEADER}\n{query}"


def format_user_activity(blocks: Sequence[tuple[str, str, str]]) -> str:
    """Join ``(session_id, product_id, context)`` blocks for ``UserSessionIndex``."""
    return "\n\n".join(
        f"Session {session_id} ({product_id}):\n{context}"
        for session_id, product_id, context in blocks
    )
