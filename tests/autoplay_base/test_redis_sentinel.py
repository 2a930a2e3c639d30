"""RedisBackend behind Redis Sentinel: a real sentinel process, real primaries, a real failover.

The clients come from ``redis.sentinel.Sentinel.master_for`` (and its asyncio
twin), or from ``RedisBackend.from_sentinel``; every chain goes through the
stores a user would build (``ContextStore``/``AsyncContextStore``,
``UserSessionIndex``) and checks exact text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel

from autoplay_base import SessionRef, UserSessionIndex
from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis import Activity, RedisBackend
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import BackendAuthError, BackendUnavailableError, ConfigError
from tests._fixtures.redis import TEST_SOCKET_TIMEOUT, remove_keys
from tests._fixtures.sentinel import SERVICE, SentinelGroup, wait_until
from tests.autoplay_base.factories import FakeClock, actions, summary

T0 = 1_700_000_000.0
KEY = SessionKey("p1", "s1")
QUERY = "What next?"
CLIENT_NAME = "autoplay-sentinel-test"
MakeBackend = Callable[..., RedisBackend]
EXPECTED_CONTEXT = "Summary: Opened billing.\n\nRecent activity:\n1. Compared plans — /pricing"


def wait_for_blocked_reader(client: redis.Redis) -> None:
    """Wait until some connection on ``client``'s server is blocked in XREAD."""
    wait_until(
        lambda: any(
            c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in client.client_list()
        ),
        "a listener blocks in XREAD",
    )


def named_connections(client: redis.Redis) -> int:
    """Connections on the server that carry the test's client name."""
    return sum(1 for c in client.client_list() if c.get("name") == CLIENT_NAME)


def sentinel_repr(group: SentinelGroup, prefix: str) -> str:
    return (
        f"RedisBackend(redis+sentinel://127.0.0.1:{group.sentinel.port}/{SERVICE}/0, "
        f"prefix={prefix!r})"
    )


# -- master_for clients through the constructor -------------------------------------------------
def test_a_sync_store_on_master_for_clients_works_end_to_end(
    make_sentinel_backend: MakeBackend, redis_sentinel: SentinelGroup, redis_prefix: str
) -> None:
    backend = make_sentinel_backend({"client_name": CLIENT_NAME})
    clock = FakeClock(T0)
    store = ContextStore(backend=backend, clock=clock)
    index = UserSessionIndex(store, clock=clock)
    store.add(actions("s1", "Opened billing", user_id="u1", url="/billing", event_id="e1"))
    store.add(actions("s1", "Opened billing", user_id="u1", url="/billing", event_id="e1"))
    store.add(actions("s1", "Compared plans", user_id="u1", url="/pricing", event_id="e2"))
    store.add(summary("s1", "Opened billing.", replaces=1, event_id="e3"))

    assert store.get("s1", product_id="p1") == EXPECTED_CONTEXT
    assert store.get("s1") == EXPECTED_CONTEXT  # the product found through Redis
    assert store.enrich("s1", QUERY, product_id="p1") == (
        f"[Session context]\n{EXPECTED_CONTEXT}\n\n[Query]\n{QUERY}"
    )
    assert backend.stats.duplicate_events == 1  # dedupe runs on the primary's scripts
    assert index.get_recent_sessions("u1", product_id="p1") == [SessionRef("s1", "p1", T0)]
    assert index.get_user_activity("u1") == f"Session s1 (p1):\n{EXPECTED_CONTEXT}"

    backend.append_messages(KEY, ['{"role": "human"}', '{"role": "ai"}'])
    backend.append_messages(KEY, ['{"role": "human", "n": 2}'])
    assert backend.get_messages(KEY) == [
        '{"role": "human"}',
        '{"role": "ai"}',
        '{"role": "human", "n": 2}',
    ]

    # A second backend, as another process would build it, sees the same state.
    other = make_sentinel_backend()
    assert ContextStore(backend=other, clock=clock).get("s1") == EXPECTED_CONTEXT
    assert other.get_messages(KEY)[-1] == '{"role": "human", "n": 2}'

    backend.ping()
    assert repr(backend) == sentinel_repr(redis_sentinel, redis_prefix)
    assert backend.stats.errors == 0
    admin = redis_sentinel.primary_admin()
    try:
        assert named_connections(admin) >= 1
        backend.close()
        wait_until(lambda: named_connections(admin) == 0, "close() disconnects the client")
    finally:
        admin.close()


def test_store_listen_follows_a_write_made_after_it_started(
    make_sentinel_backend: MakeBackend, redis_sentinel: SentinelGroup
) -> None:
    listener_backend, writer_backend = make_sentinel_backend(), make_sentinel_backend()
    clock = FakeClock(T0)
    writer = ContextStore(backend=writer_backend, clock=clock)
    listener = ContextStore(backend=listener_backend, clock=clock)
    writer.add(actions("s1", "Opened billing", event_id="e1"))
    stop = threading.Event()
    arrived = threading.Event()
    got: list[Activity] = []

    def consume() -> None:
        for activity in listener.listen("s1", product_id="p1", block_ms=100, stop=stop):
            got.append(activity)
            arrived.set()

    thread = threading.Thread(target=consume)
    thread.start()
    admin = redis_sentinel.primary_admin()
    try:
        wait_for_blocked_reader(admin)
        clock.advance(1)
        writer.add(actions("s1", "Invited a teammate", url="/team", event_id="e2"))
        assert arrived.wait(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
        admin.close()
    assert not thread.is_alive()
    assert [(a.kind, a.at, a.lines, a.event_id) for a in got] == [
        ("actions", T0 + 1, ("Invited a teammate — /team",), "e2")
    ]
    assert listener_backend.stats.errors == 0


async def test_an_async_store_on_master_for_clients_works_end_to_end(
    make_sentinel_backend: MakeBackend, redis_sentinel: SentinelGroup, redis_prefix: str
) -> None:
    backend = make_sentinel_backend({"client_name": CLIENT_NAME})
    clock = FakeClock(T0)
    store = AsyncContextStore(backend=backend, clock=clock)
    index = UserSessionIndex(store, clock=clock)
    await store.add(actions("s1", "Opened billing", user_id="u1", url="/billing", event_id="e1"))
    await store.add(actions("s1", "Compared plans", user_id="u1", url="/pricing", event_id="e2"))
    await store.add(summary("s1", "Opened billing.", replaces=1, event_id="e3"))

    assert await store.aget("s1", product_id="p1") == EXPECTED_CONTEXT
    assert await store.aenrich("s1", QUERY) == (
        f"[Session context]\n{EXPECTED_CONTEXT}\n\n[Query]\n{QUERY}"
    )
    assert await index.aget_recent_sessions("u1") == [SessionRef("s1", "p1", T0)]
    assert await index.aget_user_activity("u1") == f"Session s1 (p1):\n{EXPECTED_CONTEXT}"
    await backend.aappend_messages(KEY, ["m1", "m2"])
    assert await backend.aget_messages(KEY) == ["m1", "m2"]

    received: asyncio.Queue[Activity] = asyncio.Queue()

    async def consume() -> None:
        async for activity in await store.alisten("s1", product_id="p1", block_ms=100):
            await received.put(activity)

    task = asyncio.ensure_future(consume())
    admin = redis_sentinel.primary_admin()
    try:
        await asyncio.to_thread(wait_for_blocked_reader, admin)
        clock.advance(1)
        await store.add(actions("s1", "Invited a teammate", url="/team", event_id="e4"))
        activity = await asyncio.wait_for(received.get(), timeout=10)
        assert (activity.kind, activity.at, activity.lines, activity.event_id) == (
            "actions",
            T0 + 1,
            ("Invited a teammate — /team",),
            "e4",
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await backend.aping()
        assert repr(backend) == sentinel_repr(redis_sentinel, redis_prefix)
        assert backend.stats.errors == 0
        assert await asyncio.to_thread(named_connections, admin) >= 1
        await backend.aclose()
        await asyncio.to_thread(
            wait_until, lambda: named_connections(admin) == 0, "aclose() disconnects"
        )
    finally:
        admin.close()


def test_a_wrong_password_behind_the_sentinel_is_an_auth_error(
    make_sentinel_backend: MakeBackend, redis_sentinel: SentinelGroup
) -> None:
    redis_sentinel.primary.url_with_user("sentinel-user", "right-secret")
    wrong = make_sentinel_backend({"username": "sentinel-user", "password": "wrong-secret"})
    with pytest.raises(BackendAuthError) as caught:
        wrong.ping()
    for text in (str(caught.value), repr(wrong)):
        assert "secret" not in text
        assert "sentinel-user" not in text
    assert wrong.stats.extra["redis_auth_errors"] == 1
    assert wrong.buffered_writes == 0

    right = make_sentinel_backend({"username": "sentinel-user", "password": "right-secret"})
    right.append_actions(KEY, ["logged in"], at=T0)
    assert ContextStore(backend=right, clock=FakeClock(T0)).get("s1", product_id="p1") == (
        "Recent activity:\n1. logged in"
    )


# -- from_sentinel --------------------------------------------------------------------------------
async def test_from_sentinel_builds_both_clients_and_closes_the_sentinel_connections(
    redis_sentinel: SentinelGroup, redis_prefix: str
) -> None:
    backend = RedisBackend.from_sentinel(
        redis_sentinel.sentinels,
        SERVICE,
        prefix=redis_prefix,
        socket_timeout=TEST_SOCKET_TIMEOUT,
    )
    try:
        assert repr(backend) == sentinel_repr(redis_sentinel, redis_prefix)
        store = ContextStore(backend=backend, clock=FakeClock(T0))
        store.add(actions("s1", "Opened billing", url="/billing"))
        astore = AsyncContextStore(backend=backend, clock=FakeClock(T0))
        assert await astore.aget("s1", product_id="p1") == (
            "Recent activity:\n1. Opened billing — /billing"
        )
        backend.ping()
        await backend.aping()
        assert backend.stats.errors == 0
        sentinel_admin = redis_sentinel.sentinel.admin()
        try:
            # The managers asked the sentinel for the primary on their own connections.
            assert len(sentinel_admin.client_list()) >= 3
            await backend.aclose()
            wait_until(
                lambda: len(sentinel_admin.client_list()) == 1,
                "aclose() closes the connections to the sentinel",
            )
        finally:
            sentinel_admin.close()
    finally:
        remove_keys(redis_sentinel.primary.url, redis_prefix)


def test_from_sentinel_refuses_a_wrong_password_at_once(
    redis_sentinel: SentinelGroup, redis_prefix: str
) -> None:
    redis_sentinel.primary.url_with_user("from-user", "right-pass")
    with pytest.raises(BackendAuthError) as caught:
        RedisBackend.from_sentinel(
            redis_sentinel.sentinels,
            SERVICE,
            prefix=redis_prefix,
            username="from-user",
            password="wrong-pass",
            socket_timeout=TEST_SOCKET_TIMEOUT,
        )
    assert "pass" not in str(caught.value).replace("password", "")
    assert "from-user" not in str(caught.value)


def test_from_sentinel_with_no_sentinel_answering_starts_and_buffers() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        RedisBackend.from_sentinel([], SERVICE)
    backend = RedisBackend.from_sentinel([("127.0.0.1", 1)], SERVICE, prefix="nobody")
    try:
        assert backend.append_actions(KEY, ["kept"], at=T0) is True
        assert backend.buffered_writes == 1
        with pytest.raises(BackendUnavailableError):
            backend.ping()
    finally:
        backend.close()
    assert backend.stats.extra["redis_writes_dropped"] == 1


# -- failover -------------------------------------------------------------------------------
def wait_for_replica(group: SentinelGroup) -> None:
    """Wait until the replica has applied everything the primary has written so far."""
    primary, replica = group.primary_admin(), group.replica_admin()
    try:
        target = primary.info("replication")["master_repl_offset"]
        wait_until(
            lambda: replica.info("replication")["slave_repl_offset"] >= target,
            "the replica catches up",
        )
    finally:
        primary.close()
        replica.close()


async def test_after_a_failover_writes_reads_and_listeners_use_the_new_primary(
    sentinel_group: SentinelGroup, redis_prefix: str
) -> None:
    """Kill the primary, let the sentinel promote the replica: the backend goes on."""
    backend = RedisBackend.from_sentinel(
        sentinel_group.sentinels, SERVICE, prefix=redis_prefix, socket_timeout=TEST_SOCKET_TIMEOUT
    )
    clock = FakeClock(T0)
    store = ContextStore(backend=backend, clock=clock)
    astore = AsyncContextStore(backend=backend, clock=clock)
    store.add(actions("s1", "Opened billing", event_id="e1"))
    assert await astore.aget("s1", product_id="p1") == "Recent activity:\n1. Opened billing — /page"
    first = next(backend.listen(KEY, last_id="0", block_ms=100))

    # A listener blocked on the primary when it dies.
    failures: list[BaseException] = []
    ended = threading.Event()

    def consume() -> None:
        try:
            for _ in backend.listen(KEY, block_ms=100):
                pass
        except BackendUnavailableError as exc:
            failures.append(exc)
        finally:
            ended.set()

    thread = threading.Thread(target=consume)
    thread.start()
    primary_admin = sentinel_group.primary_admin()
    wait_for_blocked_reader(primary_admin)
    primary_admin.close()
    wait_for_replica(sentinel_group)
    sentinel_group.primary.kill()
    assert ended.wait(timeout=10)
    thread.join(timeout=10)
    assert [type(exc) for exc in failures] == [BackendUnavailableError]
    # While the sentinel still names the dead primary, a write waits in the buffer.
    clock.advance(1)
    store.add(actions("s1", "Compared plans", event_id="e2"))
    assert backend.buffered_writes == 1

    sentinel_admin = sentinel_group.sentinel.admin()
    try:
        assert sentinel_admin.execute_command("SENTINEL", "FAILOVER", SERVICE) in (True, "OK")
        wait_until(
            lambda: sentinel_group.sentinel.primary_port_now() == sentinel_group.replica_port,
            "the sentinel names the promoted replica",
        )
    finally:
        sentinel_admin.close()

    # The buffered write replays on the promoted replica (flush() also ends the
    # retry interval the outage started); then both clients use it directly.
    assert backend.flush() == 0
    clock.advance(1)
    await astore.add(actions("s1", "Invited a teammate", event_id="e3"))
    store.add(actions("s1", "Opened billing", event_id="e1"))  # still deduplicated
    expected = (
        "Recent activity:\n1. Opened billing — /page\n2. Compared plans — /page\n"
        "3. Invited a teammate — /page"
    )
    assert store.get("s1", product_id="p1") == expected
    assert await astore.aget("s1", product_id="p1") == expected
    assert backend.buffered_writes == 0
    assert backend.stats.duplicate_events == 1
    assert backend.stats.extra["redis_writes_replayed"] == 1

    # A listener resumed from the last entry it saw reads on around the failover.
    resumed = backend.listen(KEY, last_id=first.id, block_ms=100)
    try:
        after = [next(resumed), next(resumed)]
    finally:
        resumed.close()
    assert [(a.kind, a.event_id, a.at) for a in after] == [
        ("actions", "e2", T0 + 1),
        ("actions", "e3", T0 + 2),
    ]
    replica = sentinel_group.replica_admin()
    try:
        assert replica.info("replication")["role"] == "master"
    finally:
        replica.close()
    await backend.aclose()
