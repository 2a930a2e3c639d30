"""The demo runs offline end to end and shows live context changing the top hit."""

from __future__ import annotations

import io

import pytest

from autoplay_base.cli import main
from autoplay_base.demo import load_help_center
from autoplay_base.demo.app import DemoOptions, run_demo


def test_help_center_has_thirty_articles() -> None:
    articles = load_help_center()
    assert len(articles) == 30
    assert len({a.id for a in articles}) == 30
    assert articles[0].title == "Managing seats and roles"


def test_demo_shows_what_live_context_changes() -> None:
    out = io.StringIO()
    assert run_demo(DemoOptions(speed=0), out) == 0
    text = out.getvalue()
    tables = [line.rstrip() for line in text.splitlines() if line.startswith("  How do I do this?")]
    assert tables == [
        "  How do I do this?     | How prorated charges work | Export a report to CSV or Excel",
        "  How do I do this?     | How prorated charges work | Managing seats and roles",
        "  How do I do this?     | How prorated charges work | Compare Flowdesk plans",
        "  How do I do this?     | How prorated charges work | Schedule recurring report exports",
        "  How do I do this?     | How prorated charges work | Managing seats and roles",
        "  How do I do this?     | How prorated charges work | Update your payment method",
    ]
    assert "received 38 events, delivered 38, dropped 0; 3 sessions in the store" in text
    assert text.count("the prompt a chat model would get for 'How do I do this?':") == 3
    assert "[Query]\n    How do I do this?" in text
    assert "To generate answers too: pip install langchain-openai and set OPENAI_API_KEY." in text


def test_cli_demo_runs_and_documents_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--product", "--speed", "--question", "--redis", "--script"):
        assert option in usage
    assert main(["demo", "--speed", "0", "--no-prompts", "--question", "Why can't I find it?"]) == 0
    out = capsys.readouterr().out
    assert out.count("  Why can't I find it? |") == 6
    assert "the prompt a chat model would get" not in out


def test_with_a_chat_model_the_demo_shows_its_answers() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["Free a seat first: revoke the expired invite."])
    out = io.StringIO()
    options = DemoOptions(speed=0, scripts=["invite_team_member"], model=model)
    assert run_demo(options, out) == 0
    text = out.getvalue()
    assert text.count("  answer to 'How do I do this?':") == 2  # halfway and at the end
    assert "    Free a seat first: revoke the expired invite." in text
    assert "the prompt a chat model would get" not in text
    assert "To generate answers too" not in text
