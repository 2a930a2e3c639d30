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
