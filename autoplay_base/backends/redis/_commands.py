"""The backend's commands and the decoding of their replies, as free functions (pure).

Builders only assemble arguments (redis-py's ``commands/core.py`` shape): what
sends them, and whether that returns a value or an awaitable, is the caller's
business. Every float travels as Python's ``repr`` (:func:`f`): Lua's
``tostring`` would round it to 14 digits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, NamedTuple

from autoplay_base.backends.base import (
    Activity,
    Bounds,
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
    content_digest,
    read_cutoff,
    visible_summary,
)
from autoplay_base.backends.redis._cluster import ClusterPlan
from autoplay_base.backends.redis._layout import (
    ACTIONS,
    META,
    STREAM,
    Layout,
    escape_id,
    session_member,
    unescape_id,
)
from autoplay_base.backends.redis._scripts import FORGET_USER, ScriptSet
from autoplay_base.backends.redis._wire import Command, score_pairs

__all__ = [
    "Settings",
    "activity",
    "append_command",
    "f",
    "forget_user_commands",
    "get_messages_commands",
    "messages_commands",
    "read_commands",
    "read_view",
    "reset_commands",
    "sessions_command",
    "summary_command",
    "user_refs",
    "user_sessions_commands",
    "write_counts",
]


def f(value: float) -> str:
    """A float as the scripts receive and store it (``repr``: every digit kept)."""
    return repr(float(value))


class Settings(NamedTuple):
    """What the builders need from the backend's configuration (set once)."""

    keys: Layout
    plan: ClusterPlan
    bounds: Bounds
    history_ttl_ms: int | None
    stream_maxlen: int
    scripts: ScriptSet  # the session scripts, the idle TTL and the bounds written in

    @property
    def cluster(self) -> bool:
        return self.keys.cluster


def _json(data: Any) -> str:
    """``json.dumps(data)``, a sequence of str (an append's lines) without the encoder.

    ``json.dumps`` builds a C encoder per call, the larger part of its cost for a
    few short strings; quoting each with the same C function and joining them with
    its separator gives the same text.
    """
    if isinstance(data, dict):
        return json.dumps(data)
    try:
        return "[" + ", ".join([_quote(item) for item in data]) + "]"
    except TypeError:  # an item that is not a str: the encoder handles it
        return json.dumps(list(data))


def _base_args(cfg: Settings, key: SessionKey, now: float) -> list[Any]:
    return [cfg.keys.prefix, session_member(key), f(now)]


def _write_argv(
    cfg: Settings,
    key: SessionKey,
    at: float,
    mode: str,
    *,
    event_id: str | None,
    content: Sequence[str],
    sent_at: float | None,
    data: Any,
    user_id: str | None,
) -> list[Any]:
    """ARGV 1-10 of the write script (see ``_scripts.py``), the same for both modes.

    The content digest (the dedupe key's companion) covers what the caller sent.
    """
    stamp = f(at)
    if event_id is None:
        dedupe = ["0", "", "", ""]
    else:
        order = stamp if sent_at is None else f(sent_at)
        dedupe = ["1", event_id, content_digest(content), order]
    return [
        cfg.keys.prefix,
        session_member(key),
        stamp,
        mode,
        dedupe[0],
        dedupe[1],
        _json(data) if cfg.stream_maxlen else "",
        escape_id(user_id) if user_id else "",
        dedupe[2],
        dedupe[3],
    ]


def _script_write(cfg: Settings, key: SessionKey, argv: list[Any]) -> Command:
    """The write script of the topology: one slot's in a cluster, the whole write else."""
    sha = cfg.scripts.write.sha
    if cfg.cluster:
        return cfg.plan.session_write(key, sha, argv)
    return ("EVALSHA", sha, 0, *argv)


def append_command(
    cfg: Settings,
    key: SessionKey,
    lines: Sequence[str],
    at: float,
    *,
    event_id: str | None,
    user_id: str | None,
    sent_at: float | None,
) -> Command:
    """The write script call that appends ``lines``."""
    argv = _write_argv(
        cfg,
        key,
        at,
        "a",
        event_id=event_id,
        content=lines,
        sent_at=sent_at,
        data=lines,
        user_id=user_id,
    )
    stamp = argv[2]  # f(at), as _write_argv wrote it
    argv += [f"{stamp} {line}" for line in lines]
    return _script_write(cfg, key, argv)


def summary_command(
    cfg: Settings,
    key: SessionKey,
    summary: str,
    *,
    replaces: int,
    at: float,
    event_id: str | None,
    sent_at: float | None,
) -> Command:
    """The write script call that sets a summary replacing ``replaces`` actions."""
    argv = _write_argv(
        cfg,
        key,
        at,
        "s",
        event_id=event_id,
        content=[summary, str(replaces)],
        sent_at=sent_at,
        data={"summary": summary, "replaces": replaces},
        user_id=None,
    )
    # ``replaces`` clamped: no more than the cap can be pending, and Redis takes no
    # integer >= 2**63 (the digest above covers what the caller sent).
    argv += [min(max(replaces, 0), cfg.bounds.max_actions_per_session), summary]
    return _script_write(cfg, key, argv)


def read_commands(
    cfg: Settings, key: SessionKey, options: ReadOptions, now: float
) -> tuple[Command, ...]:
    """The read script (in a cluster with the sessions index touch beside it)."""
    cutoff = read_cutoff(options, now)
    argv = _base_args(cfg, key, now)
    argv += [
        "1" if options.include_actions else "0",
        "" if cutoff is None else f(cutoff),
        "" if options.max_actions is None else options.max_actions,
    ]
    sha = cfg.scripts.read.sha
    if cfg.cluster:
        return cfg.plan.session_read(key, sha, argv, f(now))
    return (("EVALSHA", sha, 0, *argv),)


def reset_commands(cfg: Settings, key: SessionKey) -> tuple[Command, ...]:
    """Forget a session's context: its keys, its index entries (its history stays)."""
    keys = cfg.keys
    return (
        ("DEL", keys.session(key, META), keys.session(key, ACTIONS), keys.session(key, STREAM)),
        ("ZREM", keys.sessions(), session_member(key)),
        ("SREM", keys.products(key.session_id), escape_id(key.product_id)),
    )


def messages_commands(
    cfg: Settings, key: SessionKey, messages: Sequence[str]
) -> tuple[Command, ...]:
    """Append chat messages, trim to ``max_messages``, slide the history TTL."""
    name = cfg.keys.history(key)
    commands: list[Command] = [
        ("RPUSH", name, *messages),
        ("LTRIM", name, -cfg.bounds.max_messages, -1),
    ]
    if cfg.history_ttl_ms is not None:
        commands.append(("PEXPIRE", name, cfg.history_ttl_ms))
    return tuple(commands)


def get_messages_commands(cfg: Settings, key: SessionKey) -> tuple[Command, ...]:
    """Read a chat history (sliding its TTL)."""
    name = cfg.keys.history(key)
    if cfg.history_ttl_ms is None:
        return (("LRANGE", name, 0, -1),)
    return (("LRANGE", name, 0, -1), ("PEXPIRE", name, cfg.history_ttl_ms))


def forget_user_commands(
    cfg: Settings, user_id: str, product_id: str | None
) -> tuple[str, tuple[Command, ...]]:
    """The write kind and commands that drop a user's index (every product when None).

    In a cluster, every product is a two-step flow (``"forget_user"``: list the
    products, then drop each index); one product is plain commands.
    """
    if cfg.cluster:
        if product_id is None:
            return "forget_user", (("SMEMBERS", cfg.keys.user_products(user_id)),)
        return "forget_user_index", cfg.plan.forget_user(user_id, [escape_id(product_id)])
    every = "1" if product_id is None else "0"
    product = "" if product_id is None else escape_id(product_id)
    script = ("EVALSHA", FORGET_USER.sha, 0, cfg.keys.prefix, escape_id(user_id), every, product)
    return "forget_user", (script,)


def user_sessions_commands(
    cfg: Settings, user_id: str, product_id: str, limit: int
) -> tuple[Command, ...]:
    """One product's user's newest ``limit`` sessions."""
    name = cfg.keys.user(product_id, user_id)
    return (("ZREVRANGE", name, 0, limit - 1, "WITHSCORES"),)


def sessions_command(cfg: Settings, now: float) -> Command:
    """Sweep the sessions index, then list it."""
    if cfg.cluster:
        return cfg.plan.sweep(f(now))
    return ("EVALSHA", cfg.scripts.sessions.sha, 0, cfg.keys.prefix, "", f(now))


# -- replies ---------------------------------------------------------------------------------
def write_counts(reply: Any) -> tuple[int, int, int, int, int, int]:
    """A standalone write script's reply: stored, trimmed, expired, evicted, reused, resets."""
    if isinstance(reply, int):
        return reply, 0, 0, 0, 0, 0
    stored, trimmed, expired, evicted, reused, resets = reply
    return stored, trimmed, expired, evicted, reused, resets


def read_view(reply: list[Any], options: ReadOptions) -> tuple[int, SessionView | None]:
    """A read script's reply: sessions it expired, and the view (``since`` applied)."""
    if not reply[0]:
        return reply[1], None
    summary_at = None if reply[3] is None else float(reply[3])
    last = None if reply[4] is None else float(reply[4])
    view = SessionView(visible_summary(reply[2], summary_at, options), reply[5:], summary_at, last)
    return reply[1], view


def activity(entry_id: str, fields: dict[str, str]) -> Activity:
    """A stream entry as an :class:`Activity`."""
    kind = fields.get("k")
    data = json.loads(fields.get("d", "null"))
    at = float(fields.get("t", "nan"))
    event_id = fields.get("e")
    if kind == "s" and isinstance(data, dict):
        return Activity(
            entry_id,
            "summary",
            at,
            summary=str(data.get("summary", "")),
            replaces=int(data.get("replaces", 0)),
            event_id=event_id,
        )
    lines = tuple(str(line) for line in data) if isinstance(data, list) else ()
    return Activity(entry_id, "actions", at, lines=lines, event_id=event_id)


def user_refs(reply: list[Any], product_id: str) -> list[UserSessionRef]:
    """A user index's ``ZREVRANGE ... WITHSCORES`` reply, newest first."""
    return [
        UserSessionRef(unescape_id(session), product_id, float(seen_at))
        for session, seen_at in score_pairs(reply)
    ]


def ids(reply: list[Any]) -> list[str]:
    """An ``SMEMBERS`` of escaped ids, unescaped and sorted."""
    return sorted(unescape_id(member) for member in reply)
