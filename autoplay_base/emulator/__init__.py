"""A real SSE connector emulator for tests, demos and notebooks.

``EmulatorServer`` serves ``GET /stream/{product_id}`` like the Autoplay event
connector, with replay, heartbeats, auth, scripted sessions, synthetic load and
fault injection, and push mode (signed webhooks, :mod:`~autoplay_base.emulator.push`).
Run it from the shell with ``autoplay-live emulator``.
``IngestReceiver`` is its counterpart for outbound tracking: ``POST /v1/batch``
with recording, dedupe and fault injection. Both are Starlette apps under
uvicorn: the ``emulator`` extra.
"""

from autoplay_base.errors import missing_extra

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # the optional ``emulator`` extra
    raise missing_extra(exc.name or "starlette", "emulator") from exc

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
from autoplay_base.emulator.receiver import (
    DEFAULT_INGEST_PATH,
    MAX_INGEST_BODY,
    IngestBatch,
    IngestReceiver,
    IngestRequest,
)
from autoplay_base.emulator.server import (
    DEFAULT_COMMAND_PORT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_PRODUCTS,
    DEFAULT_REPLAY_SIZE,
    EMULATOR_TOKEN_ENV_VAR,
    EmulatorServer,
    EmulatorStats,
    Faults,
    RequestRecord,
)

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
