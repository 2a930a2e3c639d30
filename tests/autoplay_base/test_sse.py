"""The bytes SSE decoder, fed hand-built bodies in every possible chunking."""

from __future__ import annotations

import pytest

from autoplay_base._sse import SSEDecoder, SSEFrame

BODY = (
    b": a comment\n"
    b"retry: 1500\n"
    b"\n"
    b"event: actions\n"
    b"id: 7\n"
    b'data: {"a":1}\n'
    b"\n"
    b"event: heartbeat\n"
    b"data: {}\n"
    b"\n"
    b"data: line one\n"
    b"data:line two\n"
    b"\n"
    b"id: 8\x009\n"
    b"retry: soon\n"
    b"data\n"
    b"\n"
)
EXPECTED = [
    SSEFrame("message", b"", "", 1500),
    SSEFrame("actions", b'{"a":1}', "7", None),
    SSEFrame("heartbeat", b"{}", "7", None),
    SSEFrame("message", b"line one\nline two", "7", None),
    SSEFrame("message", b"", "7", None),
]


def decode(chunks: list[bytes]) -> list[SSEFrame]:
    decoder = SSEDecoder()
    frames: list[SSEFrame] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


def test_whole_body() -> None:
    assert decode([BODY]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_any_chunking_gives_the_same_frames(size: int) -> None:
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert decode(chunks) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends(newline: bytes) -> None:
    body = BODY.replace(b"\n", newline)
    assert decode([body]) == EXPECTED
    split = [body[i : i + 1] for i in range(len(body))]  # "\r" and "\n" in separate chunks
    assert decode(split) == EXPECTED


def test_incomplete_frame_waits_for_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: actions\ndata: {") == []
    assert decoder.feed(b'"x":1}\n') == []
    assert decoder.feed(b"\n") == [SSEFrame("actions", b'{"x":1}', "", None)]
