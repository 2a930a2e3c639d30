"""The emulator's plain data: defaults, fault settings, request records and counters.

Below both :mod:`~autoplay_base.emulator.server` and
:mod:`~autoplay_base.emulator.generators`, so each can name them without
importing the other; free of Starlette, so the ``autoplay-live`` command can
build its help without the ``emulator`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from autoplay_base._counters import Counters

__all__ = [
    "CLOSE_MODES",
    "DEFAULT_COMMAND_PORT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HOST",
    "DEFAULT_PRODUCTS",
    "DEFAULT_REPLAY_SIZE",
    "EMULATOR_TOKEN_ENV_VAR",
    "Authorization",
    "CloseMode",
    "EmulatorStats",
    "Faults",
    "RequestRecord",
]

DEFAULT_HEARTBEAT_INTERVAL = 15.0
"""Seconds of silence after which a ``heartbeat`` frame is sent."""
DEFAULT_REPLAY_SIZE = 10_000
"""Frames kept per product for ``Last-Event-ID`` resumption."""
DEFAULT_HOST = "127.0.0.1"
"""The interface served by default: loopback, it is a test tool."""
DEFAULT_PRODUCTS = ("demo",)
"""Product ids served when none are named."""
DEFAULT_COMMAND_PORT = 8765
"""The port ``autoplay-live emulator`` listens on by default (the class picks a free one)."""
EMULATOR_TOKEN_ENV_VAR = "AUTOPLAY_EMULATOR_TOKEN"
"""Where ``autoplay-live emulator`` reads its bearer token when ``--token`` is not given.

Not the client's ``AUTOPLAY_APP_UNKEY_TOKEN``: a token the emulator requires is
a test value and must never be the real connector's."""

CloseMode = Literal["clean", "abort"]
"""How a fault ends a stream: the terminating chunk, or a cut TCP connection."""
CLOSE_MODES: tuple[CloseMode, ...] = get_args(CloseMode)
"""Every :data:`CloseMode`, in the order ``--close-mode`` lists them."""
Authorization = Literal["none", "valid", "invalid"]
"""What a request's ``Authorization`` header was: absent, the token, or anything else."""


@dataclass
class Faults:
    """Fault injection, changeable while the server runs (plain attribute writes).

    Attributes:
        close_every: end each stream after this many data frames (``None``: never).
        close_mode: ``"clean"`` sends the terminating chunk; ``"abort"`` cuts the
            TCP connection mid-stream.
        fail_next: answer the next N stream requests with ``fail_status``.
        fail_until: answer stream requests with ``fail_status`` until this
            ``time.monotonic()`` moment.
        fail_status: the status used by ``fail_next`` / ``fail_until``.
        replay_overlap: on ``Last-Event-ID`` resumption, also resend this many
            frames the client already has (to exercise client-side dedupe).
    """

    close_every: int | None = None
    close_mode: CloseMode = "clean"
    fail_next: int = 0
    fail_until: float = 0.0
    fail_status: int = 503
    replay_overlap: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the server answered (the token itself is never kept)."""

    path: str
    status: int
    last_event_id: str | None
    authorization: Authorization


class EmulatorStats(Counters):
    """Counters the server keeps; read them through :attr:`EmulatorServer.stats`.

    All only grow except ``streams_active``, the streams open right now.
    """

    # Not sorted: as_dict() lists the counters in this order, the one it always had.
    __slots__ = (  # noqa: RUF023
        "streams_opened",
        "streams_active",
        "frames_sent",
        "heartbeats_sent",
        "replayed",
        "replay_gaps",
        "fault_closes",
        "fault_statuses",
    )
    streams_opened: int
    streams_active: int
    frames_sent: int
    heartbeats_sent: int
    replayed: int
    replay_gaps: int
    fault_closes: int
    fault_statuses: int
