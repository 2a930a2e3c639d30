"""Talking to Redis below redis-py's command layer: packing, replies, connections.

Commands are packed here in RESP and written to a pooled connection in one socket
write; redis-py supplies the connections, the reply parser and its errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from autoplay_base.errors import missing_extra

_T = TypeVar("_T")
LISTEN_GRACE_SECONDS = 1.0

Command = tuple[Any, ...]


def import_redis() -> Any:
    try:
        import redis  # noqa: PLC0415 - optional extra, imported on first use
        import redis.asyncio  # noqa: PLC0415
        import redis.asyncio.cluster  # noqa: PLC0415 - to refuse a cluster client
        import redis.asyncio.sentinel  # noqa: PLC0415
        import redis.cluster  # noqa: PLC0415
        import redis.sentinel  # noqa: PLC0415 - for RedisBackend.from_sentinel
    except ImportError as exc:
        raise missing_extra("redis", "redis") from exc
    return redis


def no_retry(module: Any, *, is_async: bool) -> Any:
    backoff = module.backoff.NoBackoff()
    if is_async:
        return module.asyncio.retry.Retry(backoff, 0)
    return module.retry.Retry(backoff, 0)


def pack_one(command: Command) -> bytes:
    """One command in RESP, in Python (any argument type: ``str()`` of it)."""
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _c_packer() -> Callable[[Command], bytes]:
    """hiredis's C packer when installed (the ``redis`` extra brings it), else the loop."""
    try:
        from hiredis import pack_command  # noqa: PLC0415 - optional, looked up once
    except ImportError:  # pragma: no cover - redis-py installed without hiredis
        return pack_one
    packer: Callable[[Command], bytes] = pack_command
    return packer


# hiredis writes the same bytes as :func:`pack_one` for str, int, float (``repr``, as
# ``str()``) and bytes, with a fraction of its instructions.
_c_pack = _c_packer()


def _pack_fast(command: Command) -> bytes:
    try:
        return _c_pack(command)
    except TypeError:  # an argument hiredis does not take (None, bool): str() of it
        return pack_one(command)


def pack_commands(commands: Sequence[Command]) -> bytes:
    """Commands in RESP, ready for one socket write (str as UTF-8, numbers as text).

    Raises :class:`UnicodeEncodeError` for text that is not valid Unicode (a lone
    surrogate from ``json.loads``); the backend translates it where it builds commands.
    """
    if len(commands) == 1:
        return _pack_fast(commands[0])
    return b"".join([_pack_fast(command) for command in commands])


def raise_errors(replies: Any) -> list[Any]:
    """The replies, unless one is an error reply: then raise it."""
    listed: list[Any] = replies if isinstance(replies, list) else [replies]
    for reply in listed:
        if isinstance(reply, Exception):
            raise reply
    return listed


def read_reply(conn: Any, error: type[Exception]) -> Any:
    """One reply; an error reply is returned in place (it was read in full)."""
    try:
        return conn.read_response()
    except error as exc:
        return exc


async def aread_reply(conn: Any, error: type[Exception]) -> Any:
    try:
        return await conn.read_response()
    except error as exc:
        return exc


def checkout(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.3 wants a command name
        return pool.get_connection("_")


async def acheckout(pool: Any) -> Any:
    try:
        return await pool.get_connection()
    except TypeError:
        return await pool.get_connection("_")


def score_pairs(reply: list[Any]) -> list[tuple[str, Any]]:
    """``WITHSCORES`` replies: flat on RESP2, already paired on RESP3."""
    if reply and not isinstance(reply[0], (list, tuple)):
        return list(zip(reply[::2], reply[1::2], strict=True))
    return [(member, score) for member, score in reply]


def xread_streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """``(stream, entries)`` of an ``XREAD`` reply in any of the shapes it comes in.

    RESP2 gives a list of ``[stream, entries]``, RESP3 a map; redis-py's parse of a
    RESP3 reply (a client made with ``protocol=3``) wraps each stream's entries in one
    more list (redis-py 8.1), which is unwrapped here. An entry is ``(id, fields)``:
    a dict as redis-py parsed it, or the server's flat ``[f1, v1, ...]``.
    """
    if not reply:
        return []
    streams = []
    for key, entries in reply.items() if isinstance(reply, dict) else reply:
        if (
            len(entries) == 1
            and isinstance(entries[0], list)
            and (not entries[0] or isinstance(entries[0][0], (list, tuple)))
        ):
            entries = entries[0]  # noqa: PLW2901 - the wrapper, unwrapped
        streams.append((str(key), entries))
    return streams


def xread_entries(reply: Any) -> list[tuple[str, Any]]:
    """The entries of an ``XREAD`` reply, every stream's in turn (see :func:`xread_streams`)."""
    return [entry for _, entries in xread_streams(reply) for entry in entries]


async def cancellable(read: Awaitable[_T]) -> _T:
    """Await a blocking read so that cancelling the caller always ends it.

    redis-py's timed read can absorb a cancellation and return normally
    (reproduced with redis-py 8.1; the family of redis/redis-py#2028), which
    would leave a cancelled listener looping forever. The read runs as its own
    task and the caller waits with ``asyncio.wait``, whose waiter the
    cancellation always reaches (on every Python version, unlike
    ``Task.cancelling()``); the read is then cancelled and awaited so its
    connection is left clean.
    """
    task = asyncio.ensure_future(read)
    try:
        await asyncio.wait((task,))
    except asyncio.CancelledError:
        task.cancel()
        # A read that swallowed its own cancel may go on blocking; the listener's
        # ``finally`` closes the connection under it, so do not wait long.
        task.add_done_callback(_retrieve)
        await asyncio.wait((task,), timeout=LISTEN_GRACE_SECONDS)
        raise
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned read's outcome as seen (its error, if any, is moot)."""
    if not task.cancelled():
        task.exception()


def listen_start_id(entries: list[Any]) -> str:
    """The id after which a ``"$"`` listener starts: the newest entry, or the very start."""
    return str(entries[0][0]) if entries else "0-0"


def describe_pool(client: Any) -> str:
    """Where a client points, without credentials (for logs, errors and ``repr``).

    A Sentinel-managed pool has no host of its own (each connection asks the
    sentinels for the primary), so it is named by its sentinels and service:
    ``redis+sentinel://h1:p1,h2:p2/<service>/<db>`` (a name for people, not a URL
    redis-py parses).
    """
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    service = getattr(pool, "service_name", None)
    manager = getattr(pool, "sentinel_manager", None)
    if service is not None and manager is not None:
        nodes = ",".join(
            f"{node.get('host', '?')}:{node.get('port', '?')}"
            for node in (s.connection_pool.connection_kwargs for s in manager.sentinels)
        )
        return f"redis+sentinel://{nodes}/{service}/{db}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{db}"


class _AsyncNodePool:
    """An asyncio cluster node seen as a connection pool (``get_connection``/``release``)."""

    __slots__ = ("node",)

    def __init__(self, node: Any) -> None:
        self.node = node

    async def get_connection(self) -> Any:
        return self.node.acquire_connection()

    async def release(self, conn: Any) -> None:
        self.node.release(conn)

    async def disconnect(self, inuse_connections: bool = False) -> None:
        await self.node.disconnect()


def node_pool(node: Any, *, is_async: bool) -> Any:
    """The connection pool of a redis-py cluster node (sync: its client's pool)."""
    if is_async:
        return _AsyncNodePool(node)
    return node.redis_connection.connection_pool
