"""The pure parts of run streams, without I/O: events, buffer, listen policy, outcome, SSE, keys."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from autoplay_base.agent_stream._errors import RunCancelledError
from autoplay_base.agent_stream._events import (
    RunEvent,
    bound_data,
    dumps,
    format_cursor,
    parse_cursor,
    to_json_value,
)
from autoplay_base.agent_stream._state import SAFE_ERROR_MESSAGE, ListenState, RunBuffer, outcome
from autoplay_base.agent_stream._streams import next_run
from autoplay_base.agent_stream.sse import (
    PRODUCER_LOST_TEXT,
    VercelEncoder,
    native_frame,
    split_vercel_cursor,
    vercel_frames,
)
from autoplay_base.backends.base import SessionKey
from autoplay_base.backends.redis._layout import RunLayout, parse_run_member, run_member

R = "0123456789abcdef0123456789abcdef"


def ev(seq: int, type_: str, **data: Any) -> RunEvent:
    return RunEvent(format_cursor(R, seq), seq, type_, 1.0, data, R)


# -- encoding -------------------------------------------------------------------------------
def test_to_json_value_handles_models_recursion_and_broken_objects() -> None:
    class Model:
        def model_dump(self, mode: str) -> dict[str, Any]:
            return {"mode": mode}

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    loop: list[Any] = []
    loop.append(loop)
    assert to_json_value(Model()) == {"mode": "json"}
    assert to_json_value(Broken()) == {"type": "Broken", "repr": "<unrepresentable>"}
    deep = to_json_value(loop)
    for _ in range(32):
        deep = deep[0]
    assert deep == {"type": "list", "repr": "[[...]]"}
    assert to_json_value({1: float("inf")}) == {"1": "inf"}


def test_dumps_escapes_a_lone_surrogate_instead_of_failing() -> None:
    assert dumps({"t": "é"}) == '{"t":"é"}'
    assert dumps({"t": "\ud800"}) == '{"t":"\\ud800"}'


def test_bound_data_cuts_big_fields_and_marks_them() -> None:
    data, text, cut = bound_data({"a": "x" * 100, "b": 1}, 60)
    assert cut is True and data == {"a": "x" * 30, "b": 1, "truncated": True}
    assert json.loads(text) == data
    assert bound_data({"a": "ok"}, 60) == ({"a": "ok"}, '{"a":"ok"}', False)


def test_cursors_round_trip_and_hostile_ones_are_refused() -> None:
    assert parse_cursor(format_cursor(R, 7)) == (R, 7)
    for bad in ("", "7", f"{R}-", f"{R}-x", f"{R.upper()}-1", f"{R}-1\n", f"{R}-1.2", "a" * 200):
        assert parse_cursor(bad) is None


# -- the buffer -------------------------------------------------------------------------------
def test_a_full_buffer_coalesces_adjacent_deltas_drops_others_and_keeps_tools() -> None:
    buf = RunBuffer(max_buffered=2, max_event_bytes=1000, max_text_chars=100)
    assert buf.push("start", 1.0, {})
    assert buf.push("text_delta", 1.0, {"text": "a"})
    assert buf.push("text_delta", 1.0, {"text": "b"})  # coalesced into "a"
    assert not buf.push("reasoning_delta", 1.0, {"text": "r"})  # last is text: dropped
    assert buf.push("tool_output", 1.0, {"call_id": "c", "output": 1})  # never dropped
    assert not buf.push("text_delta", 1.0, {"text": "c"})  # last is a tool event
    assert buf.push("finished", 1.0, {"status": "success"})
    assert not buf.push("text_delta", 1.0, {"text": "late"})
    batch = buf.drain()
    assert [(p.seq, p.type, p.data) for p in batch] == [
        (1, "start", {}),
        (2, "text_delta", {"text": "ab"}),
        (3, "tool_output", {"call_id": "c", "output": 1}),
        (4, "finished", {"status": "success"}),
    ]
    assert json.loads(batch[1].json) == {"text": "ab"}
    assert (buf.counters.coalesced, buf.counters.dropped) == (1, 2)
    assert buf.text == "abc"  # the history keeps what the user was meant to read
    assert buf.ended


def test_seq_continues_across_drains() -> None:
    buf = RunBuffer(max_buffered=10, max_event_bytes=1000, max_text_chars=3)
    buf.push("text_delta", 1.0, {"text": "abcd"})
    assert [p.seq for p in buf.drain()] == [1]
    buf.push("text_delta", 1.0, {"text": "e"})
    assert [p.seq for p in buf.drain()] == [2]
    assert buf.text == "abc"


# -- the listen policy ---------------------------------------------------------------------------
def test_listen_state_gap_duplicates_terminal() -> None:
    state = ListenState(R, after_seq=1)
    out = state.feed(
        [ev(1, "start"), ev(5, "text_delta"), ev(6, "finished")], live=True, exists=True, now=2.0
    )
    assert [(e.type, e.seq, e.data) for e in out] == [
        ("gap", 0, {"after": 1, "missing": 3}),
        ("text_delta", 5, {}),
        ("finished", 6, {}),
    ]
    assert state.done and state.feed([ev(7, "x")], live=True, exists=True, now=2.0) == []


def test_listen_state_waits_while_live_and_names_why_it_stops() -> None:
    state = ListenState(R)
    assert state.feed([], live=True, exists=False, now=1.0) == []
    assert not state.done
    lost = state.feed([], live=False, exists=True, now=1.0)
    assert [(e.id, e.type, e.data) for e in lost] == [(None, "producer_lost", {"after": 0})]
    unknown = ListenState(R).feed([], live=False, exists=False, now=1.0)
    assert [e.type for e in unknown] == ["unknown_run"]


def test_listen_state_after_the_terminal_event_ends_with_nothing() -> None:
    # A reconnect whose cursor is the run's last event: no lease, nothing new, the run
    # ended. That is not a dead producer.
    state = ListenState(R, after_seq=9)
    assert state.feed([], live=False, exists=True, now=1.0, ended=True) == []
    assert state.done
    died = ListenState(R, after_seq=9).feed([], live=False, exists=True, now=1.0, ended=False)
    assert [e.type for e in died] == ["producer_lost"]


# -- the outcome -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "cancelled", "interrupted", "expected"),
    [
        (None, False, False, ("finished", {"status": "success"}, False)),
        (None, True, False, ("finished", {"status": "cancelled"}, False)),
        (None, False, True, ("finished", {"status": "interrupted"}, False)),
        (RunCancelledError(R), True, False, ("finished", {"status": "cancelled"}, True)),
        (asyncio.CancelledError(), False, False, ("finished", {"status": "cancelled"}, False)),
        (KeyboardInterrupt(), False, False, ("finished", {"status": "interrupted"}, False)),
        (
            TimeoutError("t"),
            False,
            False,
            ("error", {"code": "timeout", "message": SAFE_ERROR_MESSAGE}, False),
        ),
        (
            ValueError("key=1"),
            False,
            False,
            ("error", {"code": "run_failed", "message": SAFE_ERROR_MESSAGE}, False),
        ),
    ],
)
def test_outcome_maps_every_way_out_to_one_terminal_event(
    exc: BaseException | None, cancelled: bool, interrupted: bool, expected: tuple[Any, ...]
) -> None:
    result = outcome(
        exc,
        cancelled=cancelled,
        interrupted=interrupted,
        cancel_error=RunCancelledError,
        expose_errors=False,
    )
    assert (result.type, result.data, result.swallow) == expected


# -- SSE ---------------------------------------------------------------------------------------
def test_native_frame() -> None:
    assert (
        native_frame(ev(2, "text_delta", text="hi"))
        == (
            f"id: {R}-2\nevent: text_delta\n"
            f'data: {{"run_id":"{R}","seq":2,"type":"text_delta","ts":1.0,'
            f'"data":{{"text":"hi"}}}}\n\n'
        ).encode()
    )
    synthesized = RunEvent(None, 0, "gap", 1.0, {}, R)
    assert native_frame(synthesized).startswith(b"event: gap\n")


def test_vercel_chunks_follow_the_ui_message_stream_protocol() -> None:
    enc = VercelEncoder()
    events = [
        ev(1, "start"),
        ev(2, "reasoning_delta", text="r"),
        ev(3, "text_delta", text="a"),
        ev(4, "tool_input_delta", call_id="c", name="w", chunk=""),
        ev(5, "tool_input", call_id="c", name="w", input={"x": 1}),
        ev(6, "tool_started", call_id="c", name="w"),
        ev(7, "tool_error", call_id="c", error="boom"),
        ev(8, "custom", name="chart", data=[1]),
        ev(9, "finished", status="cancelled"),
    ]
    chunks = [c for e in events for c in enc.chunks(e)]
    assert chunks == [
        {"type": "start", "messageId": R},
        {"type": "reasoning-start", "id": "reasoning-2"},
        {"type": "reasoning-delta", "id": "reasoning-2", "delta": "r"},
        {"type": "reasoning-end", "id": "reasoning-2"},
        {"type": "text-start", "id": "text-3"},
        {"type": "text-delta", "id": "text-3", "delta": "a"},
        {"type": "text-end", "id": "text-3"},
        {"type": "tool-input-start", "toolCallId": "c", "toolName": "w"},
        {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": ""},
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "w", "input": {"x": 1}},
        {"type": "tool-output-error", "toolCallId": "c", "errorText": "boom"},
        {"type": "data-chart", "data": [1]},
        {"type": "abort"},
    ]
    error = VercelEncoder().frames(ev(3, "error", code="run_failed", message="m"))
    assert error == [
        f'id: {R}-3\ndata: {{"type":"error","errorText":"m"}}\n\n'.encode(),
        b"data: [DONE]\n\n",
    ]


def test_vercel_announces_a_tool_call_before_a_result_the_client_never_saw_called() -> None:
    # The AI SDK's reader fails the whole response on a result for an unknown call id:
    # a tool run without a model call before it (its name from tool_started), or an
    # invalid call from a model that did not stream (no name known).
    enc = VercelEncoder()
    events = [
        ev(1, "tool_started", call_id="run-7", name="lookup"),
        ev(2, "text_delta", text="a"),
        ev(3, "tool_output", call_id="run-7", output={"rows": 2}),
        ev(4, "tool_error", call_id="bad-1", error="invalid tool call arguments"),
        ev(5, "tool_output", call_id="run-7", output="again"),
    ]
    chunks = [c for e in events for c in enc.chunks(e)]
    assert chunks == [
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "a"},
        {"type": "text-end", "id": "text-2"},
        {"type": "tool-input-start", "toolCallId": "run-7", "toolName": "lookup"},
        {
            "type": "tool-input-available",
            "toolCallId": "run-7",
            "toolName": "lookup",
            "input": None,
        },
        {"type": "tool-output-available", "toolCallId": "run-7", "output": {"rows": 2}},
        {"type": "tool-input-start", "toolCallId": "bad-1", "toolName": ""},
        {"type": "tool-input-available", "toolCallId": "bad-1", "toolName": "", "input": None},
        {
            "type": "tool-output-error",
            "toolCallId": "bad-1",
            "errorText": "invalid tool call arguments",
        },
        {"type": "tool-output-available", "toolCallId": "run-7", "output": "again"},
    ]


@pytest.mark.parametrize(
    ("last", "end"),
    [
        (ev(5, "finished", status="success"), [{"type": "finish"}]),
        (ev(5, "error", code="run_failed", message="m"), [{"type": "error", "errorText": "m"}]),
        (ev(0, "producer_lost"), [{"type": "error", "errorText": PRODUCER_LOST_TEXT}]),
    ],
)
def test_vercel_steps_stay_balanced(last: RunEvent, end: list[dict[str, Any]]) -> None:
    # A step started twice (a LlamaIndex AgentInput with no AgentOutput after it) is
    # finished first; one open at the end is finished before the last chunk; a finish
    # with no step open sends nothing.
    enc = VercelEncoder()
    events = [
        ev(1, "step_finished", usage=None),
        ev(2, "step_started", name="agent"),
        ev(3, "step_started", name="agent"),
        ev(4, "text_delta", text="a"),
        last,
    ]
    chunks = [c for e in events for c in enc.chunks(e)]
    assert chunks == [
        {"type": "start-step"},
        {"type": "finish-step"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-4"},
        {"type": "text-delta", "id": "text-4", "delta": "a"},
        {"type": "text-end", "id": "text-4"},
        {"type": "finish-step"},
        *end,
    ]


def test_vercel_resume_inside_one_events_frames() -> None:
    events = [
        ev(1, "start"),
        ev(2, "text_delta", text="a"),
        ev(3, "tool_input", call_id="c", name="w", input={}),
    ]
    whole = b"".join(vercel_frames(events))
    frames = [f + b"\n\n" for f in whole.split(b"\n\n") if f]
    assert [f.split(b"\n")[0] for f in frames] == [
        f"id: {R}-1".encode(),
        f"id: {R}-2.1".encode(),
        f"id: {R}-2".encode(),
        f"id: {R}-3.1".encode(),
        f"id: {R}-3.2".encode(),
        f"id: {R}-3".encode(),
    ]
    for cut in range(1, len(frames)):
        last_id = frames[cut - 1].split(b"\n")[0][4:].decode()
        cursor, partial = split_vercel_cursor(last_id)
        seq = parse_cursor(cursor or "")[1]  # type: ignore[index]
        skip, partial = (seq - 1, partial) if partial else (seq, 0)
        assert (
            b"".join(frames[:cut])
            + b"".join(vercel_frames(events, skip_through=skip, partial=partial))
            == whole
        )


def test_next_run_for_follow() -> None:
    assert next_run([], None, 0) is None
    assert next_run(["a", "b"], None, 0) == ("b", None)
    assert next_run(["a", "b"], "a", 3) == ("a", "a-3")
    assert next_run(["a", "b"], "a", -1) == ("b", None)
    assert next_run(["a", "b"], "b", -1) is None
    assert next_run(["c"], "gone", -1) == ("c", None)


# -- keys --------------------------------------------------------------------------------------
def test_run_keys_of_one_session_share_one_cluster_slot_and_ids_cannot_collide() -> None:
    layout = RunLayout("app", cluster=True)
    key = SessionKey("p:1", "s{x}")
    names = [
        layout.run_stream(key, R),
        layout.run_lease(key, R),
        layout.run_cancel(key, R),
        layout.session_runs(key),
        layout.session_live_runs(key),
    ]
    assert len({redis.crc.key_slot(n.encode()) for n in names}) == 1
    assert names[0] == f"app:r:p%3A1:{{s%7Bx%7D}}:{R}:x"
    assert layout.user_live_runs("p", "u") == "app:ul:p:{u}"
    standalone = RunLayout("app")
    assert standalone.run_stream(SessionKey("p", "a:b"), R) != standalone.run_stream(
        SessionKey("p:a", "b"), R
    )
    assert parse_run_member(run_member("a:b%", R)) == ("a:b%", R)
