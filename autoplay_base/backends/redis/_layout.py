"""The Redis key layout (described in :mod:`autoplay_base.backends.redis`), and id escaping."""

from __future__ import annotations

from autoplay_base.backends.base import SessionKey
from autoplay_base.formatting import escape_id_part

__all__ = [
    "ACTIONS",
    "F_LAST",
    "F_SUMMARY",
    "F_SUMMARY_AT",
    "F_TOUCHED",
    "F_WINDOW_REFRESHED",
    "META",
    "PRODUCTS",
    "SEEN",
    "SEEN_DIGESTS",
    "SEEN_STALE",
    "SESSION",
    "SESSIONS",
    "STREAM",
    "USER",
    "USERS",
    "USER_PRODUCTS",
    "Layout",
    "RunLayout",
    "escape_id",
    "key_id",
    "parse_member",
    "parse_run_member",
    "run_member",
    "session_member",
    "unescape_id",
    "user_member",
]

# -- key layout ------------------------------------------------------------------------
SESSION = "s"
META = ":m"
ACTIONS = ":a"
STREAM = ":x"
SESSIONS = "sessions"
PRODUCTS = "p"
SEEN = "e"
SEEN_DIGESTS = "ed"
SEEN_STALE = "er"
USER = "u"
USERS = "users"
USER_PRODUCTS = "up"
_HISTORY = "h"
# meta hash fields
F_LAST = "l"
F_SUMMARY = "s"
F_SUMMARY_AT = "st"
F_TOUCHED = "t"  # cluster only: when the session was last touched (its index score)
F_WINDOW_REFRESHED = "w"  # cluster only: when its dedupe window's expiry was last set


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


def key_id(value: str) -> str:
    """An id inside a cluster key name: :func:`escape_id`, then ``{``/``}`` percent-encoded.

    A brace in an id would move the hash tag (``{...}``) and split one session's keys
    over several slots. Still injective: escaped text holds ``%`` only as ``%25``/``%3A``.
    """
    return escape_id(value).replace("{", "%7B").replace("}", "%7D")


class Layout:
    """Key names under one prefix (pure), for a standalone server or a cluster.

    Standalone names are the ones documented in :mod:`autoplay_base.backends.redis`.
    In a cluster the same names carry a hash tag so that every key one script
    touches is in one slot: a session's keys, its product index and its
    per-session dedupe window are tagged with its session id (``{S}``), a user's
    index keys with the user id (``{U}``); the sessions and users indexes are one
    key each. ``session_keys`` is the one list of "the keys of one session" that
    the scripts receive as ``KEYS`` (and the standalone script builds the same way).
    """

    __slots__ = ("cluster", "prefix")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        self.prefix = prefix
        self.cluster = cluster

    def _id(self, value: str) -> str:
        return f"{{{key_id(value)}}}" if self.cluster else escape_id(value)

    def _member(self, key: SessionKey) -> str:
        if self.cluster:
            return f"{key_id(key.product_id)}:{self._id(key.session_id)}"
        return session_member(key)

    def session(self, key: SessionKey, part: str) -> str:
        return f"{self.prefix}:{SESSION}:{self._member(key)}{part}"

    def products(self, session_id: str) -> str:
        return f"{self.prefix}:{PRODUCTS}:{self._id(session_id)}"

    def sessions(self) -> str:
        return f"{self.prefix}:{SESSIONS}"

    def user(self, product_id: str, user_id: str) -> str:
        if self.cluster:
            return f"{self.prefix}:{USER}:{key_id(product_id)}:{self._id(user_id)}"
        return f"{self.prefix}:{USER}:{user_member(product_id, user_id)}"

    def user_products(self, user_id: str) -> str:
        return f"{self.prefix}:{USER_PRODUCTS}:{self._id(user_id)}"

    def users(self) -> str:
        return f"{self.prefix}:{USERS}"

    def _window(self, kind: str, key: SessionKey) -> str:
        # Standalone: one window per product. Cluster: one per session, in its slot,
        # so the dedupe check and the write it guards stay one atomic script.
        if self.cluster:
            return f"{self.prefix}:{kind}:{self._member(key)}"
        return f"{self.prefix}:{kind}:{escape_id(key.product_id)}"

    def seen(self, key: SessionKey) -> str:
        return self._window(SEEN, key)

    def seen_digests(self, key: SessionKey) -> str:
        return self._window(SEEN_DIGESTS, key)

    def seen_stale(self, key: SessionKey) -> str:
        return self._window(SEEN_STALE, key)

    def history(self, key: SessionKey) -> str:
        return f"{self.prefix}:{_HISTORY}:{self._member(key)}"

    def session_keys(self, key: SessionKey) -> tuple[str, str, str, str]:
        """Meta, actions, stream and product index: what expiry and eviction drop."""
        return (
            self.session(key, META),
            self.session(key, ACTIONS),
            self.session(key, STREAM),
            self.products(key.session_id),
        )

    def window_keys(self, key: SessionKey) -> tuple[str, str, str]:
        """The dedupe window a write of ``key`` consults: ids, digests, stale run."""
        return (self.seen(key), self.seen_digests(key), self.seen_stale(key))


_Layout = Layout  # the old private name


# == agent run streams (autoplay_base.agent_stream) ======================================
# One stream per run, never per session: two runs of one session cannot touch each
# other's keys. ``M`` names the session as above (``P:S``; cluster ``P:{S}``), ``R``
# is the run id (32 hex digits, nothing to escape), ``PU`` the product's user::
#
#     {prefix}:r:M:R:x    stream  the run's events, ids 0-<seq>, XADD MAXLEN ~ max_events
#     {prefix}:r:M:R:l    string  the producer's lease (PX lease): gone = producer gone
#     {prefix}:r:M:R:c    string  a cancel request for the run (PX retention)
#     {prefix}:rs:M       zset    the session's runs scored by start time (ms), capped
#     {prefix}:rl:M       zset    the session's live runs scored by lease deadline (ms)
#     {prefix}:ul:PU      zset    the user's live runs, member "S:R" (S escaped), by deadline
#
# Cluster: every key of one run and its session's two indexes share the session's
# tag (``{S}``), so starting a run is one script in one slot; the user's index
# carries the user's tag (``ul:P:{U}``) and is always written by a command of its own.
_RUN = "r"
_RUNS = "rs"
_RUNS_LIVE = "rl"
_USER_LIVE = "ul"


class RunLayout:
    """Key names of agent run streams under one prefix (pure); see the section comment."""

    __slots__ = ("_layout",)

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        self._layout = Layout(prefix, cluster=cluster)

    def _run(self, key: SessionKey, run_id: str, part: str) -> str:
        layout = self._layout
        return f"{layout.prefix}:{_RUN}:{layout._member(key)}:{key_id(run_id)}{part}"

    def run_stream(self, key: SessionKey, run_id: str) -> str:
        """The run's event stream."""
        return self._run(key, run_id, ":x")

    def run_lease(self, key: SessionKey, run_id: str) -> str:
        """The producer's lease of the run."""
        return self._run(key, run_id, ":l")

    def run_cancel(self, key: SessionKey, run_id: str) -> str:
        """The run's cancel request."""
        return self._run(key, run_id, ":c")

    def session_runs(self, key: SessionKey) -> str:
        """The session's runs by start time."""
        return f"{self._layout.prefix}:{_RUNS}:{self._layout._member(key)}"

    def session_live_runs(self, key: SessionKey) -> str:
        """The session's live runs by lease deadline."""
        return f"{self._layout.prefix}:{_RUNS_LIVE}:{self._layout._member(key)}"

    def user_live_runs(self, product_id: str, user_id: str) -> str:
        """The user's live runs under one product, by lease deadline."""
        layout = self._layout
        if layout.cluster:
            return f"{layout.prefix}:{_USER_LIVE}:{key_id(product_id)}:{layout._id(user_id)}"
        return f"{layout.prefix}:{_USER_LIVE}:{user_member(product_id, user_id)}"

    def start_keys(self, key: SessionKey, run_id: str) -> tuple[str, str, str]:
        """What the start script receives as ``KEYS``: live index, run index, lease (one slot)."""
        return (self.session_live_runs(key), self.session_runs(key), self.run_lease(key, run_id))


def run_member(session_id: str, run_id: str) -> str:
    """``S:R``: one live run in a user's index (the session id escaped, so ``:`` splits it)."""
    return f"{escape_id(session_id)}:{run_id}"


def parse_run_member(member: str) -> tuple[str, str]:
    """Inverse of :func:`run_member`: ``(session_id, run_id)``."""
    session, _, run_id = member.rpartition(":")
    return unescape_id(session), run_id
