"""Which session a call is about: read from the agent's runtime context, then the config.

Pure lookups shared by the middleware, the tool and the retriever; nothing is stored
on an adapter. Three things live here so the adapters agree on them:

* **Named keys** (:class:`ScopeKeys`): where the session id and product id are read
  from. ``session_id``/``product_id`` by default; another name (``autoplay_session_id``)
  lets the adapters run next to ``RunnableWithMessageHistory``, whose conversation id
  is ``configurable["session_id"]`` too.
* **Lookalike keys**: a call that names no session but carries a key that looks like a
  session key (``sessionId``, ``session``, ``sid``, or the default ``session_id`` when the
  adapter reads another name) is logged once per key name at warning level.
* **Strict mode** (:func:`require_session`, :func:`require_found`): the adapters'
  opt-in ``strict=True`` turns "asked for a session, found nothing" into an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from langchain_core.runnables import RunnableConfig

from autoplay_base._recent import RecentKeys
from autoplay_base.backends.base import SessionView
from autoplay_base.errors import ConfigError, SessionNotFoundError

__all__ = [
    "DEFAULT_KEYS",
    "LANGGRAPH_RUNTIME_KEY",
    "CallScope",
    "ScopeKeys",
    "call_scope",
    "lookalike_keys",
    "require_found",
    "require_session",
    "runtime_context",
    "warn_lookalikes",
]

logger = logging.getLogger("langchain_autoplay")

LANGGRAPH_RUNTIME_KEY = "__pregel_runtime"
"""Where LangGraph puts the ``Runtime`` in ``config["configurable"]`` (what
``langgraph.runtime.get_runtime()`` reads); read from the config a tool is given so it
works on Python 3.10 event loops too, where ``get_runtime()`` cannot find the config."""

LOOKALIKE_NAMES = frozenset({"session", "sessionid", "sid", "sessid", "psid", "sessionkey"})
"""Key names (lower case, letters and digits only) that look like a session key."""

WARNED_KEYS = 256
"""How many distinct lookalike key names are warned about (once each) per process."""

_warned: RecentKeys[tuple[str, str]] = RecentKeys(WARNED_KEYS)


class ScopeKeys(NamedTuple):
    """The names the session id and the product id are read under (context and config)."""

    session: str = "session_id"
    product: str = "product_id"


DEFAULT_KEYS = ScopeKeys()


class CallScope(NamedTuple):
    """The session of one call; ``session_id`` is ``None`` when the call names none."""

    session_id: str | None
    product_id: str | None


def _field(source: Any, name: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def runtime_context(config: RunnableConfig) -> Any:
    """The LangGraph runtime context of the run ``config`` belongs to, if any."""
    runtime = (config.get("configurable") or {}).get(LANGGRAPH_RUNTIME_KEY)
    return getattr(runtime, "context", None)


def call_scope(context: Any, config: RunnableConfig, keys: ScopeKeys = DEFAULT_KEYS) -> CallScope:
    """The session and product from a runtime context (dict, dataclass, pydantic model),
    else from ``config["configurable"]``, both read under ``keys``.

    Both come from the same source, so a session named by the context is never paired
    with a product named elsewhere. Empty strings count as absent. A call that names
    no session has its lookalike keys logged (:func:`warn_lookalikes`).
    """
    session_id = _field(context, keys.session)
    if session_id:
        return CallScope(session_id, _field(context, keys.product) or None)
    configurable = config.get("configurable") or {}
    session_id = configurable.get(keys.session) or None
    if session_id is None:
        names = lookalike_keys(configurable, keys)
        if isinstance(context, Mapping):
            names += lookalike_keys(context, keys)
        warn_lookalikes(names, keys)
    return CallScope(session_id, configurable.get(keys.product) or None)


def _normalized(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def lookalike_keys(mapping: Mapping[Any, Any], keys: ScopeKeys = DEFAULT_KEYS) -> list[str]:
    """The keys of ``mapping`` that look like a session key but are not ``keys.session``.

    A lookalike is one of :data:`LOOKALIKE_NAMES` or a spelling of the expected name
    or of the default ``session_id`` (``sessionId``, ``Session-ID``), once lowered and
    stripped of everything but letters and digits.
    """
    expected = {_normalized(keys.session), _normalized(DEFAULT_KEYS.session)}
    return sorted(
        name
        for name in mapping
        if isinstance(name, str)
        and name != keys.session
        and (_normalized(name) in LOOKALIKE_NAMES or _normalized(name) in expected)
    )


def warn_lookalikes(names: Iterable[str], keys: ScopeKeys) -> None:
    """Warn once per key name that a call named no session but carried ``names``."""
    for name in names:
        if _warned.add((name, keys.session)):
            # The key's name only: its value is a user's id and stays out of the log.
            logger.warning(
                "autoplay: the call names no session under %r but has the key %r; "
                "no live context was added. Rename the key, or pass session_key=%r "
                "to the adapter if that is the session id",
                keys.session,
                name,
                name,
            )


def require_session(scope: CallScope, keys: ScopeKeys, adapter: str) -> str:
    """``scope.session_id``; raises :class:`ConfigError` when the call names none (strict)."""
    if scope.session_id is None:
        raise ConfigError(
            f"{adapter} (strict=True): the call names no session; pass "
            f"config['configurable'][{keys.session!r}] or a runtime context with "
            f"{keys.session!r}"
        )
    return scope.session_id


def require_found(
    view: SessionView | None, session_id: str, product_id: str | None, adapter: str
) -> None:
    """Raise :class:`SessionNotFoundError` when the store knew nothing of the session (strict)."""
    if view is None:
        raise SessionNotFoundError(adapter, session_id, product_id)
