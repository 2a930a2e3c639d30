"""One shared ``XREAD BLOCK`` for every waiting async listener of a Redis transport.

Why: a process serving 20 live runs had 20 listeners each blocked in its own
``XREAD`` on its own pooled connection; the producers of a web worker's runs emit
at the same moments and the writer sends them in one round trip, so each such
round trip woke 20 reads through ``redis.asyncio`` (~100 µs of the event loop each),
which cost the loop more than the writer and made it the bottleneck (token latency
p99 10-24 ms at 20 runs). The reader holds one connection in one ``XREAD`` over
every waiting listener's stream and cursor, decodes each stream's entries once per
batch and hands each listener its events (a future): one wake-up of the connection
for all of them.

Rules:

* A listener registers its stream and cursor for one wait (``wait``); the reader
  reads after the lowest cursor of each stream, and resolves a waiter with its
  events (the ones from its cursor on). Entries after its cursor that decode to
  nothing resolve it with none (``UNDECODABLE``: it sleeps, it never spins).
* A listener arriving while the reader blocks interrupts the block with ``CLIENT
  UNBLOCK`` from a pooled connection (one round trip), so its first entry is not
  a whole block late. After handing out a batch, the reader lets the loop run once
  before it blocks again: the woken listeners register again in that pass and need
  no interruption.
* A wait ends by the listener's own timeout (or its cancellation): it is simply
  removed; the reader serves the others. With no waiter left the reader ends and
  the next wait starts it again, on the loop of that wait.
* Where the server's ACL refuses ``CLIENT`` commands (``CLIENT ID``, ``CLIENT
  UNBLOCK``), the reader still shares its read but cannot be interrupted: a listener
  arriving mid-block waits that block out (at most ``block_seconds``). Logged once
  per reader; ``unblock_refused`` says so.
* A failed read resolves every waiter with the error (each listener counts it,
  sleeps its wait out and reads again: the outage is reported by that read); the
  reader then ends, so nothing spins while Redis is down.

A Redis Cluster keeps one ``XREAD`` per listener (a multi-key ``XREAD`` cannot span
slots), and so does the sync twin (its listeners block their own threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from autoplay_base.agent_stream._events import RunEvent
from autoplay_base.agent_stream._transport import RunRef
from autoplay_base.backends.redis._wire import pack_commands, xread_streams

__all__ = ["UNDECODABLE", "SharedReader"]

logger = logging.getLogger("autoplay_base.agent_stream")

UNDECODABLE: list[RunEvent] = []
"""What a waiter receives when entries after its cursor decoded to nothing (identity-checked)."""

Decode = Callable[[RunRef, Any], list[RunEvent]]
Outcome = list[RunEvent] | BaseException


class _Waiter:
    __slots__ = ("future", "next_seq", "ref")

    def __init__(self, ref: RunRef, next_seq: int, future: asyncio.Future[Outcome]) -> None:
        self.ref = ref
        self.next_seq = next_seq
        self.future = future


def _seq(entry_id: Any) -> int:
    try:
        return int(str(entry_id).partition("-")[2])
    except ValueError:
        return 0


def _expire(future: asyncio.Future[Outcome]) -> None:
    if not future.done():
        future.set_result([])


class SharedReader:
    """The shared ``XREAD`` of one async client on one event loop (see the module docstring)."""

    def __init__(
        self,
        aclient: Any,
        *,
        count: int,
        block_seconds: float,
        decode: Decode,
        errors: tuple[type[BaseException], ...],
        refused: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._aclient = aclient
        self._refused = refused
        self._count = count
        self._block_ms = max(1, int(block_seconds * 1000))
        self._decode = decode
        self._errors = errors
        self._waiting: dict[str, list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None  # the reader's own connection (a single-connection client)
        self._conn_id: int | None = None
        self._blocked = False
        self._unblocking = False
        self._unblocker: asyncio.Task[None] | None = None
        self.reads = 0
        """``XREAD`` calls made (for tests and figures)."""
        self.unblock_refused = False
        """Whether the server refused ``CLIENT ID`` (an ACL): the read cannot be interrupted."""

    @property
    def running(self) -> bool:
        """Whether the reader's task is alive (it ends once no listener waits)."""
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        """Listeners waiting now."""
        return sum(len(w) for w in self._waiting.values())

    async def wait(self, key: str, ref: RunRef, next_seq: int, timeout: float) -> Outcome:
        """The events of ``key`` from ``next_seq`` on once written ([] after ``timeout``),
        :data:`UNDECODABLE`, or the error the shared read raised."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (the old one ended): its reader went with it
            self._loop, self._task, self._conn, self._conn_id = loop, None, None, None
            self._waiting = {}
        waiter = _Waiter(ref, next_seq, loop.create_future())
        self._waiting.setdefault(key, []).append(waiter)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="autoplay-run-reader")
        elif self._blocked and not self._unblocking:
            self._unblocking = True
            self._unblocker = loop.create_task(self._unblock())
        # A timer on the future itself, not ``wait_for``: its extra hops through the loop
        # would wake the listener after the reader blocked again (one unblock each).
        expiry = loop.call_later(timeout, _expire, waiter.future)
        try:
            return await waiter.future
        finally:
            expiry.cancel()
            self._forget(key, waiter)

    def _forget(self, key: str, waiter: _Waiter) -> None:
        waiters = self._waiting.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiting[key]

    async def _unblock(self) -> None:
        """End the reader's block so that it reads again with the listener just arrived."""
        try:
            if self._blocked and self._conn_id is not None:
                await self._aclient.client_unblock(self._conn_id)
        except self._errors:
            pass  # the reader's own read reports an outage; the newcomer waits its bound out
        finally:
            self._unblocking = False

    async def _run(self) -> None:
        try:
            while self._waiting:
                reply = await self._read()
                if isinstance(reply, BaseException):
                    self._fail(reply)
                    return
                self._deliver(reply)
                # Let the woken listeners run (and register again) before blocking anew.
                await asyncio.sleep(0)
        finally:
            await self._close()

    async def _read(self) -> Any:
        streams = {
            key: f"0-{max(0, min(w.next_seq for w in waiters) - 1)}"
            for key, waiters in self._waiting.items()
        }
        try:
            if self._conn is None:
                self._conn = self._aclient.client()
                self._conn_id = await self._client_id()
            # The command on the reader's own connection, its reply as hiredis decoded it:
            # no redis-py XREAD wrapper (retries, response callbacks, a RESP3 reply made
            # RESP2-like, a dict per entry), about 3% of the listeners' process at 20,000
            # events/s. ``xread_streams`` and the decoder take every shape.
            connection = self._conn.connection
            if connection is None:  # CLIENT ID made it; a refused one too
                await self._conn.initialize()
                connection = self._conn.connection
            command = ("XREAD", "COUNT", self._count, "BLOCK", self._block_ms, "STREAMS")
            packed = pack_commands([(*command, *streams, *streams.values())])
            self.reads += 1
            self._blocked = True
            try:
                await connection.send_packed_command(packed)
                return await connection.read_response()
            finally:
                self._blocked = False
        except self._errors as exc:
            await self._close()
            return exc

    async def _client_id(self) -> int | None:
        """The reader connection's id for ``CLIENT UNBLOCK``; ``None`` where it is refused."""
        try:
            return int(await self._conn.client_id())
        except self._refused as exc:
            if not self.unblock_refused:
                self.unblock_refused = True
                logger.warning(
                    "run stream reader: CLIENT ID refused (%s); a listener arriving during a "
                    "shared read waits it out (up to %.2f s)",
                    type(exc).__name__,
                    self._block_ms / 1000,
                )
            return None

    def _deliver(self, reply: Any) -> None:
        for key, entries in xread_streams(reply):
            waiters = self._waiting.get(key)
            if not waiters or not entries:
                continue
            events = self._decode(waiters[0].ref, entries)  # once per stream and batch
            last = _seq(entries[-1][0])
            for waiter in list(waiters):
                mine = [e for e in events if e.seq >= waiter.next_seq]
                if mine:
                    self._resolve(key, waiter, mine)
                elif last >= waiter.next_seq:  # entries after its cursor, none decodable
                    self._resolve(key, waiter, UNDECODABLE)

    def _resolve(self, key: str, waiter: _Waiter, outcome: Outcome) -> None:
        if not waiter.future.done():
            waiter.future.set_result(outcome)
        self._forget(key, waiter)

    def _fail(self, exc: BaseException) -> None:
        for key, waiters in list(self._waiting.items()):
            for waiter in list(waiters):
                self._resolve(key, waiter, exc)

    async def _close(self) -> None:
        conn, self._conn, self._conn_id = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(*self._errors):
                await conn.aclose()
