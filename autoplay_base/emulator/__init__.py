"""A real SSE connector emulator for tests, demos and notebooks.

``EmulatorServer`` serves ``GET /stream/{product_id}`` like the Autoplay event
connector, with replay, heartbeats, auth, scripted sessions, synthetic load and
fault injection. Run it from the shell with ``autoplay-live emulator``.
"""

from autoplay_base.emulator.generators import (
    SCRIPTS_DIR,
    bad_frames,
    list_scripts,
    load_script,
    play_script,
    run_load,
    script_path,
    synthetic_payload,
)
from autoplay_base.emulator.server import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_REPLAY_SIZE,
    EmulatorServer,
    EmulatorStats,
    Faults,
    RequestRecord,
)

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_REPLAY_SIZE",
    "SCRIPTS_DIR",
    "EmulatorServer",
    "EmulatorStats",
    "Faults",
    "RequestRecord",
    "bad_frames",
    "list_scripts",
    "load_script",
    "play_script",
    "run_load",
    "script_path",
    "synthetic_payload",
]
