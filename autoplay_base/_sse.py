"""A sans-IO Server-Sent Events decoder that works on bytes, bounded while it buffers.

Feed it the chunks of a response body; it returns complete frames. It follows
the WHATWG event-stream rules (``\\r\\n``, ``\\r`` or ``\\n`` line ends; ``:``
comments; one leading space stripped from values; ``data`` lines joined with
``\\n``; the last-event-id buffer persisting across frames; ids containing NUL
ignored; non-numeric ``retry`` ignored; one leading UTF-8 BOM stripped) like
``httpx-sse``, but keeps ``data`` as bytes: pydantic validates JSON straight
from bytes, and skipping the per-line ``str`` round trip roughly halves the
cost of every event.

Everything the server sends is hostile until checked, and no byte sequence
makes :meth:`SSEDecoder.feed` raise. On top of the spec:

* **Size.** A frame is the lines between two blank lines; its size is the sum
  of its field lines, each counted with one byte for its line end (comment
  lines are never kept and do not count, but one comment line is held to the
  same cap). Once the line being buffered or the frame being built exceeds
  ``max_frame_bytes`` its bytes are dropped at once, everything up to the
  frame's blank line is skipped unread, and :attr:`SSEDecoder.oversized_frames`
  counts it: the decoder never holds more than ``max_frame_bytes`` of one
  frame, and every byte fed is looked at a bounded number of times (linear
  time, whatever the chunking). An ``id:`` line the frame had before it hit
  the cap still sets the last-event-id buffer (:attr:`SSEDecoder.last_id`), as
  the spec has it for any frame that is not dispatched.
* **id.** Kept only if it is printable ASCII (0x20-0x7E; so never NUL) and at
  most :data:`MAX_EVENT_ID_CHARS` long: it is echoed back as the
  ``Last-Event-ID`` header, which must be a valid, small header value. Any
  other ``id:`` field is ignored (the last id stays) and counted in
  :attr:`SSEDecoder.rejected_ids`.
* **retry.** ASCII digits only (anything else is ignored); a value above
  :data:`MAX_RETRY_MS` (however many digits) is clamped to it. Both count in
  :attr:`SSEDecoder.rejected_retries`. The reconnect policy caps the hint again
  at its own maximum backoff.
* **event.** At most :data:`MAX_EVENT_NAME_BYTES`; a longer ``event:`` field is
  ignored and counted in :attr:`SSEDecoder.rejected_names`.
* **Progress.** :attr:`SSEDecoder.progress` counts dispatched frames and
  comment lines (keep-alives), never junk or partial lines, so the I/O layer
  can tell a live stream from one that only trickles bytes.

Frames are decoded by one of two loops (one function each): :meth:`_fast`
takes the shape connectors send (``event:``/``id:``/``data:`` lines then the
blank line) with one compiled regex per frame, and :meth:`_line` parses any
other line by the general rules. Both give the same frames and counters for
the same bytes, however they are chunked.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from autoplay_base.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_EVENT_ID_CHARS",
    "MAX_EVENT_NAME_BYTES",
    "MAX_RETRY_MS",
    "SSEDecoder",
    "SSEFrame",
    "is_valid_event_id",
]

DEFAULT_MAX_FRAME_BYTES = 256 * 1024 + 8 * 1024
"""Cap on one frame while it is buffered: 256 KiB of ``data`` (the event cap,
``events.DEFAULT_MAX_EVENT_BYTES``) plus 8 KiB for the field names, the event
name, the id, ``retry`` and line ends. A frame of data split over many short
``data:`` lines pays 6 bytes per line for the field names."""
MAX_EVENT_ID_CHARS = 256
"""Longest ``id:`` kept (printable ASCII only): it is sent back as a header."""
MAX_EVENT_NAME_BYTES = 128
"""Longest ``event:`` name kept; connectors use a handful of short names."""
MAX_RETRY_MS = 3_600_000
"""Largest ``retry:`` hint kept (one hour); larger values are clamped to it."""

_MAX_NAMES = 64  # decoded event names cached; a server may invent names without end
_MAX_RETRY_DIGITS = len(str(MAX_RETRY_MS))  # more digits (after leading zeros) exceed it
_BOM = b"\xef\xbb\xbf"
_NEWLINE = 10
_COLON = 58
_SPACE = 32
_LONGEST_FIELD_NAME = len(b"event")  # "retry" too; longer names are unknown fields

# The frame shape connectors send, as one complete frame ending in its blank line.
# Matching it with one compiled regex (C speed) instead of three ``_field`` calls
# is the decoder's fast path. Its groups only accept values the line parser keeps
# (an id of printable ASCII within MAX_EVENT_ID_CHARS, a name within
# MAX_EVENT_NAME_BYTES): anything else fails the match and goes to the line
# parser, which rejects and counts it. Other field orders, comments, ``retry:``
# and multi-line data fall through too.
_FAST_FRAME = re.compile(
    rb"event: ([^\n]{0,%d})\nid: ([\x20-\x7e]{0,%d})\ndata: ([^\n]*)\n\n"
    % (MAX_EVENT_NAME_BYTES, MAX_EVENT_ID_CHARS)
)


def is_valid_event_id(value: str) -> bool:
    """Whether ``value`` is an id the decoder keeps (printable ASCII, bounded length)."""
    return len(value) <= MAX_EVENT_ID_CHARS and value.isascii() and value.isprintable()


def _frame_end(buffer: bytes, pos: int, end: int, at_line_start: bool) -> int:
    """Index just past the blank line that ends the current frame, or -1 if not in range."""
    if at_line_start and pos < end and buffer[pos] == _NEWLINE:
        return pos + 1
    found = buffer.find(b"\n\n", pos, end)
    return found + 2 if found >= 0 else -1


class SSEFrame(NamedTuple):
    """One dispatched frame. ``event`` is ``"message"`` when the frame named none."""

    event: str
    data: bytes
    id: str
    retry: int | None


class SSEDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the frames that chunk completed.

    One decoder per connection (the last-event-id buffer and the BOM rule are
    per stream). The counters are plain ints that only grow; read them after
    each :meth:`feed`.

    Args:
        max_frame_bytes: cap on one line and on one frame while it is buffered
            (see the module docstring for how a frame is measured).

    Attributes:
        oversized_frames: frames discarded because they exceeded the cap.
        rejected_ids: ``id:`` fields ignored (not printable ASCII, too long, NUL).
        rejected_names: ``event:`` fields ignored (longer than MAX_EVENT_NAME_BYTES).
        rejected_retries: ``retry:`` fields ignored (not ASCII digits) or clamped
            to MAX_RETRY_MS.
        progress: dispatched frames plus comment lines (keep-alives).
    """

    __slots__ = (
        "_data",
        "_discarding",
        "_event",
        "_frame_bytes",
        "_has_data",
        "_head",
        "_id",
        "_last_id",
        "_line_start",
        "_names",
        "_partial",
        "_partial_len",
        "_pending_cr",
        "_retry",
        "max_frame_bytes",
        "oversized_frames",
        "progress",
        "rejected_ids",
        "rejected_names",
        "rejected_retries",
    )

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 2:
            # Two bytes is the smallest frame that can hold a field ("x" + its line end).
            raise ConfigError(f"max_frame_bytes must be >= 2, got {max_frame_bytes!r}")
        self.max_frame_bytes = max_frame_bytes
        self.oversized_frames = 0
        self.rejected_ids = 0
        self.rejected_names = 0
        self.rejected_retries = 0
        self.progress = 0
        # The first bytes of the stream while a BOM is still possible; None once decided.
        self._head: bytes | None = b""
        self._pending_cr = False
        # The incomplete last line, as the pieces it arrived in (joined once, when it
        # ends: appending to one bytes object per feed was quadratic).
        self._partial: list[bytes] = []
        self._partial_len = 0
        # Skipping an oversized frame up to its blank line; _line_start says whether
        # the bytes skipped so far end with a line end (a blank line may start next).
        self._discarding = False
        self._line_start = True
        # The frame being built. _frame_bytes > 0 means some field line of it was
        # seen: the fast path may only start a frame, never continue one.
        self._frame_bytes = 0
        self._event = ""
        self._data: list[bytes] = []
        self._has_data = False
        self._id: str | None = None  # this frame's id: applied when the frame ends
        self._retry: int | None = None
        self._last_id = ""
        # Event names repeat (a handful of types): decode each one once.
        self._names: dict[bytes, str] = {}

    @property
    def last_id(self) -> str:
        """The last-event-id buffer: the id the next frame without an ``id:`` inherits.

        After :attr:`oversized_frames` grew, it is the id of the last frame
        discarded if that frame's ``id:`` line came before the cap was hit.
        """
        return self._last_id

    @property
    def retained_bytes(self) -> int:
        """Bytes of the stream held right now (incomplete line and frame); <= the cap."""
        return (
            sum(map(len, self._partial))
            + sum(map(len, self._data))
            + len(self._event)
            + len(self._id or "")
        )

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        """Decode ``chunk``; keep any incomplete line for the next call. Never raises."""
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk  # could still be a BOM split across chunks
                return []
            self._head = None
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if not chunk:
            return []  # (and keeps _pending_cr for the chunk that comes next)
        if self._pending_cr:
            # A chunk ended in "\r": if this one starts with "\n" it was one "\r\n".
            self._pending_cr = False
            if chunk[0] == _NEWLINE:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._discarding:
            resume = _frame_end(chunk, 0, len(chunk), self._line_start)
            if resume < 0:
                self._line_start = chunk[-1] == _NEWLINE
                return []
            self._discarding = False
            chunk = chunk[resume:]
        end = chunk.rfind(b"\n") + 1
        if not end:
            if chunk:
                self._hold(chunk, 0)
            return []
        partial = self._partial
        if partial:
            partial.append(chunk)
            buffer = b"".join(partial)
            end += self._partial_len
            self._partial = []
            self._partial_len = 0
        else:
            buffer = chunk
        frames: list[SSEFrame] = []
        pos = 0
        while pos < end:
            if not self._frame_bytes:
                pos = self._fast(buffer, pos, end, frames)
                if pos >= end:
                    break
            pos = self._line(buffer, pos, end, frames)
        if end < len(buffer):
            if self._discarding:
                self._line_start = False  # the skipped bytes end mid-line
            else:
                self._hold(buffer, end)
        elif self._discarding:
            self._line_start = True
        self.progress += len(frames)
        return frames

    def _fast(self, buffer: bytes, pos: int, end: int, frames: list[SSEFrame]) -> int:
        """Take the frames of the usual shape starting at ``pos``; return where they stop."""
        match = _FAST_FRAME.match(buffer, pos, end)
        if match is None:
            return pos
        names = self._names
        # Frame size as the line parser measures it: the three lines, not the blank one.
        limit = self.max_frame_bytes + 1
        # tuple.__new__ skips NamedTuple's Python-level __new__ (half the cost per frame).
        new_frame = tuple.__new__
        fast = _FAST_FRAME.match
        while match is not None:
            stop = match.end()
            if stop - pos > limit:
                self.oversized_frames += 1
                # As the line parser would: the id line counts if the frame was
                # still within the cap when it ended.
                if match.end(2) + 1 - pos <= self.max_frame_bytes:
                    self._last_id = match[2].decode("ascii")
            else:
                raw_event, raw_id, data = match.groups()
                event = names.get(raw_event)
                if event is None:
                    event = raw_event.decode("utf-8", "replace")
                    if len(names) < _MAX_NAMES:
                        names[raw_event] = event
                self._last_id = last_id = raw_id.decode("ascii")
                frames.append(new_frame(SSEFrame, (event or "message", data, last_id, None)))
            pos = stop
            match = fast(buffer, pos, end)
        return pos

    def _line(self, buffer: bytes, pos: int, end: int, frames: list[SSEFrame]) -> int:
        """Parse the complete line at ``pos`` by the general rules; return the next position."""
        cut = buffer.index(b"\n", pos, end)
        size = cut - pos
        if not size:  # a blank line ends the frame
            if self._frame_bytes:
                if self._id is not None:
                    self._last_id = self._id
                if self._has_data or self._event or self._retry is not None:
                    frames.append(self._dispatch())
                else:
                    self._reset_frame()
            return cut + 1
        if buffer[pos] == _COLON:  # a comment: a keep-alive, never kept
            if size >= self.max_frame_bytes:
                return self._discard(buffer, cut + 1, end)
            self.progress += 1
            return cut + 1
        frame_bytes = self._frame_bytes + size + 1
        if frame_bytes > self.max_frame_bytes:
            # Checked before slicing: an oversized line is never copied.
            return self._discard(buffer, cut + 1, end)
        self._frame_bytes = frame_bytes
        self._field(buffer, pos, cut)
        return cut + 1

    def _field(self, buffer: bytes, pos: int, cut: int) -> None:
        """Apply the field line ``buffer[pos:cut]``, copying only the value it keeps."""
        colon = buffer.find(b":", pos, cut)
        if colon < 0:
            colon = start = cut  # a line without ":" is a field name with an empty value
        else:
            start = colon + 1
            if start < cut and buffer[start] == _SPACE:
                start += 1
        if colon - pos > _LONGEST_FIELD_NAME:
            return  # an unknown field: ignored, and never copied
        name = buffer[pos:colon]
        size = cut - start
        if name == b"data":
            self._data.append(buffer[start:cut])
            self._has_data = True
        elif name == b"event":
            if size <= MAX_EVENT_NAME_BYTES:
                self._event = buffer[start:cut].decode("utf-8", "replace")
            else:
                self.rejected_names += 1
        elif name == b"id":
            # NUL, other controls, non-ASCII (a header cannot carry it), too long.
            if size <= MAX_EVENT_ID_CHARS:
                value = buffer[start:cut]
                if value.isascii():
                    text = value.decode("ascii")
                    if text.isprintable():
                        self._id = text
                        return
            self.rejected_ids += 1
        elif name == b"retry":
            # bytes.isdigit is ASCII-only. int() is never called on more digits than
            # MAX_RETRY_MS has (Python refuses > 4300 digits, and they would be slow).
            value = buffer[start:cut]
            if not value.isdigit():
                self.rejected_retries += 1
                return
            digits = value.lstrip(b"0")
            if len(digits) > _MAX_RETRY_DIGITS or int(digits or b"0") > MAX_RETRY_MS:
                self.rejected_retries += 1
                self._retry = MAX_RETRY_MS
            else:
                self._retry = int(digits or b"0")

    def _dispatch(self) -> SSEFrame:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        frame = SSEFrame(self._event or "message", data, self._last_id, self._retry)
        self._reset_frame()
        return frame

    def _reset_frame(self) -> None:
        self._frame_bytes = 0
        self._event = ""
        self._data = []
        self._has_data = False
        self._id = None
        self._retry = None

    def _hold(self, buffer: bytes, start: int) -> None:
        """Keep ``buffer[start:]``, a piece of the incomplete last line, unless too long.

        The size is checked before the piece is sliced: an oversized tail is never copied.
        """
        partial = self._partial
        total = self._partial_len + len(buffer) - start
        # The line will count with its line end; a comment line does not add to the frame.
        size = total + 1
        first = partial[0][0] if partial else buffer[start]
        if first != _COLON:
            size += self._frame_bytes
        if size > self.max_frame_bytes:
            self._partial = []
            self._partial_len = 0
            self._start_discard()
            self._line_start = False
            return
        partial.append(buffer[start:] if start else buffer)
        self._partial_len = total

    def _discard(self, buffer: bytes, pos: int, end: int) -> int:
        """Drop the current frame; skip to its blank line (``pos`` starts a line)."""
        self._start_discard()
        resume = _frame_end(buffer, pos, end, True)
        if resume < 0:
            return end  # feed() notes where the skipped bytes stop
        self._discarding = False
        return resume

    def _start_discard(self) -> None:
        self.oversized_frames += 1
        # An id line read before the cap was hit still sets the last-event-id buffer,
        # as the spec has it for any frame that is not dispatched: the client can move
        # its resume point past the lost frame (asking for it again would lose it again).
        if self._id is not None:
            self._last_id = self._id
        self._reset_frame()
        self._discarding = True
