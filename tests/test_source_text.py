"""Every module's text compiles on every supported Python (3.10 to 3.13).

Python 3.13 cleans docstrings in the compiler, which encodes them as UTF-8: a docstring
holding a lone surrogate (an unescaped ``"\\ud800"`` in a non-raw string) makes the
module fail to import there, while 3.10-3.12 import it fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autoplay_base", "langchain_autoplay", "llamaindex_autoplay")
SOURCES = sorted(p for name in PACKAGES for p in (ROOT / name).rglob("*.py"))

Documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def docstrings(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, Documented):
            text = ast.get_docstring(node, clean=False)
            if text is not None:
                found.append((getattr(node, "lineno", 1), text))
    return found


def test_the_sources_were_found() -> None:
    assert len(SOURCES) > 100
    assert ROOT / "autoplay_base" / "formatting.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_docstring_encodes_as_utf8(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for line, text in docstrings(tree):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            pytest.fail(f"{path.name}:{line}: docstring holds {text[exc.start]!r}: escape it")
