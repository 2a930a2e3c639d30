"""Deprecated alias of :mod:`langchain_autoplay.demo`, where the demo app now lives.

The demo runner is a LangChain application, and ``autoplay_base`` imports no
framework: importing this module imports nothing beyond ``autoplay_base``.
Every other public name of the old module (``run_demo``, ``DemoOptions``,
``HelpCenterRetriever``, ``PROMPT``, ...) is resolved from
:mod:`langchain_autoplay.demo` on first use (PEP 562), with a
``DeprecationWarning`` naming the new import path.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

from autoplay_base.demo import DEMO_QUESTIONS

if TYPE_CHECKING:  # for type checkers only: at run time the names resolve lazily, below
    from langchain_autoplay.demo import DemoOptions, HelpCenterRetriever, run_demo

__all__ = ["DEMO_QUESTIONS", "DemoOptions", "HelpCenterRetriever", "run_demo"]

_TARGET = "langchain_autoplay.demo"
# The old module's public names; anything else is an AttributeError that imports nothing.
_MOVED = frozenset(
    {
        "DEFAULT_SPEED",
        "PROMPT",
        "STREAM_TIMEOUT_SECONDS",
        "TOP_K",
        "DemoOptions",
        "HelpCenterRetriever",
        "run_demo",
    }
)


def __getattr__(name: str) -> object:
    """Resolve a moved name from :mod:`langchain_autoplay.demo`, warning once per name."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_TARGET), name)
    warnings.warn(
        f"{__name__}.{name} moved to {_TARGET}.{name}; {__name__} is a deprecated alias",
        DeprecationWarning,
        stacklevel=2,
    )
    globals()[name] = value  # resolved once: later reads are plain module attributes
    return value
