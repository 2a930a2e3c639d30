"""Redis Cluster: the pure parts (routing a command to its slot, the write flow's steps).

Nothing here does I/O. The backend's sync and async runners send what these
functions build and hand the replies back (see :class:`ClusterPlan`).

The cluster rules (documented for users in :mod:`autoplay_base.backends.redis`):

* every key one script touches is in one slot: a session's keys, its product
  index and its dedupe window carry the session id as hash tag (``{S}``), a
  user's index keys the user id (``{U}``); the scripts receive every key in ``KEYS``;
* a write is a short flow: the session's script (dedupe check, append, trim,
  summary, stream, sliding TTL, id marked seen last; all in the session's slot),
  then, only when it stored something, the single-slot index updates (sessions
  index: touch, sweep, evict past ``max_sessions``; users index; the user's own
  index), then each victim's keys dropped in its own slot (a victim touched in
  between stays);
* a read is the session's read script and the sessions index touch, sent together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis._layout import (
    Layout,
    escape_id,
    parse_member,
    session_member,
    unescape_id,
    user_member,
)
from autoplay_base.backends.redis._scripts import (
    CLUSTER_DROP,
    CLUSTER_INDEX,
    CLUSTER_USERS,
)
from autoplay_base.backends.redis._wire import Command

__all__ = [
    "ClusterPlan",
    "IndexOutcome",
    "command_key",
    "describe_cluster",
    "slot_groups",
]

_EVAL = ("EVALSHA", "EVAL")


def command_key(command: Command) -> str | None:
    """The key that routes ``command`` (its first key), or ``None`` for a keyless one."""
    name = str(command[0]).upper()
    if name in _EVAL:
        return str(command[3]) if int(command[2]) > 0 else None
    return str(command[1]) if len(command) > 1 else None


def slot_groups(slots: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Indexes of the commands of each slot, slots in first-seen order (order kept inside)."""
    groups: dict[int, list[int]] = {}
    for index, slot in enumerate(slots):
        groups.setdefault(slot, []).append(index)
    return list(groups.items())


def describe_cluster(client: Any) -> str:
    """``redis+cluster://h1:p1,h2:p2``: a cluster client's startup nodes, never credentials."""
    nodes = client.nodes_manager.startup_nodes.values()
    return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in nodes)


@dataclass(frozen=True, slots=True)
class IndexOutcome:
    """What an index step did: sessions swept as expired, sessions evicted, and the
    commands that drop their keys (and an evicted user's index) in their own slots."""

    expired: int
    evicted: int
    drops: tuple[Command, ...]


class ClusterPlan:
    """The commands of each step of the cluster flows, from the key layout (pure)."""

    __slots__ = ("keys", "max_sessions", "max_users", "per_user", "ttl")

    def __init__(
        self, keys: Layout, *, ttl: str, max_sessions: int, max_users: int, per_user: int
    ) -> None:
        self.keys = keys
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_users = max_users
        self.per_user = per_user

    def session_write(self, key: SessionKey, sha: str, argv: Sequence[Any]) -> Command:
        """The session's write script ``sha``: its keys, then the standalone script's ARGV."""
        keys = (*self.keys.session_keys(key), *self.keys.window_keys(key))
        return ("EVALSHA", sha, len(keys), *keys, *argv)

    def session_read(
        self, key: SessionKey, sha: str, argv: Sequence[Any], now: str
    ) -> tuple[Command, ...]:
        """The read script ``sha`` and the sessions index touch (independent: one step)."""
        keys = self.keys.session_keys(key)
        return (
            ("EVALSHA", sha, len(keys), *keys, *argv),
            self._index(key, now, "r"),
        )

    def sweep(self, now: str) -> Command:
        """``sessions()``: sweep the index, then list it."""
        return ("EVALSHA", CLUSTER_INDEX.sha, 1, self.keys.sessions(), self.ttl, "", now, 0, "s")

    def _index(self, key: SessionKey, now: str, mode: str) -> Command:
        member = session_member(key)
        return (
            "EVALSHA",
            CLUSTER_INDEX.sha,
            1,
            self.keys.sessions(),
            self.ttl,
            member,
            now,
            self.max_sessions,
            mode,
        )

    def after_write(self, key: SessionKey, now: str, user_id: str | None) -> tuple[Command, ...]:
        """A stored write's index updates: the sessions index, and the user's indexes."""
        commands: list[Command] = [self._index(key, now, "w")]
        if user_id:
            user_key = self.keys.user(key.product_id, user_id)
            commands += [
                (
                    "EVALSHA",
                    CLUSTER_USERS.sha,
                    1,
                    self.keys.users(),
                    user_member(key.product_id, user_id),
                    now,
                    self.max_users,
                ),
                ("SADD", self.keys.user_products(user_id), _escaped_product(key)),
                ("ZADD", user_key, now, _escaped_session(key)),
                ("ZREMRANGEBYRANK", user_key, 0, -(self.per_user + 1)),
            ]
        return tuple(commands)

    def outcome(self, commands: Sequence[Command], replies: Sequence[Any]) -> IndexOutcome:
        """Victims named by the index and users scripts among ``commands``, as drops."""
        expired = evicted = 0
        drops: list[Command] = []
        for command, reply in zip(commands, replies, strict=False):
            if command[0] != "EVALSHA" or isinstance(reply, Exception):
                continue
            if command[1] == CLUSTER_INDEX.sha:
                victims = reply[0] if command[-1] == "s" else reply
                for at in range(0, len(victims), 3):
                    member, score, why = victims[at : at + 3]
                    expired += why == "x"
                    evicted += why == "v"
                    drops.append(self.drop(parse_member(member), score))
            elif command[1] == CLUSTER_USERS.sha and isinstance(reply, str):
                drops.extend(self.forget_user_index(reply))
        return IndexOutcome(expired, evicted, tuple(drops))

    def drop(self, key: SessionKey, score: Any) -> Command:
        """Drop a victim's keys in its slot unless it was touched after ``score``."""
        keys = self.keys.session_keys(key)
        return ("EVALSHA", CLUSTER_DROP.sha, len(keys), *keys, _escaped_product(key), score)

    def forget_user_index(self, pu: str) -> tuple[Command, ...]:
        """An evicted user's own index (``P:U`` escaped): two keys in the user's slot."""
        product, _, user = pu.partition(":")
        product_id, user_id = unescape_id(product), unescape_id(user)
        return (
            ("DEL", self.keys.user(product_id, user_id)),
            ("SREM", self.keys.user_products(user_id), product),
        )

    def forget_user(self, user_id: str, products: Sequence[str]) -> tuple[Command, ...]:
        """Every given product's index of ``user_id`` (``products`` escaped)."""
        if not products:
            return ()
        names = [self.keys.user(unescape_id(p), user_id) for p in products]
        return (
            ("DEL", *names),
            ("SREM", self.keys.user_products(user_id), *products),
            ("ZREM", self.keys.users(), *(f"{p}:{escape_id(user_id)}" for p in products)),
        )


def _escaped_product(key: SessionKey) -> str:
    return escape_id(key.product_id)


def _escaped_session(key: SessionKey) -> str:
    return escape_id(key.session_id)


def group_replies(
    replies: Sequence[Any], count: int, *, asking: bool
) -> tuple[list[Any], list[Any]]:
    """One slot's raw replies as (every reply to inspect for a redirect, one per command).

    The wire is ``[ASKING]`` then one command, or MULTI, the commands and EXEC.
    """
    body = list(replies[1:] if asking else replies)
    if count == 1:
        return body, body
    final = body[-1] if body else None
    results = list(final) if isinstance(final, list) else [final] * count
    return body + results, results


def verdict(replies: Sequence[Any], errors: Any) -> tuple[str, Any]:
    """What one slot's replies say: ``("ok", None)``, ``("moved", exc)``, ``("ask", exc)``,
    ``("noscript", None)`` or ``("down", exc)`` (``CLUSTERDOWN``/``TRYAGAIN``: an outage)."""
    for reply in replies:
        if isinstance(reply, errors.MovedError):
            return "moved", reply
        if isinstance(reply, errors.AskError):
            return "ask", reply
        if isinstance(reply, (errors.ClusterDownError, errors.TryAgainError)):
            return "down", reply
        if isinstance(reply, errors.ResponseError) and str(reply).startswith(
            ("CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK ")
        ):
            # redis-py parses these codes on plain replies; a script relays them as text.
            return "down", reply
    if any(isinstance(reply, errors.NoScriptError) for reply in replies):
        return "noscript", None
    return "ok", None
