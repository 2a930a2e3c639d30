"""The text that reaches a prompt, in one place.

Two jobs: make untrusted text safe to embed (:func:`clean_text`, :func:`action_line`)
and lay out the context blocks (:func:`format_context`, :func:`format_enriched`).

Stored lines are compact: an action is kept as ``description`` + ``FIELD_SEPARATOR``
+ ``url`` (ASCII control characters that :func:`clean_text` removes from untrusted
text, so they can never be forged). An em dash would make CPython store the whole
line at two bytes per character; the separator keeps most lines at one, and the
dash is put in once per formatted block (:func:`display_line` for a single line).

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
    "BATCH_SEPARATOR",
    "CONTEXT_HEADER",
    "FIELD_SEPARATOR",
    "MAX_FIELD_CHARS",
    "MAX_SUMMARY_CHARS",
    "QUERY_HEADER",
    "action_line",
    "action_lines",
    "clean_text",
    "display_line",
    "format_context",
    "format_context_block",
    "format_enriched",
    "format_user_activity",
    "number_lines",
]

CONTEXT_HEADER = "[Session context]"
QUERY_HEADER = "[Query]"
MAX_FIELD_CHARS = 300
"""Cap on one action's description or URL once cleaned."""
MAX_SUMMARY_CHARS = 4000
"""Cap on a summary once cleaned."""
FIELD_SEPARATOR = "\x1f"
"""Between an action's description and URL in a stored line."""
BATCH_SEPARATOR = "\n"
"""Between stored lines, where a backend packs several into one string.

A newline can never be inside a cleaned line, and using it lets a packed batch
be numbered without first being split and re-joined on another character.
"""
_DASH = " — "
# "1. ", "\n2. ", "\n3. ", ...: each number carries the newline that ends the line before.
_NUMBERS = ["1. ", *(f"\n{n}. " for n in range(2, 257))]

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
    """The cleaned, stored line for one action (see :func:`display_line`)."""
    what = clean_text(action.description or action.title, MAX_FIELD_CHARS)
    where = clean_text(action.canonical_url, MAX_FIELD_CHARS)
    return f"{what}{FIELD_SEPARATOR}{where}" if where else what


def action_lines(actions: Sequence[SlimAction]) -> list[str]:
    """:func:`action_line` for each action of a batch."""
    return list(map(action_line, actions))


def display_line(line: str) -> str:
    """A stored line as people read it: ``<description> — <canonical_url>``."""
    return line.replace(FIELD_SEPARATOR, _DASH)


def _numbers(count: int) -> list[str]:
    if count > len(_NUMBERS):
        _NUMBERS.extend(f"\n{n}. " for n in range(len(_NUMBERS) + 1, count + 1))
    return _NUMBERS[:count]


def number_lines(lines: Sequence[str]) -> str:
    """``1. <line>`` lines joined by newlines, stored lines shown with their dashes."""
    # Interleave numbers and lines with two C-level slice assignments, join once, and
    # put the dashes in with one pass: about twice as fast as a per-line f-string.
    count = len(lines)
    parts: list[str] = [""] * (2 * count)
    parts[::2] = _numbers(count)
    parts[1::2] = lines
    return "".join(parts).replace(FIELD_SEPARATOR, _DASH)


def format_context(summary: str | None, lines: Sequence[str]) -> str:
    """The context body: ``Summary: …`` and the numbered ``Recent activity:`` list.

    ``lines`` are stored lines (or display lines: they pass through unchanged).
    """
    if lines:
        activity = f"Recent activity:\n{number_lines(lines)}"
        return f"Summary: {summary}\n\n{activity}" if summary else activity
    return f"Summary: {summary}" if summary else ""


def format_context_block(context: str) -> str:
    """A context body under the ``[Session context]`` header, ``""`` when there is none.

    What a system prompt or a system message carries: ``enrich()``'s block
    without the ``[Query]`` part.
    """
    return f"{CONTEXT_HEADER}\n{context}" if context else ""


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
