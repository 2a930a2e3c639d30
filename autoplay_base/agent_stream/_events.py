"""Run events (pure): their types, the one safe JSON encoding, size bounds and cursors.

Nothing here does I/O or reads a clock: callers pass ``ts``. Every value that
reaches an event goes through :func:`to_json_value`, so a tool returning a
``datetime``, a ``Decimal``, bytes, a pydantic model, a dataclass or an
arbitrary object never crashes a run (the seed's failure): each has a defined
JSON form, and anything else becomes ``{"type": <class name>, "repr": <bounded repr>}``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

__all__ = [
    "DELTA_TYPES",
    "ERROR",
    "FINISHED",
    "GAP",
    "NEVER_DROPPED",
    "PRODUCER_LOST",
    "SYNTHESIZED",
    "TERMINAL",
    "UNKNOWN_RUN",
    "RunEvent",
    "bound_data",
    "dumps",
    "fits",
    "format_cursor",
    "new_run_id",
    "parse_cursor",
    "to_json_value",
]

# -- event types --------------------------------------------------------------------------
START: Final = "start"
TEXT_DELTA: Final = "text_delta"
REASONING_DELTA: Final = "reasoning_delta"
TOOL_INPUT_DELTA: Final = "tool_input_delta"
TOOL_INPUT: Final = "tool_input"
TOOL_STARTED: Final = "tool_started"
TOOL_OUTPUT: Final = "tool_output"
TOOL_ERROR: Final = "tool_error"
STEP_STARTED: Final = "step_started"
STEP_FINISHED: Final = "step_finished"
CUSTOM: Final = "custom"
FINISHED: Final = "finished"
ERROR: Final = "error"
# synthesized by listeners, never stored
GAP: Final = "gap"
PRODUCER_LOST: Final = "producer_lost"
UNKNOWN_RUN: Final = "unknown_run"

DELTA_TYPES: Final = frozenset({TEXT_DELTA, REASONING_DELTA})
"""Deltas whose text may be coalesced with the previous buffered one of the same type."""
TERMINAL: Final = frozenset({FINISHED, ERROR})
"""The events that end a run: exactly one per run, always the last."""
SYNTHESIZED: Final = frozenset({GAP, PRODUCER_LOST, UNKNOWN_RUN})
"""Events a listener makes up to say why it cannot go on normally (``id`` is None)."""
NEVER_DROPPED: Final = frozenset(
    {START, TOOL_INPUT, TOOL_STARTED, TOOL_OUTPUT, TOOL_ERROR, FINISHED, ERROR}
)
"""Events a full buffer still accepts: losing one would leave a tool call or the run open."""

TRUNCATED_KEY: Final = "truncated"
"""Set to ``True`` in an event's data when a value in it was cut to fit ``max_event_bytes``."""


class RunEvent(NamedTuple):
    """One event of one run, as listeners receive it.

    ``id`` is the resume cursor (opaque; use it as the SSE ``id:`` and pass it back
    as ``after=``), ``seq`` counts the run's events from 1 with no holes, ``ts`` is
    the producer's ``time.time()`` and ``data`` the body. Synthesized events
    (:data:`SYNTHESIZED`) have ``id=None`` and ``seq=0``.
    """

    id: str | None
    seq: int
    type: str
    ts: float
    data: dict[str, Any]
    run_id: str

    @property
    def terminal(self) -> bool:
        """Whether this event ends the run (or, synthesized, ends listening to it)."""
        return self.type in TERMINAL or (self.type in SYNTHESIZED and self.type != GAP)


# -- run ids and cursors -------------------------------------------------------------------
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_CURSOR = re.compile(r"([0-9a-f]{32})-([0-9]{1,15})")


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits (safe inside keys, URLs and SSE ids)."""
    return uuid.uuid4().hex


def is_run_id(value: object) -> bool:
    """Whether ``value`` has the shape of a run id (what :func:`new_run_id` makes)."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def format_cursor(run_id: str, seq: int) -> str:
    """The opaque cursor of event ``seq`` of ``run_id`` (``<run_id>-<seq>``)."""
    return f"{run_id}-{seq}"


def parse_cursor(cursor: str) -> tuple[str, int] | None:
    """``(run_id, seq)`` of a cursor, or None when it is not one (hostile input)."""
    match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    return None if match is None else (match.group(1), int(match.group(2)))


# -- safe encoding -------------------------------------------------------------------------
MAX_DEPTH: Final = 32
REPR_CHARS: Final = 200


def to_json_value(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON data (dict/list/str/int/float/bool/None); never raises.

    datetime/date/time -> ISO 8601, UUID and Decimal -> str (Decimal keeps its digits),
    bytes -> ``{"base64": ...}``, Enum -> its value, set/tuple -> list, a pydantic
    model -> ``model_dump(mode="json")``, a dataclass -> its fields, a non-finite
    float -> str, anything else -> ``{"type": <class name>, "repr": <repr, 200 chars>}``.
    Nested deeper than 32 levels (or self-referencing) -> the fallback form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if _depth >= MAX_DEPTH:
        return _fallback(value)
    depth = _depth + 1
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v, depth) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_json_value(v, depth) for v in items]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, enum.Enum):
        return to_json_value(value.value, depth)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2, without importing pydantic
        try:
            return to_json_value(dump(mode="json"), depth)
        except Exception:
            return _fallback(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return to_json_value(fields, depth)
    return _fallback(value)


def _fallback(value: Any) -> dict[str, str]:
    try:
        text = repr(value)
    except Exception:
        text = "<unrepresentable>"
    return {"type": type(value).__name__, "repr": text[:REPR_CHARS]}


def dumps(data: Any) -> str:
    """Compact JSON of already-safe data, always encodable as UTF-8.

    ``ensure_ascii=False`` sends fewer bytes; text holding a lone surrogate (which
    ``json.loads`` accepts and UTF-8 cannot carry) is escaped instead.
    """
    text = _encode(data)
    try:
        text.encode()
    except UnicodeEncodeError:
        return _encode_ascii(data)
    return text


# Built once: ``json.dumps`` with options builds an encoder per call, a third of the
# cost of encoding a token's event on the writer's side.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode


# The most JSON bytes one character can take: a control character is ``\\u00XX`` (6); in
# the ASCII fallback of :func:`dumps` a character outside the BMP is two escapes (12).
_MAX_BYTES_PER_CHAR: Final = 12
_MAX_INT_BYTES: Final = 21  # a sign and 20 digits: any int below 10**20 in magnitude


def fits(data: dict[str, Any], max_bytes: int) -> bool:
    """Whether ``data``'s JSON is surely at most ``max_bytes``, told without encoding it.

    An upper bound over a flat dict of str / None / bool / small int values (what
    every delta and step event is); anything else answers False, and the caller
    measures it with :func:`bound_data`. This is what keeps the per-token path free
    of JSON encoding: a token is bounded by a few length additions.
    """
    total = 2
    for key, value in data.items():
        total += 4 + _MAX_BYTES_PER_CHAR * len(key)
        if isinstance(value, str):
            total += _MAX_BYTES_PER_CHAR * len(value)
        elif value is None or isinstance(value, bool):
            total += 5
        elif isinstance(value, int) and -(10**20) < value < 10**20:
            total += _MAX_INT_BYTES
        else:
            return False
    return total <= max_bytes


def bound_data(data: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], str, bool]:
    """``(data, json, truncated)``: the data cut to ``max_bytes`` of JSON when needed.

    A too large event keeps its small fields; each big one becomes a prefix of
    its text (a string) or of its JSON (anything else, as a string), and
    ``data["truncated"]`` is True. The result is always <= ``max_bytes`` + a
    small constant per field, so an oversized tool output costs its tail, never
    the run.
    """
    text = dumps(data)
    if len(text.encode()) <= max_bytes:
        return data, text, False
    share = max(16, max_bytes // max(1, len(data)))
    cut: dict[str, Any] = {}
    for key, value in data.items():
        raw = value if isinstance(value, str) else dumps(value)
        encoded = raw.encode("utf-8", "surrogatepass")
        if len(encoded) > share:
            cut[key] = encoded[:share].decode("utf-8", "ignore")
        else:
            cut[key] = value
    cut[TRUNCATED_KEY] = True
    return cut, dumps(cut), True
