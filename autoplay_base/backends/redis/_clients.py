"""Building the pair of redis-py clients each topology needs (standalone, Cluster, Sentinel).

One set of connection options for every topology (:func:`timeouts`): short
socket timeouts, redis-py's own retries off (the backend buffers writes itself),
``decode_responses=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoplay_base.backends.redis._wire import no_retry
from autoplay_base.errors import BackendUnavailableError, ConfigError

__all__ = ["cluster_clients", "sentinel_clients", "timeouts", "url_clients"]


def timeouts(socket_timeout: float, connect_timeout: float | None) -> dict[str, Any]:
    """Socket and connect timeouts (the connect timeout defaults to the socket timeout)."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout or socket_timeout,
    }


def url_clients(
    module: Any, url: str, options: Mapping[str, Any], max_connections: int | None
) -> tuple[Any, Any]:
    """A sync and an async standalone client for ``url``."""
    common = {**options, "decode_responses": True, "max_connections": max_connections}
    client = module.Redis.from_url(url, retry=no_retry(module, is_async=False), **common)
    aclient = module.asyncio.Redis.from_url(url, retry=no_retry(module, is_async=True), **common)
    return client, aclient


def cluster_clients(
    module: Any,
    startup_nodes: str | Sequence[tuple[str, int]],
    options: Mapping[str, Any],
    max_connections: int | None,
) -> tuple[Any, Any]:
    """``RedisCluster`` clients (sync, asyncio) from a node's URL or ``(host, port)`` nodes.

    The sync client loads the slot map at once: no node answering is a
    :class:`BackendUnavailableError` (a cluster client cannot start without one).
    """
    common: dict[str, Any] = {**options, "decode_responses": True}
    if max_connections is not None:
        common["max_connections"] = max_connections  # per node
    sync_cls, async_cls = module.cluster.RedisCluster, module.asyncio.cluster.RedisCluster
    try:
        if isinstance(startup_nodes, str):
            return sync_cls.from_url(startup_nodes, **common), async_cls.from_url(
                startup_nodes, **common
            )
        nodes = [(host, int(port)) for host, port in startup_nodes]
        if not nodes:
            raise ConfigError("from_cluster needs a URL or at least one (host, port)")
        client = sync_cls(
            startup_nodes=[module.cluster.ClusterNode(h, p) for h, p in nodes], **common
        )
        aclient = async_cls(
            startup_nodes=[module.asyncio.cluster.ClusterNode(h, p) for h, p in nodes], **common
        )
    except module.exceptions.RedisClusterException as exc:
        raise BackendUnavailableError(
            f"no Redis Cluster node answered ({type(exc).__name__})"
        ) from None
    return client, aclient


def sentinel_clients(
    module: Any,
    sentinels: Sequence[tuple[str, int]],
    service_name: str,
    options: Mapping[str, Any],
    *,
    primary: Mapping[str, Any],
    sentinel_kwargs: Mapping[str, Any] | None,
) -> tuple[Any, Any, tuple[Any, Any]]:
    """Clients of the primary Sentinel names ``service_name``, and the two Sentinel managers.

    ``options`` are the timeouts (the primary's and the sentinels'), ``primary`` the
    primary's own options (pool size, db, credentials).
    """
    if not sentinels:
        raise ConfigError("from_sentinel needs at least one (host, port) sentinel")
    nodes = [(host, int(port)) for host, port in sentinels]

    def own(is_async: bool) -> dict[str, Any]:
        # Without ``retry`` an unreachable sentinel is tried 3 more times (redis-py's
        # default) before the next one, on every new connection to the primary.
        return {**options, "retry": no_retry(module, is_async=is_async), **(sentinel_kwargs or {})}

    managers = (
        module.sentinel.Sentinel(nodes, sentinel_kwargs=own(False)),
        module.asyncio.sentinel.Sentinel(nodes, sentinel_kwargs=own(True)),
    )
    common = {**options, "decode_responses": True, **primary}
    client = managers[0].master_for(service_name, retry=no_retry(module, is_async=False), **common)
    aclient = managers[1].master_for(service_name, retry=no_retry(module, is_async=True), **common)
    return client, aclient, managers
