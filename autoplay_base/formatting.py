"""The text that reaches a prompt, in one place.

Two jobs: make untrusted text safe to embed (:func:`clean_text`, :func:`clean_id`,
:func:`clean_summary`, :func:`action_line`) and lay out every text built from
connector data (the context blocks, :func:`view_text`, :func:`format_context` and
:func:`format_enriched`; the events' own ``to_text()``,
:func:`format_actions_payload`; the user index's headers,
:func:`format_user_activity`). It is also the only module that reads a stored line
back (:func:`parse_action_line`). :mod:`autoplay_base.events`, the store and the
adapters lay out no text themselves: they call these functions.

This module is the lowest floor: it imports nothing of this package. The values it
lays out (an action, a batch, a read view) are named by the small read-only
protocols :class:`ActionFields`, :class:`BatchFields` and :class:`ContextParts`,
which ``SlimAction``, ``ActionsPayload`` and ``SessionView`` satisfy as they are.

Cleaning rules (:func:`clean_text`, the one cleaning function; everything an adapter
shows to a prompt or an embedding goes through it):

* **Lines.** Every kind of whitespace, including ``\n``, ``\r``, form feed, NEL
  (U+0085) and the Unicode line and paragraph separators (U+2028, U+2029), is
  folded with its neighbours into one ASCII space, and the ends are stripped: a
  cleaned text is always one line, so untrusted text can never forge a numbered
  line or a ``[Query]`` header.
* **Controls.** The other C0 and C1 control characters are removed (including the
  ``FIELD_SEPARATOR`` used inside stored lines, so it can never be forged).
* **Lone surrogates** (``"\\ud800"`` is valid in ``json.loads`` of a webhook body)
  become U+FFFD, so a cleaned text always encodes as UTF-8.
* **Invisible format characters** (Unicode category ``Cf``) are removed: the
  bidirectional embeddings, overrides and isolates (U+202A-U+202E,
  U+2066-U+2069) and marks (U+200E, U+200F, U+061C), which make a URL read one
  way and be another; the zero-width space and non-joiner, the word joiner, the
  invisible operators and the BOM (U+200B, U+200C, U+2060-U+2064, U+FEFF); the
  soft hyphen; and the tag characters (U+E0000-U+E007F), which LLMs read but
  people do not see ("ASCII smuggling"). The cost: the subdivision flags built
  from tags (England, Scotland, Wales) show as a plain black flag.
* **The zero-width joiner** (U+200D) is kept only between two non-ASCII
  characters: there it glues emoji sequences (👩‍💻) and shapes Indic and Arabic
  letters, and it can neither reorder text nor hide a character. Next to ASCII,
  or at either end, it is removed, so it cannot split an ASCII word or URL into
  two look-alike strings (``pay\u200dpal``).
* **Length.** A cleaned text longer than its cap is cut and ends with ``…``.

Not handled (printable to Python, so they stay on the one-scan fast path):
variation selectors and invisible letters such as the Hangul filler (U+3164).

Most text needs none of this: when it is ``str.isprintable()`` (False for every
character above but the ASCII space) and has no double space, cleaning costs one
scan, for ASCII and non-ASCII text alike.

Ids the adapters emit (document and node ids) are built by :func:`compose_id`,
which escapes each part so that no two distinct tuples of parts share an id.

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

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "ASSISTANT_ANSWERED",
    "ASSISTANT_USED_TOOL",
    "BATCH_SEPARATOR",
    "CONTEXT_HEADER",
    "FIELD_SEPARATOR",
    "MAX_FIELD_CHARS",
    "MAX_ID_CHARS",
    "MAX_SUMMARY_CHARS",
    "NO_ACTIVITY",
    "NO_SESSION",
    "QUERY_HEADER",
    "ActionFields",
    "BatchFields",
    "ContextParts",
    "action_line",
    "action_lines",
    "append_block",
    "assistant_turn_line",
    "clean_id",
    "clean_metadata",
    "clean_summary",
    "clean_text",
    "compose_id",
    "display_line",
    "display_lines",
    "escape_id_part",
    "format_actions_payload",
    "format_activity_answer",
    "format_context",
    "format_context_block",
    "format_enriched",
    "format_raw_event",
    "format_user_activity",
    "number_lines",
    "parse_action_line",
    "tool_call_line",
    "view_block",
    "view_text",
]

CONTEXT_HEADER = "[Session context]"
QUERY_HEADER = "[Query]"
NO_ACTIVITY = "No recent activity is recorded for this user's session."
"""What the activity tool answers for a session with no context."""
NO_SESSION = "No user session is attached to this conversation, so no activity can be read."
"""What the activity tool answers for a call that names no session."""
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

MAX_ID_CHARS = 256
"""Cap on an id (session, product, user, event type) once cleaned for display."""


# The values laid out here, by the fields read: read-only protocols rather than the
# event and backend types, so this module imports nothing of the package (events,
# the store and the backends all import it) and there is no import circle, not even
# one for type checkers.
class ActionFields(Protocol):
    """What :func:`action_line` reads of an action (``SlimAction`` has it)."""

    @property
    def title(self) -> str:
        """Shown when there is no description."""

    @property
    def description(self) -> str:
        """What the user did."""

    @property
    def canonical_url(self) -> str:
        """Where they did it."""


class BatchFields(Protocol):
    """What :func:`format_actions_payload` reads of a batch (``ActionsPayload`` has it)."""

    @property
    def session_id(self) -> str | None:
        """The session, shown cleaned in the header."""

    @property
    def actions(self) -> Sequence[ActionFields]:
        """The batch's actions, one numbered line each."""


class ContextParts(Protocol):
    """What :func:`view_text` reads of a read view (``SessionView`` has it)."""

    @property
    def summary(self) -> str | None:
        """The stored (cleaned) summary, if any."""

    @property
    def actions(self) -> Sequence[str]:
        """Stored or display lines, oldest first."""


# What ``str.translate`` does to untrusted text before whitespace is folded:
# * C0 and C1 controls other than whitespace become nothing; whitespace (newlines,
#   NEL, the Unicode line separators) is left for ``split`` to fold into single
#   spaces, so untrusted text can never start a new line inside the block;
# * every format character (category Cf, as of Unicode 15) but the zero-width
#   joiner becomes nothing (the rules are in the module docstring);
# * surrogates become U+FFFD: in a ``str`` every surrogate is a lone one (a valid
#   pair is decoded into one code point), and none of them can be encoded.
_WHITESPACE_CONTROLS = "\t\n\r\x0b\x0c\x85"
_ZWJ = "\u200d"
_FORMAT_RANGES = (
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_REPLACEMENT = "\ufffd"
_CLEAN_TABLE: dict[int, str | None] = {
    **{
        c: None
        for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))
        if chr(c) not in _WHITESPACE_CONTROLS
    },
    **{c: None for low, high in _FORMAT_RANGES for c in range(low, high + 1) if chr(c) != _ZWJ},
    **dict.fromkeys(range(0xD800, 0xE000), _REPLACEMENT),
}
# A run of joiners with ASCII (or nothing) on either side glues nothing a person
# can see; the whole run goes, so no joiner is ever left beside an ASCII character.
_STRAY_ZWJ = re.compile("(?<![^\x00-\x7f])\u200d+|\u200d+(?![^\x00-\x7f])")
_ELLIPSIS = "…"


def clean_text(text: str, max_chars: int) -> str:
    """Untrusted text made safe to embed: one line, visible characters, at most ``max_chars``.

    Whitespace (line breaks included) is folded to single spaces, controls and
    invisible format characters removed, lone surrogates replaced by U+FFFD and
    the result capped with ``…`` (the rules are in the module docstring). The
    result always encodes as UTF-8 and never contains a line break.
    """
    # The common case costs one scan: ``isprintable`` is False for every character
    # the slow path would change (controls, format characters, surrogates and all
    # whitespace but the ASCII space), and double or edge spaces are all that is left.
    if text.isprintable() and "  " not in text and len(text) <= max_chars:
        return text.strip()
    cleaned = " ".join(text.translate(_CLEAN_TABLE).split())
    if _ZWJ in cleaned:
        cleaned = _STRAY_ZWJ.sub("", cleaned)
    if len(cleaned) > max_chars:
        # A cut can leave a space or a joiner at the end: neither belongs before the ellipsis.
        cleaned = cleaned[: max_chars - 1].rstrip(" " + _ZWJ) + _ELLIPSIS
    return cleaned


def clean_id(value: str) -> str:
    """An untrusted id (session, product, user, email, event type) as it may be shown.

    :func:`clean_text` with the :data:`MAX_ID_CHARS` cap: what a header or shown
    metadata carries. It is for display only; identity is kept by the raw value
    (the store's keys) and by :func:`compose_id` (document ids).
    """
    return clean_text(value, MAX_ID_CHARS)


def clean_metadata(
    metadata: Mapping[str, Any], keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """``metadata`` with the string values of ``keys`` (default: all) put through :func:`clean_id`.

    For metadata a prompt or an embedding can see; other values are kept as they are.
    """
    return {
        key: clean_id(value) if isinstance(value, str) and (keys is None or key in keys) else value
        for key, value in metadata.items()
    }


def clean_summary(summary: str) -> str:
    """A summary as stored and shown: :func:`clean_text` with the :data:`MAX_SUMMARY_CHARS` cap.

    ``SummaryPayload.to_text()`` and the store's writes both use it, so the summary
    an event shows is the one a prompt sees.
    """
    return clean_text(summary, MAX_SUMMARY_CHARS)


def escape_id_part(value: str) -> str:
    """One part of a composed id: ``%`` and ``:`` percent-encoded (the Redis layout's rule)."""
    return value.replace("%", "%25").replace(":", "%3A")


_EMPTY_PART = "%00"
"""How :func:`compose_id` writes a part that is ``""``: escaping never produces it."""


def compose_id(prefix: str, *parts: str | None) -> str:
    """``prefix:part:part…`` with each part escaped (:func:`escape_id_part`); injective.

    An escaped part contains no ``:``, so the parts can be read back by splitting;
    ``%`` only starts ``%25`` or ``%3A`` in one. ``None`` (an unknown product) is
    written as the empty part, as ids were before escaping, so the ids of ordinary
    values are unchanged; an empty string is written ``%00``, which escaping never
    produces. Two different tuples of parts therefore never give the same id,
    whatever separators the ids contain. ``prefix`` is a constant of the caller
    and is not escaped.
    """
    escaped = (
        "" if part is None else (escape_id_part(part) if part else _EMPTY_PART) for part in parts
    )
    return ":".join((prefix, *escaped))


def action_line(action: ActionFields) -> str:
    """The cleaned, stored line for one action (see :func:`display_line`)."""
    what = clean_text(action.description or action.title, MAX_FIELD_CHARS)
    where = clean_text(action.canonical_url, MAX_FIELD_CHARS)
    return f"{what}{FIELD_SEPARATOR}{where}" if where else what


def action_lines(actions: Sequence[ActionFields]) -> list[str]:
    """:func:`action_line` for each action of a batch."""
    return list(map(action_line, actions))


def display_line(line: str) -> str:
    """A stored line as people read it: ``<description> — <canonical_url>``.

    ``SlimAction.to_text()`` is ``display_line(action_line(action))``.
    """
    return line.replace(FIELD_SEPARATOR, _DASH)


def display_lines(lines: Sequence[str]) -> list[str]:
    """:func:`display_line` of each line (what ``store.view`` returns), in one comprehension."""
    return [line.replace(FIELD_SEPARATOR, _DASH) for line in lines]


def parse_action_line(line: str) -> tuple[str, str | None]:
    """``(description, url)`` of a line; ``url`` is ``None`` when the line has none.

    The inverse of :func:`action_line`: a stored line is ``description`` +
    :data:`FIELD_SEPARATOR` + ``url``, or the description alone, and neither part
    can contain the separator, so ``parse_action_line(action_line(a))`` gives back
    exactly the cleaned description (or title) and URL of ``a``.

    A display line (:func:`display_line`, what ``store.view`` returns) is read
    too, split at its last `` — ``. There the split can be wrong, because a
    description may itself contain `` — ``: callers that want a URL check that the
    part after it looks like one.
    """
    what, sep, where = line.rpartition(FIELD_SEPARATOR)
    if not sep:
        what, sep, where = line.rpartition(_DASH)
    return (what, where) if sep else (line, None)


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


def view_text(view: ContextParts | None) -> str:
    """The context body of a read (what ``store.get`` returns); ``""`` for no session."""
    return format_context(view.summary, view.actions) if view is not None else ""


def format_context_block(context: str) -> str:
    """A context body under the ``[Session context]`` header, ``""`` when there is none.

    What a system prompt or a system message carries: ``enrich()``'s block
    without the ``[Query]`` part.
    """
    return f"{CONTEXT_HEADER}\n{context}" if context else ""


def view_block(view: ContextParts | None) -> str:
    """:func:`view_text` under the ``[Session context]`` header; ``""`` when there is nothing."""
    return format_context_block(view_text(view))


def format_activity_answer(context: str) -> str:
    """The activity tool's answer: the context under its header, or :data:`NO_ACTIVITY`."""
    return format_context_block(context) if context else NO_ACTIVITY


def append_block(text: str, block: str) -> str:
    """``block`` after ``text`` and a blank line; ``block`` alone when ``text`` is empty.

    How a context block joins a system prompt (the LangChain middleware).
    """
    return f"{text}\n\n{block}" if text else block


def format_enriched(context: str, query: str) -> str:
    """Wrap a context body and the user's query; the query alone when there is no context."""
    if not context:
        return query
    return f"{CONTEXT_HEADER}\n{context}\n\n{QUERY_HEADER}\n{query}"


def format_user_activity(blocks: Sequence[tuple[str, str, str]]) -> str:
    """Join ``(session_id, product_id, context)`` blocks for ``UserSessionIndex``.

    Each block is a ``Session <id> (<product>):`` header line, with both ids
    cleaned (:func:`clean_id`), then the context (already formatted text).
    """
    return "\n\n".join(
        f"Session {clean_id(session_id)} ({clean_id(product_id)}):\n{context}"
        for session_id, product_id, context in blocks
    )


def format_actions_payload(payload: BatchFields) -> str:
    """``ActionsPayload.to_text()``: a header line, then one numbered line per action.

    Every part is cleaned, so the text has exactly ``1 + len(payload.actions)`` lines::

        Session ps_abc123 — 2 actions
        1. Viewed the Dashboard page — https://app.example.com/dashboard
        2. Clicked Export CSV button — https://app.example.com/dashboard
    """
    n = len(payload.actions)
    session = clean_id(payload.session_id) if payload.session_id is not None else ""
    header = f"Session {session or 'unknown'} — {n} action{'' if n == 1 else 's'}"
    return f"{header}\n{number_lines(action_lines(payload.actions))}" if n else header


def format_raw_event(data: Mapping[str, Any]) -> str:
    """An unmodelled event's raw object as compact, sorted JSON (``UnknownEvent.to_text()``).

    Not passed through :func:`clean_text`: ``json.dumps`` escapes every control,
    line break, surrogate and non-ASCII character (``ensure_ascii``), so the text
    is one line of printable ASCII by construction, and cutting it would make it
    invalid JSON.
    """
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


# -- the assistant's own activity (conversation tracking writes it into the context) -------
ASSISTANT_ANSWERED = "Assistant answered"
ASSISTANT_USED_TOOL = "Assistant used tool"


def assistant_turn_line(
    answer: str | None, *, max_chars: int, chars: int | None = None
) -> str | None:
    """``Assistant answered: <answer, cut to max_chars with …>``; ``None`` for a blank answer.

    With content not recorded (``answer`` is ``None``), ``chars`` gives the length:
    ``Assistant answered (<chars> characters)``. The store cleans the line like any
    other action text.
    """
    if answer is None:
        return f"{ASSISTANT_ANSWERED} ({chars} characters)" if chars is not None else None
    if not answer.strip():
        return None
    shown = answer if len(answer) <= max_chars else answer[: max_chars - 1] + "…"
    return f"{ASSISTANT_ANSWERED}: {shown}"


def tool_call_line(name: object, *, failed: bool) -> str:
    """``Assistant used tool <name>``, with `` (failed)`` when the call raised."""
    return f"{ASSISTANT_USED_TOOL} {name}{' (failed)' if failed else ''}"
