"""Typed events from the connector stream, and :func:`decode_event`.

The connector sends JSON objects whose ``type`` field says what they are. Two
types are modelled (``actions`` and ``summary``, schema in the ``autoplay-sdk``
docs); anything else (``usertour_trigger``, future types) becomes an
:class:`UnknownEvent` that keeps the raw object, so nothing is silently lost.

All models are immutable pydantic v2 models (``SlimAction`` a pydantic dataclass).
Unknown JSON fields are ignored so that a connector adding a field never breaks a
client. Each payload also carries
the SSE ``event_id`` of the frame it came in (``None`` when built by hand); it is
not part of the payload's JSON (``model_dump`` leaves it out).

Ids must be encodable text: an id field (``product_id``, ``session_id``,
``user_id``, ``email``, ``conversation_id``, and an unmodelled event's ``type``)
holding a lone surrogate makes the event invalid (``EventDecodeError(reason=
"invalid")`` naming the field), because it could never be written to Redis, a
log or a UTF-8 prompt. JSON bytes cannot carry one: pydantic-core rejects a lone
``\\ud800`` escape as invalid JSON (``reason="not_json"``), so the check runs
only on the Python path (:func:`decode_object`, a webhook body from
``json.loads``, and models built by hand), and decoding a frame costs nothing
more. Text fields may hold anything: :mod:`autoplay_base.formatting` cleans them
wherever they are shown, and every ``to_text()`` is laid out there. The import goes
one way: this module calls formatting, which names no event type (it reads the
fields it lays out through read-only protocols).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    TypeAdapter,
    ValidationError,
    computed_field,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import core_schema

from autoplay_base import formatting
from autoplay_base.errors import EventDecodeError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "ActionsPayload",
    "AnyPayload",
    "Event",
    "SlimAction",
    "SummaryPayload",
    "UnknownEvent",
    "decode_event",
    "decode_object",
]

DEFAULT_MAX_EVENT_BYTES = 256 * 1024
"""Frames larger than this are rejected before any parsing (``decode_event(max_bytes=...)``)."""


# Unknown fields are ignored (a connector adding one never breaks a client). Only
# keys are interned: caching every string value (descriptions are unique) costs
# more than it saves, about 0.2 µs a frame.
_CONFIG = ConfigDict(extra="ignore", cache_strings="keys")


_LONE_SURROGATE = "contains a lone surrogate (not encodable as UTF-8)"


def _has_lone_surrogate(value: str) -> bool:
    # ASCII (nearly every id) is answered by one C-level scan; a Python ``str``
    # fails to encode exactly when it holds a surrogate, and all of those are lone.
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _encodable_id(value: str) -> str:
    if _has_lone_surrogate(value):
        raise ValueError(_LONE_SURROGATE)
    return value


_Id = Annotated[
    str,
    GetPydanticSchema(
        # From JSON a plain string schema (no Python call per field: JSON bytes cannot
        # hold a lone surrogate); from Python objects the string plus the check.
        lambda _source, _handler: core_schema.json_or_python_schema(
            json_schema=core_schema.str_schema(),
            python_schema=core_schema.no_info_after_validator_function(
                _encodable_id, core_schema.str_schema()
            ),
        )
    ),
]
"""An id field: a string that encodes as UTF-8 (see the module docstring)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, **_CONFIG)


@pydantic_dataclass(frozen=True, slots=True, config=_CONFIG)
class SlimAction:
    """One UI action: what the user did and on which page.

    A slotted pydantic dataclass rather than a model: a batch holds several, and
    validating them this way halves the cost of decoding a frame. Like the
    ``autoplay-sdk`` dataclass, it can be built positionally.
    """

    title: str
    description: str
    canonical_url: str
    index: int | None = None
    type: str | None = None
    timestamp_start: float | None = None
    timestamp_end: float | None = None
    raw_url: str | None = None

    def to_text(self) -> str:
        """``<description> — <canonical_url>``, cleaned (the title stands in for no description).

        One line, laid out by :func:`autoplay_base.formatting.action_line`.
        """
        return formatting.display_line(formatting.action_line(self))


class ActionsPayload(_Frozen):
    """A batch of UI actions for one session, as forwarded by the connector.

    ``count`` always equals ``len(actions)``: it is computed, so a connector value
    that disagrees is ignored, because every consumer relies on the real length.
    """

    type: Literal["actions"] = "actions"
    product_id: _Id
    session_id: _Id | None = None
    user_id: _Id | None = None
    email: _Id | None = None
    actions: tuple[SlimAction, ...]
    forwarded_at: float
    conversation_id: _Id | None = None
    event_id: str | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def count(self) -> int:
        """Number of actions in the batch: always ``len(actions)``, whatever the connector sent."""
        return len(self.actions)

    def to_text(self) -> str:
        """Embedding-ready text: a header line, then one numbered line per action.

        Every part is cleaned, so the text has exactly ``1 + count`` lines (laid out
        by :func:`autoplay_base.formatting.format_actions_payload`)::

            Session ps_abc123 — 2 actions
            1. Viewed the Dashboard page — https://app.example.com/dashboard
            2. Clicked Export CSV button — https://app.example.com/dashboard
        """
        return formatting.format_actions_payload(self)


class SummaryPayload(_Frozen):
    """A prose summary of a session; it replaces the ``replaces`` oldest pending actions."""

    type: Literal["summary"] = "summary"
    product_id: _Id
    session_id: _Id | None = None
    summary: str
    replaces: int = Field(default=0, ge=0)
    forwarded_at: float
    event_id: str | None = Field(default=None, exclude=True)

    def to_text(self) -> str:
        """The summary cleaned to one line, as the store keeps it (``formatting.clean_summary``)."""
        return formatting.clean_summary(self.summary)


class UnknownEvent(_Frozen):
    """An event of a type this package does not model; ``data`` is the raw JSON object."""

    type: _Id
    data: dict[str, Any]
    event_id: str | None = None

    @property
    def product_id(self) -> str | None:
        """The ``product_id`` field of the raw object, when it is a string."""
        value = self.data.get("product_id")
        return value if isinstance(value, str) else None

    @property
    def session_id(self) -> str | None:
        """The ``session_id`` field of the raw object, when it is a string."""
        value = self.data.get("session_id")
        return value if isinstance(value, str) else None

    def to_text(self) -> str:
        """The raw object as compact JSON, one line of printable ASCII."""
        return formatting.format_raw_event(self.data)


AnyPayload: TypeAlias = ActionsPayload | SummaryPayload
"""The modelled payloads (what ``ContextStore.add`` accepts)."""

Event: TypeAlias = ActionsPayload | SummaryPayload | UnknownEvent
"""Anything :func:`decode_event` returns."""

_PAYLOAD_ADAPTER: TypeAdapter[AnyPayload] = TypeAdapter(
    Annotated[ActionsPayload | SummaryPayload, Field(discriminator="type")]
)
# The adapter's compiled validator, called directly: ``TypeAdapter.validate_json``
# adds a Python-level layer (about 10% of decoding a typical frame).
_validate_json = _PAYLOAD_ADAPTER.validator.validate_json
_setattr = object.__setattr__


def _text_oversized(data: str, max_bytes: int) -> bool:
    """Whether text of at most ``max_bytes`` characters still exceeds it in UTF-8."""
    if len(data) * 4 <= max_bytes:  # every character is at most four bytes
        return False
    return len(data.encode("utf-8", "surrogatepass")) > max_bytes


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors(include_url=False, include_input=False)[:3]:
        # The first location part is the union tag (``actions``/``summary``): drop it.
        where = ".".join(str(p) for p in detail["loc"][1:]) or "event"
        parts.append(f"{where}: {detail['msg']}")
    return "; ".join(parts)


def _classify(exc: ValidationError, event_id: str | None) -> EventDecodeError | None:
    """The error for a failed validation; ``None`` when the object is of an unmodelled type."""
    first = exc.errors(include_url=False, include_input=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        message = f"event is not valid JSON: {first['msg']}"
        return EventDecodeError(message, reason="not_json", event_id=event_id)
    if kind in ("dict_type", "model_attributes_type"):  # from JSON / from Python
        return EventDecodeError(
            "event is not a JSON object", reason="not_object", event_id=event_id
        )
    if kind == "union_tag_invalid":
        return None
    if kind == "union_tag_not_found":
        message = "invalid event: type: field required"
        return EventDecodeError(message, reason="invalid", event_id=event_id)
    return EventDecodeError(f"invalid event: {_describe(exc)}", reason="invalid", event_id=event_id)


def _with_id(payload: AnyPayload, event_id: str | None) -> AnyPayload:
    if event_id is not None or payload.event_id is not None:
        # The SSE id is not part of the JSON (a JSON "event_id" must not survive).
        # Setting it after validation costs far less than a validator on every
        # frame; the model is frozen to its users.
        _setattr(payload, "event_id", event_id)
    return payload


def decode_event(
    data: bytes | str,
    *,
    event_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Event:
    """Validate one frame's ``data`` straight from bytes into a typed event.

    Returns an :class:`ActionsPayload` or :class:`SummaryPayload`, or an
    :class:`UnknownEvent` for a well-formed object of another ``type``. The SSE
    ``event_id`` is attached to the result.

    Raises:
        EventDecodeError: with ``reason`` ``"oversized"`` (larger than
            ``max_bytes``), ``"not_json"``, ``"not_object"``, or ``"invalid"``
            (a missing or mistyped field; the message names it).
    """
    # More bytes or characters than the cap is oversized (a character is at least one
    # UTF-8 byte); only text can be oversized within it. Frames are bytes: no call.
    if len(data) > max_bytes or (not isinstance(data, bytes) and _text_oversized(data, max_bytes)):
        raise EventDecodeError(
            f"event is larger than the {max_bytes}-byte cap", reason="oversized", event_id=event_id
        )
    try:
        payload: AnyPayload = _validate_json(data)
    except ValidationError as exc:
        error = _classify(exc, event_id)
        if error is None:
            return _unknown_event(json.loads(data), event_id)
        raise error from None
    return _with_id(payload, event_id)


def decode_object(data: Mapping[str, Any], *, event_id: str | None = None) -> Event:
    """:func:`decode_event` for a JSON object already parsed (a webhook body, a dict).

    Raises:
        EventDecodeError: ``"not_object"`` or ``"invalid"``, as :func:`decode_event`.
    """
    try:
        payload: AnyPayload = _PAYLOAD_ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = _classify(exc, event_id)
        if error is None:
            return _unknown_event(dict(data), event_id)
        raise error from None
    return _with_id(payload, event_id)


def _unknown_event(raw: dict[str, Any], event_id: str | None) -> UnknownEvent:
    # Only reached for an object whose ``type`` is not modelled; its value may
    # still be something other than a string.
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise EventDecodeError(
            "invalid event: type: must be a string", reason="invalid", event_id=event_id
        )
    if _has_lone_surrogate(kind):
        raise EventDecodeError(
            f"invalid event: type: {_LONE_SURROGATE}", reason="invalid", event_id=event_id
        )
    return UnknownEvent(type=kind, data=raw, event_id=event_id)
