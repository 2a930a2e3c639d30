"""From what the application handed to ``track_*`` to a :class:`TrackingEvent` (pure).

The tracker's hot path only captures a :class:`Captured` record (a few
references and a clock reading); everything that costs more runs here, in a
background worker, once per event whatever the number of sinks:

* **JSON-safe values** (:meth:`Privacy.json_value`), a defined fallback for
  anything: ``datetime``/``date``/``time`` → ISO text; ``timedelta`` → seconds;
  ``Decimal``/``UUID``/``Path`` → ``str``; ``Enum`` → its value; ``bytes`` →
  ``"<N bytes>"`` (never their content); sets → sorted lists; pydantic models
  (``model_dump``) and dataclasses → dicts of their fields; NaN and infinities →
  ``"NaN"``/``"Infinity"``/``"-Infinity"``; dict keys → ``str``; anything else →
  its ``repr()`` (``"<TypeName>"`` when ``repr`` raises). Containers keep at most
  :data:`MAX_ITEMS` items (then a ``"…"`` marker) and :data:`MAX_DEPTH` levels.
  A value that fails to convert becomes ``"<unserialisable TypeName>"``: the
  worker never crashes on a value (``values_unserialisable`` counts them).
* **Privacy**: ``redact`` is applied to every text field (utterances, tool
  args/results, properties, traits, error messages; not ids); with
  ``record_content=False`` utterances and tool args/results are replaced by
  their lengths (``*_chars``); every string is capped at ``max_field_chars``
  (cut, ending with ``…``) and one event's strings share a budget of
  :data:`MAX_EVENT_CHARS`; an error message is kept only with
  ``record_errors=True`` (otherwise ``error`` is ``True``). A ``redact`` that
  raises replaces that text with :data:`REDACTION_FAILED` (counted, logged
  without the text).
* lone surrogates become U+FFFD, so every event encodes as UTF-8.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from autoplay_base._counters import Counters
from autoplay_base.errors import ConfigError
from autoplay_base.tracking import events as ev
from autoplay_base.tracking.events import TrackingEvent

__all__ = [
    "DEFAULT_MAX_FIELD_CHARS",
    "MAX_DEPTH",
    "MAX_EVENT_CHARS",
    "MAX_ITEMS",
    "REDACTION_FAILED",
    "Captured",
    "Privacy",
    "Scope",
    "ValueCounters",
    "json_text",
    "new_event_id",
]

logger = logging.getLogger("autoplay_base.tracking")

DEFAULT_MAX_FIELD_CHARS = 4000
"""Default cap on one string of an event (``max_field_chars``)."""
MAX_EVENT_CHARS = 64_000
"""Characters all the strings of one event may take together (then ``"…"``)."""
MAX_ITEMS = 100
"""Items kept per list or dict."""
MAX_DEPTH = 8
"""Nesting levels kept (deeper values become ``"…"``; also ends cycles)."""
REDACTION_FAILED = "[redaction failed]"
"""What replaces a text whose ``redact`` call raised."""
_ELLIPSIS = "…"

Scope = tuple[str | None, str, str | None, str | None, str | None]
"""``(session_id, product_id, user_id, device_id, conversation_id)`` of a handle."""


class Captured:
    """What a ``track_*`` call captured: the cheapest record that can become an event.

    Shared by every lane; the first lane that needs the event builds it (under
    :attr:`Privacy.lock`), event id included (drawn then, off the hot path, and
    so the same in every sink), and the others reuse :attr:`event`.
    """

    __slots__ = ("at", "data", "event", "event_id", "kind", "scope")

    def __init__(
        self,
        kind: str,
        at: float,
        scope: Scope,
        data: dict[str, Any],
        event_id: str | None = None,
    ) -> None:
        self.kind = kind
        self.at = at
        self.scope = scope
        self.data = data
        self.event_id = event_id
        self.event: tuple[TrackingEvent, bytes] | None = None


class ValueCounters(Counters):
    """What building events cost: fallbacks, cuts and failed redactions."""

    __slots__ = ("redactions_failed", "values_truncated", "values_unserialisable")
    redactions_failed: int
    values_truncated: int
    values_unserialisable: int


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_EVENT_CHARS


class Privacy:
    """The privacy and size rules of one tracker (see the module docstring).

    Args:
        redact: applied to every text field; should be pure (it runs in a worker).
        record_content: ``False`` records lengths instead of utterances and tool values.
        max_field_chars: cap on one string (>= 1).
        record_errors: keep tool error messages (they may hold user data).
    """

    def __init__(
        self,
        *,
        redact: Callable[[str], str] | None = None,
        record_content: bool = True,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        record_errors: bool = False,
    ) -> None:
        if not max_field_chars >= 1:
            raise ConfigError(f"max_field_chars must be >= 1, got {max_field_chars!r}")
        self.redact = redact
        self.record_content = record_content
        self.max_field_chars = max_field_chars
        self.record_errors = record_errors
        self.counters = ValueCounters()
        # Lanes build a shared record once, and the counters stay exact.
        self.lock = threading.Lock()

    # -- events ------------------------------------------------------------------------
    def finish(self, record: Captured) -> tuple[TrackingEvent, bytes]:
        """The event of ``record`` and its JSON, built once for every lane."""
        built = record.event
        if built is not None:
            return built
        with self.lock:
            built = record.event
            if built is None:
                event = self.build(record)
                built = record.event = (event, event.to_json())
        return built

    def build(self, record: Captured) -> TrackingEvent:
        """A :class:`TrackingEvent` from ``record`` (never raises on its values)."""
        budget = _Budget()
        session_id, product_id, user_id, device_id, conversation_id = record.scope
        raw = record.data
        override = raw.get("conversation_id")
        if isinstance(override, str):
            conversation_id = override
        try:
            data = self._data(record.kind, raw, budget)
        except Exception as exc:  # a bug here must cost one payload, not the worker
            self.counters.values_unserialisable += 1
            logger.warning(
                "tracking: could not build the %s payload (%s)", record.kind, type(exc).__name__
            )
            data = {"unserialisable": True}
        return TrackingEvent(
            event_id=record.event_id or new_event_id(),
            type=record.kind,
            at=record.at,
            session_id=session_id,
            product_id=product_id,
            user_id=user_id,
            device_id=device_id,
            conversation_id=conversation_id,
            data=data,
        )

    def _data(self, kind: str, raw: Mapping[str, Any], budget: _Budget) -> dict[str, Any]:
        if kind == ev.TURN:
            data: dict[str, Any] = {}
            self._content(data, "user", raw.get("user"), budget)
            self._content(data, "assistant", raw.get("assistant"), budget)
            if raw.get("usage") is not None:
                data["usage"] = self._usage(raw["usage"], budget)
            return data
        if kind == ev.TOOL_CALL:
            data = {"name": self._id_text(raw.get("name"), budget)}
            self._content(data, "args", raw.get("args"), budget)
            self._content(data, "result", raw.get("result"), budget)
            data["runtime_ms"] = _number(raw.get("runtime_ms"))
            data["error"] = self._error(raw.get("error"), budget)
            return data
        if kind == ev.USAGE:
            return dict(self._usage(raw, budget))
        if kind == ev.CUSTOM:
            return {
                "name": self._id_text(raw.get("name"), budget),
                "properties": self._object(raw.get("properties"), budget),
            }
        if kind == ev.IDENTIFY:
            return {
                "user_id": self._id_text(raw.get("user_id"), budget),
                "traits": self._object(raw.get("traits"), budget),
            }
        if kind == ev.ALIAS:
            return {
                "user_id": self._id_text(raw.get("user_id"), budget),
                "previous_id": self._id_text(raw.get("previous_id"), budget),
            }
        return {"properties": self._object(raw.get("properties"), budget)}

    def _content(self, data: dict[str, Any], name: str, value: Any, budget: _Budget) -> None:
        if value is None:
            return
        if self.record_content:
            data[name] = self.json_value(value, budget)
            return
        if not isinstance(value, str):
            value = json_text(self.json_value(value, _Budget()))
        data[f"{name}_chars"] = len(value)

    def _usage(self, usage: Any, budget: _Budget) -> dict[str, Any]:
        def field(name: str, alt: str) -> Any:
            if isinstance(usage, Mapping):
                return usage.get(name, usage.get(alt))
            return getattr(usage, name, getattr(usage, alt, None))

        model = field("model", "model_name")
        return {
            "model": None if model is None else self._id_text(model, budget),
            "input_tokens": _count(field("input_tokens", "prompt_tokens")),
            "output_tokens": _count(field("output_tokens", "completion_tokens")),
            "cost": _number(field("cost", "total_cost")),
        }

    def _error(self, error: Any, budget: _Budget) -> str | bool | None:
        if error is None or error is False:
            return None
        if not self.record_errors:
            return True
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        else:
            text = error if isinstance(error, str) else repr(error)
        return self.text(text, budget)

    def _object(self, value: Any, budget: _Budget) -> dict[str, Any]:
        if value is None:
            return {}
        converted = self.json_value(value, budget)
        return converted if isinstance(converted, dict) else {"value": converted}

    def _id_text(self, value: Any, budget: _Budget) -> str:
        # Names and ids are kept as they are (not redacted), only made safe and capped.
        text = value if isinstance(value, str) else str(value)
        return self._cap(_encodable(text), budget)

    # -- values ------------------------------------------------------------------------
    def text(self, value: str, budget: _Budget | None = None) -> str:
        """``value`` redacted, made encodable and capped."""
        text = _encodable(value)
        if self.redact is not None:
            try:
                text = _encodable(str(self.redact(text)))
            except Exception as exc:
                self.counters.redactions_failed += 1
                logger.warning(
                    "tracking: redact raised %s; the text was replaced", type(exc).__name__
                )
                text = REDACTION_FAILED
        return self._cap(text, budget if budget is not None else _Budget())

    def _cap(self, text: str, budget: _Budget) -> str:
        limit = min(self.max_field_chars, max(budget.left, 1))
        if len(text) > limit:
            self.counters.values_truncated += 1
            text = text[: limit - 1] + _ELLIPSIS
        budget.left -= len(text)
        return text

    def json_value(self, value: Any, budget: _Budget | None = None, depth: int = 0) -> Any:
        """``value`` as JSON values (see the module docstring); never raises."""
        budget = budget if budget is not None else _Budget()
        try:
            return self._convert(value, budget, depth)
        except Exception:
            self.counters.values_unserialisable += 1
            return f"<unserialisable {type(value).__name__}>"

    def _convert(self, value: Any, budget: _Budget, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int) and not isinstance(value, Enum):
            return int(value)
        if isinstance(value, float) and not isinstance(value, Enum):
            return float(value) if math.isfinite(value) else _NON_FINITE[repr(value)]
        if isinstance(value, str) and not isinstance(value, Enum):
            return self.text(str(value), budget)
        if budget.left <= 0 or depth >= MAX_DEPTH:
            self.counters.values_truncated += 1
            return _ELLIPSIS
        if isinstance(value, Enum):
            return self._convert(value.value, budget, depth + 1)
        if isinstance(value, (datetime, date, time)):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, (Decimal, UUID, PurePath)):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{len(value)} bytes>"
        if isinstance(value, Mapping):
            return self._mapping(value.items(), budget, depth)
        if isinstance(value, (list, tuple)):
            return self._sequence(value, budget, depth)
        if isinstance(value, (set, frozenset)):
            items = self._sequence(value, budget, depth)
            return sorted(items, key=json_text)
        dump = getattr(value, "model_dump", None)
        if callable(dump) and not isinstance(value, type):
            return self._convert(dump(mode="json"), budget, depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
            return self._mapping(fields, budget, depth)
        try:
            shown = repr(value)
        except Exception:
            shown = f"<{type(value).__name__}>"
        return self.text(shown, budget)

    def _mapping(self, items: Any, budget: _Budget, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(items):
            if index >= MAX_ITEMS:
                self.counters.values_truncated += 1
                out[_ELLIPSIS] = _ELLIPSIS
                break
            name = key if isinstance(key, str) else str(self._convert(key, budget, depth + 1))
            out[self._cap(_encodable(name), budget)] = self.json_value(item, budget, depth + 1)
        return out

    def _sequence(self, items: Any, budget: _Budget, depth: int) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(items):
            if index >= MAX_ITEMS:
                self.counters.values_truncated += 1
                out.append(_ELLIPSIS)
                break
            out.append(self.json_value(item, budget, depth + 1))
        return out


_getrandbits = random.getrandbits  # re-seeded by the random module in a forked child
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_V4_SET = (0x4 << 76) | (0x2 << 62)


def new_event_id() -> str:
    """A random RFC 4122 version-4 UUID as 32 hex digits.

    Built from ``random.getrandbits`` rather than ``uuid.uuid4()``: a quarter of
    the cost on the hot path, and the ids only need to be unique, not secret.
    """
    return f"{(_getrandbits(128) & _V4_CLEAR) | _V4_SET:032x}"


_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_text(value: Any) -> str:
    """A JSON value as compact text (sorting set items, measuring non-text content)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _encodable(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return int(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
