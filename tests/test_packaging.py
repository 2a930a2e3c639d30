"""The distribution people install: metadata, licence, and what the wheel and the sdist hold.

The sdist and the wheel are built for real with hatchling (the build backend), into
a temporary directory. ``python -m build`` is not a dev dependency; when hatchling
itself is not importable, it is installed into a temporary ``--target`` directory
with pip (the shared environment is never touched).
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

import autoplay_base
import langchain_autoplay
import llamaindex_autoplay

ROOT = Path(__file__).resolve().parent.parent
PROJECT_URL = "https://github.com/autoplay-live-context/autoplay-live-context"

EXTRAS = {
    "all",
    "demo",
    "dev",
    "emulator",
    "langchain",
    "llamaindex",
    "otel",
    "redis",
    "serve",
    "sse",
}
CLASSIFIERS = [
    "Development Status :: 3 - Alpha",
    "Framework :: AsyncIO",
    "Intended Audience :: Developers",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3",
    "Programming Language :: Python :: 3 :: Only",
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Topic :: Software Development :: Libraries :: Python Modules",
    "Typing :: Typed",
]
VERSION = autoplay_base.__version__
PACKAGES = ("autoplay_base", "langchain_autoplay", "llamaindex_autoplay")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path

    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.namelist()

    def wheel_metadata(self) -> Message:
        with zipfile.ZipFile(self.wheel) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            return email.parser.Parser().parsestr(archive.read(name).decode())

    def sdist_names(self) -> list[str]:
        """Paths inside the sdist, without its top folder (``autoplay_live_context-X/``)."""
        with tarfile.open(self.sdist) as archive:
            return [m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name]


def _hatchling(tmp: Path) -> dict[str, str]:
    """An environment in which ``python -m hatchling`` works."""
    env = dict(os.environ)
    if importlib.util.find_spec("hatchling") is None:
        target = tmp / "hatchling"
        command = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target)]
        subprocess.run([*command, "hatchling>=1.24"], check=True, capture_output=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    tmp = tmp_path_factory.mktemp("dist")
    out = tmp / "out"
    command = [sys.executable, "-m", "hatchling", "build", "-d", str(out)]
    subprocess.run(command, cwd=ROOT, env=_hatchling(tmp), check=True, capture_output=True)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    yield Built(wheel, sdist)


def test_metadata_names_the_licence_authors_urls_and_extras(built: Built) -> None:
    meta = built.wheel_metadata()
    assert meta["Name"] == "autoplay-live-context"
    assert meta["Version"] == autoplay_base.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Author"] == "autoplay-live-context contributors"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta.get_all("Classifier") == CLASSIFIERS
    assert meta.get_all("Project-URL") == [
        f"Homepage, {PROJECT_URL}",
        f"Source, {PROJECT_URL}",
        f"Issues, {PROJECT_URL}/issues",
        f"Changelog, {PROJECT_URL}/blob/main/CHANGELOG.md",
    ]
    assert set(meta.get_all("Provides-Extra") or []) == EXTRAS
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().startswith("# autoplay-live-context")  # the README


def test_every_package_reports_the_distribution_version() -> None:
    assert langchain_autoplay.__version__ == llamaindex_autoplay.__version__
    assert langchain_autoplay.__version__ == autoplay_base.__version__
    assert "__version__" in langchain_autoplay.__all__
    assert "__version__" in llamaindex_autoplay.__all__


def test_the_licence_is_mit_for_the_contributors() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) ")
    assert "autoplay-live-context contributors\n" in text.splitlines(keepends=True)[2]
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_the_wheel_holds_the_three_packages_their_data_and_the_licence(built: Built) -> None:
    names = built.wheel_names()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {*PACKAGES, f"autoplay_live_context-{VERSION}.dist-info"}
    for package in PACKAGES:
        assert f"{package}/py.typed" in names
        assert f"{package}/__init__.py" in names
    data = sorted(n for n in names if n.endswith(".jsonl"))
    assert data == [
        "autoplay_base/demo/help_center.jsonl",
        "autoplay_base/emulator/scripts/export_report.jsonl",
        "autoplay_base/emulator/scripts/invite_team_member.jsonl",
        "autoplay_base/emulator/scripts/upgrade_billing_plan.jsonl",
    ]
    assert f"autoplay_live_context-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with zipfile.ZipFile(built.wheel) as archive:
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "autoplay-live = autoplay_base.cli:main" in text


def test_the_sdist_ships_sources_tests_and_notebooks_not_benchmarks_or_ci(built: Built) -> None:
    names = built.sdist_names()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {
        *PACKAGES,
        "tests",
        "notebooks",
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "pyproject.toml",
        "PKG-INFO",
        ".gitignore",  # hatchling always adds it
    }
    for never in ("benchmarks", ".ci", ".venv", ".benchmarks", "Makefile"):
        assert never not in tops, never
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "tests/conftest.py" in names
    notebooks = sorted(n for n in names if n.endswith(".ipynb"))
    assert notebooks == sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 5  # one per topic: quickstart, RAG, LlamaIndex, Redis, tracking, …
