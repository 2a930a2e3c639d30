"""Tracking events: pure, typed, JSON-serialisable values (no I/O).

One :class:`TrackingEvent` per thing the chatbot said or did. It is a frozen,
slotted dataclass rather than a pydantic model because nothing here needs
validating: every field is built by :mod:`autoplay_base.tracking._values` from
already-sanitised values in the tracker's background workers, and a dataclass
costs a fraction of a model to build. :meth:`TrackingEvent.to_dict` is the wire
shape every sink uses (the HTTP body, the Redis entry, the OTel attributes)::

    {"event_id": "3f0c…", "type": "turn", "timestamp": "2026-12-01T14:04:40.123456+00:00",
     "session_id": "s1", "product_id": "acme", "user_id": "u1", "device_id": null,
     "conversation_id": "c1", "data": {"user": "…", "assistant": "…"}}

``data`` holds the payload of the event's ``type`` (the ``*Data`` typed dicts
below document each one); it contains only JSON values (``None``, ``bool``,
``int``, ``float``, ``str``, lists and string-keyed dicts of them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, TypeAlias, TypedDict

__all__ = [
    "ALIAS",
    "CONVERSATION_END",
    "CUSTOM",
    "EVENT_TYPES",
    "IDENTIFY",
    "SESSION_END",
    "TOOL_CALL",
    "TURN",
    "USAGE",
    "AliasData",
    "CustomData",
    "IdentifyData",
    "JSONValue",
    "ToolCallData",
    "TrackingEvent",
    "TurnData",
    "UsageData",
    "iso_timestamp",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value :func:`json.dumps` always accepts."""

TURN: Final = "turn"
TOOL_CALL: Final = "tool_call"
USAGE: Final = "usage"
CUSTOM: Final = "event"
IDENTIFY: Final = "identify"
ALIAS: Final = "alias"
CONVERSATION_END: Final = "conversation_end"
SESSION_END: Final = "session_end"
EVENT_TYPES: Final = (
    TURN,
    TOOL_CALL,
    USAGE,
    CUSTOM,
    IDENTIFY,
    ALIAS,
    CONVERSATION_END,
    SESSION_END,
)
"""Every ``type`` a tracking event can have."""


class TurnData(TypedDict, total=False):
    """``turn``: ``user``/``assistant`` text (or ``user_chars``/``assistant_chars``
    when content is not recorded), optional ``usage`` (a :class:`UsageData`)."""

    user: str
    assistant: str
    user_chars: int
    assistant_chars: int
    usage: UsageData


class ToolCallData(TypedDict, total=False):
    """``tool_call``: ``name``, ``args``/``result`` (any JSON value, or their
    ``*_chars`` lengths), ``runtime_ms``, ``error`` (the message only with
    ``record_errors=True``, otherwise ``True``)."""

    name: str
    args: JSONValue
    result: JSONValue
    args_chars: int
    result_chars: int
    runtime_ms: float | None
    error: str | bool | None


class UsageData(TypedDict, total=False):
    """``usage``: ``model`` with ``input_tokens``/``output_tokens``, and/or a ``cost``."""

    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None


class CustomData(TypedDict):
    """``event``: a custom event's ``name`` and ``properties``."""

    name: str
    properties: dict[str, JSONValue]


class IdentifyData(TypedDict):
    """``identify``: the ``user_id`` now known and its ``traits``."""

    user_id: str
    traits: dict[str, JSONValue]


class AliasData(TypedDict):
    """``alias``: ``user_id`` is the new id of ``previous_id``."""

    user_id: str
    previous_id: str


def iso_timestamp(at: float) -> str:
    """``at`` (UNIX seconds) as UTC ISO 8601 with microseconds (``…+00:00``)."""
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One tracked fact, as every sink receives it (see the module docstring).

    Attributes:
        event_id: uuid4 hex, unique per event; the same on every retry and in
            every sink (receivers and the context store dedupe on it).
        type: one of :data:`EVENT_TYPES`.
        at: when it was tracked, UNIX seconds (``timestamp`` is its ISO form).
        session_id: the session (``None`` only for tracker-level identify/alias).
        product_id: the product the session belongs to.
        user_id, device_id, conversation_id: as given to the session handle.
        data: the payload, JSON values only.
    """

    event_id: str
    type: str
    at: float
    session_id: str | None
    product_id: str
    user_id: str | None
    device_id: str | None
    conversation_id: str | None
    data: dict[str, Any]

    @property
    def timestamp(self) -> str:
        """When it was tracked, UTC ISO 8601."""
        return iso_timestamp(self.at)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape (``at`` appears as ``timestamp``)."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "timestamp": self.timestamp,
            "session_id": self.session_id,
            "product_id": self.product_id,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "conversation_id": self.conversation_id,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        """:meth:`to_dict` as compact UTF-8 JSON.

        Never raises: ``data`` holds JSON values, and a lone surrogate (in an id
        given by hand) is encoded as ``?`` rather than as invalid UTF-8.
        """
        text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "replace")
