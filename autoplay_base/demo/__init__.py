"""The offline demo: a help centre for the fictional app Flowdesk, and the questions we ask.

``autoplay-live demo`` (``make demo``) plays the emulator's scripted users, feeds
their live activity into a ``ContextStore`` and asks the same ambiguous
questions of a plain retriever and of ``AutoplayRetriever`` over this knowledge
base. The runner is a LangChain application, :mod:`langchain_autoplay.demo`
(``autoplay_base.demo.app`` is its deprecated alias); this module is only data
and the demo's defaults, and needs no framework.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "DEFAULT_DEMO_PRODUCT",
    "DEFAULT_DEMO_SPEED",
    "DEMO_QUESTIONS",
    "HelpArticle",
    "load_help_center",
]

DEFAULT_DEMO_PRODUCT = "demo"
"""The product id the demo's users are streamed under."""
DEFAULT_DEMO_SPEED = 20.0
"""The demo's script pace multiplier (``0``: as fast as possible)."""

DEMO_QUESTIONS = ("How do I do this?", "Why isn't it working?")
"""Questions that mean nothing without knowing what the user is doing."""


@dataclass(frozen=True, slots=True)
class HelpArticle:
    """One help-centre article; ``paths`` are the app pages it is about."""

    id: str
    title: str
    url: str
    paths: tuple[str, ...]
    body: str


def load_help_center() -> list[HelpArticle]:
    """The 30 bundled Flowdesk help-centre articles."""
    text = resources.files(__name__).joinpath("help_center.jsonl").read_text(encoding="utf-8")
    articles = []
    for line in text.splitlines():
        raw = json.loads(line)
        articles.append(
            HelpArticle(raw["id"], raw["title"], raw["url"], tuple(raw["paths"]), raw["body"])
        )
    return articles
