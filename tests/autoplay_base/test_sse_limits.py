"""The decoder's size cap: enforced while buffering, exact at the edge, linear in bytes fed.

A frame's size is the sum of its field lines, each with one byte for its line
end (after ``\\r\\n`` is read as one line end); comment lines do not count but
one comment line is held to the cap too.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterable

import pytest

from autoplay_base._sse import DEFAULT_MAX_FRAME_BYTES, SSEDecoder, SSEFrame

NEXT = b"event: actions\nid: 8\ndata: next\n\n"
NEXT_FRAME = SSEFrame("actions", b"next", "8", None)


def _fill(prefix: bytes, size: int, suffix: bytes = b"\n") -> bytes:
    """``prefix`` + filler + ``suffix`` of exactly ``size`` bytes."""
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


# Each builder returns (frame bytes without its blank line, measuring ``size``, the frame).
Shape = Callable[[int], tuple[bytes, SSEFrame]]


def _fast(size: int) -> tuple[bytes, SSEFrame]:
    body = _fill(b"event: actions\nid: 7\ndata: ", size)
    return body, SSEFrame("actions", body[27:-1], "7", None)


def _reordered(size: int) -> tuple[bytes, SSEFrame]:
    body = _fill(b"id: 7\nretry: 10\nevent: actions\ndata: ", size)
    return body, SSEFrame("actions", body[37:-1], "7", 10)


def _multiline(size: int) -> tuple[bytes, SSEFrame]:
    half = size // 2
    first = _fill(b"data: ", half)
    second = _fill(b"data: ", size - half)
    return first + second, SSEFrame("message", first[6:-1] + b"\n" + second[6:-1], "", None)


def _with_comments(size: int) -> tuple[bytes, SSEFrame]:
    body, frame = _fast(size)
    return b": ping\n" + body[:15] + b": pong\n" + body[15:], frame


def _data_only(size: int) -> tuple[bytes, SSEFrame]:
    body = _fill(b"data: ", size)  # one line: cap - 1 bytes and its line end
    return body, SSEFrame("message", body[6:-1], "", None)


SHAPES: dict[str, Shape] = {
    "fast": _fast,
    "reordered": _reordered,
    "multiline": _multiline,
    "comments": _with_comments,
    "one_line": _data_only,
}


def _chunks(body: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [body]
    return [body[i : i + size] for i in range(0, len(body), size)]


def _decode(decoder: SSEDecoder, chunks: list[bytes]) -> list[SSEFrame]:
    frames: list[SSEFrame] = []
    cap = decoder.max_frame_bytes
    # retained_bytes walks the pieces held: byte-by-byte feeding checks every 61st.
    every = 1 if len(chunks[0]) > 1 else 61
    for n, chunk in enumerate(chunks):
        frames.extend(decoder.feed(chunk))
        if not n % every:
            assert decoder.retained_bytes <= cap
    assert decoder.retained_bytes <= cap
    return frames


CASES = [
    (cap, chunk)
    for cap in (64, 4096, DEFAULT_MAX_FRAME_BYTES)
    for chunk in (None, 1, 1024)
    if not (cap == DEFAULT_MAX_FRAME_BYTES and chunk == 1)  # 270k feeds: covered at 4096
]


@pytest.mark.parametrize(("cap", "chunk"), CASES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("crlf", [False, True])
def test_a_frame_at_the_cap_is_kept_and_one_byte_over_is_dropped(
    cap: int, chunk: int | None, shape: str, crlf: bool
) -> None:
    for over in (0, 1):
        body, frame = SHAPES[shape](cap + over)
        stream = body + b"\n" + NEXT
        if crlf:
            stream = stream.replace(b"\n", b"\r\n")
        decoder = SSEDecoder(max_frame_bytes=cap)
        frames = _decode(decoder, _chunks(stream, chunk))
        if over:
            assert frames == [NEXT_FRAME]
            assert decoder.oversized_frames == 1
        else:
            assert frames == [frame, NEXT_FRAME]
            assert decoder.oversized_frames == 0
        assert decoder.progress == len(frames) + (2 if shape == "comments" else 0)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_one_comment_line_is_held_to_the_cap_and_costs_its_frame(chunk: int | None) -> None:
    cap = 64
    fits = _fill(b":", cap)
    too_long = _fill(b":", cap + 1)
    stream = fits + b"data: a\n\n" + too_long + b"data: lost with it\n\n" + NEXT
    decoder = SSEDecoder(max_frame_bytes=cap)
    assert _decode(decoder, _chunks(stream, chunk)) == [
        SSEFrame("message", b"a", "", None),
        NEXT_FRAME,
    ]
    assert decoder.oversized_frames == 1
    assert decoder.progress == 3  # the comment that fits, and two frames


def test_comments_do_not_add_up_to_an_oversized_frame() -> None:
    # A server sending ":\n" keep-alives without blank lines must never lose the next frame.
    decoder = SSEDecoder(max_frame_bytes=64)
    assert _decode(decoder, [b":\n"] * 1000 + [NEXT]) == [NEXT_FRAME]
    assert decoder.oversized_frames == 0


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_the_discard_ends_at_the_blank_line_whatever_the_chunking(chunk: int | None) -> None:
    stream = (
        b"data: " + b"y" * 100 + b"\ndata: more\n: comment\nid: 99\n\n"  # all of it dropped
        b"data: " + b"z" * 100 + b"\r\n\r\n"
        b"data: " + b"w" * 100 + b"\r\r"
        b"data: " + b"v" * 100 + b"\n"  # an unfinished oversized frame at the end
    )
    decoder = SSEDecoder(max_frame_bytes=64)
    assert _decode(decoder, _chunks(stream, chunk)) == []
    assert decoder.oversized_frames == 4
    assert _decode(decoder, [b"still dropped\n", b"\n", NEXT]) == [NEXT_FRAME]
    assert decoder.oversized_frames == 4
    assert decoder.progress == 1


# --- 50 MB lines: O(cap) memory, O(n) work ---------------------------------------------------

MB = 1 << 20
KB_CHUNK = b"x" * 1024


def _allocated_per_feed(decoder: SSEDecoder, chunks: Iterable[bytes]) -> tuple[list[int], int]:
    """Peak bytes allocated inside each ``feed`` (and the frames returned overall).

    tracemalloc counts every allocation, whatever the machine's load: the sum of
    the per-feed peaks bounds how many bytes the decoder copies, so it is a
    measure of work that cannot flake (a decoder that rebuilds its buffer on
    each feed allocates the whole buffer each time).
    """
    peaks: list[int] = []
    count = 0
    tracemalloc.start()
    try:
        for chunk in chunks:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            count += len(decoder.feed(chunk))
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
            assert decoder.retained_bytes <= decoder.max_frame_bytes
    finally:
        tracemalloc.stop()
    return peaks, count


def test_a_50_mb_line_in_1_kb_chunks_keeps_at_most_the_cap_and_copies_linearly() -> None:
    decoder = SSEDecoder()
    feeds = 50 * MB // len(KB_CHUNK)
    chunks = [b"event: actions\nid: 1\ndata: ", *([KB_CHUNK] * feeds)]
    peaks, frames = _allocated_per_feed(decoder, chunks)
    assert frames == 0
    assert decoder.oversized_frames == 1
    # Linear: on average at most two copies of each byte fed plus a small constant
    # per call. Rebuilding the buffer on each feed would cost ~25 GB here.
    fed = sum(map(len, chunks))
    assert sum(peaks) <= 2 * fed + 1024 * len(chunks)
    assert max(peaks) <= 2 * DEFAULT_MAX_FRAME_BYTES  # never more than the cap held at once
    assert decoder.feed(b"\n\n" + NEXT) == [NEXT_FRAME]
    assert decoder.progress == 1


def test_a_line_under_the_cap_in_1_kb_chunks_is_copied_a_bounded_number_of_times() -> None:
    # Within the cap too: joining the pieces once, when the line ends, not per feed.
    decoder = SSEDecoder()
    line = 250 * 1024
    chunks = [b"event: actions\nid: 1\ndata: ", *([KB_CHUNK] * (line // 1024)), b"\n\n"]
    peaks, frames = _allocated_per_feed(decoder, chunks)
    assert frames == 1
    fed = sum(map(len, chunks))
    assert sum(peaks) <= 3 * fed + 1024 * len(chunks)


@pytest.mark.parametrize("newline", [False, True])
@pytest.mark.parametrize("before", [b"", b"data: first\n\n"])
def test_a_50_mb_line_in_one_chunk_is_never_copied(newline: bool, before: bytes) -> None:
    big = before + b"data: " + b"x" * (50 * MB) + (b"\n" if newline else b"")
    decoder = SSEDecoder()
    peaks, frames = _allocated_per_feed(decoder, [big])
    assert frames == (1 if before else 0)
    assert decoder.oversized_frames == 1
    assert peaks[0] <= 64 * 1024
    assert decoder.feed(b"\n" * (2 - newline) + NEXT) == [NEXT_FRAME]
    assert decoder.oversized_frames == 1


def _feed_seconds(total: int) -> float:
    decoder = SSEDecoder()
    feed = decoder.feed
    started = time.perf_counter()
    feed(b"data: ")
    for _ in range(total // len(KB_CHUNK)):
        feed(KB_CHUNK)
    return time.perf_counter() - started


def test_feeding_time_grows_linearly_5_mb_against_50_mb() -> None:
    # The allocation tests above are the exact measure; this one also catches a
    # rescan that allocates nothing. Linear gives a ratio near 10, the old
    # quadratic decoder hundreds; 20 leaves room for a busy machine. Runs are
    # interleaved and the fastest of each size is kept, so a burst of load slows
    # both sizes or is discarded.
    small: list[float] = []
    large: list[float] = []
    for _ in range(3):
        small.append(_feed_seconds(5 * MB))
        large.append(_feed_seconds(50 * MB))
    assert min(large) / min(small) < 20


@pytest.mark.parametrize("chunk", [None, 1, 10])
@pytest.mark.parametrize(
    "frame",
    [
        b"event: actions\nid: 41\ndata: " + b"x" * 100 + b"\n",  # the fast path's shape
        b"id: 41\ndata: " + b"x" * 100 + b"\n",
        b"data: a\nid: 41\ndata: " + b"x" * 100 + b"\n",
    ],
)
def test_the_id_of_a_discarded_frame_moves_the_last_id_on(frame: bytes, chunk: int | None) -> None:
    # The client moves its resume point past the lost frame: asking for it again
    # after a reconnect would only lose it again.
    decoder = SSEDecoder(max_frame_bytes=64)
    stream = b"id: 40\ndata: before\n\n" + frame + b"\ndata: after\n\n"
    assert _decode(decoder, _chunks(stream, chunk)) == [
        SSEFrame("message", b"before", "40", None),
        SSEFrame("message", b"after", "41", None),  # inherited, as the spec has it
    ]
    assert decoder.oversized_frames == 1
    assert decoder.last_id == "41"


@pytest.mark.parametrize("chunk", [None, 1])
def test_an_id_after_the_cap_was_hit_is_never_read(chunk: int | None) -> None:
    decoder = SSEDecoder(max_frame_bytes=64)
    stream = b"id: 40\n\ndata: " + b"x" * 100 + b"\nid: 41\n\ndata: after\n\n"
    assert _decode(decoder, _chunks(stream, chunk)) == [SSEFrame("message", b"after", "40", None)]
    # And in the fast path's shape, an id line that itself crosses the cap.
    decoder = SSEDecoder(max_frame_bytes=20)
    stream = b"event: actions\nid: 123456789\ndata: x\n\ndata: after\n\n"
    assert _decode(decoder, _chunks(stream, chunk)) == [SSEFrame("message", b"after", "", None)]
    assert decoder.oversized_frames == 1
