"""The Redis key layout (described in :mod:`autoplay_base.backends.redis`), and id escaping."""

from __future__ import annotations

from autoplay_base.backends.base import SessionKey
from autoplay_base.formatting import escape_id_part

__all__ = ["escape_id", "parse_member", "session_member", "unescape_id", "user_member"]

# -- key layout ------------------------------------------------------------------------
_SESSION = "s"
_META = ":m"
_ACTIONS = ":a"
_STREAM = ":x"
_SESSIONS = "sessions"
_PRODUCTS = "p"
_SEEN = "e"
_SEEN_DIGESTS = "ed"
_SEEN_STALE = "er"
_USER = "u"
_USERS = "users"
_USER_PRODUCTS = "up"
_HISTORY = "h"
# meta hash fields
_F_LAST = "l"
_F_SUMMARY = "s"
_F_SUMMARY_AT = "st"


escape_id = escape_id_part
"""An id as it appears inside a key: ``%`` and ``:`` percent-encoded (the one rule
the adapters' document ids follow too, :func:`autoplay_base.formatting.escape_id_part`)."""


def unescape_id(value: str) -> str:
    """Inverse of :func:`escape_id` (every ``%`` starts a ``%25`` or ``%3A`` token)."""
    return value.replace("%3A", ":").replace("%25", "%")


def session_member(key: SessionKey) -> str:
    """``P:S``: the name of one session in the sessions and user indexes."""
    return f"{escape_id(key.product_id)}:{escape_id(key.session_id)}"


def user_member(product_id: str, user_id: str) -> str:
    """``P:U``: one product's user, in the users index and in its own key's name."""
    return f"{escape_id(product_id)}:{escape_id(user_id)}"


def parse_member(member: str) -> SessionKey:
    """Inverse of :func:`session_member`."""
    product, _, session = member.partition(":")
    return SessionKey(unescape_id(product), unescape_id(session))


class _Layout:
    """Key names under one prefix (pure)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session(self, key: SessionKey, part: str) -> str:
        return f"{self.prefix}:{_SESSION}:{session_member(key)}{part}"

    def products(self, session_id: str) -> str:
        return f"{self.prefix}:{_PRODUCTS}:{escape_id(session_id)}"

    def sessions(self) -> str:
        return f"{self.prefix}:{_SESSIONS}"

    def user(self, product_id: str, user_id: str) -> str:
        return f"{self.prefix}:{_USER}:{user_member(product_id, user_id)}"

    def user_products(self, user_id: str) -> str:
        return f"{self.prefix}:{_USER_PRODUCTS}:{escape_id(user_id)}"

    def users(self) -> str:
        return f"{self.prefix}:{_USERS}"

    def seen(self, product_id: str) -> str:
        return f"{self.prefix}:{_SEEN}:{escape_id(product_id)}"

    def seen_digests(self, product_id: str) -> str:
        return f"{self.prefix}:{_SEEN_DIGESTS}:{escape_id(product_id)}"

    def history(self, key: SessionKey) -> str:
        return f"{self.prefix}:{_HISTORY}:{session_member(key)}"
