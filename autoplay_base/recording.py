"""Recorded streams: one JSON line per SSE frame, shared by the emulator, loader and reader.

The format (``.jsonl``)::

    {"id": "17", "event": "actions", "data": {"type": "actions", "product_id": "acme", ...}}
    {"id": null, "event": "summary", "data": {"type": "summary", ...}}

``id`` is the SSE id (or ``null``), ``event`` the SSE event type and ``data``
the payload object. Emulator scripts are recordings with an extra ``delay``
key (seconds after the previous line); readers ignore keys they do not know.

* :func:`iter_recording` reads a file back as typed events;
* :class:`RecordingWriter` appends events as they arrive (a client callback);
* :func:`record_stream` / :func:`arecord_stream` save a live stream window.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from autoplay_base._connection import HEARTBEAT_EVENT
from autoplay_base.errors import EventDecodeError
from autoplay_base.events import Event, UnknownEvent, decode_event
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events

__all__ = [
    "RecordedFrame",
    "RecordingWriter",
    "arecord_stream",
    "event_to_record",
    "iter_frames",
    "iter_recording",
    "record_stream",
]

logger = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class RecordedFrame:
    """One line of a recording, not yet validated as an event."""

    id: str | None
    event: str
    data: dict[str, Any]
    delay: float = 0.0
    line: int = 0


def iter_frames(path: StrPath) -> Iterator[RecordedFrame]:
    """Yield the raw frames of a recording, in file order (blank lines skipped).

    Raises:
        EventDecodeError: a line is not a JSON object with an object ``data``
            (``reason="not_json"`` / ``"not_object"``); the message names the line.
    """
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EventDecodeError(
                    f"{Path(path).name} line {number}: not valid JSON ({exc.msg})",
                    reason="not_json",
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
                raise EventDecodeError(
                    f"{Path(path).name} line {number}: expected an object with an object 'data'",
                    reason="not_object",
                )
            data: dict[str, Any] = record["data"]
            raw_id = record.get("id")
            event = record.get("event") or data.get("type") or "message"
            yield RecordedFrame(
                id=None if raw_id is None else str(raw_id),
                event=str(event),
                data=data,
                delay=float(record.get("delay") or 0.0),
                line=number,
            )


def iter_recording(path: StrPath, *, skip_invalid: bool = False) -> Iterator[Event]:
    """Yield the events of a recording as typed events, in file order.

    Each frame's ``data`` goes through :func:`~autoplay_base.events.decode_event`
    with the recorded id as ``event_id``; ``heartbeat`` frames are skipped.

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: log and skip frames that are not valid events instead of
            raising (the count is logged at the end).

    Raises:
        EventDecodeError: a line or frame is invalid and ``skip_invalid`` is false.
    """
    skipped = 0
    for frame in iter_frames(path):
        if frame.event == HEARTBEAT_EVENT:
            continue
        try:
            yield decode_event(json.dumps(frame.data), event_id=frame.id)
        except EventDecodeError as exc:
            if not skip_invalid:
                raise EventDecodeError(
                    f"{Path(path).name} line {frame.line}: {exc}",
                    reason=exc.reason,
                    event_id=frame.id,
                ) from None
            skipped += 1
            logger.warning(
                "recording: skipped invalid frame at %s line %d (%s)",
                Path(path).name,
                frame.line,
                exc.reason,
            )
    if skipped:
        logger.warning("recording: %d invalid frame(s) skipped in %s", skipped, Path(path).name)


def event_to_record(event: Event) -> dict[str, Any]:
    """The recording line (as a dict) for one event."""
    if isinstance(event, UnknownEvent):
        data = event.data
    else:
        data = event.model_dump(mode="json", exclude_none=True)
    return {"id": event.event_id, "event": event.type, "data": data}


class RecordingWriter:
    """Append events to a recording; use it as a client callback or context manager.

    ::

        with RecordingWriter("session.jsonl") as writer:
            client.on_actions(writer).on_summary(writer).on_event(writer)
            ...

    Thread-safe; each line is flushed as it is written so a crash loses nothing
    already received. Writes are small and buffered, so it may also be
    registered as a plain (sync) callback on the async client.
    """

    def __init__(self, path: StrPath, *, append: bool = True) -> None:
        self.path = Path(path)
        self.count = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(  # noqa: SIM115 - closed by close()/__exit__
            self.path, "a" if append else "w", encoding="utf-8"
        )

    def __repr__(self) -> str:
        return f"RecordingWriter({str(self.path)!r}, count={self.count})"

    def write(self, event: Event) -> None:
        """Append one event."""
        record = event_to_record(event)
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (from a webhook body's "\ud800" escape) has no UTF-8
                # form, and the reader (pydantic-core) refuses it even escaped: U+FFFD,
                # the package's rule for such text (formatting), keeps the line readable.
                line = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in line)
        with self._lock:
            if self._file is None:
                raise ValueError("RecordingWriter is closed")
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1

    __call__ = write

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def record_stream(
    url: str,
    path: StrPath,
    *,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
    append: bool = False,
    **options: Any,
) -> int:
    """Save a live stream window (until ``max_events`` or ``timeout``) to ``path``.

    Other keyword options go to :func:`~autoplay_base.stream_window.iter_stream_events`
    (``last_event_id=``, ``heartbeat_timeout=``, …).
    Returns the number of events written.
    """
    with RecordingWriter(path, append=append) as writer:
        for event in iter_stream_events(
            url, token=token, max_events=max_events, timeout=timeout, **options
        ):
            writer.write(event)
        return writer.count


async def arecord_stream(
    url: str,
    path: StrPath,
    *,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
    append: bool = False,
    **options: Any,
) -> int:
    """Async twin of :func:`record_stream`."""
    with RecordingWriter(path, append=append) as writer:
        async for event in aiter_stream_events(
            url, token=token, max_events=max_events, timeout=timeout, **options
        ):
            writer.write(event)
        return writer.count
