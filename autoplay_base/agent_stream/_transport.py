"""What a run stream transport offers (in-process or Redis): the types both share.

A transport stores runs; it knows nothing about emit helpers or terminal rules
(``stream.py``) nor about which events a listener yields (``_state.ListenState``).
Sync and async methods are twins (``read``/``aread``, ...); the writer side
(:class:`Sink`) is sync on both twins because it runs off the agent's path
(inline in-process, on a background thread for Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from autoplay_base.agent_stream._events import RunEvent
from autoplay_base.agent_stream._state import Pending

__all__ = ["LiveRun", "Read", "RunRef", "Sink", "Started", "Transport"]


class RunRef(NamedTuple):
    """One run in its scope: a run id opens nothing without its product and session."""

    product_id: str
    session_id: str
    run_id: str


class LiveRun(NamedTuple):
    """A run that is live right now (its producer's lease is current)."""

    session_id: str
    run_id: str


class Read(NamedTuple):
    """One listener read: ``live`` is read before ``events`` (see ``ListenState``).

    ``ended``: the run's newest stored event is its terminal one. With no events
    after the cursor and no lease, that tells a run that ended (the listener's cursor
    is at its end) from one whose producer died.
    """

    events: list[RunEvent]
    live: bool
    exists: bool
    ended: bool = False


class Started(NamedTuple):
    """What starting a run found: whether it started, and the runs live before it."""

    started: bool
    live: list[str]


class Sink(Protocol):
    """Where one run's buffered events go: ``notify`` after each emit, never blocking."""

    def notify(self) -> None:
        """Events were buffered (O(1): write inline in-process, wake the writer for Redis)."""

    def close(self, timeout: float) -> bool:
        """Write what is left, the terminal event last; False when some of it was lost."""


class Transport(Protocol):
    """The storage of runs (see the module docstring)."""

    def start(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started: ...
    async def astart(
        self, ref: RunRef, *, user_id: str | None, reject_if_live: bool, now: float
    ) -> Started: ...
    def sink(self, ref: RunRef, run: SinkOwner) -> Sink: ...
    def read(self, ref: RunRef, next_seq: int, count: int) -> Read: ...
    async def aread(self, ref: RunRef, next_seq: int, count: int) -> Read: ...
    def pause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]:
        """Return once ``ref`` may have an event from ``next_seq`` on (or it ended), or after
        ``timeout``; ``ref=None`` (``follow``) or no ``next_seq``: after the next write.
        Returns the events the wait itself read (Redis: ``XREAD``), in no need of a read."""

    async def apause(
        self, ref: RunRef | None, timeout: float, next_seq: int | None = None
    ) -> list[RunEvent]: ...
    def live_runs(self, product_id: str, session_id: str, now: float) -> list[str]: ...
    async def alive_runs(self, product_id: str, session_id: str, now: float) -> list[str]: ...
    def runs(self, product_id: str, session_id: str) -> list[str]: ...
    async def aruns(self, product_id: str, session_id: str) -> list[str]: ...
    def request_cancel(self, refs: Sequence[RunRef]) -> None: ...
    async def arequest_cancel(self, refs: Sequence[RunRef]) -> None: ...
    def live_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]: ...
    async def alive_sessions(self, product_id: str, user_id: str, now: float) -> list[LiveRun]: ...


class SinkOwner(Protocol):
    """What a sink needs from its run: the buffer to drain and a way to report a cancel."""

    @property
    def user_id(self) -> str | None: ...
    def drain(self) -> list[Pending]: ...
    @property
    def ended(self) -> bool: ...
    def mark_cancelled(self) -> None: ...
    def lost(self, count: int, reason: str) -> None: ...
