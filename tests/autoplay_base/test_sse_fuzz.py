"""Seeded fuzz: valid frames interleaved with mutated and hostile junk.

Every valid frame must come out exactly once, in order and unchanged; ``feed``
never raises; the decoder never holds more than its cap; and the frames and
counters do not depend on how the stream is chunked. The seeds are fixed, so a
failure reproduces; the whole file runs in a few seconds.
"""

from __future__ import annotations

import random

import pytest

from autoplay_base._sse import SSEDecoder, SSEFrame

CAP = 600  # small, so that oversized junk is frequent and cheap
MARK = b"VALID#"  # only valid frames carry it; junk never does


def _valid(rng: random.Random, n: int) -> tuple[bytes, SSEFrame]:
    """One well-formed frame in one of the shapes servers send, and what it decodes to."""
    event_id = f"v{n}-{rng.randrange(10**6)}"
    head = MARK + b"%d " % n
    data = head + bytes(rng.choice(b'abc{}":, ') for _ in range(rng.randrange(60)))
    event = rng.choice(["actions", "summary", "heartbeat", ""])
    retry = rng.choice([None, None, 0, 1500, 3_600_000])
    eid = event_id.encode()
    lines: list[bytes] = []
    shape = rng.randrange(4)
    if shape == 0 and event and retry is None:  # the fast path's shape
        lines = [b"event: " + event.encode(), b"id: " + eid, b"data: " + data]
    elif shape == 1:  # other order, no spaces, a comment inside
        lines = [b"id:" + eid, b": note"]
        if event:
            lines.append(b"event:" + event.encode())
        lines.append(b"data:" + data)
    else:  # data split over lines
        cut = rng.randrange(len(head), len(data) + 1)  # the mark stays whole
        lines = [b"data: " + data[:cut]]
        if event:
            lines.append(b"event: " + event.encode())
        lines += [b"id: " + eid, b"data: " + data[cut:]]
        data = data[:cut] + b"\n" + data[cut:]
    if retry is not None:
        lines.insert(rng.randrange(len(lines) + 1), b"retry: %d" % retry)
    if rng.random() < 0.3:
        lines.insert(0, b": keep-alive")
    newline = rng.choice([b"\n", b"\n", b"\r\n", b"\r"])
    body = newline.join(lines) + newline + newline
    return body, SSEFrame(event or "message", data, event_id, retry)


def _junk(rng: random.Random) -> bytes:
    """Hostile bytes that end with a blank line, so the next frame starts fresh."""
    kind = rng.randrange(10)
    if kind == 0:
        value = rng.choice(
            [
                b"9" * rng.randrange(1, 5000),
                b"-1",
                b"+1",
                b" 1",
                "\u0663".encode(),
                b"",
                b"1e9",
                b"0" * 30 + b"7",
            ]
        )
        body = b"retry: " + value + b"\ndata: junk retry\n"
    elif kind == 1:
        value = rng.choice(
            [
                "caf\u00e9".encode(),
                b"\xff",
                b"a\x00b",
                b"a\x01b",
                b"x" * 257,
                b"y" * rng.randrange(CAP, 4 * CAP),
            ]
        )
        body = b"id: " + value + b"\ndata: junk id\n"
    elif kind == 2:
        body = b"data: " + b"z" * rng.randrange(CAP - 50, 5 * CAP) + b"\n"
    elif kind == 3:
        body = b"event: " + b"e" * rng.randrange(100, 3 * CAP) + b"\ndata: junk name\n"
    elif kind == 4:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(400)))
    elif kind == 5:
        body = b":" + b"c" * rng.randrange(CAP - 20, 2 * CAP) + b"\n"
    elif kind == 6:
        body = b"\xef\xbb\xbfdata: a BOM in the middle\n"
    elif kind == 9:  # the fast path's shape, oversized; the next frame inherits its id
        body = (
            b"event: actions\nid: big%d\ndata: " % rng.randrange(1000)
            + b"q" * rng.randrange(CAP - 40, 2 * CAP)
            + b"\n\ndata: inherits\n"
        )
    elif kind == 7:
        body = b"".join(b"data: l%d\n" % i for i in range(rng.randrange(40, 120)))
    else:  # a valid-looking frame, mutated byte by byte
        template = bytearray(b'event: actions\nid: j1\nretry: 10\ndata: {"junk": true}\n')
        for _ in range(rng.randrange(1, 8)):
            at = rng.randrange(len(template))
            op = rng.randrange(3)
            if op == 0:
                template[at] = rng.randrange(256)
            elif op == 1:
                template.insert(at, rng.choice(b"\r\n:\x00 \xef"))
            else:
                del template[at]
        body = bytes(template)
    assert MARK not in body
    return body + b"\n\n"


def _stream(seed: int, frames: int) -> tuple[bytes, list[SSEFrame]]:
    rng = random.Random(seed)
    parts: list[bytes] = [b"\xef\xbb\xbf"] if rng.random() < 0.5 else []
    expected: list[SSEFrame] = []
    for n in range(frames):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            parts.append(_junk(rng))
        body, frame = _valid(rng, n)
        parts.append(body)
        expected.append(frame)
    return b"".join(parts), expected


def _random_chunks(stream: bytes, rng: random.Random) -> list[bytes]:
    chunks: list[bytes] = []
    pos = 0
    while pos < len(stream):
        size = rng.choice([0, 1, 2, 3, 7, 64, 333, 1024, 5000])
        chunks.append(stream[pos : pos + size])
        pos += size
    return chunks


Counters = tuple[int, int, int, int, int, str]


def _run(stream_chunks: list[bytes]) -> tuple[list[SSEFrame], Counters]:
    decoder = SSEDecoder(max_frame_bytes=CAP)
    frames: list[SSEFrame] = []
    for chunk in stream_chunks:
        frames.extend(decoder.feed(chunk))
        assert decoder.retained_bytes <= CAP
    counters: Counters = (
        decoder.oversized_frames,
        decoder.rejected_ids,
        decoder.rejected_names,
        decoder.rejected_retries,
        decoder.progress,
        decoder.last_id,
    )
    return frames, counters


@pytest.mark.parametrize("seed", range(16))
def test_valid_frames_survive_any_junk_in_any_chunking(seed: int) -> None:
    stream, expected = _stream(seed, 300)
    whole, counters = _run([stream])
    assert [frame for frame in whole if MARK in frame.data] == expected
    assert min(counters[:4]) > 0  # every kind of rejection happened
    rng = random.Random(seed + 1000)
    for _ in range(3):
        assert _run(_random_chunks(stream, rng)) == (whole, counters)


@pytest.mark.parametrize("seed", range(100, 103))
def test_byte_by_byte_gives_the_same_frames_and_counters(seed: int) -> None:
    stream, expected = _stream(seed, 40)
    whole = _run([stream])
    assert [frame for frame in whole[0] if MARK in frame.data] == expected
    assert _run([stream[i : i + 1] for i in range(len(stream))]) == whole
