"""The Redis backend's engine: every multi-step operation as a flow, its runners, its I/O.

:class:`Engine` runs each multi-step operation once, as a flow (a generator that
yields I/O requests and receives their results, as httpx's auth flows do): the
write with its breaker/buffer/replay decisions, the burst of
``append_actions_many``, the read, the replay of the outage buffer, and on a
cluster the routing of each command to its slot's node and the write flow of
:mod:`._cluster`. One sync and one async runner perform the requests on the few
I/O primitives (one round trip on one pooled connection; a pipelined burst), so
sync and async bodies differ by ``await`` only. What a step's outcome means
(counters, breaker, errors, buffering) is :class:`~._accounting.Accounting`'s.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from autoplay_base.backends.base import (
    SessionKey,
)
from autoplay_base.backends.redis._accounting import Accounting, Exchange, Op
from autoplay_base.backends.redis._cluster import (
    command_key,
    group_replies,
    slot_groups,
    verdict,
)
from autoplay_base.backends.redis._commands import (
    sessions_command,
)
from autoplay_base.backends.redis._outage import (
    Pending,
)
from autoplay_base.backends.redis._wire import (
    Command,
    acheckout,
    aread_reply,
    checkout,
    node_pool,
    pack_commands,
    raise_errors,
    read_reply,
)

__all__ = ["BATCH", "Engine", "Exchange", "Op"]
# ``Exchange`` and ``Op`` are re-offered here: the backend builds and sends both.


BATCH = 256  # commands per pipeline when writing many events or replaying the buffer

# -- pure core ------------------------------------------------------------------------------


class _Progress:
    """How far a cluster flow got: the first step's replies once answered, the index
    steps' counts, and the commands of the step in flight (what a failure leaves to do)."""

    __slots__ = ("errors", "evicted", "expired", "first", "pending", "sent")

    def __init__(self) -> None:
        self.sent = False  # some request went out: a lost answer leaves its fate unknown
        self.first: list[Any] | None = None
        self.pending: tuple[Command, ...] = ()
        self.expired = 0
        self.evicted = 0
        self.errors: list[Exception] = []


_T = TypeVar("_T")
Flow = Generator[Any, Any, _T]
"""A flow: yields I/O requests, receives their results, returns its value."""


class _Send(NamedTuple):
    """Request: write ``packed`` and read ``expect`` replies into ``exchange`` (on ``node``'s
    connection in a cluster, else the client's pool)."""

    packed: bytes
    expect: int
    exchange: Exchange
    node: Any = None


class _Stream(NamedTuple):
    """Request: pipeline ``ops`` in chunks on one connection (``append_actions_many``)."""

    ops: Sequence[Op]
    exchange: Exchange


class _Nodes(NamedTuple):
    """Request: the cluster client's nodes manager (its slot map loaded)."""


class _Refresh(NamedTuple):
    """Request: reload the slot map after a ``MOVED``."""

    manager: Any


class Engine(Accounting):
    """Flows, their runners and their I/O over one pair of clients (see the module docstring).

    Built with :class:`~._accounting.Accounting`'s constructor (the clients, the
    builders' settings, the counters and the outage options).
    """

    # -- cluster flows (pure: yield a step's commands, receive one reply per command) ----------
    def _cluster_flow(
        self, op: Op, progress: _Progress
    ) -> Generator[tuple[Command, ...], list[Any], None]:
        """One write as cluster steps: the op's own commands, then what its replies call for."""
        if op.kind == "index":
            yield from self._index_steps(op.commands, progress)
            return
        replies = yield op.commands
        progress.first = replies
        if op.kind == "forget_user":
            products = replies[0] if isinstance(replies[0], list) else []
            follow = self._plan.forget_user(op.user_id or "", products)
            if follow:
                yield from self._index_steps(follow, progress)
            return
        reply = replies[0]
        if op.kind not in ("append", "summary") or not isinstance(reply, list) or op.key is None:
            return  # not a session write, a duplicate (0) or an error reply
        yield from self._index_steps(self._plan.after_write(op.key, op.now, op.user_id), progress)

    def _index_steps(
        self, commands: tuple[Command, ...], progress: _Progress
    ) -> Generator[tuple[Command, ...], list[Any], None]:
        """Index updates, then the drops of the victims they name (each in its own slot)."""
        replies = yield commands
        progress.errors += [reply for reply in replies if isinstance(reply, Exception)]
        outcome = self._plan.outcome(commands, replies)
        progress.expired += outcome.expired
        progress.evicted += outcome.evicted
        if outcome.drops:
            replies = yield outcome.drops
            progress.errors += [reply for reply in replies if isinstance(reply, Exception)]

    def _after_cluster(self, op: Op, progress: _Progress) -> bool:
        """Account a cluster flow as the standalone script's reply would be accounted."""
        for error in progress.errors:
            self._rejected(f"{op.kind} index update", error)
        first = progress.first
        if op.kind == "index" or first is None:
            with self._lock:
                self.stats.sessions_expired += progress.expired
                self.stats.sessions_evicted += progress.evicted
            return not progress.errors
        reply = first[0]
        if op.kind in ("append", "summary") and isinstance(reply, list):
            _, trimmed, expired, _created, reused, resets = reply
            shaped = [1, trimmed, expired + progress.expired, progress.evicted, reused, resets]
            return self._after_write(op, [shaped])
        return self._after_write(op, first)

    def _cluster_broken(self, op: Op, progress: _Progress, exc: BaseException) -> bool:
        """A flow cut by an outage: buffer what is left (the whole write, or its index steps)."""
        if progress.first is None:
            return self._buffered(op, exc, sent=progress.sent)
        stored = self._after_cluster(op, progress)
        self._buffered(self._op("index", progress.pending), exc)
        return stored

    def _replay_broken(self, pending: Pending[Op], progress: _Progress) -> None:
        """A replayed flow cut by an outage: it stays at the head, as what is left of it."""
        if progress.first is not None:
            self._after_cluster(pending.op, progress)
            rest = self._op("index", progress.pending)
        else:
            rest = pending.op
        self._buffer.replace_head(pending, rest, sent=progress.sent)

    def _slot(self, command: Command) -> int:
        key = command_key(command)
        return 0 if key is None else int(self._client.keyslot(key))

    def _redirect(self, what: str, exc: Any, slot: int, manager: Any) -> tuple[Any, bool]:
        """The node to try next after a redirect, and whether it needs ``ASKING``."""
        if what == "ask":
            node = manager.get_node(host=exc.host, port=exc.port)
            if node is not None:
                return node, True
        return manager.get_node_from_slot(slot), False

    # -- flows: each multi-step operation written once ------------------------------------------
    # A flow is a generator that yields I/O requests (``_Send``, ``_Stream``, ``_Nodes``,
    # ``_Refresh``) and receives their results, or has their exception thrown in at the
    # ``yield``; :meth:`_run` and :meth:`_arun` perform the requests, so the breaker,
    # buffer, replay and routing decisions exist once for both clients (httpx's auth flows).
    def _execute(self, packed: bytes, count: int, exchange: Exchange) -> Flow[list[Any]]:
        """One command, or several in MULTI/EXEC (``count`` > 1); raises the first error reply."""
        yield _Send(packed, count, exchange)
        if count > 1:
            return raise_errors(exchange.replies[-1])
        if isinstance(exchange.replies[0], self._no_script):
            load = self._cfg.scripts.load
            yield _Send(pack_commands(load), len(load), Exchange())
            exchange.replies.clear()  # NOSCRIPT: nothing ran, the same request goes again
            yield _Send(packed, count, exchange)
        return raise_errors(exchange.replies)

    def _drain(self) -> Flow[bool | None]:
        """Replay buffered writes in order; ``True`` when the buffer is empty afterwards."""
        if not self._buffer.begin_drain():
            return None if self._buffer else True
        try:
            if self._cluster:
                return (yield from self._cluster_drain())
            while batch := self._buffer.take_batch(BATCH):
                packed, count = self._replay_packed(batch)
                exchange = Exchange()
                try:
                    yield _Send(packed, count, exchange)
                except self._transient as exc:
                    # Not an operation of its own: the call that triggered it counts.
                    self._replayed(batch, exchange)
                    self._trip(exc)
                    return False
                self._replayed(batch, exchange)
            self._recovered()
            return True
        finally:
            self._buffer.end_drain()

    def _ready(self) -> Flow[bool | None]:
        """Replay the buffer first so writes land in order.

        ``False`` while Redis is down; ``None`` while another caller replays the
        buffer (a write then queues behind it, a read goes ahead).
        """
        if self._tripped():
            with self._lock:
                self._count("redis_calls_skipped")
            return False
        if not self._buffer:
            return True
        return (yield from self._drain())

    def _write(self, op: Op) -> Flow[bool]:
        """One write: replay first, then send it, or buffer it (or raise in strict mode)."""
        ready = yield from self._ready()
        if ready is None:
            return self._enqueue(op)
        if not ready:
            return self._buffered(op, None)
        if self._cluster:
            return (yield from self._cluster_write(op))
        exchange = Exchange()
        try:
            replies = yield from self._execute(op.packed, op.replies, exchange)
        except self._transient as exc:
            # Once sent, its answer never came: if it is dropped later, say so.
            return self._buffered(op, exc, sent=exchange.sent)
        except self._response_error as exc:
            self._rejected(op.kind, exc)
            return False
        self._recovered()
        return self._after_write(op, replies)

    def _write_many(self, ops: Sequence[Op]) -> Flow[list[bool]]:
        """Many writes, pipelined in chunks (in a cluster each one its own flow)."""
        if self._cluster:
            results = []
            for op in ops:
                results.append((yield from self._write(op)))
            return results
        ready = yield from self._ready()
        if ready is None:
            return [self._enqueue(op) for op in ops]
        if not ready:
            return [self._buffered(op, None) for op in ops]
        exchange = Exchange()
        try:
            yield _Stream(ops, exchange)
        except self._transient as exc:
            self._trip(exc)
            return self._settle(ops, exchange, exc)
        self._recovered()
        return self._settle(ops, exchange, None)

    def _query(self, commands: Sequence[Command]) -> Flow[list[Any] | None]:
        """A read: its replies, or ``None`` while Redis is down (or raise in strict mode)."""
        packed, count = self._query_packed(commands)
        if (yield from self._ready()) is False:
            self._read_failed(None)
            return None
        try:
            if self._cluster:
                replies = raise_errors((yield from self._route(commands)))
            else:
                replies = yield from self._execute(packed, count, Exchange())
        except self._transient as exc:
            self._read_failed(exc)
            return None
        except self._response_error as exc:
            raise self._rejected("read", exc) from exc
        self._recovered()
        return replies

    def _flush(self) -> Flow[int]:
        with self._lock:
            self._down_until = 0.0
        yield from self._drain()
        return len(self._buffer)

    def _ping(self) -> Flow[None]:
        try:
            if self._cluster:
                yield from self._route([("PING",)])
            else:
                yield _Send(pack_commands([("PING",)]), 1, Exchange())
        except self._transient as exc:
            raise self._failed("ping", exc) from exc
        self._recovered()

    def _sessions(self) -> Flow[list[SessionKey]]:
        command = sessions_command(self._cfg, self._clock())
        live, drops = self._account_sessions(command, (yield from self._query((command,))))
        if drops is not None:
            yield from self._write(drops)
        return live

    # -- cluster: routing and the write flow's runner ----------------------------------------
    def _route(
        self, commands: Sequence[Command], progress: _Progress | None = None
    ) -> Flow[list[Any]]:
        """Send each command to its slot's node (one MULTI per slot); replies in order."""
        replies: list[Any] = [None] * len(commands)
        for slot, indexes in slot_groups([self._slot(c) for c in commands]):
            group = [commands[i] for i in indexes]
            answers = yield from self._route_slot(slot, group, progress)
            for index, answer in zip(indexes, answers, strict=True):
                replies[index] = answer
        return replies

    def _route_slot(
        self, slot: int, commands: list[Command], progress: _Progress | None
    ) -> Flow[list[Any]]:
        """One slot's commands on its node; MOVED/ASK refresh or redirect, NOSCRIPT loads."""
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else commands
        packed = pack_commands(wire)
        manager = yield _Nodes()
        node, asking = manager.get_node_from_slot(slot), False
        for _ in range(3):
            exchange = Exchange()
            request = pack_commands([("ASKING",)]) + packed if asking else packed
            try:
                yield _Send(request, len(wire) + asking, exchange, node)
            finally:
                if progress is not None:
                    progress.sent = progress.sent or exchange.sent
            seen, results = group_replies(exchange.replies, len(commands), asking=asking)
            what, exc = verdict(seen, self._redis.exceptions)
            if what == "ok":
                return results
            if what == "down":
                raise exc
            if what == "noscript":
                load = self._cfg.scripts.load
                yield _Send(pack_commands(load), len(load), Exchange(), node)
                continue
            if what == "moved":
                yield _Refresh(manager)
            node, asking = self._redirect(what, exc, slot, manager)
        raise self._redis.exceptions.TryAgainError(f"slot {slot} kept moving")

    def _run_cluster(self, op: Op, progress: _Progress) -> Flow[None]:
        """Drive :meth:`_cluster_flow`: each step's commands routed, its replies sent back."""
        flow = self._cluster_flow(op, progress)
        try:
            commands = next(flow)
            while True:
                progress.pending = commands
                replies = yield from self._route(commands, progress)
                commands = flow.send(replies)
        except StopIteration:
            progress.pending = ()

    def _cluster_write(self, op: Op) -> Flow[bool]:
        progress = _Progress()
        try:
            yield from self._run_cluster(op, progress)
        except self._transient as exc:
            return self._cluster_broken(op, progress, exc)
        self._recovered()
        return self._after_cluster(op, progress)

    def _cluster_drain(self) -> Flow[bool]:
        """Replay buffered writes one flow at a time, in order (each goes to its nodes)."""
        while batch := self._buffer.take_batch(1):  # one flow in flight at a time
            for pending in batch:
                progress = _Progress()
                try:
                    yield from self._run_cluster(pending.op, progress)
                except self._transient as exc:
                    self._replay_broken(pending, progress)
                    self._trip(exc)
                    return False
                self._after_cluster(pending.op, progress)
                self._buffer.replayed([pending], 1, sent=False)
        self._recovered()
        return True

    # -- the runners: perform a flow's requests (sync, then the same with ``await``) --------
    def _run(self, flow: Flow[_T]) -> _T:
        try:
            request = next(flow)
            while True:
                try:
                    result = self._perform(request)
                except BaseException as exc:
                    request = flow.throw(exc)
                else:
                    request = flow.send(result)
        except StopIteration as done:
            value: _T = done.value
            return value

    async def _arun(self, flow: Flow[_T]) -> _T:
        try:
            request = next(flow)
            while True:
                try:
                    result = await self._aperform(request)
                except BaseException as exc:
                    request = flow.throw(exc)
                else:
                    request = flow.send(result)
        except StopIteration as done:
            value: _T = done.value
            return value

    def _perform(self, request: Any) -> Any:
        if isinstance(request, _Send):
            node = request.node
            pool = self._client.connection_pool if node is None else node_pool(node, is_async=False)
            return self._send(request.packed, request.expect, request.exchange, pool)
        if isinstance(request, _Stream):
            return self._stream_writes(request.ops, request.exchange)
        if isinstance(request, _Nodes):
            return self._client.nodes_manager
        return request.manager.initialize()  # _Refresh

    async def _aperform(self, request: Any) -> Any:
        if isinstance(request, _Send):
            node = request.node
            pool = self._aclient.connection_pool if node is None else node_pool(node, is_async=True)
            return await self._asend(request.packed, request.expect, request.exchange, pool)
        if isinstance(request, _Stream):
            return await self._astream_writes(request.ops, request.exchange)
        if isinstance(request, _Nodes):
            return (await self._aclient.initialize()).nodes_manager
        return await request.manager.initialize()  # _Refresh

    # The public methods' one-liners: a write or a read flow, run.
    def _do_write(self, op: Op) -> bool:
        return self._run(self._write(op))

    async def _ado_write(self, op: Op) -> bool:
        return await self._arun(self._write(op))

    def _do_query(self, commands: Sequence[Command]) -> list[Any] | None:
        return self._run(self._query(commands))

    async def _ado_query(self, commands: Sequence[Command]) -> list[Any] | None:
        return await self._arun(self._query(commands))

    # -- the I/O below the flows: one round trip on one pooled connection -------------------
    def _send(self, packed: bytes, count: int, exchange: Exchange, pool: Any = None) -> None:
        """Write ``packed`` at once and read ``count`` replies into ``exchange``: one round trip.

        Error replies come back in place as exception objects, except refused
        credentials (:class:`BackendAuthError`) and a Cluster node
        (:class:`ConfigError`), which raise. On any other failure the connection
        is dropped rather than returned half-read, and ``exchange`` holds what was
        answered before it. A connection error before any answer is tried once
        more on a fresh connection: after a server restart every pooled connection
        is dead, though Redis is back.
        """
        pool = self._client.connection_pool if pool is None else pool
        try:
            try:
                self._send_once(pool, packed, count, exchange)
            except self._connection_error as exc:
                if exchange.replies or self._is_auth_error(exc):
                    raise
                pool.disconnect(inuse_connections=False)
                self._send_once(pool, packed, count, exchange)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc

    def _send_once(self, pool: Any, packed: bytes, count: int, exchange: Exchange) -> None:
        conn = checkout(pool)  # a refused connection fails here: nothing was sent
        replies = exchange.replies
        try:
            exchange.sent = True
            conn.send_packed_command([packed])
            for _ in range(count):
                replies.append(self._check_reply(read_reply(conn, self._response_error)))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _query_packed(self, commands: Sequence[Command]) -> tuple[bytes, int]:
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else list(commands)
        return self._packed(wire, "read"), len(wire)

    async def _asend(self, packed: bytes, count: int, exchange: Exchange, pool: Any = None) -> None:
        """Async twin of :meth:`_send`."""
        pool = self._aclient.connection_pool if pool is None else pool
        try:
            try:
                await self._asend_once(pool, packed, count, exchange)
            except self._connection_error as exc:
                if exchange.replies or self._is_auth_error(exc):
                    raise
                await pool.disconnect(inuse_connections=False)
                await self._asend_once(pool, packed, count, exchange)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc

    async def _asend_once(self, pool: Any, packed: bytes, count: int, exchange: Exchange) -> None:
        conn = await acheckout(pool)
        replies = exchange.replies
        try:
            exchange.sent = True
            await conn.send_packed_command([packed])
            for _ in range(count):
                replies.append(self._check_reply(await aread_reply(conn, self._response_error)))
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    def _stream_writes(self, ops: Sequence[Op], exchange: Exchange) -> None:
        """Send ``ops`` in pipelined chunks, reading each chunk's answers while the next runs."""
        pool = self._client.connection_pool
        try:
            conn = checkout(pool)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc
        replies = exchange.replies
        try:
            # The scripts are loaded first so no EVALSHA can miss a restarted server's cache.
            load = self._cfg.scripts.load
            discard, in_flight = len(load), 0
            for start in range(0, len(ops), BATCH):
                chunk = ops[start : start + BATCH]
                packed = b"".join(op.packed for op in chunk)
                if start == 0:
                    packed = pack_commands(load) + packed
                exchange.sent_ops = start + len(chunk)
                conn.send_packed_command([packed])
                for _ in range(in_flight):  # the previous chunk's answers
                    replies.append(self._check_reply(read_reply(conn, self._response_error)))
                in_flight = len(chunk)
                if start == 0:
                    for _ in range(discard):
                        self._check_reply(read_reply(conn, self._response_error))
            for _ in range(in_flight):
                replies.append(self._check_reply(read_reply(conn, self._response_error)))
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    async def _astream_writes(self, ops: Sequence[Op], exchange: Exchange) -> None:
        """Async twin of :meth:`_stream_writes`."""
        pool = self._aclient.connection_pool
        try:
            conn = await acheckout(pool)
        except self._auth_errors as exc:
            raise self._auth_failed(exc) from exc
        replies = exchange.replies
        try:
            load = self._cfg.scripts.load
            discard, in_flight = len(load), 0
            for start in range(0, len(ops), BATCH):
                chunk = ops[start : start + BATCH]
                packed = b"".join(op.packed for op in chunk)
                if start == 0:
                    packed = pack_commands(load) + packed
                exchange.sent_ops = start + len(chunk)
                await conn.send_packed_command([packed])
                for _ in range(in_flight):
                    replies.append(self._check_reply(await aread_reply(conn, self._response_error)))
                in_flight = len(chunk)
                if start == 0:
                    for _ in range(discard):
                        self._check_reply(await aread_reply(conn, self._response_error))
            for _ in range(in_flight):
                replies.append(self._check_reply(await aread_reply(conn, self._response_error)))
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
