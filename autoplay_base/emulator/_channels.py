"""What the emulator has published: per-product replay rings of encoded SSE frames.

:class:`Channel` holds one product's frames with contiguous ids in a bounded
ring and tells a stream what it missed; :class:`Frame` encodes itself once,
leaving only a send-time ``forwarded_at`` stamp to format per connection.
No I/O here: the server wakes its writers and writes the bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from typing import Any

__all__ = ["Channel", "Frame", "now_stamp", "wire"]

_STAMP = b"\x00STAMP\x00"


def now_stamp() -> bytes:
    """The wall clock as a ``forwarded_at`` value on the wire."""
    return repr(time.time()).encode()


class Frame:
    """One published frame. ``stamp`` frames get ``forwarded_at`` set when sent."""

    __slots__ = ("data", "event", "id", "payload", "stamped", "wire")

    def __init__(self, frame_id: int, event: str, data: bytes, payload: dict[str, Any] | None):
        self.id = frame_id
        self.event = event
        self.data = data
        self.payload = payload
        self.wire: bytes | None = None if payload is not None else wire(event, frame_id, data)
        # The whole frame before and after the send-time stamp: only the clock is
        # formatted per send (and only once per batch of frames).
        self.stamped: tuple[bytes, bytes] | None = None
        if payload is not None and "forwarded_at" in payload:
            template = json.dumps({**payload, "forwarded_at": 0}, separators=(",", ":"))
            marker = '"forwarded_at":0'
            if template.count(marker) == 1:
                data = template.replace(marker, '"forwarded_at":' + _STAMP.decode()).encode()
                before, _, after = wire(event, frame_id, data).partition(_STAMP)
                self.stamped = (before, after)

    def body(self) -> bytes:
        """The frame's ``data`` alone (stamped now, if it is stamped): a webhook's body."""
        if self.payload is None:
            return self.data
        stamped = dict(self.payload)
        stamped["forwarded_at"] = time.time()
        return json.dumps(stamped, separators=(",", ":")).encode()

    def encode(self, now: bytes | None = None) -> bytes:
        """The frame's bytes on the wire, stamped with ``now`` (default: :func:`now_stamp`).

        A stream passes one ``now`` for the frames it sends in one write.
        """
        if self.wire is not None:
            return self.wire
        if self.stamped is not None:
            before, after = self.stamped
            return before + (now if now is not None else now_stamp()) + after
        return wire(self.event, self.id, self.body())


def wire(event: str, frame_id: int, data: bytes) -> bytes:
    """One SSE frame: ``event:``, ``id:``, a ``data:`` line per line of ``data``, a blank line."""
    lines = b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    return b"event: " + event.encode() + b"\nid: " + str(frame_id).encode() + b"\n" + lines + b"\n"


class Channel:
    """The frames of one product: contiguous ids in a bounded ring."""

    def __init__(self, replay_size: int) -> None:
        self.lock = threading.Lock()
        self.ring: deque[Frame] = deque(maxlen=replay_size)
        self.last_id = 0
        self.wakers: set[asyncio.Event] = set()
        self.wake_pending = False

    def append(self, event: str, data: bytes, payload: dict[str, Any] | None) -> int:
        """Add a frame with the next id; returns that id (caller holds :attr:`lock`)."""
        self.last_id += 1
        self.ring.append(Frame(self.last_id, event, data, payload))
        return self.last_id

    def since(self, after: int, limit: int) -> tuple[list[Frame], int]:
        """Frames with id > ``after`` (at most ``limit``) and how many were lost to the ring."""
        if not self.ring or after >= self.last_id:
            return [], 0
        first = self.ring[0].id
        gap = max(0, first - after - 1)
        start = max(after + 1, first) - first
        return list(itertools.islice(self.ring, start, start + limit)), gap
