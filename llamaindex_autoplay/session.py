"""Which session a LlamaIndex call is about: ``with autoplay_session(...)``.

LlamaIndex hands a node postprocessor only the nodes and a ``QueryBundle``, and
hands a memory block only what ``Memory`` passes. Chat engines and
``RetrieverTool`` build a fresh ``QueryBundle(message)`` on every call, so a
session id put on the caller's bundle never reaches the postprocessor on those
paths. A context variable does: set it around the call and every adapter in this
package reads it, in the same thread, in each asyncio task (tasks copy the
context they are created in) and across ``llama_index``'s own ``asyncio_run``
thread hops (it copies the context too)::

    with autoplay_session("ps_123", product_id="acme"):
        response = chat_engine.chat("How do I add a team member?")

Each thread and each task sees only its own scope, so concurrent requests for
different users never see each other's session. Scopes nest; leaving a block
restores the outer one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from autoplay_base.errors import ConfigError

__all__ = ["SessionScope", "autoplay_session", "current_session", "resolve_session"]


@dataclass(frozen=True)
class SessionScope:
    """A session to read: ``product_id`` ``None`` lets the store resolve it when unambiguous."""

    session_id: str
    product_id: str | None = None


_CURRENT: ContextVar[SessionScope | None] = ContextVar("autoplay_session", default=None)


def _checked(session_id: object, product_id: object) -> SessionScope:
    if not isinstance(session_id, str) or not session_id:
        raise ConfigError(f"session_id must be a non-empty string, got {session_id!r}")
    if product_id is not None and not isinstance(product_id, str):
        raise ConfigError(f"product_id must be a string or None, got {product_id!r}")
    return SessionScope(session_id, product_id)


@contextmanager
def autoplay_session(session_id: str, *, product_id: str | None = None) -> Iterator[SessionScope]:
    """Scope every autoplay adapter called inside the block to one session.

    Raises:
        ConfigError: ``session_id`` is empty or not a string.
    """
    scope = _checked(session_id, product_id)
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)


def current_session() -> SessionScope | None:
    """The scope of the innermost enclosing :func:`autoplay_session` block, if any."""
    return _CURRENT.get()


def resolve_session(
    *candidates: tuple[str | None, str | None],
    default_product_id: str | None = None,
) -> SessionScope | None:
    """The first candidate ``(session_id, product_id)`` that names a session.

    Candidates are passed most specific first. The product travels with the
    session it came with, so ids from two sources are never mixed into one key;
    only a missing product falls back to ``default_product_id`` (and then to the
    store's own resolution when that is ``None`` too).
    """
    for session_id, product_id in candidates:
        if session_id:
            return _checked(
                session_id, product_id if product_id is not None else default_product_id
            )
    return None
