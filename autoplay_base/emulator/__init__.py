"""A real SSE connector emulator for tests, demos and notebooks.

``EmulatorServer`` serves ``GET /stream/{product_id}`` like the Autoplay event
connector, with replay, heartbeats, auth, scripted sessions, synthetic load and
fault injection, and push mode (signed webhooks, :mod:`~autoplay_base.emulator.push`).
Run it from the shell with ``autoplay-live emulator``.
``IngestReceiver`` is its counterpart for outbound tracking: ``POST /v1/batch``
with recording, dedupe and fault injection. Both are Starlette apps under
uvicorn: the ``emulator`` extra (their names are imported on first use, so the
rest of this package works without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoplay_base.emulator._types import (
    DEFAULT_COMMAND_PORT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_PRODUCTS,
    DEFAULT_REPLAY_SIZE,
    EMULATOR_TOKEN_ENV_VAR,
    EmulatorStats,
    Faults,
    RequestRecord,
)
from autoplay_base.emulator.generators import (
    DEFAULT_LOAD_RATE,
    DEFAULT_LOAD_SESSIONS,
    DEFAULT_REPEAT,
    DEFAULT_SPEED,
    SCRIPTS_DIR,
    Publisher,
    bad_frames,
    list_scripts,
    load_script,
    play_script,
    run_load,
    script_path,
    synthetic_payload,
)
from autoplay_base.emulator.push import (
    DEFAULT_PUSH_ATTEMPTS,
    DEFAULT_PUSH_BACKOFF,
    DEFAULT_PUSH_TIMEOUT,
    EMULATOR_WEBHOOK_SECRET_ENV_VAR,
    PushFaults,
    PushStats,
    WebhookPusher,
)
from autoplay_base.errors import missing_extra

if TYPE_CHECKING:
    from autoplay_base.emulator.receiver import (
        DEFAULT_INGEST_PATH,
        MAX_INGEST_BODY,
        IngestBatch,
        IngestReceiver,
        IngestRequest,
    )
    from autoplay_base.emulator.server import EmulatorServer

_SERVED = {
    "EmulatorServer": "autoplay_base.emulator.server",
    "DEFAULT_INGEST_PATH": "autoplay_base.emulator.receiver",
    "MAX_INGEST_BODY": "autoplay_base.emulator.receiver",
    "IngestBatch": "autoplay_base.emulator.receiver",
    "IngestReceiver": "autoplay_base.emulator.receiver",
    "IngestRequest": "autoplay_base.emulator.receiver",
}
"""The names that need Starlette and uvicorn (the ``emulator`` extra), imported on
first use: the defaults, scripts, faults and the pusher work without them, so the
``autoplay-live`` command starts (and its ``serve``/``demo`` errors name their own
extras) on a core install."""


def __getattr__(name: str) -> Any:
    module = _SERVED.get(name)
    if module is None:
        raise AttributeError(f"module 'autoplay_base.emulator' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:  # the optional ``emulator`` extra
        raise missing_extra((exc.name or "starlette").partition(".")[0], "emulator") from exc
    return getattr(loaded, name)


__all__ = [
    "DEFAULT_COMMAND_PORT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_HOST",
    "DEFAULT_INGEST_PATH",
    "DEFAULT_LOAD_RATE",
    "DEFAULT_LOAD_SESSIONS",
    "DEFAULT_PRODUCTS",
    "DEFAULT_PUSH_ATTEMPTS",
    "DEFAULT_PUSH_BACKOFF",
    "DEFAULT_PUSH_TIMEOUT",
    "DEFAULT_REPEAT",
    "DEFAULT_REPLAY_SIZE",
    "DEFAULT_SPEED",
    "EMULATOR_TOKEN_ENV_VAR",
    "EMULATOR_WEBHOOK_SECRET_ENV_VAR",
    "MAX_INGEST_BODY",
    "SCRIPTS_DIR",
    "EmulatorServer",
    "EmulatorStats",
    "Faults",
    "IngestBatch",
    "IngestReceiver",
    "IngestRequest",
    "Publisher",
    "PushFaults",
    "PushStats",
    "RequestRecord",
    "WebhookPusher",
    "bad_frames",
    "list_scripts",
    "load_script",
    "play_script",
    "run_load",
    "script_path",
    "synthetic_payload",
]
