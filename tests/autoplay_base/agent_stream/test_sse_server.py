"""``event_source_response`` served by uvicorn on a loopback port, read by ``httpx-sse``.

The client cuts the connection every K events and reconnects with ``Last-Event-ID``:
it must receive every event exactly once, in order (native: ``seq`` 1..N; Vercel:
exactly the chunks of one uncut stream), while the producer is still writing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import aconnect_sse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from autoplay_base.agent_stream import AsyncRunStream, RunStream
from autoplay_base.agent_stream.sse import VercelEncoder
from autoplay_base.agent_stream.starlette import event_source_response
from tests._fixtures.redis import free_port
from tests.autoplay_base.agent_stream.conftest import Streams

S: dict[str, Any] = {"session_id": "s1", "product_id": "p1"}
N_DELTAS = 30
CUT_EVERY = 4


class Served:
    """A uvicorn server on a thread, serving one stream's runs."""

    def __init__(self, stream: RunStream | AsyncRunStream) -> None:
        async def events(request: Request) -> Response:
            response: Response = event_source_response(
                stream,
                request.path_params["run_id"],
                session_id=request.query_params["session_id"],
                product_id=request.query_params["product_id"],
                request=request,
                encoder=request.query_params.get("encoder", "native"),  # type: ignore[arg-type]
                heartbeat=float(request.query_params.get("heartbeat", "5")),
            )
            return response

        app = Starlette(routes=[Route("/runs/{run_id}", events)])
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)  # polling a condition with a deadline
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(streams: Streams, kind: str, request: pytest.FixtureRequest) -> Iterator[Served]:
    """In-process: the producer's own stream. Redis: a sync ``RunStream`` on a backend of
    its own, as a web worker apart from the agent would have (its async client would be
    bound to uvicorn's loop)."""
    stream: RunStream | AsyncRunStream = streams.stream
    if kind == "redis":
        stream = RunStream(request.getfixturevalue("make_redis_backend")())
    with Served(stream) as served:
        yield served


async def read_with_cuts(url: str, params: dict[str, str]) -> tuple[list[Any], int, list[str]]:
    """Every SSE message's data, the number of connections, the content types."""
    received: list[Any] = []
    last_id: str | None = None
    connections = 0
    content_types: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            connections += 1
            headers = {"last-event-id": last_id} if last_id else {}
            count, ended = 0, True
            async with aconnect_sse(client, "GET", url, params=params, headers=headers) as source:
                content_types.append(
                    source.response.headers.get("x-vercel-ai-ui-message-stream", "")
                )
                async for sse in source.aiter_sse():
                    received.append(sse.data)
                    if sse.id:
                        last_id = sse.id
                    count += 1
                    if count == CUT_EVERY and sse.id:  # cut right after an id
                        ended = False
                        break
            if ended:
                return received, connections, content_types


async def produce(streams: Streams, started: asyncio.Event, box: dict[str, str]) -> None:
    async with streams.run(**S) as run:
        box["run_id"] = run.run_id
        started.set()
        run.step_started()
        run.tool_input_delta("c1", "weather", '{"ci')
        run.tool_input_delta("c1", "weather", 'ty": "NYC"}')
        run.tool_input("c1", "weather", {"city": "NYC"})
        run.tool_output("c1", {"temp": 21})
        for n in range(N_DELTAS):
            run.text_delta(f"w{n} ")
            await asyncio.sleep(0.002)  # pacing: the client reads while the run is live
        run.step_finished()


@pytest.mark.parametrize("mode", ["async"])
async def test_native_resume_receives_seq_1_to_n_exactly(streams: Streams, served: Served) -> None:
    started, box = asyncio.Event(), dict[str, str]()
    producer = asyncio.ensure_future(produce(streams, started, box))
    await asyncio.wait_for(started.wait(), 5)
    url = f"http://127.0.0.1:{served.port}/runs/{box['run_id']}"
    received, connections, _ = await asyncio.wait_for(read_with_cuts(url, dict(S)), 30)
    await producer
    bodies = [json.loads(d) for d in received]
    total = 1 + 1 + 4 + N_DELTAS + 1 + 1  # start, step, tool x4, deltas, step end, finished
    assert [b["seq"] for b in bodies] == list(range(1, total + 1))
    assert bodies[-1]["type"] == "finished" and bodies[-1]["data"] == {"status": "success"}
    assert connections == -(-total // CUT_EVERY)


@pytest.mark.parametrize("mode", ["async"])
async def test_vercel_resume_receives_exactly_one_uncut_stream(
    streams: Streams, served: Served
) -> None:
    started, box = asyncio.Event(), dict[str, str]()
    producer = asyncio.ensure_future(produce(streams, started, box))
    await asyncio.wait_for(started.wait(), 5)
    url = f"http://127.0.0.1:{served.port}/runs/{box['run_id']}"
    params = {**S, "encoder": "vercel"}
    received, connections, versions = await asyncio.wait_for(read_with_cuts(url, params), 30)
    await producer
    assert connections > 3 and set(versions) == {"v1"}
    encoder = VercelEncoder()
    expected: list[Any] = []
    for event in await streams.listen(box["run_id"], **S):
        expected.extend(encoder.chunks(event))
    assert received[-1] == "[DONE]"
    assert [json.loads(d) for d in received[:-1]] == expected
    types = [c["type"] for c in expected]
    assert types[:6] == [
        "start",
        "start-step",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
    ]
    assert types[-4:] == ["text-delta", "text-end", "finish-step", "finish"]
    text = "".join(c["delta"] for c in expected if c["type"] == "text-delta")
    assert text == "".join(f"w{n} " for n in range(N_DELTAS))


@pytest.mark.parametrize("mode", ["async"])
async def test_an_idle_live_run_gets_heartbeats_and_the_response_ends_with_the_run(
    streams: Streams, served: Served
) -> None:
    release = asyncio.Event()
    started, box = asyncio.Event(), dict[str, str]()

    async def idle_run() -> None:
        async with streams.run(**S) as run:
            box["run_id"] = run.run_id
            started.set()
            await release.wait()  # the model thinks for a while

    producer = asyncio.ensure_future(idle_run())
    await asyncio.wait_for(started.wait(), 5)
    url = f"http://127.0.0.1:{served.port}/runs/{box['run_id']}"
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        params = {**S, "heartbeat": "0.05"}
        async with client.stream("GET", url, params=params) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith(":") and not release.is_set():
                    release.set()  # a heartbeat came while idle: let the run end
    await producer
    assert any(line.startswith(":") for line in lines)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [(d["seq"], d["type"]) for d in data] == [(1, "start"), (2, "finished")]


@pytest.mark.parametrize("mode", ["async"])
async def test_nothing_to_send_is_a_204_not_an_empty_stream(
    streams: Streams, served: Served
) -> None:
    # A browser's EventSource reconnects whenever a response ends and stops on a 204;
    # the AI SDK's resume reads a 204 as "no stream to resume".
    async with streams.run(**S) as run:
        run.text_delta("hi")
    events = await streams.listen(run.run_id, **S)
    url = f"http://127.0.0.1:{served.port}/runs/{run.run_id}"
    unknown = f"http://127.0.0.1:{served.port}/runs/{'f' * 32}"
    async with httpx.AsyncClient(timeout=10) as client:
        native_end = await client.get(url, params=S, headers={"last-event-id": events[-1].id})
        assert (native_end.status_code, native_end.content) == (204, b"")
        vercel = {**S, "encoder": "vercel"}
        last_frame_id = f"{run.run_id}-{events[-1].seq}"  # the finish chunk's frame
        vercel_end = await client.get(url, params=vercel, headers={"last-event-id": last_frame_id})
        assert (vercel_end.status_code, vercel_end.content) == (204, b"")
        assert (await client.get(unknown, params=vercel)).status_code == 204
        # Native: an unknown run is said in its own event (the documented contract).
        native_unknown = await client.get(unknown, params=S)
        assert native_unknown.status_code == 200
        data = [
            json.loads(x[6:]) for x in native_unknown.text.splitlines() if x.startswith("data:")
        ]
        assert [d["type"] for d in data] == ["unknown_run"]
        # One event before the end: the rest of the stream, as before.
        rest = await client.get(url, params=S, headers={"last-event-id": events[-2].id})
        assert rest.status_code == 200
        data = [json.loads(x[6:]) for x in rest.text.splitlines() if x.startswith("data:")]
        assert [(d["seq"], d["type"]) for d in data] == [(events[-1].seq, "finished")]


# -- the sync twins: a sync producer, and (in-process) the sync stream served -------------------
# Served through ``iterate_in_threadpool`` (a WSGI-style worker's listener); the bodies are the
# async tests' own, so both twins meet exactly the same expectations.
@pytest.mark.parametrize("mode", ["sync"])
async def test_native_resume_with_the_sync_twins(streams: Streams, served: Served) -> None:
    await test_native_resume_receives_seq_1_to_n_exactly(streams, served)


@pytest.mark.parametrize("mode", ["sync"])
async def test_vercel_resume_with_the_sync_twins(streams: Streams, served: Served) -> None:
    await test_vercel_resume_receives_exactly_one_uncut_stream(streams, served)
