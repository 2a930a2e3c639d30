"""The per-token path: nothing encoded at emit, bounds told without encoding, O(1) wake-ups."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from autoplay_base.agent_stream import RunStream, _state
from autoplay_base.agent_stream._events import bound_data, fits
from autoplay_base.agent_stream._state import RunBuffer

SCOPE = {"session_id": "s1", "product_id": "p1"}


def test_fits_is_an_upper_bound_that_never_encodes_a_flat_delta() -> None:
    assert fits({"text": "tok"}, 2 + 4 + 12 * 4 + 12 * 3)  # the bound, exactly
    assert not fits({"text": "tok"}, 2 + 4 + 12 * 4 + 12 * 3 - 1)
    assert fits({"call_id": "c", "name": None, "n": 10**19, "b": True}, 1000)
    assert not fits({"n": 10**20}, 1000)  # too big to bound by a constant: measured
    assert not fits({"usage": {"input_tokens": 1}}, 10**6)  # nested: measured
    assert not fits({"x": 1.5}, 10**6)
    # the worst characters stay within the bound: control chars, and the ASCII fallback
    for text in ("\x00" * 50, "\U0001f600" * 50 + "\ud800"):
        limit = 2 + 4 + 12 + 12 * len(text)
        assert fits({"t": text}, limit)
        assert bound_data({"t": text}, limit)[2] is False


def test_emitting_encodes_nothing_and_the_writer_encodes_once() -> None:
    buf = RunBuffer(max_buffered=10, max_event_bytes=1000, max_text_chars=100)
    buf.push("text_delta", 1.0, {"text": "a"})
    buf.push("tool_output", 1.0, {"call_id": "c", "output": {"k": [1, 2]}})
    (delta, tool) = buf.drain()
    assert delta.encoded is None  # in-process listeners never need it
    assert tool.encoded == '{"call_id":"c","output":{"k":[1,2]}}'  # measured by drain
    assert delta.json == '{"text":"a"}'
    assert delta.encoded == '{"text":"a"}'  # kept


def test_an_oversized_event_is_cut_when_drained_and_counted() -> None:
    buf = RunBuffer(max_buffered=10, max_event_bytes=60, max_text_chars=1000)
    buf.push("text_delta", 1.0, {"text": "x" * 200})
    (pending,) = buf.drain()
    assert pending.data == {"text": "x" * 60, "truncated": True}
    assert json.loads(pending.json) == pending.data
    assert buf.counters.truncated == 1
    assert buf.text == "x" * 200  # the history keeps the whole text


def test_an_emit_never_waits_while_the_writer_cuts_an_oversized_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buf = RunBuffer(max_buffered=10, max_event_bytes=60, max_text_chars=1000)
    buf.push("tool_output", 1.0, {"call_id": "c", "output": "x" * 500})
    cutting, release = threading.Event(), threading.Event()

    def slow_cut(data: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], str, bool]:
        cutting.set()
        assert release.wait(10)
        return bound_data(data, max_bytes)

    monkeypatch.setattr(_state, "bound_data", slow_cut)
    drained: list[list[Any]] = []
    writer = threading.Thread(target=lambda: drained.append(buf.drain()))
    writer.start()
    try:
        assert cutting.wait(10)
        pushed: list[bool] = []
        agent = threading.Thread(target=lambda: pushed.append(buf.push("text_delta", 2.0, {})))
        agent.start()
        agent.join(5)  # while the writer is still cutting the tool output
        assert pushed == [True]
    finally:
        release.set()
        writer.join(10)
    (tool,) = drained[0]
    assert (tool.seq, tool.data["truncated"]) == (1, True)
    assert buf.counters.truncated == 1
    (delta,) = buf.drain()
    assert delta.seq == 2  # numbered after the batch the writer held


async def test_a_burst_wakes_each_async_listener_once() -> None:
    stream = RunStream()
    transport = stream.transport
    with stream.run(**SCOPE) as run:
        pause = asyncio.ensure_future(transport.apause(run.ref, 5.0))
        await asyncio.sleep(0)  # one step of the task: it registers, then waits
        assert len(transport._waiters) == 1
        loop_calls: list[int] = []
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(*args: object) -> object:
            loop_calls.append(1)
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            for _ in range(100):
                run.text_delta("t")
        finally:
            del loop.call_soon_threadsafe
        await asyncio.wait_for(pause, 5.0)
    assert len(loop_calls) == 1


def test_a_listener_reads_from_the_middle_of_a_long_log() -> None:
    stream = RunStream(max_events=50)
    with stream.run(**SCOPE) as run:
        for i in range(120):
            run.text_delta(str(i))
    read = stream.transport.read(run.ref, 100, 5)
    assert [(e.seq, e.data["text"]) for e in read.events] == [
        (100, "98"),
        (101, "99"),
        (102, "100"),
        (103, "101"),
        (104, "102"),
    ]
    assert [e.seq for e in stream.transport.read(run.ref, 1, 3).events] == [73, 74, 75]
