"""The adapters' constructors are visible to type checkers (``mypy --strict``).

Checked with mypy itself on a small file, using the project's configuration and its
``.mypy_cache`` (warm after one ``mypy`` run, about a second), plus a signature check
that needs no type checker.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from mypy import api

from langchain_autoplay.retrievers import AutoplayRetriever

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """\
from autoplay_base.context_store import ContextStore
from langchain_autoplay.retrievers import AutoplayRetriever
from langchain_autoplay.tools import SessionActivityTool
from llamaindex_autoplay.postprocessors import AutoplayNodePostprocessor

AutoplayRetriever(store="not a store")
AutoplayRetriever(store=ContextStore(), k="3")
AutoplayRetriever(store=ContextStore(), k=3, strict=True, session_key="autoplay_session_id")
SessionActivityTool(store="not a store")
AutoplayNodePostprocessor(store="not a store")
"""


def test_retriever_signature_names_its_fields() -> None:
    parameters = inspect.signature(AutoplayRetriever.__init__).parameters
    assert all(p.kind is not p.VAR_KEYWORD for p in parameters.values())
    assert parameters["store"].annotation == "ContextStore | AsyncContextStore"
    assert parameters["k"].annotation == "int | None"


def test_mypy_rejects_wrong_constructor_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    monkeypatch.chdir(ROOT)  # the project's pyproject.toml and .mypy_cache
    out, err, status = api.run(["--config-file", "pyproject.toml", str(snippet)])
    # mypy prints the path as it resolved it: keep the file name only.
    lines = [re.sub(r"^\S*snippet\.py:", "snippet.py:", line) for line in out.splitlines()]
    assert lines == [
        'snippet.py:6: error: Argument "store" to "AutoplayRetriever" has incompatible type '
        '"str"; expected "ContextStore | AsyncContextStore"  [arg-type]',
        'snippet.py:7: error: Argument "k" to "AutoplayRetriever" has incompatible type '
        '"str"; expected "int | None"  [arg-type]',
        'snippet.py:9: error: Argument "store" to "SessionActivityTool" has incompatible type '
        '"str"; expected "ContextStore | AsyncContextStore"  [arg-type]',
        'snippet.py:10: error: Argument "store" to "AutoplayNodePostprocessor" has incompatible '
        'type "str"; expected "ContextStore | AsyncContextStore"  [arg-type]',
        "Found 4 errors in 1 file (checked 1 source file)",
    ], err
    assert status == 1
