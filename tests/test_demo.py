"""The demo runs offline end to end and shows live context changing the top hit."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from autoplay_base.cli import main
from autoplay_base.demo import load_help_center
from langchain_autoplay.demo import DemoOptions, run_demo


def test_help_center_has_thirty_articles() -> None:
    articles = load_help_center()
    assert len(articles) == 30
    assert len({a.id for a in articles}) == 30
    assert articles[0].title == "Managing seats and roles"


def _rows(text: str) -> list[str]:
    """The table rows (user, question, plain top hit, live top hit), without the header."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) == 4 and cells[0] != "user" and line.startswith("  "):
            rows.append(" | ".join(cells))
    return rows


# Every user → top article pairing of the default demo, halfway and at the end: each one
# a person reading the user's activity would agree with (the plain retriever never changes).
DEMO_ROWS = [
    "lena.kowalski | How do I do this? | How prorated charges work "
    "| Export a report to CSV or Excel",
    " | Why isn't it working? | Delete a workspace | Export a report to CSV or Excel",
    "maya.chen | How do I do this? | How prorated charges work | Managing seats and roles",
    " | Why isn't it working? | Delete a workspace | Managing seats and roles",
    "omar.haddad | How do I do this? | How prorated charges work | Compare Flowdesk plans",
    " | Why isn't it working? | Delete a workspace | Compare Flowdesk plans",
    "lena.kowalski | How do I do this? | How prorated charges work "
    "| Schedule recurring report exports",
    " | Why isn't it working? | Delete a workspace | Schedule recurring report exports",
    "maya.chen | How do I do this? | How prorated charges work | Managing seats and roles",
    " | Why isn't it working? | Delete a workspace | Managing seats and roles",
    "omar.haddad | How do I do this? | How prorated charges work | Download invoices and receipts",
    " | Why isn't it working? | Delete a workspace | Download invoices and receipts",
]


def test_demo_shows_what_live_context_changes() -> None:
    out = io.StringIO()
    assert run_demo(DemoOptions(speed=0), out) == 0
    text = out.getvalue()
    assert _rows(text) == DEMO_ROWS
    assert len(text.splitlines()) <= 40  # one short screen by default
    assert "received 38 events, delivered 38, dropped 0; 3 sessions in the store" in text
    # What each user is doing, one line each, next to the table.
    assert "  maya.chen      Saw the error 'Seat limit reached for your plan' again\n" in text
    assert (
        "  omar.haddad    The user upgraded to Growth; "
        "the invoice they downloaded lacks their VAT number.\n"
    ) in text
    assert "the prompt a chat model would get" not in text
    assert "[Query]" not in text
    assert "To generate answers too: pip install langchain-openai and set OPENAI_API_KEY." in text
    assert "--verbose shows each user's full live context and the prompt it builds." in text


def test_verbose_demo_shows_contexts_and_prompts() -> None:
    out = io.StringIO()
    assert run_demo(DemoOptions(speed=0, verbose=True), out) == 0
    text = out.getvalue()
    assert _rows(text) == DEMO_ROWS
    assert text.count("the prompt a chat model would get for 'How do I do this?':") == 3
    assert text.count(" — live context:\n") == 6
    assert "[Query]\n    How do I do this?" in text
    assert "--verbose shows" not in text


def test_cli_demo_runs_and_documents_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--product", "--speed", "--question", "--redis", "--script", "--verbose"):
        assert option in usage
    args = [
        "demo",
        "--speed",
        "0",
        "--verbose",
        "--no-prompts",
        "--question",
        "Why can't I find it?",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert [row.split(" | ")[1] for row in _rows(out)] == ["Why can't I find it?"] * 6
    assert out.count(" — live context:\n") == 6
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


def _run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout


def test_autoplay_base_never_imports_a_framework() -> None:
    # Every module of autoplay_base, the deprecated demo.app alias included, in a fresh
    # interpreter: no LangChain or LlamaIndex module may be loaded by any of them.
    code = (
        "import importlib, pkgutil, sys\n"
        "import autoplay_base, autoplay_base.demo, autoplay_base.cli\n"
        "modules = pkgutil.walk_packages(autoplay_base.__path__, 'autoplay_base.')\n"
        "names = [m.name for m in modules]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from autoplay_base.demo.app import DEMO_QUESTIONS\n"
        "print(len(names), 'autoplay_base.demo.app' in names, sep='\\n')\n"
        "print(DEMO_QUESTIONS[0])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('langchain', 'llama_index'))))\n"
    )
    count, has_shim, question, frameworks = _run_python(code).splitlines()
    assert int(count) > 20
    assert has_shim == "True"
    assert question == "How do I do this?"
    assert frameworks == "[]"


def test_the_old_demo_app_path_is_a_lazy_deprecated_alias() -> None:
    code = (
        "import sys, warnings\n"
        "import autoplay_base.demo.app as app\n"
        "print(any(m.startswith('langchain') for m in sys.modules))\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    first, again = app.run_demo, app.run_demo\n"
        "import langchain_autoplay.demo as new\n"
        "print(first is new.run_demo is again, app.DemoOptions is new.DemoOptions)\n"
        "print([(w.category.__name__, str(w.message)) for w in caught])\n"
        "try:\n"
        "    app.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    loaded_before, same, warned, missing = _run_python(code).splitlines()
    assert loaded_before == "False"
    assert same == "True True"
    assert warned == repr(
        [
            (
                "DeprecationWarning",
                "autoplay_base.demo.app.run_demo moved to langchain_autoplay.demo.run_demo; "
                "autoplay_base.demo.app is a deprecated alias",
            )
        ]
    )
    assert missing == "module 'autoplay_base.demo.app' has no attribute 'no_such_name'"


def test_cli_demo_defaults_are_the_demos() -> None:
    from autoplay_base.cli import build_parser
    from autoplay_base.demo import DEFAULT_DEMO_PRODUCT, DEFAULT_DEMO_SPEED

    args = build_parser().parse_args(["demo"])
    assert (
        (args.product, args.speed) == (DEFAULT_DEMO_PRODUCT, DEFAULT_DEMO_SPEED) == ("demo", 20.0)
    )
    options = DemoOptions()
    assert (options.product, options.speed) == ("demo", 20.0)


@pytest.mark.parametrize(
    ("blocked", "named"), [("bm25s", "bm25s"), ("langchain_core", "langchain_core")]
)
def test_demo_without_its_extra_is_one_clear_line_and_status_2(blocked: str, named: str) -> None:
    # The import is blocked in a fresh interpreter (None in sys.modules fails the import).
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from autoplay_base.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"autoplay-live demo needs the 'demo' extra ({named} is not installed); "
        "install it with: pip install 'autoplay-live-context[demo]'\n"
    )


@pytest.mark.parametrize("command", [[], ["emulator"], ["demo"]])
def test_cli_help_is_plain_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: autoplay-live")
    assert "`" not in text  # no reStructuredText markup
    assert ":mod:" not in text and ":class:" not in text
