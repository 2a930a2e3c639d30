"""``docs/bridge.md`` runs as written: its ``sh`` blocks, with ``curl`` and ``openssl``,
against a live bridge built by ``autoplay-live serve``'s own code; each block's output
must be the ``text`` block under it. ``serve --help`` names every option, the secrets'
variables, every route of the app and an example."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from autoplay_base.bridge._openapi import openapi_document
from autoplay_base.cli import (
    ADMIN_TOKEN_ENV_VAR,
    API_TOKEN_ENV_VAR,
    WEBHOOK_SECRET_ENV_VAR,
    bridge_app,
    build_parser,
)
from tests.autoplay_base.bridge.conftest import ADMIN, API, SECRET, Served

PAGE = Path(__file__).resolve().parents[3] / "docs" / "bridge.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
MARKER = "@@@ block done @@@"


def blocks(kind: str) -> list[str]:
    return [body for info, body in BLOCK.findall(PAGE.read_text()) if info == kind]


def runnable_blocks() -> list[tuple[str, str]]:
    """Each ``sh`` block and the ``text`` block right after it (the next block of the page)."""
    found = BLOCK.findall(PAGE.read_text())
    pairs = []
    for (info, body), (next_info, expected) in itertools.pairwise(found):
        if info == "sh":
            assert next_info == "text", f"an sh block without its output:\n{body}"
            pairs.append((body, expected))
    return pairs


def serve_parser() -> object:
    return build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl") and shutil.which("bash")),
    reason="the page's commands need curl, openssl and bash",
)
def test_every_command_of_the_page_answers_what_the_page_shows(
    serve: Callable[..., Served],
) -> None:
    start = blocks("shell")
    assert len(start) == 1
    command = next(line for line in start[0].splitlines() if line.startswith("autoplay-live serve"))
    argv = shlex.split(command.rstrip("&"))[1:]
    args = build_parser().parse_args(argv)
    assert args.port == 8080  # the page's port; the test serves on a free one
    environ = {API_TOKEN_ENV_VAR: API, ADMIN_TOKEN_ENV_VAR: ADMIN, WEBHOOK_SECRET_ENV_VAR: SECRET}
    served = serve(bridge_app(args, environ))
    # The start block's variables, as it defines them (BRIDGE at the served port).
    setup = "\n".join(line for line in start[0].splitlines() if line.startswith(("API=", "ADMIN=")))
    pairs = runnable_blocks()
    assert len(pairs) == 9
    script = "\n".join([setup, *(f"{body}\necho '{MARKER}'" for body, _ in pairs)])
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "BRIDGE": served.url, "LC_ALL": "C.UTF-8", **environ},
    )
    assert done.returncode == 0, done.stderr
    outputs = done.stdout.split(f"{MARKER}\n")
    assert outputs[-1] == ""
    assert [out.rstrip("\n") for out in outputs[:-1]] == [
        expected.rstrip("\n") for _, expected in pairs
    ]
    for secret in (API, ADMIN, SECRET):
        assert secret not in done.stdout and secret not in done.stderr


def test_serve_help_names_every_option_the_variables_the_routes_and_an_example() -> None:
    parser = serve_parser()
    text = parser.format_help()  # type: ignore[attr-defined]
    options = [
        option
        for action in parser._actions  # type: ignore[attr-defined]
        for option in action.option_strings
    ]
    assert len(options) == 15
    for option in options:
        assert option in text, option
    for name in (API_TOKEN_ENV_VAR, ADMIN_TOKEN_ENV_VAR, WEBHOOK_SECRET_ENV_VAR):
        assert f"\n  {name} " in text
        assert f"export {name}=" in text
    section = text.split("\nroutes:\n", 1)[1].split("\n\n", 1)[0]
    every = openapi_document(push=True, runs=True)["paths"]
    assert set(re.findall(r"/[\w{}/.]+", section)) == {*every, "/openapi.json"}
    assert "\nexample:\n  " in text and "autoplay-live serve --redis-url" in text
    assert "docs/bridge.md" in text
