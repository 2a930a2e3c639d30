"""Turning any Python value into a JSON-safe event, and the privacy rules."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import PurePosixPath
from typing import Any

import pydantic
import pytest

from autoplay_base.errors import ConfigError
from autoplay_base.tracking._values import (
    MAX_DEPTH,
    MAX_ITEMS,
    REDACTION_FAILED,
    Captured,
    Privacy,
    new_event_id,
)
from autoplay_base.tracking.events import TrackingEvent

SCOPE = ("s1", "acme", "u1", None, "c1")


def build(kind: str, privacy: Privacy | None = None, **data: Any) -> TrackingEvent:
    privacy = privacy if privacy is not None else Privacy()
    event, encoded = privacy.finish(Captured(kind, 1_764_597_880.5, SCOPE, data, event_id="e" * 32))
    assert json.loads(encoded) == json.loads(json.dumps(event.to_dict()))
    return event


class Colour(Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: Decimal


class Model(pydantic.BaseModel):
    when: datetime
    tags: set[str]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


class Shown:
    def __repr__(self) -> str:
        return "Shown(secret=sk-123)"


def test_event_shape_and_timestamp() -> None:
    event = build("turn", user="hi", assistant="hello")
    assert event.to_dict() == {
        "event_id": "e" * 32,
        "type": "turn",
        "timestamp": "2025-12-01T14:04:40.500000+00:00",
        "session_id": "s1",
        "product_id": "acme",
        "user_id": "u1",
        "device_id": None,
        "conversation_id": "c1",
        "data": {"user": "hi", "assistant": "hello"},
    }


def test_any_value_has_a_defined_json_form() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    result = {
        "dt": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "d": date(2026, 1, 2),
        "td": timedelta(seconds=90),
        "dec": Decimal("1.10"),
        "uuid": uuid.UUID(int=1),
        "path": PurePosixPath("/a/b"),
        "enum": Colour.RED,
        "bytes": b"\x00\x01secret",
        "set": {3, 1, 2},
        "frozen": frozenset({"b", "a"}),
        "tuple": (1, "x"),
        "model": Model(when=datetime(2026, 1, 1, tzinfo=timezone.utc), tags={"x"}),
        "dc": Point(1, Decimal("2.5")),
        "nan": float("nan"),
        "inf": float("-inf"),
        "obj": Shown(),
        "bad": BadRepr(),
        1: "int key",
        "cycle": cycle,
    }
    event = build("tool_call", name="t", args=None, result=result)
    got = event.data["result"]
    assert got["dt"] == "2026-01-02T03:04:05+00:00"
    assert got["d"] == "2026-01-02"
    assert got["td"] == 90.0
    assert got["dec"] == "1.10"
    assert got["uuid"] == "00000000-0000-0000-0000-000000000001"
    assert got["path"] == "/a/b"
    assert got["enum"] == "red"
    assert got["bytes"] == "<8 bytes>"
    assert got["set"] == [1, 2, 3]
    assert got["frozen"] == ["a", "b"]
    assert got["tuple"] == [1, "x"]
    assert got["model"] == {"when": "2026-01-01T00:00:00Z", "tags": ["x"]}
    assert got["dc"] == {"x": 1, "y": "2.5"}
    assert got["nan"] == "NaN"
    assert got["inf"] == "-Infinity"
    assert got["obj"] == "Shown(secret=sk-123)"
    assert got["bad"] == "<BadRepr>"
    assert got["1"] == "int key"
    nested = got["cycle"]
    for _ in range(MAX_DEPTH - 2):  # the result is level 0, "cycle" level 1
        nested = nested[0]
    assert nested == ["…"]
    assert "args" not in event.data  # None is not recorded


def test_containers_are_capped() -> None:
    privacy = Privacy()
    event = build("event", privacy, name="big", properties={"xs": list(range(MAX_ITEMS + 50))})
    xs = event.data["properties"]["xs"]
    assert len(xs) == MAX_ITEMS + 1
    assert xs[-1] == "…"
    assert privacy.counters.values_truncated == 1


def test_field_cap_and_lone_surrogates() -> None:
    privacy = Privacy(max_field_chars=5)
    event = build("turn", privacy, user="abcdefgh", assistant="a\ud800b")
    assert event.data == {"user": "abcd…", "assistant": "a\ufffdb"}
    assert privacy.counters.values_truncated == 1
    event.to_json().decode("utf-8")


def test_redact_applies_to_every_text_field_not_ids() -> None:
    privacy = Privacy(redact=lambda text: text.replace("4111", "####"), record_errors=True)
    turn = build("turn", privacy, user="card 4111", assistant="ok 4111")
    tool = build(
        "tool_call",
        privacy,
        name="pay_4111",
        args={"card": "4111", "nested": ["4111"]},
        result="4111",
        error=ValueError("bad 4111"),
    )
    custom = build("event", privacy, name="e", properties={"p": "4111"})
    assert turn.data == {"user": "card ####", "assistant": "ok ####"}
    assert tool.data == {
        "name": "pay_4111",
        "args": {"card": "####", "nested": ["####"]},
        "result": "####",
        "runtime_ms": None,
        "error": "ValueError: bad ####",
    }
    assert custom.data["properties"] == {"p": "####"}


def test_a_raising_redact_costs_only_the_text(caplog: pytest.LogCaptureFixture) -> None:
    def redact(text: str) -> str:
        raise RuntimeError(f"cannot redact {text}")

    privacy = Privacy(redact=redact)
    event = build("turn", privacy, user="secret one", assistant="secret two")
    assert event.data == {"user": REDACTION_FAILED, "assistant": REDACTION_FAILED}
    assert privacy.counters.redactions_failed == 2
    assert "secret" not in caplog.text


def test_record_content_false_keeps_lengths_only() -> None:
    privacy = Privacy(record_content=False)
    turn = build("turn", privacy, user="hello", assistant="héllo!")
    tool = build("tool_call", privacy, name="t", args={"q": "x"}, result="abc", runtime_ms=3)
    assert turn.data == {"user_chars": 5, "assistant_chars": 6}
    assert tool.data == {
        "name": "t",
        "args_chars": 9,
        "result_chars": 3,
        "runtime_ms": 3.0,
        "error": None,
    }


def test_errors_are_flags_unless_recorded() -> None:
    event = build("tool_call", name="t", error=RuntimeError("user@example.com not found"))
    assert event.data["error"] is True


def test_usage_accepts_mappings_and_objects() -> None:
    @dataclass
    class Usage:
        model: str
        prompt_tokens: int
        completion_tokens: int

    from_object = build("turn", user="q", assistant="a", usage=Usage("gpt-4o", 3, 4))
    assert from_object.data["usage"] == {
        "model": "gpt-4o",
        "input_tokens": 3,
        "output_tokens": 4,
        "cost": None,
    }
    usage = build("usage", model="m", input_tokens=-1, output_tokens=True, cost=Decimal("0.5"))
    assert usage.data == {"model": "m", "input_tokens": None, "output_tokens": None, "cost": 0.5}


def test_every_type_and_the_conversation_override() -> None:
    assert build("identify", user_id="u2", traits={"plan": "pro"}).data == {
        "user_id": "u2",
        "traits": {"plan": "pro"},
    }
    assert build("alias", user_id="u2", previous_id="u1").data == {
        "user_id": "u2",
        "previous_id": "u1",
    }
    ended = build("conversation_end", conversation_id="c9", properties=None)
    assert (ended.conversation_id, ended.data) == ("c9", {"properties": {}})
    assert build("event", name="n", properties=[1]).data == {
        "name": "n",
        "properties": {"value": [1]},
    }


def test_an_event_is_built_once_for_every_lane() -> None:
    calls: list[str] = []

    def redact(text: str) -> str:
        calls.append(text)
        return text

    privacy = Privacy(redact=redact)
    record = Captured("turn", 1.0, SCOPE, {"user": "u", "assistant": "a"}, event_id="e" * 32)
    assert privacy.finish(record) is privacy.finish(record)
    assert calls == ["u", "a"]


def test_event_ids_are_uuid4_hex() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, value)


def test_bad_caps_are_refused() -> None:
    with pytest.raises(ConfigError):
        Privacy(max_field_chars=0)
