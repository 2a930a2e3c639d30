"""The Redis transport: runs in Redis Streams, shared by every process on one server or cluster.

Keys are :class:`~autoplay_base.backends.redis._layout.RunLayout`'s (one stream per
run; a run's keys and its session's indexes in one slot). Commands are queued by
the builders below on a pipeline, so the sync and the async twin share them and
differ only by ``await pipe.execute()``.

* **Start** is one script in the session's slot: drop expired entries of the
  session's live index, refuse when another run is live and ``reject_if_live``,
  else index the run (live index, run index capped to ``max_runs``) and take the
  lease; then one command for the user's live index (its own slot).
* **The writer** (:mod:`._writer`) is one thread per transport for every live
  run of this process: woken by each emit, or every ``heartbeat_seconds`` when
  idle, it sends in one pipeline one call of the write script (one per slot on
  a Cluster) holding, for each run with something buffered (and once per
  heartbeat for every live run, idle ones too), the ``XADD`` of each buffered
  event (id ``0-<seq>``, ``MAXLEN ~``), then ``EXISTS`` of the run's cancel
  key; once per
  :func:`renew_seconds` (the renewal, every live run), the sliding ``PEXPIRE`` of
  the stream, the lease and the live indexes: a token between two renewals costs
  its ``XADD``, not five commands. A cancel request is thus seen at a
  streaming run's next write, within one heartbeat (25 ms by default) when idle,
  with no connection of its own: a pub/sub subscriber per process would shave
  that to one round trip but costs a connection and a thread per process and
  still needs this poll when a message is missed, so the poll is the one path.
  The terminal event goes in the run's last part, before the lease is dropped.
  A failed pipeline is retried in order (an ``XADD`` answered "ID equal or
  smaller" was applied by an attempt whose answer was lost); meanwhile emits
  coalesce or drop in the run's bounded buffer. At ``close`` the writer keeps
  trying until the deadline, then reports what it could not write as lost.
* **Listening** reads (``XRANGE`` after the cursor, with ``EXISTS`` of the lease
  read first, one pipeline) and, once a read reached the tail (a short page),
  blocks in ``XREAD BLOCK`` after the cursor, again after each wait that read
  something: the writer's ``XADD`` ends the wait at once, so an event reaches a
  listener in a few round trips, not a poll interval, and a streaming run costs
  its listener one ``XREAD`` per wake-up, not a second three-command read. A wait is
  bounded by ``poll_seconds`` (then the lease is read again: ``producer_lost``
  and expiry are noticed on time, and a sync listener's generator can be closed)
  and by half the client's ``socket_timeout`` (redis-py raises when a reply takes
  longer than it; :func:`block_seconds`). ``max_blocking_listeners`` bounds how
  many listeners of one stream wait at once; one beyond it sleeps
  ``poll_seconds`` and reads again (counted).

  *Async listeners on a standalone (or Sentinel) server share one reader*
  (:mod:`._reader`): one connection in one ``XREAD BLOCK`` over every waiting
  listener's stream and cursor, each stream's entries decoded once per batch and
  handed to its listeners. With 20 runs streaming, the writer's round trip that
  carries their tokens now wakes one read, not 20 (each ~100 µs of the event loop
  through ``redis.asyncio``: the loop was the bottleneck). A listener arriving
  while the reader blocks interrupts it (``CLIENT UNBLOCK``, one round trip).
  *Sync listeners and a Cluster keep one ``XREAD`` per waiting listener* on a
  pooled connection: a sync listener blocks its own thread anyway (a shared
  reader would need a thread and a handoff per event), and a multi-key ``XREAD``
  cannot span a Cluster's slots (a single-key one goes to the key's node).

Clock: lease deadlines in the live indexes are the producers' ``time.time()``
(milliseconds); the lease key itself expires by the server's clock.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from autoplay_base.agent_stream._events import TERMINAL, RunEvent
from autoplay_base.agent_stream._reader import UNDECODABLE, SharedReader
from autoplay_base.agent_stream._transport import LiveRun, Read, RunRef, SinkOwner, Started
from autoplay_base.agent_stream._writer import RedisSink, RedisWriter, Replies, WritePart
from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis._layout import RunLayout, parse_run_member, run_member
from autoplay_base.backends.redis._wire import xread_entries

__all__ = ["RENEWALS_PER_LEASE", "RedisTransport", "block_seconds", "renew_seconds"]

logger = logging.getLogger("autoplay_base.agent_stream")

_START = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
if ARGV[4] == '1' and #live > 0 then return {0, live} end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return {1, live}
"""
_APPLIED = "equal or smaller"  # XADD of an id already written: an earlier attempt applied it
# One call per round trip for all its runs (per slot on a Cluster), not one command
# per event: with 20 runs at 1,000 tokens/s the writer thread's per-command cost in
# redis-py (building, packing, parsing each reply) was 40% of the process's CPU
# (0.7 s in 1.8 s), on the GIL the listeners needed; one call per run cut it to
# 0.45 s, and one call for every run cut the writer's CPU per round trip by
# about three (redis-py's per-command cost paid once), and let the server wake
# the shared reader once per round trip with every run's entries, not after the
# first run's. KEYS: each run's stream and cancel key; ARGV: MAXLEN, then each
# run's event count and its events (id, type, ts, data). The answer: each run's
# cancel check (``EXISTS``) or its error (one run's failing part does not hold
# back the others); a single run's answer is not wrapped in a list. An event an
# earlier attempt applied is skipped (its answer was lost); any other error ends
# that run's part, and the part is retried.
_WRITE = """
local out, i = {}, 2
for k = 1, #KEYS, 2 do
  local last, r = i + 4 * tonumber(ARGV[i]), nil
  for j = i + 1, last, 4 do
    local x = redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', ARGV[1], ARGV[j],
      't', ARGV[j + 1], 'ts', ARGV[j + 2], 'd', ARGV[j + 3])
    if type(x) == 'table' and x.err and not string.find(x.err, 'APPLIED', 1, true) then
      r = x
      break
    end
  end
  i = last + 1
  out[#out + 1] = r or redis.call('EXISTS', KEYS[k + 1])
end
if #out == 1 then return out[1] end
return out
""".replace("APPLIED", _APPLIED)


_loads = json.JSONDecoder().decode

EVENTS_PER_CALL = 1_000
"""Events one write script call carries at most (unless one run's part alone is larger): a
round trip after an outage, every run's buffer full, stays as many commands of the size
one run's part had when each run had a call of its own (the server buffers a command whole)."""

KEYS_CACHED = 4096
"""Runs whose key names one transport keeps built (the live ones and their listeners')."""


class RunKeys(NamedTuple):
    """One run's key names (see ``RunLayout``) and the slot of its stream."""

    stream: str
    cancel: str
    lease: str
    live: str
    slot: int


BLOCK_SHARE = 0.5
"""The share of the client's ``socket_timeout`` one blocking read may use: the server answers
a ``BLOCK`` at its end, and the reply must still arrive before the socket gives up."""


RENEWALS_PER_LEASE = 3
"""How many renewals a lease spans: two may be late (a slow round trip, a retried
outage) before a live run's lease expires and its listeners see ``producer_lost``."""


def renew_seconds(lease_seconds: float, heartbeat_seconds: float) -> float:
    """How often the writer renews every live run: a third of the lease, at least a heartbeat."""
    return max(heartbeat_seconds, lease_seconds / RENEWALS_PER_LEASE)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _field_map(flat: Any) -> dict[Any, Any]:
    """An entry's fields from a raw reply (the shared reader's): ``[f1, v1, f2, v2, ...]``."""
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=False))


def _entry_type(entry: Any) -> Any:
    """The event type of one stream entry (``(id, fields)``), ``None`` when it has none."""
    try:
        fields = entry[1]
        return (fields if isinstance(fields, dict) else _field_map(fields)).get("t")
    except (TypeError, IndexError):
        return None


def block_seconds(client: Any) -> float:
    """The longest ``XREAD BLOCK`` ``client`` can wait without its ``socket_timeout`` firing.

    Standalone and Sentinel clients keep their connection options on the pool,
    a sync cluster client on its nodes manager, an async cluster client on itself.
    No timeout (``None``): unbounded here (``poll_seconds`` bounds each wait).
    """
    for holder in (
        getattr(client, "connection_pool", None),
        getattr(client, "nodes_manager", None),
        client,
    ):
        options = getattr(holder, "connection_kwargs", None)
        if isinstance(options, dict):
            timeout = options.get("socket_timeout")
            return float("inf") if timeout is None else float(timeout) * BLOCK_SHARE
    return float("inf")


class RedisTransport:
    """Runs in Redis (see the module docstring); built from a ``RedisBackend``'s clients."""

    def __init__(
        self,
        backend: Any,
        *,
        max_events: int,
        max_runs: int,
        retention_seconds: float,
        lease_seconds: float,
        heartbeat_seconds: float,
        poll_seconds: float,
        max_blocking_listeners: int,
        read_count: int,
        clock: Callable[[], float],
        on_write_error: Callable[[BaseException], None],
        on_undecodable: Callable[[], None],
        on_wait_error: Callable[[BaseException], None],
        on_slots_full: Callable[[], None],
    ) -> None:
        import redis  # noqa: PLC0415 - the backend exists, so the extra is installed

        self._client = backend.client
        self._aclient = backend.aclient
        cluster = isinstance(backend.client, redis.cluster.RedisCluster)
        self._keys = RunLayout(backend.prefix, cluster=cluster)
        # A round trip's write script is one call per slot (one for all runs off a Cluster).
        self._slot: Callable[[bytes], int] = redis.crc.key_slot if cluster else lambda key: 0
        # A run's key names, built once (not per round trip and per wait: escaping the
        # ids was half the cost of queueing a round trip); bounded like the live runs.
        self.run_keys = functools.lru_cache(maxsize=KEYS_CACHED)(self._run_keys)
        self.events_per_call = EVENTS_PER_CALL
        self.errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self.max_events = max_events
        self.max_runs = max_runs
        self.retention_ms = _ms(retention_seconds)
        self.lease_ms = _ms(lease_seconds)
        self.heartbeat_seconds = heartbeat_seconds
        self.renew_seconds = renew_seconds(lease_seconds, heartbeat_seconds)
        self.poll_seconds = poll_seconds
        self.max_blocking_listeners = max_blocking_listeners
        self._read_count = read_count
        self._sync_block = block_seconds(self._client)
        self._async_block = block_seconds(self._aclient)
        self._blocking = 0
        self._slots_lock = threading.Lock()
        self._clock = clock
        self._on_write_error = on_write_error
        self._on_undecodable = on_undecodable
        self._on_wait_error = on_wait_error
        self._on_slots_full = on_slots_full
        self._writer = RedisWriter(self)
        # Async listeners share one XREAD (see ._reader); a multi-key XREAD cannot span
        # a Cluster's slots, so there each listener keeps its own.
        self.reader: SharedReader | None = None
        if not isinstance(self._aclient, redis.asyncio.cluster.RedisCluster):
            self.reader = SharedReader(
                self._aclient,
                count=read_count,
                block_seconds=min(poll_seconds, self._async_block),
                decode=self._events,
                errors=self.errors,
                refused=(redis.exceptions.ResponseError,),
            )

    @property
    def client(self) -> Any:
        """The sync client (the writer's)."""
        return self._client

    def _run_keys(self, ref: RunRef) -> RunKeys:
        key, layout = SessionKey(ref.product_id, ref.session_id), self._keys
        stream = layout.run_stream(key, ref.run_id)
        return RunKeys(
            stream,
            layout.run_cancel(key, ref.run_id),
            layout.run_lease(key, ref.run_id),
            layout.session_live_runs(key),
            self._slot(stream.encode()),
        )

    # -- command builders (shared by both twins) ------------------------------------------
    def _start_args(self, ref: RunRef, reject_if_live: bool, now: float) -> list[Any]:
        keys = self._keys.start_keys(SessionKey(ref.product_id, ref.session_id), ref.run_id)
        args = [ref.run_id, int(now * 1000), self.lease_ms, int(reject_if_live), self.max_runs]
        return [_START, len(keys), *keys, *args, self.retention_ms]

    def _queue_user(self, pipe: Any, ref: RunRef, user_id: str, now: float, *, end: bool) -> None:
        key = self._keys.user_live_runs(ref.product_id, user_id)
        member = run_member(ref.session_id, ref.run_id)
        if end:
            pipe.zrem(key, member)
            return
        pipe.zremrangebyscore(key, "-inf", int(now * 1000))
        pipe.zadd(key, {member: int(now * 1000) + self.lease_ms})
        pipe.pexpire(key, self.retention_ms)

    def _queue_scripts(self, pipe: Any, parts: Sequence[WritePart]) -> list[tuple[int, int]]:
        """The write script calls of ``parts``, queued first: one per slot (standalone:
        one for all), split where a call would pass ``events_per_call``; for each part,
        where its answer is: ``(command index, index in the answer)``, the latter -1
        when the call holds that part alone (its answer is not a list)."""
        calls: dict[int, list[list[tuple[int, RunKeys]]]] = {}
        sizes: dict[int, int] = {}
        for n, part in enumerate(parts):
            run = self.run_keys(part.ref)
            chunks = calls.setdefault(run.slot, [[]])
            size = sizes.get(run.slot, 0) + len(part.batch)
            if chunks[-1] and size > self.events_per_call:
                chunks.append([])  # a part is never split: one run's events stay in order
                size = len(part.batch)
            chunks[-1].append((n, run))
            sizes[run.slot] = size
        where = [(0, -1)] * len(parts)
        for members in (chunk for chunks in calls.values() for chunk in chunks):
            keys: list[str] = []
            args: list[Any] = [self.max_events]
            for k, (n, run) in enumerate(members):
                keys += (run.stream, run.cancel)
                batch = parts[n].batch
                args.append(len(batch))
                for p in batch:
                    args += (f"0-{p.seq}", p.type, repr(p.ts), p.json)
                where[n] = (len(pipe), k if len(members) > 1 else -1)
            # Every round trip checks each run's cancel key: a streaming run sees a cancel
            # at its next write, an idle one at the next heartbeat. ``execute_command``: a
            # cluster pipeline has no ``eval`` (it routes EVAL by its first key).
            pipe.execute_command("EVAL", _WRITE, len(keys), *keys, *args)
        return where

    def _queue_after(self, pipe: Any, part: WritePart, now: float) -> None:
        """A part's commands after the scripts: its end (the terminal event is written by
        then: it lands before the lease goes) or its renewal."""
        keys, run_id = self.run_keys(part.ref), part.ref.run_id
        renew = part.renew and not part.final
        if part.final:
            pipe.pexpire(keys.stream, self.retention_ms)
            pipe.delete(keys.lease)
            pipe.zrem(keys.live, run_id)
            pipe.delete(keys.cancel)
        elif renew:
            pipe.pexpire(keys.stream, self.retention_ms)
            pipe.set(keys.lease, "1", px=self.lease_ms)
            pipe.zadd(keys.live, {run_id: int(now * 1000) + self.lease_ms})
        if part.user_id is not None and (renew or part.final):
            self._queue_user(pipe, part.ref, part.user_id, now, end=part.final)

    def _queue_read(self, pipe: Any, ref: RunRef, next_seq: int, count: int) -> None:
        keys = self.run_keys(ref)
        pipe.exists(keys.lease)  # first: see ListenState
        stream = keys.stream
        pipe.xrange(stream, min=f"0-{max(1, next_seq)}", max="+", count=count)
        # The newest entry rather than ``EXISTS``: the same one command says whether the
        # run is stored and whether it ended (see ``Read.ended``).
        pipe.xrevrange(stream, max="+", min="-", count=1)

    def _events(self, ref: RunRef, entries: Any) -> list[RunEvent]:
        """Stream entries as events; an undecodable one is skipped (counted, logged).

        The per-event path of every listener: names bound once per batch, the decoder's
        own ``decode`` (``json.loads`` adds its checks for bytes and a BOM, which a
        ``decode_responses`` client never hands over).
        """
        events: list[RunEvent] = []
        run_id, append, loads = ref.run_id, events.append, _loads
        for entry_id, fields in entries or ():
            try:
                found = fields if isinstance(fields, dict) else _field_map(fields)
                seq = int(str(entry_id).partition("-")[2])
                event = RunEvent(
                    f"{run_id}-{seq}",  # format_cursor's form, inline: once per event
                    seq,
                    str(found["t"]),
                    float(found["ts"]),
                    loads(found["d"]),
                    run_id,
                )
            except (ValueError, KeyError, TypeError):
                self._on_undecodable()
                logger.warning("run stream: skipped an undecodable entry of run %s", run_id)
                continue
            append(event)
        return events

    def _decode(self, ref: RunRef, replies: list[Any]) -> Read:
        newest = replies[2]
        ended = bool(newest) and _entry_type(newest[0]) in TERMINAL
        return Read(self._events(ref, replies[1]), bool(replies[0]), bool(newest), ended)

    # -- producer side ------------------------------------------------------------------------
    def start(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started:
        """Take the lease and index the run (see the module docstring)."""
        started, live = self._client.eval(*self._start_args(ref, reject_if_live, now))
        if started and user_id is not None:
            pipe = self._client.pipeline(transaction=False)
            self._queue_user(pipe, ref, user_id, now, end=False)
            pipe.execute()
        return Started(bool(started), [str(r) for r in live])

    async def astart(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started:
        """Async twin of :meth:`start`."""
        started, live = await self._aclient.eval(*self._start_args(ref, reject_if_live, now))
        if started and user_id is not None:
            pipe = self._aclient.pipeline(transaction=False)
            self._queue_user(pipe, ref, user_id, now, end=False)
            await pipe.execute()
        return Started(bool(started), [str(r) for r in live])

    def queue_writes(self, pipe: Any, parts: Sequence[WritePart]) -> Replies:
        """Queue one writer round trip (see :mod:`._writer`): the write script for every
        part (one call per slot), then each part's end or renewal; what it returns splits
        the pipeline's replies into each part's (its script answer first).

        ``renew`` (once per renewal) adds the stream's sliding expiry, the lease and the
        live indexes; between renewals a run's part is its ``XADD``s and its cancel check,
        inside the one script call.
        """
        now = self._clock()
        where = self._queue_scripts(pipe, parts)
        spans: list[tuple[int, int]] = []
        for part in parts:
            start = len(pipe)
            self._queue_after(pipe, part, now)
            spans.append((start, len(pipe)))

        def split(results: list[Any]) -> list[list[Any]]:
            out: list[list[Any]] = []
            for (at, index), (start, end) in zip(where, spans, strict=True):
                answer = results[at]
                if index >= 0 and not isinstance(answer, Exception):
                    answer = answer[index]
                out.append([answer, *results[start:end]])
            return out

        return split

    def write_result(self, results: list[Any], *, final: bool) -> bool:
        """Whether a cancel request waits for the run, from its part of the replies (the
        write script's first); raises the first error (the script skips the ``XADD``s an
        earlier attempt applied)."""
        for result in results:
            if isinstance(result, Exception):
                raise result
        return not final and bool(results[0])

    def sink(self, ref: RunRef, run: SinkOwner) -> RedisSink:
        """One run's place in this transport's writer (see :mod:`._writer`)."""
        return RedisSink(self._writer, ref, run)

    def write_failed(self, exc: BaseException) -> None:
        """Count and log a failed writer round trip (it will be retried)."""
        self._on_write_error(exc)

    # -- listener side ------------------------------------------------------------------------
    def read(self, ref: RunRef, next_seq: int, count: int) -> Read:
        """The lease, then up to ``count`` events from ``next_seq`` on, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        self._queue_read(pipe, ref, next_seq, count)
        return self._decode(ref, pipe.execute())

    async def aread(self, ref: RunRef, next_seq: int, count: int) -> Read:
        """Async twin of :meth:`read`."""
        pipe = self._aclient.pipeline(transaction=False)
        self._queue_read(pipe, ref, next_seq, count)
        return self._decode(ref, await pipe.execute())

    # -- waiting for the next event: XREAD BLOCK after the cursor ---------------------------
    def _block(
        self, ref: RunRef | None, timeout: float, next_seq: int | None, cap: float
    ) -> tuple[dict[str, str] | None, float]:
        """``(XREAD streams, seconds)`` for one wait (``cap``: the client's bound), or
        ``(None, timeout)`` to sleep instead.

        A blocked ``XREAD`` holds one pooled connection, so at most
        ``max_blocking_listeners`` block at once (a slot taken here, freed by
        :meth:`_unblock`); one past it, ``follow`` (no run yet) and a listener without a
        cursor sleep the interval instead (counted in ``listener_slots_full``).
        """
        if ref is None or next_seq is None:
            return None, timeout
        with self._slots_lock:
            if self._blocking >= self.max_blocking_listeners:
                taken = False
            else:
                self._blocking += 1
                taken = True
        if not taken:
            self._on_slots_full()
            return None, timeout
        return {self.run_keys(ref).stream: f"0-{max(0, next_seq - 1)}"}, min(timeout, cap)

    def _unblock(self) -> None:
        with self._slots_lock:
            self._blocking -= 1

    def _woken(self, ref: RunRef, reply: Any) -> list[RunEvent]:
        """The events an ``XREAD`` returned (any protocol: see ``xread_entries``)."""
        return self._events(ref, xread_entries(reply))

    def pause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]:
        """Block in ``XREAD`` until events after the cursor are written (or ``timeout``,
        capped below the client's ``socket_timeout``); the events it read, maybe none.

        Entries that decode to nothing (a foreign writer's) end the wait as soon as it
        starts, so the rest of it is slept: a listener never spins on them.
        """
        streams, seconds = self._block(ref, timeout, next_seq, self._sync_block)
        if streams is None:
            time.sleep(seconds)
            return []
        assert ref is not None
        try:
            reply = self._client.xread(streams, count=self._read_count, block=_ms(seconds))
        except self.errors as exc:
            # The read after the wait reports an outage; a wait that failed only waits.
            self._on_wait_error(exc)
            reply = exc
        finally:
            self._unblock()
        events = [] if isinstance(reply, BaseException) else self._woken(ref, reply)
        if reply and not events:  # failed, or entries that decode to nothing: no spinning
            time.sleep(seconds)
        return events

    async def apause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]:
        """Async twin of :meth:`pause`; on a standalone server the wait is one of the
        shared reader's (:mod:`._reader`), bounded by the same listener slots."""
        streams, seconds = self._block(ref, timeout, next_seq, self._async_block)
        if streams is None:
            await asyncio.sleep(seconds)
            return []
        assert ref is not None and next_seq is not None
        try:
            if self.reader is not None:
                [key] = streams
                got = await self.reader.wait(key, ref, next_seq, seconds)
                if isinstance(got, BaseException):
                    raise got
                reply: Any = got
            else:
                reply = await self._aclient.xread(
                    streams, count=self._read_count, block=_ms(seconds)
                )
        except self.errors as exc:
            self._on_wait_error(exc)
            reply = exc
        finally:
            self._unblock()
        if isinstance(reply, BaseException) or reply is UNDECODABLE:
            events: list[RunEvent] = []
        else:
            events = reply if self.reader is not None else self._woken(ref, reply)
        if (reply or reply is UNDECODABLE) and not events:  # failed, or nothing decodable
            await asyncio.sleep(seconds)
        return events

    def _live_key(self, product_id: str, session_id: str) -> str:
        return self._keys.session_live_runs(SessionKey(product_id, session_id))

    def live_runs(self, product_id: str, session_id: str, now: float) -> list[str]:
        """The session's runs whose lease deadline is ahead, oldest deadline first."""
        return [
            str(r)
            for r in self._client.zrangebyscore(
                self._live_key(product_id, session_id), int(now * 1000), "+inf"
            )
        ]

    async def alive_runs(self, product_id: str, session_id: str, now: float) -> list[str]:
        """Async twin of :meth:`live_runs`."""
        found = await self._aclient.zrangebyscore(
            self._live_key(product_id, session_id), int(now * 1000), "+inf"
        )
        return [str(r) for r in found]

    def _runs_key(self, product_id: str, session_id: str) -> str:
        return self._keys.session_runs(SessionKey(product_id, session_id))

    def runs(self, product_id: str, session_id: str) -> list[str]:
        """The session's indexed runs, in start order."""
        return [str(r) for r in self._client.zrange(self._runs_key(product_id, session_id), 0, -1)]

    async def aruns(self, product_id: str, session_id: str) -> list[str]:
        """Async twin of :meth:`runs`."""
        return [
            str(r)
            for r in await self._aclient.zrange(self._runs_key(product_id, session_id), 0, -1)
        ]

    def _queue_cancel(self, pipe: Any, refs: Sequence[RunRef]) -> None:
        for ref in refs:
            pipe.set(self.run_keys(ref).cancel, "1", px=self.retention_ms)

    def request_cancel(self, refs: Sequence[RunRef]) -> None:
        """Leave a cancel request each run's writer sees at its next heartbeat."""
        pipe = self._client.pipeline(transaction=False)
        self._queue_cancel(pipe, refs)
        pipe.execute()

    async def arequest_cancel(self, refs: Sequence[RunRef]) -> None:
        """Async twin of :meth:`request_cancel`."""
        pipe = self._aclient.pipeline(transaction=False)
        self._queue_cancel(pipe, refs)
        await pipe.execute()

    def _parse_live(self, members: list[Any]) -> list[LiveRun]:
        return [LiveRun(*parse_run_member(str(m))) for m in members]

    def live_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]:
        """The user's live runs (lease deadline ahead), from the user's own index: no scan."""
        key = self._keys.user_live_runs(product_id, user_id)
        return self._parse_live(self._client.zrangebyscore(key, int(now * 1000), "+inf"))

    async def alive_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]:
        """Async twin of :meth:`live_sessions`."""
        key = self._keys.user_live_runs(product_id, user_id)
        return self._parse_live(await self._aclient.zrangebyscore(key, int(now * 1000), "+inf"))
