"""The bytes SSE decoder, fed hand-built and hostile bodies in every possible chunking."""

from __future__ import annotations

import pytest

from autoplay_base._sse import (
    MAX_EVENT_ID_CHARS,
    MAX_EVENT_NAME_BYTES,
    MAX_RETRY_MS,
    SSEDecoder,
    SSEFrame,
    is_valid_event_id,
)
from autoplay_base.errors import ConfigError

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


# --- Hostile field values ---------------------------------------------------------------
# Nothing a server sends may escape feed(); every field has a validated range.


@pytest.mark.parametrize(
    ("value", "retry", "rejected"),
    [
        (b"1", 1, 0),
        (b"0", 0, 0),
        (b"3600000", MAX_RETRY_MS, 0),
        (b"0" * 50 + b"5", 5, 0),  # leading zeros are not magnitude
        (b"3600001", MAX_RETRY_MS, 1),
        (b"1234567890", MAX_RETRY_MS, 1),  # 10 digits
        (b"12345678901", MAX_RETRY_MS, 1),  # 11 digits
        (b"9" * 1000, MAX_RETRY_MS, 1),
        (b"9" * 100_000, MAX_RETRY_MS, 1),  # int() raises past 4300 digits
        (b"-5", None, 1),
        (b"+5", None, 1),
        (b"5 ", None, 1),
        (b" 5", None, 1),  # one space is stripped by the spec, not two
        (b"1e3", None, 1),
        (b"1.5", None, 1),
        (b"5\x00", None, 1),
        (b"", None, 1),
        ("\u0663".encode(), None, 1),  # ARABIC-INDIC DIGIT THREE
        ("\uff15".encode(), None, 1),  # FULLWIDTH DIGIT FIVE
    ],
)
def test_retry_values_are_ascii_digits_clamped_to_the_maximum(
    value: bytes, retry: int | None, rejected: int
) -> None:
    decoder = SSEDecoder()
    frames = decoder.feed(b"retry: " + value + b"\ndata: x\n\n")
    assert frames == [SSEFrame("message", b"x", "", retry)]
    assert decoder.rejected_retries == rejected
    assert decoder.oversized_frames == 0


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123_~ !", True),
        (b"", True),  # an empty id resets the last id, as the spec says
        (b"~" * MAX_EVENT_ID_CHARS, True),
        (b"~" * (MAX_EVENT_ID_CHARS + 1), False),
        ("caf\u00e9".encode(), False),  # non-ASCII: httpx could not send it back
        (b"\xff\xfe", False),  # not even UTF-8
        (b"a\tb", False),
        (b"a\x1bb", False),
        (b"a\x7fb", False),
        (b"a\x00b", False),  # NUL: ignored by the spec
        (b"x" * 100_000, False),
    ],
)
@pytest.mark.parametrize("shape", ["fast", "line"])
def test_ids_are_printable_ascii_of_bounded_length(value: bytes, kept: bool, shape: str) -> None:
    if shape == "fast":
        body = b"event: a\nid: 1\ndata: x\n\nevent: a\nid: " + value + b"\ndata: y\n\n"
    else:
        body = b"id: 1\ndata: x\n\nid: " + value + b"\nevent: a\ndata: y\n\n"
    decoder = SSEDecoder()
    frames = decoder.feed(body)
    expected_id = value.decode("ascii") if kept else "1"  # a rejected id keeps the last one
    assert [frame.id for frame in frames] == ["1", expected_id]
    assert [frame.data for frame in frames] == [b"x", b"y"]
    assert decoder.rejected_ids == (0 if kept else 1)
    assert decoder.feed(b"data: z\n\n") == [SSEFrame("message", b"z", expected_id, None)]


def test_a_one_megabyte_id_costs_its_frame_only() -> None:
    decoder = SSEDecoder()  # the default cap is far below 1 MB: the frame is oversized
    body = b"id: 1\ndata: a\n\nid: " + b"7" * (1 << 20) + b"\ndata: b\n\ndata: c\n\n"
    assert decoder.feed(body) == [
        SSEFrame("message", b"a", "1", None),
        SSEFrame("message", b"c", "1", None),
    ]
    assert decoder.oversized_frames == 1
    roomy = SSEDecoder(max_frame_bytes=2 << 20)  # under the cap: the field alone is rejected
    assert [f.id for f in roomy.feed(body)] == ["1", "1", "1"]
    assert roomy.rejected_ids == 1


@pytest.mark.parametrize(
    ("name", "event", "rejected"),
    [
        (b"x" * MAX_EVENT_NAME_BYTES, "x" * MAX_EVENT_NAME_BYTES, 0),
        (b"x" * (MAX_EVENT_NAME_BYTES + 1), "message", 1),
        (b"\xff", "\ufffd", 0),  # undecodable bytes are replaced, as before
    ],
)
@pytest.mark.parametrize("shape", ["fast", "line"])
def test_event_names_are_bounded(name: bytes, event: str, rejected: int, shape: str) -> None:
    if shape == "fast":
        body = b"event: " + name + b"\nid: 3\ndata: d\n\n"
    else:
        body = b"data: d\nevent: " + name + b"\nid: 3\n\n"
    decoder = SSEDecoder()
    assert decoder.feed(body) == [SSEFrame(event, b"d", "3", None)]
    assert decoder.rejected_names == rejected


def test_a_one_megabyte_event_name_costs_its_frame_only() -> None:
    decoder = SSEDecoder()
    body = b"event: " + b"n" * (1 << 20) + b"\ndata: lost\n\nevent: actions\nid: 2\ndata: ok\n\n"
    assert decoder.feed(body) == [SSEFrame("actions", b"ok", "2", None)]
    assert decoder.oversized_frames == 1
    roomy = SSEDecoder(max_frame_bytes=2 << 20)
    assert roomy.feed(body)[0] == SSEFrame("message", b"lost", "", None)
    assert roomy.rejected_names == 1


# --- BOM ---------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"
BOM_BODY = b"event: heartbeat\nid: 5\ndata: {}\n\nevent: actions\nid: 6\ndata: x\n\n"
BOM_EXPECTED = [
    SSEFrame("heartbeat", b"{}", "5", None),
    SSEFrame("actions", b"x", "6", None),
]


@pytest.mark.parametrize(
    "chunks",
    [
        [BOM + BOM_BODY],
        [BOM[:1], BOM[1:] + BOM_BODY],
        [BOM[:2], BOM[2:] + BOM_BODY],
        [BOM[:1], BOM[1:2], BOM[2:], BOM_BODY],
        [b"", BOM[:1], b"", BOM[1:], BOM_BODY],
        [BOM, BOM_BODY[:3], BOM_BODY[3:]],
    ],
)
def test_a_leading_bom_is_stripped_however_it_is_split(chunks: list[bytes]) -> None:
    # Before: the first field name became "\ufeffevent": the first event (and its
    # resume id) was lost, and a heartbeat turned into an unknown "message".
    assert decode(chunks) == BOM_EXPECTED


def test_a_bom_that_is_not_at_the_start_stays() -> None:
    assert decode([b"data: " + BOM + b"x\n\n"]) == [SSEFrame("message", BOM + b"x", "", None)]
    # A second BOM is part of the first line: "\ufeffdata" is an unknown field.
    assert decode([BOM + BOM + b"data: lost\n\ndata: kept\n\n"]) == [
        SSEFrame("message", b"kept", "", None)
    ]
    # Bytes that only begin like a BOM are data.
    assert decode([b"\xef", b"\xbbdata: x\n\ndata: y\n\n"]) == [SSEFrame("message", b"y", "", None)]


def test_a_stream_shorter_than_a_bom_is_decoded_when_it_goes_on() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: a\n\n") == [SSEFrame("message", b"a", "", None)]


# --- Line ends and chunk edges ------------------------------------------------------------


def test_an_empty_chunk_between_cr_and_lf_keeps_them_one_line_end() -> None:
    # Before: an empty chunk reset the pending CR, so "\r" + "" + "\n" was two line
    # ends and split the frame in two.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\n\n") == [SSEFrame("message", b"a\nb", "", None)]


def test_max_frame_bytes_must_hold_a_field() -> None:
    with pytest.raises(ConfigError):
        SSEDecoder(max_frame_bytes=1)
    decoder = SSEDecoder(max_frame_bytes=5)
    assert decoder.feed(b"data\n\ndata:\n\n") == [SSEFrame("message", b"", "", None)]
    assert decoder.oversized_frames == 1  # "data:" and its line end are 6 bytes


def test_is_valid_event_id() -> None:
    assert is_valid_event_id("")
    assert is_valid_event_id(" ~" * 128)
    assert not is_valid_event_id("x" * 257)
    assert not is_valid_event_id("\u00e9")
    assert not is_valid_event_id("a\nb")


# --- Progress -----------------------------------------------------------------------------


def test_progress_counts_frames_and_comments_only() -> None:
    decoder = SSEDecoder(max_frame_bytes=64)
    steps = [
        (b": keep-alive\n", 1),
        (b":\n", 2),
        (b"foo: junk\nbar\n", 2),  # junk field lines
        (b"\n", 2),  # it ended a frame with nothing to dispatch
        (b"\n\n\n", 2),  # blank lines
        (b"data: par", 2),  # a partial line
        (b"tial\n", 2),
        (b"\n", 3),  # dispatched
        (b"event: a\nid: 1\ndata: b\n\n" * 2, 5),  # fast path
        (b"data: " + b"x" * 100 + b"\n\n", 5),  # oversized: discarded, not progress
        (b"retry: 5\n\n", 6),  # a field-only frame is dispatched
    ]
    for chunk, progress in steps:
        decoder.feed(chunk)
        assert decoder.progress == progress, chunk
    assert decoder.oversized_frames == 1
