"""Seeded fuzz: valid events interleaved with mutated frames and hostile field values.

A hostile server (tests/_fixtures/hostile.py) resumes from ``Last-Event-ID``
like a real connector (replaying a few events), but between valid frames it
sends truncated JSON, random bytes, oversized data, huge ``retry:`` values,
ids no header can carry, comments, stray BOMs and invalid UTF-8; it splits
the stream at random byte offsets and cuts connections mid-frame, cleanly or
with a reset. Whatever it does, each valid event must be delivered exactly
once and in order, nothing may crash, and memory stays bounded.

Every hostile piece is a complete frame (it ends in a blank line), so it can
never merge into the valid frame after it: what is tested is the client's
handling of bad frames, not SSE's rule that an unterminated frame swallows
the next one.
"""

from __future__ import annotations

import random
import tracemalloc

import pytest

from autoplay_base._sse import MAX_EVENT_ID_CHARS
from tests._fixtures.hostile import HostileConnection, HostileServer, sse_frame
from tests.autoplay_base.test_stream_hostile import Driver, actions_json, frame, titles

EVENTS = 600
MAX_EVENT_BYTES = 32 * 1024


def hostile_piece(rng: random.Random) -> bytes:
    """One complete frame (ending in a blank line) that must not yield an event."""
    bad_id = rng.choice(
        [
            "caf\u00e9",
            "a\x01b",
            "x" * (MAX_EVENT_ID_CHARS + 1 + rng.randrange(3000)),
            "\x7f",
            "new\u2028line",
        ]
    )
    valid = actions_json(rng.randrange(1, 10_000)).encode()
    junk = bytes(rng.choice(b'{}[]":,abc\x00\xff\xfe\x01 \t') for _ in range(rng.randrange(1, 200)))
    choice = rng.randrange(12)
    if choice == 0:  # a valid object cut short: never valid JSON
        return sse_frame(valid[: rng.randrange(1, len(valid))], event="actions")
    if choice == 1:
        return b"data: " + junk + b"\n\n"
    if choice == 2:  # larger than the cap
        return b"data: " + b"y" * (MAX_EVENT_BYTES + rng.randrange(1, 80_000)) + b"\n\n"
    if choice == 3:
        return b"retry: " + b"9" * rng.randrange(1, 500) + b"\n\n"
    if choice == 4:  # an id no header can carry, on a frame that is also bad
        return b"id: " + bad_id.encode("utf-8", "surrogateescape") + b"\ndata: " + junk + b"\n\n"
    if choice == 5:
        return b": " + junk + b"\n\n"
    if choice == 6:
        return b"\xef\xbb\xbfdata: " + junk + b"\n\n"
    if choice == 7:
        return b"event: \xff\xfe" + junk.replace(b"\n", b"") + b"\ndata: [1, 2]\n\n"
    if choice == 8:
        return rng.choice([b"data: null\n\n", b'data: "text"\n\n', b"data: 42\n\n"])
    if choice == 9:  # an id with a NUL is ignored by the rules themselves
        return b"id: 7\x003\ndata: " + junk + b"\n\n"
    if choice == 10:  # valid JSON, invalid payload
        return sse_frame(b'{"type":"actions","product_id":"acme"}', event="actions")
    return b"retry: -5\nretry: 1e9\nretry: \n\n"


def make_handler(seed: int) -> tuple[list[bytes], object]:
    frames = [frame(n) for n in range(1, EVENTS + 1)]

    def handler(conn: HostileConnection) -> None:
        rng = random.Random(seed * 1000 + conn.request.index)
        last = conn.request.headers.get("last-event-id")
        start = int(last) + 1 if last else 1
        start = max(1, start - rng.randrange(0, 4))  # replay a few: dedupe must drop them
        stop = min(EVENTS + 1, start + rng.randrange(10, 70))
        body = bytearray()
        for n in range(start, stop):
            while rng.random() < 0.35:
                body += hostile_piece(rng)
            body += frames[n - 1]
        final = stop > EVENTS
        if not final and rng.random() < 0.5:
            body += frames[stop - 1][: rng.randrange(1, len(frames[stop - 1]))]  # cut mid-frame
        conn.respond(200)
        pos = 0
        while pos < len(body):
            step = rng.choice([1, 7, 64, 500, 4096, 65536])
            if not conn.send(bytes(body[pos : pos + step])):
                return
            pos += step
        if final:
            conn.hold()
        elif rng.random() < 0.3:
            conn.abort()

    return frames, handler


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_hostile_stream_delivers_every_valid_event_once_in_order(
    kind: str, seed: int
) -> None:
    _, handler = make_handler(seed)
    with HostileServer(handler) as server:  # type: ignore[arg-type]
        tracemalloc.start()
        try:
            driver = Driver(kind, server.url, max_event_bytes=MAX_EVENT_BYTES).start()
            ok = driver.got.wait_for(EVENTS, timeout=20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert driver.stop()
        assert server.handler_errors == []
    assert ok, (len(driver.got), driver.counters, driver.failure)
    assert driver.failure is None
    assert titles(driver.got.items) == list(range(1, EVENTS + 1))
    counters = driver.counters
    assert counters.received == EVENTS
    assert counters.decode_errors == len(driver.errors.items) > 0
    assert counters.connections == len(server.requests) >= 2
    assert peak < 24 << 20, peak  # a few MiB measured; oversized frames never sat in memory
    # The hostile parts were exercised, not skipped by luck.
    assert counters.duplicates > 0  # replays after each reconnect
    assert counters.rejected_ids > 0
    assert counters.rejected_retries > 0
    assert (counters.dropped, counters.stalls, counters.callback_errors) == (0, 0, 0)
