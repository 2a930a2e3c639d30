"""Typed events and decode_event: exact models, texts and every kind of bad frame."""

from __future__ import annotations

import json

import pydantic
import pytest

from autoplay_base import (
    ActionsPayload,
    EventDecodeError,
    SlimAction,
    SummaryPayload,
    UnknownEvent,
    decode_event,
)

SEED_ACTIONS = {
    "type": "actions",
    "product_id": "my_product",
    "session_id": "ps_abc123",
    "user_id": "usr_456",
    "email": "user@example.com",
    "actions": [
        {
            "title": "Dashboard",
            "description": "Viewed the Dashboard page",
            "canonical_url": "https://app.example.com/dashboard",
        },
        {
            "title": "Export CSV button",
            "description": "Clicked Export CSV button",
            "canonical_url": "https://app.example.com/dashboard",
        },
    ],
    "count": 2,
    "forwarded_at": 1705314600.123,
}

SEED_SUMMARY = {
    "type": "summary",
    "product_id": "my_product",
    "session_id": "ps_abc123",
    "summary": "The user navigated to the Dashboard, exported a CSV report.",
    "replaces": 12,
    "forwarded_at": 1705314900.456,
}


def test_actions_payload_from_seed_json_bytes() -> None:
    event = decode_event(json.dumps(SEED_ACTIONS).encode(), event_id="17")
    assert isinstance(event, ActionsPayload)
    assert event.event_id == "17"
    assert event.session_id == "ps_abc123"
    assert event.user_id == "usr_456"
    assert event.email == "user@example.com"
    assert event.count == 2
    assert event.forwarded_at == 1705314600.123
    assert event.actions[1] == SlimAction(
        title="Export CSV button",
        description="Clicked Export CSV button",
        canonical_url="https://app.example.com/dashboard",
    )
    assert event.to_text() == (
        "Session ps_abc123 — 2 actions\n"
        "1. Viewed the Dashboard page — https://app.example.com/dashboard\n"
        "2. Clicked Export CSV button — https://app.example.com/dashboard"
    )


def test_event_id_is_not_part_of_the_json() -> None:
    event = decode_event(json.dumps(SEED_ACTIONS), event_id="17")
    dumped = event.model_dump()
    assert "event_id" not in dumped
    assert dumped["count"] == 2


def test_singular_action_header() -> None:
    data = dict(SEED_ACTIONS, actions=SEED_ACTIONS["actions"][:1], session_id=None)
    event = decode_event(json.dumps(data))
    assert isinstance(event, ActionsPayload)
    assert event.to_text() == (
        "Session unknown — 1 action\n1. Viewed the Dashboard page — https://app.example.com/dashboard"
    )


def test_count_that_disagrees_is_corrected() -> None:
    for count in (0, 99):
        event = decode_event(json.dumps(dict(SEED_ACTIONS, count=count)))
        assert isinstance(event, ActionsPayload)
        assert event.count == 2
    missing = {k: v for k, v in SEED_ACTIONS.items() if k != "count"}
    assert decode_event(json.dumps(missing)).count == 2  # type: ignore[union-attr]


def test_summary_payload() -> None:
    event = decode_event(json.dumps(SEED_SUMMARY), event_id="9")
    assert isinstance(event, SummaryPayload)
    assert (event.replaces, event.event_id) == (12, "9")
    assert event.to_text() == SEED_SUMMARY["summary"]


def test_unknown_type_keeps_the_raw_object() -> None:
    raw = {"type": "usertour_trigger", "product_id": "p", "session_id": "s", "tour": 3}
    event = decode_event(json.dumps(raw), event_id="5")
    assert isinstance(event, UnknownEvent)
    assert (event.type, event.data, event.event_id) == ("usertour_trigger", raw, "5")
    assert (event.product_id, event.session_id) == ("p", "s")
    assert (
        event.to_text() == '{"product_id":"p","session_id":"s","tour":3,"type":"usertour_trigger"}'
    )


def test_unknown_fields_are_ignored() -> None:
    event = decode_event(json.dumps(dict(SEED_ACTIONS, brand_new_field=[1, 2])))
    assert isinstance(event, ActionsPayload)


def test_slim_action_optional_fields_and_text() -> None:
    action = SlimAction(
        title="Invite",
        description="",
        canonical_url="/team",
        index=3,
        type="click",
        timestamp_start=1.0,
        timestamp_end=2.0,
        raw_url="/team?x=1",
    )
    assert action.to_text() == "Invite — /team"
    assert SlimAction(title="t", description="Did it", canonical_url="").to_text() == "Did it"


def test_models_are_immutable() -> None:
    event = decode_event(json.dumps(SEED_SUMMARY))
    with pytest.raises(pydantic.ValidationError):
        event.summary = "changed"  # type: ignore[misc,union-attr]


@pytest.mark.parametrize(
    ("frame", "reason", "message"),
    [
        (b"not json", "not_json", "event is not valid JSON"),
        (b"[1, 2]", "not_object", "event is not a JSON object"),
        (b'"text"', "not_object", "event is not a JSON object"),
        (b"{}", "invalid", "invalid event: type: field required"),
        (b'{"type": 7}', "invalid", "invalid event: type: must be a string"),
        (
            b'{"type": "actions", "product_id": "p", "forwarded_at": 1}',
            "invalid",
            "invalid event: actions: Field required",
        ),
        (
            b'{"type": "summary", "product_id": "p", "summary": "s", "replaces": -1,'
            b' "forwarded_at": 1}',
            "invalid",
            "invalid event: replaces: Input should be greater than or equal to 0",
        ),
        (
            b'{"type": "actions", "product_id": "p", "actions": "x", "forwarded_at": 1}',
            "invalid",
            "invalid event: actions: Input should be a valid",
        ),
    ],
)
def test_bad_frames_raise_a_clear_error(frame: bytes, reason: str, message: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(frame, event_id="3")
    assert info.value.reason == reason
    assert info.value.event_id == "3"
    assert str(info.value).startswith(message)


def test_oversized_frames_are_rejected_before_parsing() -> None:
    frame = json.dumps(dict(SEED_SUMMARY, summary="x" * 300)).encode()
    assert isinstance(decode_event(frame, max_bytes=len(frame)), SummaryPayload)
    with pytest.raises(EventDecodeError) as info:
        decode_event(frame, max_bytes=len(frame) - 1)
    assert info.value.reason == "oversized"
    # Text is measured in UTF-8 bytes: 100 three-byte characters exceed a 299-byte cap.
    text = json.dumps(dict(SEED_SUMMARY, summary="€" * 100), ensure_ascii=False)
    with pytest.raises(EventDecodeError):
        decode_event(text, max_bytes=len(text.encode()) - 1)
    assert isinstance(decode_event(text, max_bytes=len(text.encode())), SummaryPayload)


def test_default_cap_is_256_kib() -> None:
    big = json.dumps(dict(SEED_SUMMARY, summary="y" * (256 * 1024)))
    with pytest.raises(EventDecodeError, match="262144-byte cap"):
        decode_event(big)


def test_decode_object_validates_a_parsed_object() -> None:
    from autoplay_base import decode_object

    event = decode_object(SEED_SUMMARY, event_id="4")
    assert isinstance(event, SummaryPayload)
    assert (event.replaces, event.event_id) == (12, "4")
    unknown = decode_object({"type": "usertour_trigger", "x": 1})
    assert isinstance(unknown, UnknownEvent)
    assert unknown.data == {"type": "usertour_trigger", "x": 1}
    with pytest.raises(EventDecodeError) as info:
        decode_object([1, 2])  # type: ignore[arg-type]
    assert info.value.reason == "not_object"
    with pytest.raises(EventDecodeError, match="invalid event: summary: Field required"):
        decode_object({"type": "summary", "product_id": "p", "forwarded_at": 1})


# -- lone surrogates: ids must be encodable text ---------------------------------------
ID_FIELDS = {
    "actions": ("product_id", "session_id", "user_id", "email", "conversation_id"),
    "summary": ("product_id", "session_id"),
}
SEEDS = {"actions": SEED_ACTIONS, "summary": SEED_SUMMARY}
ID_CASES = [(kind, field) for kind, fields in ID_FIELDS.items() for field in fields]


@pytest.mark.parametrize(("kind", "field"), ID_CASES)
@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "ok\udc80"])
def test_a_lone_surrogate_in_an_id_makes_a_parsed_object_invalid(
    kind: str, field: str, surrogate: str
) -> None:
    from autoplay_base import decode_object

    # What json.loads makes of a webhook body holding "\ud800": a str with a lone surrogate.
    body = json.loads(json.dumps(dict(SEEDS[kind], **{field: surrogate})))
    assert body[field] == surrogate
    with pytest.raises(EventDecodeError) as info:
        decode_object(body, event_id="7")
    assert info.value.reason == "invalid"
    assert info.value.event_id == "7"
    assert str(info.value) == (
        f"invalid event: {field}: Value error, contains a lone surrogate (not encodable as UTF-8)"
    )
    str(info.value).encode("utf-8")  # the message never echoes the value


def test_a_lone_surrogate_in_an_unknown_events_type_makes_it_invalid() -> None:
    from autoplay_base import decode_object

    with pytest.raises(EventDecodeError) as info:
        decode_object({"type": "tour\ud800", "x": 1})
    assert info.value.reason == "invalid"
    assert str(info.value) == (
        "invalid event: type: contains a lone surrogate (not encodable as UTF-8)"
    )
    with pytest.raises(pydantic.ValidationError):
        UnknownEvent(type="\udc00", data={})


@pytest.mark.parametrize(("kind", "field"), ID_CASES)
def test_models_built_by_hand_reject_a_lone_surrogate_in_an_id(kind: str, field: str) -> None:
    model = ActionsPayload if kind == "actions" else SummaryPayload
    fields = dict(SEEDS[kind], **{field: "x\ud800"})
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate(fields)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]
    # Non-ASCII ids that encode are fine, from Python and from JSON alike.
    fine = dict(SEEDS[kind], **{field: "sesión-漢字-😀"})
    assert getattr(model.model_validate(fine), field) == "sesión-漢字-😀"
    assert getattr(decode_event(json.dumps(fine).encode()), field) == "sesión-漢字-😀"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d", "\\ude00x"])
@pytest.mark.parametrize("field", ["product_id", "session_id", "summary"])
def test_json_bytes_cannot_carry_a_lone_surrogate(escape: str, field: str) -> None:
    # Why decode_event needs no id check: pydantic-core rejects a lone surrogate
    # escape anywhere in a JSON document, text fields included, as invalid JSON.
    frame = json.dumps(dict(SEED_SUMMARY, **{field: "X"})).replace('"X"', f'"{escape}"')
    with pytest.raises(EventDecodeError) as info:
        decode_event(frame.encode(), event_id="8")
    assert info.value.reason == "not_json"
    assert "surrogate" in str(info.value) or "hex escape" in str(info.value)
    # A valid pair is one code point.
    pair = frame.replace(escape, "\\ud83d\\ude00")
    assert getattr(decode_event(pair.encode()), field) == "😀"


def test_a_str_frame_with_a_raw_lone_surrogate_is_invalid() -> None:
    # A frame handed over as str (not bytes) that holds the surrogate itself.
    frame = json.dumps(dict(SEED_SUMMARY, session_id="\ud800"), ensure_ascii=False)
    assert "\ud800" in frame
    with pytest.raises(EventDecodeError) as info:
        decode_event(frame)
    assert info.value.reason == "invalid"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type": "tour", "x": "\\ud800"}',
        b'{"type": "tour\\udc00"}',
        b'{"type": "tour", "deep": [{"a": "\\udfff"}]}',
    ],
)
def test_unknown_events_from_json_bytes_cannot_carry_a_lone_surrogate(frame: bytes) -> None:
    # An unmodelled event is re-read with json.loads, which would accept the escape;
    # pydantic-core has already rejected the whole document by then.
    with pytest.raises(EventDecodeError) as info:
        decode_event(frame)
    assert info.value.reason == "not_json"
