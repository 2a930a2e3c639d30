"""Calling whatever model the app was given, without importing a framework.

A LangChain chat model or any ``Runnable`` (``ainvoke``, else ``invoke`` run in
a worker thread so the loop never blocks), or a plain callable taking the
prompt (sync or async). The answer is a string, or an object whose ``content``
is one (an ``AIMessage``); content blocks (a list of ``{"type": "text", ...}``
parts, as some providers return) are joined.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

__all__ = ["answer_text", "call_llm", "check_llm"]


def check_llm(llm: object) -> bool:
    """Whether ``llm`` is something :func:`call_llm` can call."""
    return hasattr(llm, "ainvoke") or hasattr(llm, "invoke") or callable(llm)


async def call_llm(llm: Any, prompt: str) -> str:
    """The model's answer to ``prompt`` as text."""
    if hasattr(llm, "ainvoke"):
        result = await llm.ainvoke(prompt)
    elif hasattr(llm, "invoke"):
        result = await asyncio.to_thread(llm.invoke, prompt)
    else:
        result = llm(prompt)
        if inspect.isawaitable(result):
            result = await result
    return answer_text(result)


def answer_text(result: object) -> str:
    """The text of a model's result (see the module docstring)."""
    content = getattr(result, "content", result)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise TypeError(f"the model returned {type(result).__name__}, not text")
