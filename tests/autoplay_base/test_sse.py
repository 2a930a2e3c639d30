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


# The fast path (one regex per "event:/id:/data:" frame) must agree with the line
# parser wherever the two meet: pending fields, odd spacing, NUL ids, CR line ends.
FAST_BODY = (
    b'event: actions\nid: 1\ndata: {"n":1}\n\n'
    b'event: actions\nid: 2\ndata: {"n":2}\n\n'
    b": keep-alive\n"
    b'event: summary\nid: 3\ndata: {"n":3}\n\n'
    b"\n\n"
    b"retry: 250\n"
    b'event: actions\nid: 4\ndata: {"n":4}\n\n'
    b"data: head\n"
    b"event: actions\nid: 5\ndata: tail\n\n"
    b"event: actions\nid: 6\x00x\ndata: nul id\n\n"
    b"event:tight\nid:7\ndata:no space\n\n"
    b"event:  padded\nid:  8\ndata:  two spaces\n\n"
    b"event: \nid: \ndata: \n\n"
    b"event: actions\nid: 9\ndata: one\ndata: two\n\n"
    b"id: 10\nevent: actions\ndata: other order\n\n"
    b'event: actions\nid: 11\ndata: {"n":11}\n\n'
)
FAST_EXPECTED = [
    SSEFrame("actions", b'{"n":1}', "1", None),
    SSEFrame("actions", b'{"n":2}', "2", None),
    SSEFrame("summary", b'{"n":3}', "3", None),
    SSEFrame("actions", b'{"n":4}', "4", 250),
    SSEFrame("actions", b"head\ntail", "5", None),
    SSEFrame("actions", b"nul id", "5", None),
    SSEFrame("tight", b"no space", "7", None),
    SSEFrame(" padded", b" two spaces", " 8", None),
    SSEFrame("message", b"", "", None),
    SSEFrame("actions", b"one\ntwo", "9", None),
    SSEFrame("actions", b"other order", "10", None),
    SSEFrame("actions", b'{"n":11}', "11", None),
]


def test_fast_path_body_in_one_chunk() -> None:
    assert decode([FAST_BODY]) == FAST_EXPECTED


def test_fast_path_split_at_every_byte_boundary() -> None:
    for cut in range(len(FAST_BODY) + 1):
        assert decode([FAST_BODY[:cut], FAST_BODY[cut:]]) == FAST_EXPECTED, cut


@pytest.mark.parametrize("size", [1, 2, 7, 16, 33])
def test_fast_path_any_chunking(size: int) -> None:
    chunks = [FAST_BODY[i : i + size] for i in range(0, len(FAST_BODY), size)]
    assert decode(chunks) == FAST_EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_fast_path_crlf_and_cr(newline: bytes) -> None:
    body = FAST_BODY.replace(b"\n", newline)
    assert decode([body]) == FAST_EXPECTED
    for cut in range(len(body) + 1):
        assert decode([body[:cut], body[cut:]]) == FAST_EXPECTED, cut


def test_fast_path_keeps_the_last_id_for_the_line_parser() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: actions\nid: 41\ndata: a\n\n") == [
        SSEFrame("actions", b"a", "41", None)
    ]
    assert decoder.feed(b"data: b\n\n") == [SSEFrame("message", b"b", "41", None)]


def test_fast_path_does_not_take_a_frame_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: actions\nid: 1\ndata: a\n") == []
    assert decoder.feed(b"data: b\n\n") == [SSEFrame("actions", b"a\nb", "1", None)]


def test_many_distinct_event_names_decode_correctly() -> None:
    body = b"".join(b"event: e%d\nid: %d\ndata: x\n\n" % (i, i) for i in range(200))
    frames = decode([body])
    assert frames == [SSEFrame(f"e{i}", b"x", str(i), None) for i in range(200)]
