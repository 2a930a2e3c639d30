"""The Redis backend's accounting: writes as values, counters, the breaker, errors.

:class:`Accounting` is what every flow of :class:`~._engine.Engine` calls once it
knows how a step went: it builds writes (:class:`Op`, packed once so that text
that cannot be encoded fails in the caller, never in the buffer), turns replies
into counters, opens and closes the breaker, translates failures (an outage,
refused credentials, a rejected command, a cluster node behind standalone
clients) into the errors, log lines and callbacks the backend documents, and
buffers what an outage leaves. No I/O: the lock, the clock of the breaker and
logging are all it touches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any, overload

from autoplay_base.backends.base import (
    ActionsWrite,
    BackendStats,
    ReadOptions,
    SessionKey,
    SessionView,
)
from autoplay_base.backends.redis._cluster import ClusterPlan
from autoplay_base.backends.redis._commands import (
    Settings,
    append_command,
    f,
    read_view,
    summary_command,
    write_counts,
)
from autoplay_base.backends.redis._layout import parse_member
from autoplay_base.backends.redis._outage import (
    NOT_APPLIED,
    UNKNOWN,
    DroppedWrite,
    OutageBuffer,
    Pending,
)
from autoplay_base.backends.redis._wire import Command, pack_commands
from autoplay_base.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailableError,
    ConfigError,
)

__all__ = ["Accounting", "Exchange", "Op"]

# Log records keep the backend's logger name (what users filter on).
logger = logging.getLogger("autoplay_base.backends.redis.backend")


@dataclass(frozen=True, slots=True)
class Op:
    """A write as commands, packed once when it is built; what to count once it ran.

    ``packed`` is the RESP of the commands (wrapped in MULTI/EXEC when there are
    several) and ``replies`` how many replies it yields. Packing at build time
    means a write that cannot be encoded fails in the caller, never later in the
    buffer, where it would block every write queued behind it.
    """

    kind: str
    commands: tuple[Command, ...]
    packed: bytes
    replies: int
    key: SessionKey | None = None
    event_id: str | None = None
    lines: int = 0
    user_id: str | None = None
    now: str = ""


class LazyOps(Sequence[Op]):
    """The ops of ``append_actions_many``, each built (packed) when first indexed.

    The stream builds a chunk just before it sends it, so Python builds chunk n+1
    while Redis runs chunk n; built ops are kept, so a failure's accounting sees
    the same objects. Only made once every write's text is known to be encodable
    (:meth:`Accounting._many_ops`): building one can then no longer fail midway.
    """

    __slots__ = ("_build", "_built", "_writes")

    def __init__(self, writes: Sequence[ActionsWrite], build: Callable[[ActionsWrite], Op]):
        self._writes = writes
        self._build = build
        self._built: list[Op] = []

    def __len__(self) -> int:
        return len(self._writes)

    @overload
    def __getitem__(self, index: int) -> Op: ...

    @overload
    def __getitem__(self, index: slice) -> list[Op]: ...

    def __getitem__(self, index: int | slice) -> Op | list[Op]:
        size = len(self)
        if isinstance(index, int):
            if not -size <= index < size:
                raise IndexError(index)
            return self._upto(index % size + 1)[index % size]
        start, stop, step = index.indices(size)
        if step != 1:  # not used by the stream: build them all, then slice as a list would
            return self._upto(size)[index]
        return self._upto(stop)[start:stop]

    def _upto(self, stop: int) -> list[Op]:
        """The built ops, at least the first ``stop`` of them."""
        built = self._built
        while len(built) < stop:
            built.append(self._build(self._writes[len(built)]))
        return built


def _encodable(writes: Sequence[ActionsWrite]) -> bool:
    """Whether every id and line of ``writes`` encodes as UTF-8 (no lone surrogate)."""
    texts: list[str] = []
    for write in writes:
        key = write.key
        texts += (key.product_id, key.session_id, write.event_id or "", write.user_id or "")
        texts += write.lines
    try:
        "".join(texts).encode()
    except UnicodeEncodeError:
        return False
    return True


class Exchange:
    """One round trip's progress: the replies read so far, and what went out.

    ``sent`` turns true just before the request is written (a failure after it
    leaves the request's fate unknown); ``sent_ops`` counts the writes of a
    pipelined ``append_actions_many`` handed to the socket so far.
    """

    __slots__ = ("replies", "sent", "sent_ops")

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.sent = False
        self.sent_ops = 0


_AUTH_CODES = ("WRONGPASS", "NOAUTH", "NOPERM")
_CLUSTER_CODES = ("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN")
_CLUSTER_SCRIPT_ERROR = "non local key in a cluster node"


def _error_code(exc: BaseException) -> str:
    """The error code of a redis-py error (``status_code`` when it parsed one, else the text)."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    text = str(exc)
    return text.split(" ", 1)[0] if text else ""


class Accounting:
    """Counters, breaker, error translation and buffering over one pair of clients.

    Args:
        client, aclient: the sync and async clients (both cluster clients, or neither).
        module: the ``redis`` package.
        cluster: whether they are cluster clients.
        cfg: what the command builders need (layout, bounds, TTLs).
        stats: the backend's counters (updated under the lock).
        where: how logs and errors name the server (never with credentials).
        max_buffered_writes, retry_interval_seconds, strict, on_error, on_drop, clock:
            the backend's options of the same names.
    """

    def __init__(
        self,
        client: Any,
        aclient: Any,
        *,
        module: Any,
        cluster: bool,
        cfg: Settings,
        stats: BackendStats,
        where: str,
        max_buffered_writes: int,
        retry_interval_seconds: float,
        strict: bool,
        on_error: Callable[[BackendError], None] | None,
        on_drop: Callable[[DroppedWrite], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self._redis = module
        self._cluster = cluster
        # Internal calls go through untyped aliases: redis-py's execute_command is untyped.
        self._client: Any = client
        self._aclient: Any = aclient
        self._cfg = cfg
        self._keys = cfg.keys
        self._plan: ClusterPlan = cfg.plan
        self.stats = stats
        self._where = where
        self.retry_interval_seconds = retry_interval_seconds
        self.strict = strict
        self.on_error = on_error
        self.on_drop = on_drop
        self._clock = clock
        exceptions = module.exceptions
        self._transient: tuple[type[BaseException], ...] = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            TimeoutError,
            OSError,
        )
        self._connection_error: type[Exception] = exceptions.ConnectionError
        self._response_error: type[Exception] = exceptions.ResponseError
        self._no_script: type[Exception] = exceptions.NoScriptError
        # Credentials refused: AuthenticationError and AuthorizationError subclass
        # ConnectionError, so they are told apart before anything counts as an outage.
        self._auth_errors: tuple[type[Exception], ...] = (
            exceptions.AuthenticationError,
            exceptions.AuthorizationError,
            exceptions.NoPermissionError,
            exceptions.AuthenticationWrongNumberOfArgsError,
        )
        self._cluster_errors: tuple[type[Exception], ...] = (
            exceptions.AskError,  # MovedError too
            exceptions.ClusterDownError,
            exceptions.ClusterCrossSlotError,
            exceptions.TryAgainError,
        )
        if cluster:
            # A slot whose node is gone, failing over or migrating is an outage of its keys.
            self._transient += (
                exceptions.ClusterDownError,
                exceptions.TryAgainError,
                exceptions.RedisClusterException,
            )
        self._lock = Lock()
        self._buffer: OutageBuffer[Op] = OutageBuffer(
            max_buffered_writes, lock=self._lock, count=self._count, report_drop=self._dropped
        )
        self._down_until = 0.0
        self._down = False
        self._last_failure: BaseException | None = None

    # -- command builders (pure but for counting what cannot be encoded) ------------------------
    def _packed(self, commands: Sequence[Command], what: str) -> bytes:
        """``commands`` in RESP; text that is not valid Unicode is a :class:`ConfigError`.

        A lone surrogate (``"\\ud800"`` is valid for ``json.loads``) cannot be sent
        to Redis: it is refused here, counted in ``redis_invalid_text`` and logged
        without the offending value, before any state changes or anything is buffered.
        """
        try:
            return pack_commands(commands)
        except UnicodeEncodeError as exc:
            with self._lock:
                self.stats.errors += 1
                self._count("redis_invalid_text")
            logger.warning(
                "redis backend: refused a %s holding text that is not valid Unicode", what
            )
            raise ConfigError(
                f"cannot send the {what} to Redis: an id or text holds a lone surrogate "
                f"(not valid Unicode) at position {exc.start}"
            ) from None

    def _op(
        self,
        kind: str,
        commands: tuple[Command, ...],
        key: SessionKey | None = None,
        event_id: str | None = None,
        lines: int = 0,
        *,
        user_id: str | None = None,
        now: str = "",
    ) -> Op:
        wire = [("MULTI",), *commands, ("EXEC",)] if len(commands) > 1 else list(commands)
        packed = self._packed(wire, f"{kind} write")
        return Op(kind, commands, packed, len(wire), key, event_id, lines, user_id, now)

    def _append_op(
        self,
        key: SessionKey,
        lines: Sequence[str],
        at: float,
        *,
        event_id: str | None,
        user_id: str | None,
        sent_at: float | None,
    ) -> Op:
        command = append_command(
            self._cfg, key, lines, at, event_id=event_id, user_id=user_id, sent_at=sent_at
        )
        return self._op("append", (command,), key, event_id, len(lines), user_id=user_id, now=f(at))

    def _summary_op(
        self,
        key: SessionKey,
        summary: str,
        *,
        replaces: int,
        at: float,
        event_id: str | None,
        sent_at: float | None,
    ) -> Op:
        command = summary_command(
            self._cfg, key, summary, replaces=replaces, at=at, event_id=event_id, sent_at=sent_at
        )
        return self._op("summary", (command,), key, event_id, now=f(at))

    # -- bookkeeping (pure, under the lock) --------------------------------------------------------
    @property
    def _in_flight(self) -> int:
        """Buffered writes at the head that the replay under way has sent."""
        return self._buffer.in_flight

    def _count(self, name: str, n: int = 1) -> None:
        extra = self.stats.extra
        extra[name] = extra.get(name, 0) + n

    def _after_write(self, op: Op, replies: Sequence[Any]) -> bool:
        """Account one executed write from its replies; ``False`` for a duplicate or an error."""
        failure = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failure is not None:
            self._rejected(op.kind, failure)
            return False
        if op.kind not in ("append", "summary"):
            return True
        stored, trimmed, expired, evicted, reused, resets = write_counts(replies[0])
        with self._lock:
            self.stats.sessions_expired += expired
            self.stats.sessions_evicted += evicted
            if not stored:
                self.stats.duplicate_events += 1
                return False
            self.stats.actions_trimmed += trimmed
            if reused:
                self._count("reused_ids")
            if resets:
                self._count("dedupe_resets")
            if op.kind == "append":
                self.stats.actions_stored += op.lines
            else:
                self.stats.summaries_stored += 1
        return True

    def _report(self, error: BackendError) -> None:
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                logger.exception("redis backend: on_error callback raised")

    def _tripped(self) -> bool:
        return time.monotonic() < self._down_until

    def _trip(self, exc: BaseException) -> None:
        """Open the breaker: calls skip Redis for ``retry_interval_seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + self.retry_interval_seconds
            self._last_failure = exc
            first = not self._down
            self._down = True
        if first:
            logger.warning(
                "redis backend: %s unreachable (%s); reads return empty, writes are buffered",
                self._where,
                type(exc).__name__,
            )

    def _failed(
        self, what: str, exc: BaseException | None, *, trip: bool = True
    ) -> BackendUnavailableError:
        """Count one operation that could not reach Redis and build the error to surface."""
        if exc is None:
            exc = self._last_failure
        elif trip:
            self._trip(exc)
        detail = type(exc).__name__ if exc is not None else "unknown"
        error = BackendUnavailableError(
            f"redis at {self._where} unavailable during {what}: {detail}"
        )
        error.__cause__ = exc
        kind = "write" if what == "write" else "read"
        with self._lock:
            self.stats.errors += 1
            self._count(f"redis_{kind}_errors")
        logger.debug("redis backend: %s", error)
        self._report(error)
        return error

    def _rejected(self, what: str, exc: Exception) -> BackendError:
        """Redis refused a command (a script error, a foreign key of the wrong type)."""
        error = BackendError(f"redis at {self._where} rejected the {what}: {exc}")
        error.__cause__ = exc
        with self._lock:
            self.stats.errors += 1
            self._count("redis_rejected")
        logger.error("redis backend: %s", error)
        self._report(error)
        return error

    def _is_auth_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._auth_errors) or (
            isinstance(exc, self._response_error) and _error_code(exc) in _AUTH_CODES
        )

    def _is_cluster_error(self, exc: BaseException) -> bool:
        return isinstance(exc, self._cluster_errors) or (
            isinstance(exc, self._response_error)
            and (_error_code(exc) in _CLUSTER_CODES or _CLUSTER_SCRIPT_ERROR in str(exc))
        )

    def _auth_failed(self, exc: BaseException) -> BackendAuthError:
        """Redis refused the credentials: a configuration error, never an outage.

        The message names the server (no credentials: ``describe_pool`` drops
        them) and the error class, never redis-py's text or the URL.
        """
        error = BackendAuthError(
            f"redis at {self._where} refused the credentials ({type(exc).__name__}): "
            "check the user, password and ACL permissions of the URL"
        )
        error.__cause__ = exc
        with self._lock:
            self.stats.errors += 1
            self._count("redis_auth_errors")
        logger.error("redis backend: %s", error)
        self._report(error)
        return error

    def _cluster_refused(self, detail: str) -> ConfigError:
        error = ConfigError(
            f"redis at {self._where} is a Redis Cluster node ({detail}) but the backend "
            "has standalone clients: use RedisBackend.from_url / from_cluster, or pass "
            "redis.cluster.RedisCluster clients"
        )
        with self._lock:
            self.stats.errors += 1
            self._count("redis_cluster_refused")
        logger.error("redis backend: %s", error)
        return error

    def _check_reply(self, reply: Any) -> Any:
        """An error reply that means misconfiguration raises; any other reply is returned.

        Refused credentials and a Cluster node are not outages: buffering or
        logging them would lose every write in silence.
        """
        if isinstance(reply, Exception):
            if self._is_auth_error(reply):
                raise self._auth_failed(reply) from reply
            if not self._cluster and self._is_cluster_error(reply):
                raise self._cluster_refused(_error_code(reply) or "cluster error") from reply
        return reply

    def _buffered(
        self, op: Op, exc: BaseException | None, *, trip: bool = True, sent: bool = False
    ) -> bool:
        """A write Redis did not take: buffer it (or raise in strict mode)."""
        error = self._failed("write", exc, trip=trip)
        if self.strict:
            raise error
        return self._enqueue(op, sent=sent)

    def _read_failed(self, exc: BaseException | None) -> None:
        """A read Redis did not answer: empty result (or raise in strict mode)."""
        error = self._failed("read", exc)
        if self.strict:
            raise error

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.info("redis backend: %s reachable again", self._where)

    def _enqueue(self, op: Op, *, sent: bool = False) -> bool:
        """Buffer a write (see :class:`~._outage.OutageBuffer` for what overflows)."""
        self._buffer.enqueue(op, sent=sent)
        return True

    def _dropped(self, pending: Pending[Op], reason: str) -> None:
        op = pending.op
        outcome = UNKNOWN if pending.sent else NOT_APPLIED
        logger.warning(
            "redis backend: dropped a buffered %s write (%s, %s, product=%r)",
            op.kind,
            reason,
            outcome,
            op.key.product_id if op.key else None,
        )
        if self.on_drop is not None:
            try:
                self.on_drop(DroppedWrite(op.kind, op.key, op.event_id, reason, outcome))
            except Exception:
                logger.exception("redis backend: on_drop callback raised")

    def _replayed(self, batch: list[Pending[Op]], exchange: Exchange) -> None:
        """Account the writes of ``batch`` that were answered and take them off the buffer.

        Replies start with one per SCRIPT LOAD, then each write's replies in order.
        When the replay broke off after it was sent, the writes without their
        full answer stay buffered, marked as sent: Redis may have applied them.
        """
        replies = exchange.replies
        position = len(self._cfg.scripts.load)
        done = 0
        for pending in batch:
            op = pending.op
            chunk = replies[position : position + op.replies]
            if len(chunk) < op.replies:
                break
            position += op.replies
            if op.replies > 1:
                exec_reply = chunk[-1]
                chunk = exec_reply if isinstance(exec_reply, list) else [exec_reply]
            self._after_write(op, chunk)
            done += 1
        self._buffer.replayed(batch, done, sent=exchange.sent)

    def _replay_packed(self, batch: list[Pending[Op]]) -> tuple[bytes, int]:
        # Scripts are loaded first: a restarted server has an empty script cache.
        load = self._cfg.scripts.load
        packed = pack_commands(load) + b"".join(pending.op.packed for pending in batch)
        return packed, len(load) + sum(pending.op.replies for pending in batch)

    @property
    def buffered_writes(self) -> int:
        """Writes waiting for Redis to come back."""
        return len(self._buffer)

    def _many_op(self, write: ActionsWrite) -> Op:
        return self._append_op(
            write.key,
            write.lines,
            write.at,
            event_id=write.event_id,
            user_id=write.user_id,
            sent_at=write.sent_at,
        )

    def _many_ops(self, writes: Sequence[ActionsWrite]) -> Sequence[Op]:
        """The ops of ``append_actions_many``: built as they are sent when every text encodes.

        Otherwise they are all built now, which raises the first bad write's
        :class:`ConfigError` (counted and logged by :meth:`_packed`): none is sent.
        """
        if _encodable(writes):
            return LazyOps(writes, self._many_op)
        return [self._many_op(write) for write in writes]

    def _settle(
        self, ops: Sequence[Op], exchange: Exchange, exc: BaseException | None
    ) -> list[bool]:
        """Account what Redis answered; buffer the rest (those sent as of unknown fate)."""
        replies = exchange.replies
        answered = zip(ops[: len(replies)], replies, strict=False)
        results = [self._after_write(op, [reply]) for op, reply in answered]
        return results + [
            self._buffered(op, exc, trip=False, sent=index < exchange.sent_ops)
            for index, op in enumerate(ops[len(replies) :], start=len(replies))
        ]

    def _account_read(self, replies: list[Any] | None, options: ReadOptions) -> SessionView | None:
        if replies is None:
            return None
        expired, view = read_view(replies[0], options)
        if expired:
            with self._lock:
                self.stats.sessions_expired += expired
        return view

    def _account_sessions(
        self, command: Command, replies: list[Any] | None
    ) -> tuple[list[SessionKey], Op | None]:
        """The live sessions, and in a cluster the drops of the expired ones (a write)."""
        if replies is None:
            return [], None
        if self._cluster:
            outcome = self._plan.outcome((command,), replies)
            expired, members = outcome.expired, replies[0][1]
            drops = self._op("index", outcome.drops) if outcome.drops else None
        else:
            (expired, members), drops = replies[0], None
        if expired:
            with self._lock:
                self.stats.sessions_expired += expired
        return [parse_member(m) for m in members], drops
