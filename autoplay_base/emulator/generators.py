"""What the emulator streams: scripted sessions, synthetic load, and bad frames.

Scripts are recordings (:mod:`autoplay_base.recording`) with a ``delay`` per
line; the shipped ones live in ``autoplay_base/emulator/scripts/``:

* ``invite_team_member`` — a user keeps hitting the seat limit inviting a teammate;
* ``upgrade_billing_plan`` — a user upgrades Starter → Growth (annual), promo code fails;
* ``export_report`` — a user filters a pipeline report and hits the export row limit.

Played events get the target ``product_id`` and a ``forwarded_at`` stamped
when they are sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from autoplay_base.emulator._types import EmulatorStats
from autoplay_base.errors import ConfigError
from autoplay_base.recording import RecordedFrame, iter_frames

__all__ = [
    "DEFAULT_LOAD_RATE",
    "DEFAULT_LOAD_SESSIONS",
    "DEFAULT_REPEAT",
    "DEFAULT_SPEED",
    "SCRIPTS_DIR",
    "Publisher",
    "bad_frames",
    "list_scripts",
    "load_script",
    "play_script",
    "run_load",
    "script_path",
    "synthetic_payload",
]

SCRIPTS_DIR = Path(__file__).parent / "scripts"
"""Where the shipped session scripts live."""
DEFAULT_SPEED = 1.0
"""Script pace multiplier: the recorded pace."""
DEFAULT_REPEAT = 1
"""Passes over a script (``0``: forever)."""
DEFAULT_LOAD_SESSIONS = 10
"""Sessions synthetic load spreads its events over."""
DEFAULT_LOAD_RATE = 100.0
"""Synthetic load's events per second (``<= 0``: as fast as possible)."""

_LOAD_ACTIONS = (
    ("Dashboard", "Viewed the Dashboard page", "/dashboard"),
    ("Reports", "Opened Reports from the sidebar", "/reports"),
    ("Export button", "Clicked Export", "/reports/weekly-pipeline"),
    ("Billing", "Opened Settings > Billing", "/settings/billing"),
    ("Invite member button", "Clicked Invite member", "/settings/team"),
    ("Search", "Searched for 'invoice'", "/search"),
)


class Publisher(Protocol):
    """What the generators need from a server (:class:`~autoplay_base.emulator.EmulatorServer`).

    A protocol rather than the class, so this module does not import the server
    that schedules it: the server imports the generators, never the reverse.
    """

    @property
    def stats(self) -> EmulatorStats:
        """The server's counters (``streams_active`` for ``wait_for_client``)."""

    def publish(
        self,
        product_id: str,
        payload: Mapping[str, Any],
        *,
        event: str | None = None,
        stamp: bool = False,
    ) -> str:
        """Queue a JSON payload to every stream of ``product_id``; returns its id."""

    def publish_raw(self, product_id: str, data: str | bytes, *, event: str = "actions") -> str:
        """Queue a frame whose data is sent verbatim; returns its id."""

    async def await_for(
        self, predicate: Callable[[EmulatorStats], bool], timeout: float = 5.0
    ) -> bool:
        """Wait until ``predicate(stats)`` holds (``False`` on timeout)."""


def list_scripts() -> list[str]:
    """Names of the shipped scripts (file stems), sorted."""
    return sorted(path.stem for path in SCRIPTS_DIR.glob("*.jsonl"))


def script_path(script: str | Path) -> Path:
    """Resolve a shipped script name or a path to a ``.jsonl`` file."""
    candidate = Path(script)
    if candidate.suffix == ".jsonl" and candidate.exists():
        return candidate
    shipped = SCRIPTS_DIR / f"{script}.jsonl"
    if shipped.exists():
        return shipped
    raise ConfigError(f"unknown script {str(script)!r}; shipped: {', '.join(list_scripts())}")


def load_script(script: str | Path) -> list[RecordedFrame]:
    """Read a script (name or path) into memory."""
    return list(iter_frames(script_path(script)))


def bad_frames() -> Iterator[tuple[str, bytes]]:
    """An endless cycle of ``(reason, data)`` frames a client must reject and survive."""
    oversized = json.dumps({"type": "actions", "padding": "x" * (300 * 1024)}).encode()
    return itertools.cycle(
        [
            ("not_json", b"{this is not json"),
            ("not_object", b"[1, 2, 3]"),
            ("invalid", b'{"type": "actions", "product_id": "p"}'),
            ("oversized", oversized),
        ]
    )


async def play_script(
    server: Publisher,
    product_id: str,
    script: str | Path,
    *,
    speed: float = DEFAULT_SPEED,
    repeat: int = DEFAULT_REPEAT,
    session_suffix: str | None = None,
) -> int:
    """Publish a script's frames to ``product_id`` at its pace; returns frames published.

    Args:
        speed: pace multiplier (``2.0`` is twice as fast; ``0`` or ``inf`` sends
            without waiting).
        repeat: how many times to play it (``0``: forever); each pass appends
            ``-<n>`` to session ids so passes are separate sessions.
        session_suffix: appended to every session id (to run a script twice at once).
    """
    frames = load_script(script)
    published = 0
    passes = itertools.count(1) if repeat == 0 else range(1, repeat + 1)
    for n in passes:
        for frame in frames:
            if frame.delay > 0 and 0 < speed < float("inf"):
                await asyncio.sleep(frame.delay / speed)
            payload = dict(frame.data)
            payload["product_id"] = product_id
            session = payload.get("session_id")
            if isinstance(session, str):
                suffix = (session_suffix or "") + (f"-{n}" if repeat != 1 else "")
                payload["session_id"] = session + suffix
            server.publish(product_id, payload, event=frame.event, stamp=True)
            published += 1
    return published


def synthetic_payload(product_id: str, session_index: int, seq: int) -> dict[str, Any]:
    """One synthetic ``actions`` payload (``forwarded_at`` is stamped at send time)."""
    title, description, path = _LOAD_ACTIONS[seq % len(_LOAD_ACTIONS)]
    return {
        "type": "actions",
        "product_id": product_id,
        "session_id": f"load_{session_index:05d}",
        "user_id": f"usr_load_{session_index:05d}",
        "actions": [
            {
                "title": title,
                "description": f"{description} (#{seq})",
                "canonical_url": f"https://app.flowdesk.io{path}",
            }
        ],
        "count": 1,
        "forwarded_at": 0.0,
    }


async def run_load(
    server: Publisher,
    product_id: str,
    *,
    sessions: int = DEFAULT_LOAD_SESSIONS,
    rate: float = DEFAULT_LOAD_RATE,
    total: int | None = None,
    duration: float | None = None,
    malformed_every: int | None = None,
    wait_for_client: bool = False,
) -> int:
    """Publish synthetic events round-robin over ``sessions`` at ``rate`` events/s.

    Stops after ``total`` events or ``duration`` seconds (whichever first;
    neither: runs until cancelled). ``rate <= 0`` publishes as fast as possible.
    ``malformed_every=K`` adds a bad frame (cycling through
    :func:`bad_frames`) after every K events. With ``wait_for_client`` the
    load starts once a stream is open. Returns the good events published.
    """
    if sessions < 1:
        raise ConfigError(f"sessions must be >= 1, got {sessions!r}")
    if wait_for_client:
        while server.stats.streams_active == 0:
            await server.await_for(lambda s: s.streams_active > 0, timeout=3600)
    loop = asyncio.get_running_loop()
    bad = bad_frames()
    start = loop.time()
    deadline = None if duration is None else start + duration
    sent = 0
    while total is None or sent < total:
        now = loop.time()
        if deadline is not None and now >= deadline:
            break
        if rate > 0:
            due = int((now - start) * rate) + 1
            if sent >= due:
                await asyncio.sleep((sent + 1) / rate - (now - start))
                continue
        else:
            due = sent + 256
        if total is not None:
            due = min(due, total)
        while sent < due:
            server.publish(
                product_id, synthetic_payload(product_id, sent % sessions, sent), stamp=True
            )
            sent += 1
            if malformed_every and sent % malformed_every == 0:
                _, data = next(bad)
                server.publish_raw(product_id, data)
        if rate <= 0:
            await asyncio.sleep(0)
    return sent
