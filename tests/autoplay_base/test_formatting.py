"""The text format: one module, pinned by exact strings."""

from __future__ import annotations

from autoplay_base.formatting import clean_text, format_context, format_enriched


def test_format_context_each_combination() -> None:
    assert format_context(None, []) == ""
    assert format_context("S.", []) == "Summary: S."
    assert format_context(None, ["a — /x"]) == "Recent activity:\n1. a — /x"
    assert format_context("S.", ["a — /x", "b — /y"]) == (
        "Summary: S.\n\nRecent activity:\n1. a — /x\n2. b — /y"
    )


def test_format_enriched() -> None:
    assert format_enriched("", "q") == "q"
    assert format_enriched("Summary: S.", "q") == "[Session context]\nSummary: S.\n\n[Query]\nq"


def test_clean_text() -> None:
    assert clean_text("  plain  ", 50) == "plain"
    assert clean_text("a\tb\n\nc\x00d\x7f\x9be", 50) == "a b cde"
    assert clean_text("x" * 10, 5) == "xxxx…"
    assert clean_text("é ü 漢字", 50) == "é ü 漢字"


def test_action_lines_batch_matches_one_by_one() -> None:
    from autoplay_base import SlimAction
    from autoplay_base.formatting import action_line, action_lines

    clean = [
        SlimAction(title="T", description="Opened billing", canonical_url="/billing"),
        SlimAction(title="Only title", description="", canonical_url=""),
        SlimAction(title="T", description=" padded ", canonical_url=" /x "),
    ]
    dirty = [*clean, SlimAction(title="T", description="a\nb", canonical_url="/y\x00")]
    long = [SlimAction(title="T", description="z" * 400, canonical_url="/z")]
    for batch in (clean, dirty, long, []):
        assert action_lines(batch) == [action_line(a) for a in batch]
    assert action_lines(clean) == ["Opened billing\x1f/billing", "Only title", "padded\x1f/x"]


def test_compose_id_escapes_each_part_and_tells_none_from_empty() -> None:
    from autoplay_base.formatting import compose_id, escape_id_part

    assert compose_id("doc", "acme", "ps_1") == "doc:acme:ps_1"
    assert compose_id("doc", "a:b", "c") == "doc:a%3Ab:c"
    assert compose_id("doc", "a", "b:c") == "doc:a:b%3Ac"
    assert compose_id("doc", "100%", "x") == "doc:100%25:x"
    assert compose_id("doc", None, "x") == "doc::x"
    assert compose_id("doc", "", "x") == "doc:%00:x"
    assert compose_id("doc", "%00", "x") == "doc:%2500:x"
    assert escape_id_part("%3A:") == "%253A%3A"


def test_clean_metadata_cleans_only_the_named_string_values() -> None:
    from autoplay_base.formatting import clean_metadata

    metadata = {"session_id": "s\n1", "user_id": "u\n1", "at": 1.5, "none": None}
    assert clean_metadata(metadata) == {
        "session_id": "s 1",
        "user_id": "u 1",
        "at": 1.5,
        "none": None,
    }
    assert clean_metadata(metadata, ["session_id"]) == {
        "session_id": "s 1",
        "user_id": "u\n1",
        "at": 1.5,
        "none": None,
    }


def test_format_raw_event_is_one_ascii_line() -> None:
    from autoplay_base.formatting import format_raw_event

    text = format_raw_event({"z": "a\nb\u2028\ud800é", "a": 1})
    assert text == '{"a":1,"z":"a\\nb\\u2028\\ud800\\u00e9"}'
    assert text.isascii() and text.isprintable()


def test_formatting_imports_without_the_events_module() -> None:
    # events.py imports formatting to lay out its text: the reverse import must not
    # happen at run time, or the two modules would form an import circle.
    import subprocess
    import sys

    from autoplay_base import formatting

    script = f"""
import importlib.abc, importlib.util, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "autoplay_base.events" or name == "autoplay_base":
            raise ImportError("formatting must not import " + name)
        return None

sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("formatting_alone", {formatting.__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.clean_text("a\\nb", 10))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "a b\n", "")


def test_slim_action_text_is_the_display_of_its_stored_line() -> None:
    from autoplay_base import SlimAction
    from autoplay_base.formatting import action_line, display_line

    for action in (
        SlimAction(title="T", description="Opened\nbilling", canonical_url="/b\u202e"),
        SlimAction(title="Only\ttitle", description="", canonical_url=""),
    ):
        assert action.to_text() == display_line(action_line(action))
    assert SlimAction(title="T", description="a\nb", canonical_url="/x").to_text() == "a b — /x"


def test_formatting_names_no_module_of_the_package() -> None:
    # The lowest floor: not even a TYPE_CHECKING import of events or the backends,
    # so there is no import circle for type checkers either.
    import ast

    from autoplay_base import formatting

    with open(formatting.__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert [name for name in imported if name and name.startswith("autoplay_base")] == []


def test_parse_action_line_inverts_action_line() -> None:
    from autoplay_base import SlimAction
    from autoplay_base.formatting import FIELD_SEPARATOR, action_line, parse_action_line

    cases = [
        (
            SlimAction("T", "Opened billing", "/settings/billing"),
            ("Opened billing", "/settings/billing"),
        ),
        (SlimAction("T", "a — b\x1f c\nd", "https://x/y — z"), ("a — b c d", "https://x/y — z")),
        (SlimAction("Only title", "", ""), ("Only title", None)),
        (SlimAction("T", "No url", "  "), ("No url", None)),
    ]
    for action, parts in cases:
        line = action_line(action)
        assert parse_action_line(line) == parts
        what, where = parts
        assert line == (what if where is None else f"{what}{FIELD_SEPARATOR}{where}")


def test_parse_action_line_reads_display_lines_at_the_last_dash() -> None:
    from autoplay_base.formatting import parse_action_line

    assert parse_action_line("Opened billing — /settings/billing") == (
        "Opened billing",
        "/settings/billing",
    )
    assert parse_action_line("a — b — /c") == ("a — b", "/c")
    assert parse_action_line("No url here") == ("No url here", None)
    assert parse_action_line("") == ("", None)


def test_view_text_and_view_block() -> None:
    from autoplay_base import SessionView
    from autoplay_base.formatting import view_block, view_text

    view = SessionView("S.", ["A\x1f/a", "B — /b", "C"])
    body = "Summary: S.\n\nRecent activity:\n1. A — /a\n2. B — /b\n3. C"
    assert view_text(view) == body
    assert view_block(view) == f"[Session context]\n{body}"
    assert view_text(None) == view_block(None) == ""
    assert view_text(SessionView(None, [])) == view_block(SessionView(None, [])) == ""


def test_append_block() -> None:
    from autoplay_base.formatting import append_block

    assert append_block("You help.", "[Session context]\nX") == "You help.\n\n[Session context]\nX"
    assert append_block("", "[Session context]\nX") == "[Session context]\nX"


def test_clean_summary_is_what_the_store_keeps_and_the_event_shows() -> None:
    from autoplay_base import ContextStore, SummaryPayload
    from autoplay_base.formatting import MAX_SUMMARY_CHARS, clean_summary

    raw = "Upgrading\n\u202eplan " + "x" * MAX_SUMMARY_CHARS
    cleaned = clean_summary(raw)
    assert len(cleaned) == MAX_SUMMARY_CHARS
    assert cleaned == "Upgrading plan " + "x" * (MAX_SUMMARY_CHARS - 16) + "…"
    payload = SummaryPayload(product_id="p", session_id="s", summary=raw, forwarded_at=1.0)
    assert payload.to_text() == cleaned
    store = ContextStore()
    store.add(payload)
    assert store.get("s", "p") == f"Summary: {cleaned}"


def test_format_activity_answer() -> None:
    from autoplay_base.formatting import NO_ACTIVITY, format_activity_answer

    assert format_activity_answer("Summary: S.") == "[Session context]\nSummary: S."
    assert format_activity_answer("") == NO_ACTIVITY
    assert NO_ACTIVITY == "No recent activity is recorded for this user's session."
