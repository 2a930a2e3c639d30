"""Conversation tracking side by side with ``mlsdk-python`` 1.0.5, against one loopback receiver.

Both clients send to the same :class:`~autoplay_base.emulator.IngestReceiver`:
ours POSTs ``{"events": [...]}`` batches to ``/v1/batch``; mlsdk POSTs one event
per request to ``{server_endpoint}/bc/v1/events/queue`` (its base URL is an
option, ``Client(server_endpoint=...)``, so nothing of it is patched). The
reference receiver below only accepts mlsdk's one-event body as a batch of one,
so both are counted the same way (unique events the receiver accepted with 200).
mlsdk is async only: its figures are taken in a running loop.

Figures (``BENCH_SMOKE=1`` shrinks every size and duration, for a quick check):

* ``track_call_us``: p50/p99 of one ``track_turn`` call (ours, sync ``Tracker``)
  vs one ``await session.track_conversation_turn(...)`` (target <= 5 µs);
* ``handler_overhead_per_turn_us``: a real ``create_agent`` turn (fake model, one
  tool call, ``ainvoke``) with ``AutoplayTrackingHandler`` minus the same turn
  without callbacks, vs mlsdk's ``MLChatRecorderCallback``; ``noop_handler`` is
  what an empty inline handler costs (LangChain's own callback machinery) and
  ``ours_hooks_only`` our handler with a sink that sends nothing while measured (the
  rest of ``ours`` is the background lane's serialising and sending, which shares
  the GIL with the agent and with the in-process receiver);
* ``throughput_events_per_s`` at 0 and 100 ms receiver latency (target >= 1,000
  events/s at 100 ms): events tracked as fast as possible until all were received;
* ``flush_10k_s``: ``flush()`` with 10,000 events queued (mlsdk: ``flush_and_continue``);
* ``flush_timeout_hung_s``: ``flush(timeout=1)`` against a receiver that never
  answers (target: within the timeout + 5 %); mlsdk's flush has no timeout, so it
  is capped with ``asyncio.wait_for`` and reported as not returning;
* ``lost_in_burst``: events lost when the receiver answers 503 then 429 for a
  whole burst (30 s) while the chatbot keeps tracking, then recovers (target 0
  within the queue bound).

Run in an environment with both packages, e.g. ``/tmp/mlsdk-venv`` made with
``pip install -e .[langchain] mlsdk-python==1.0.5``: ``python bench_tracking.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from _common import emit, latency, machine, percentiles, throughput

from autoplay_base.emulator import IngestReceiver
from autoplay_base.tracking import HttpBatchSink, Tracker

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
TRACK_CALLS = 2_000 if SMOKE else 50_000
AGENT_TURNS = 20 if SMOKE else 300
THROUGHPUT_EVENTS = 2_000 if SMOKE else 20_000
REFERENCE_EVENTS = 200 if SMOKE else 2_000
REFERENCE_EVENTS_SLOW = 10 if SMOKE else 100
QUEUED = 1_000 if SMOKE else 10_000
HUNG_TIMEOUT = 1.0
REFERENCE_CAP = 3.0 if SMOKE else 10.0
BURST_SECONDS = 3.0 if SMOKE else 30.0
BURST_RATE = 50 if SMOKE else 200
"""Events per second tracked during the burst (ours: 6,000 in the full run, under the
10,000-event queue bound)."""
REFERENCE_PATH = "/bc/v1/events/queue"
USER, ASSISTANT = "How do I export a report?", "Open Reports, then click Export CSV."


class ReferenceReceiver(IngestReceiver):
    """The ingest receiver, also accepting mlsdk's body: one event object per request.

    mlsdk's events carry no id, so the receiver numbers each accepted one (mlsdk never
    retries, so no event arrives twice) and ``unique_events()`` counts them all.
    """

    def _decide(self, arrived: Any, headers: Any, body: bytes, auth: Any, fail: Any) -> Any:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and "events" not in parsed:
            body = json.dumps({"events": [{**parsed, "event_id": uuid.uuid4().hex}]}).encode()
        return super()._decide(arrived, headers, body, auth, fail)


@contextmanager
def receiver(reference: bool, latency_s: float = 0.0) -> Iterator[IngestReceiver]:
    cls = ReferenceReceiver if reference else IngestReceiver
    path = REFERENCE_PATH if reference else "/v1/batch"
    server = cls(path=path, latency=latency_s).start()
    try:
        yield server
    finally:
        server.release()
        server.close()


def base_url(server: IngestReceiver) -> str:
    return f"http://{server.host}:{server.port}"


def reference_session(server: IngestReceiver) -> Any:
    from mlsdk import Client

    client = Client(api_key="bench-key", project_id="bench", server_endpoint=base_url(server))
    return client.create_session(session_id="ps_1", conversation_id="c_1", id="u_1")


def ours_tracker(server: IngestReceiver, **sink_options: Any) -> Tracker:
    return Tracker([HttpBatchSink(server.url, **sink_options)], max_queue=max(QUEUED, 10_000) * 2)


def wait_received(server: IngestReceiver, count: int, timeout: float) -> int:
    server.wait_for_events(count, timeout)
    return len(server.unique_events())


# -- cost per track_* call -----------------------------------------------------------------
def track_call_ours() -> dict[str, float]:
    with receiver(False) as server:
        tracker = ours_tracker(server)
        chat = tracker.session("ps_1", product_id="bench", conversation_id="c_1")
        clock = time.perf_counter_ns
        samples = []
        gc.disable()
        try:
            for _ in range(TRACK_CALLS):
                start = clock()
                chat.track_turn(user=USER, assistant=ASSISTANT)
                samples.append(clock() - start)
        finally:
            gc.enable()
        tracker.close(timeout=30)
    return percentiles(samples)


async def track_call_reference() -> dict[str, float]:
    with receiver(True) as server:
        session = reference_session(server)
        clock = time.perf_counter_ns
        samples = []
        calls = min(TRACK_CALLS, REFERENCE_EVENTS * 5)  # each queued call is later one request
        for _ in range(calls):
            start = clock()
            await session.track_conversation_turn(user=USER, assistant=ASSISTANT)
            samples.append(clock() - start)
        await asyncio.wait_for(session.flush(), REFERENCE_CAP * 10)
    return percentiles(samples)


# -- handler overhead per agent turn -------------------------------------------------------
def agent_and_model() -> Any:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    class ToolCallingFakeModel(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            # mlsdk's callback reads the model name from generation_info (as OpenAI's sets it).
            result = super()._generate(*args, **kwargs)
            for generation in result.generations:
                generation.generation_info = {"model_name": "m"}
            return result

    usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
    named = {"model_name": "m"}
    call = {"name": "lookup", "args": {"q": "export"}, "id": "c1", "type": "tool_call"}
    script = [
        AIMessage(
            "", tool_calls=[call], usage_metadata=usage, response_metadata={"model_name": "m"}
        ),
        AIMessage(ASSISTANT, usage_metadata=usage, response_metadata=named),
    ]

    @tool
    def lookup(q: str) -> str:
        """Look it up."""
        return "Reports > Export CSV"

    return create_agent(ToolCallingFakeModel(messages=itertools.cycle(script)), tools=[lookup])


async def turn_times(agent: Any, callbacks: list[Any], metadata: dict[str, str]) -> list[float]:
    config = {"callbacks": callbacks, "metadata": metadata}
    times = []
    for _ in range(AGENT_TURNS):
        start = time.perf_counter()
        await agent.ainvoke({"messages": [("user", USER)]}, config=config)
        times.append(time.perf_counter() - start)
    return times


async def handler_overhead() -> dict[str, float]:
    from langchain_core.callbacks import BaseCallbackHandler
    from mlsdk.helpers.langchain import MLChatRecorderCallback

    from langchain_autoplay.tracking import AutoplayTrackingHandler

    class NoOpHandler(BaseCallbackHandler):
        """What any inline callback costs in LangChain itself (its run managers)."""

        run_inline = True

    agent = agent_and_model()
    meta = {"session_id": "ps_1", "product_id": "bench"}
    with receiver(False) as ours_server, receiver(True) as ref_server:
        tracker = ours_tracker(ours_server)
        # Sends nothing while measured: the hooks' own cost, without the lane's sending.
        held = ours_tracker(ours_server, flush_interval=3600, batch_size=100_000)
        session = reference_session(ref_server)
        await turn_times(agent, [], meta)  # warm up
        rounds: dict[str, list[float]] = {
            "none": [],
            "noop": [],
            "ours": [],
            "hooks_only": [],
            "reference": [],
        }
        for _ in range(3):  # alternate, so machine noise hits all of them alike
            rounds["none"].append(statistics.median(await turn_times(agent, [], meta)))
            noop = [NoOpHandler()]
            rounds["noop"].append(statistics.median(await turn_times(agent, noop, meta)))
            handler = AutoplayTrackingHandler(tracker)
            rounds["ours"].append(statistics.median(await turn_times(agent, [handler], meta)))
            quiet = [AutoplayTrackingHandler(held)]
            rounds["hooks_only"].append(statistics.median(await turn_times(agent, quiet, meta)))
            recorder = MLChatRecorderCallback(session)
            rounds["reference"].append(statistics.median(await turn_times(agent, [recorder], meta)))
        await asyncio.wait_for(session.flush(), REFERENCE_CAP * 10)
        tracker.close(timeout=30)
        held.close(timeout=30)
    base = statistics.median(rounds["none"])
    return {
        name: round((statistics.median(rounds[name]) - base) * 1e6, 1)
        for name in ("noop", "ours", "hooks_only", "reference")
    } | {"turn_without_callbacks_us": round(base * 1e6, 1)}


# -- throughput ------------------------------------------------------------------------------
def throughput_ours(latency_s: float, batch_size: int | None = None) -> float:
    options = {"batch_size": batch_size} if batch_size else {}
    with receiver(False, latency_s) as server:
        tracker = ours_tracker(server, **options)
        chat = tracker.session("ps_1", product_id="bench")
        start = time.perf_counter()
        for _ in range(THROUGHPUT_EVENTS):
            chat.track_turn(user=USER, assistant=ASSISTANT)
        tracker.flush(timeout=120)
        got = wait_received(server, THROUGHPUT_EVENTS, 120)
        elapsed = time.perf_counter() - start
        tracker.close(timeout=5)
    return round(got / elapsed)


async def throughput_reference(latency_s: float) -> float:
    count = REFERENCE_EVENTS_SLOW if latency_s else REFERENCE_EVENTS
    with receiver(True, latency_s) as server:
        session = reference_session(server)
        start = time.perf_counter()
        for _ in range(count):
            await session.track_conversation_turn(user=USER, assistant=ASSISTANT)
        await session.flush_and_continue()
        got = await asyncio.to_thread(wait_received, server, count, 120)
        elapsed = time.perf_counter() - start
        await session.flush()
    return round(got / elapsed)


# -- flush -------------------------------------------------------------------------------------
def flush_queued_ours() -> float:
    with receiver(False) as server:
        tracker = ours_tracker(server, flush_interval=3600)
        chat = tracker.session("ps_1", product_id="bench")
        for _ in range(QUEUED):
            chat.track_turn(user=USER, assistant=ASSISTANT)
        start = time.perf_counter()
        result = tracker.flush(timeout=120)
        elapsed = time.perf_counter() - start
        assert result.pending == 0 and result.delivered == QUEUED, result
        tracker.close(timeout=5)
    return round(elapsed, 3)


async def flush_queued_reference() -> float:
    count = min(QUEUED, REFERENCE_EVENTS)  # one request per event: the full 10k takes minutes
    with receiver(True) as server:
        session = reference_session(server)
        for _ in range(count):
            await session.track_conversation_turn(user=USER, assistant=ASSISTANT)
        start = time.perf_counter()
        await session.flush_and_continue()
        elapsed = time.perf_counter() - start
        await session.flush()
    return round(elapsed * QUEUED / count, 3)  # scaled to the same number of events


def flush_hung_ours() -> float:
    with receiver(False) as server:
        tracker = ours_tracker(server)
        server.hang()
        chat = tracker.session("ps_1", product_id="bench")
        for _ in range(100):
            chat.track_turn(user=USER, assistant=ASSISTANT)
        start = time.perf_counter()
        result = tracker.flush(timeout=HUNG_TIMEOUT)
        elapsed = time.perf_counter() - start
        assert result.timed_out, result
        server.release()
        tracker.close(timeout=2)
    return round(elapsed, 3)


async def flush_hung_reference() -> tuple[float, bool]:
    with receiver(True) as server:
        session = reference_session(server)
        server.hang()
        for _ in range(100):
            await session.track_conversation_turn(user=USER, assistant=ASSISTANT)
        start = time.perf_counter()
        try:
            await asyncio.wait_for(session.flush_and_continue(), REFERENCE_CAP)
            returned = True
        except asyncio.TimeoutError:
            returned = False
        elapsed = time.perf_counter() - start
        server.release()
    return round(elapsed, 3), returned


# -- a 5xx / 429 burst -------------------------------------------------------------------------
def burst_schedule(server: IngestReceiver, elapsed: float) -> None:
    """503 for the first half of the burst, 429 (Retry-After: 1) for the second, then healthy."""
    if elapsed < BURST_SECONDS / 2:
        server.fail_next(10**9, 503)
    elif elapsed < BURST_SECONDS:
        server.fail_next(10**9, 429, retry_after="1")
    else:
        server.fail_next(0)


def lost_in_burst_ours() -> dict[str, int]:
    with receiver(False) as server:
        tracker = ours_tracker(server)
        chat = tracker.session("ps_1", product_id="bench")
        sent, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < BURST_SECONDS:
            burst_schedule(server, elapsed)
            chat.track_turn(user=USER, assistant=f"{ASSISTANT} #{sent}")
            sent += 1
            time.sleep(1 / BURST_RATE)
        burst_schedule(server, BURST_SECONDS)
        tracker.flush(timeout=120)
        got = len(server.unique_events())
        stats = tracker.stats()["http"]
        tracker.close(timeout=5)
    return {"sent": sent, "received": got, "lost": sent - got, "failed": stats["failed"]}


async def lost_in_burst_reference() -> dict[str, int]:
    with receiver(True) as server:
        session = reference_session(server)
        sent, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < BURST_SECONDS:
            burst_schedule(server, elapsed)
            await session.track_conversation_turn(user=USER, assistant=f"{ASSISTANT} #{sent}")
            sent += 1
            await asyncio.sleep(1 / BURST_RATE)
        burst_schedule(server, BURST_SECONDS)
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(session.flush_and_continue(), REFERENCE_CAP * 10)
        got = len(server.unique_events())
    return {"sent": sent, "received": got, "lost": sent - got, "failed": sent - got}


def with_target(figure: dict[str, Any], target: str) -> dict[str, Any]:
    return {**figure, "target": target}


def run(step: Callable[[], Any]) -> Any:
    result = step()
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def main() -> None:
    ours_call, ref_call = run(track_call_ours), run(track_call_reference)
    overhead = run(handler_overhead)
    fast_ours, fast_ref = throughput_ours(0.0), run(lambda: throughput_reference(0.0))
    slow_ours, slow_ref = throughput_ours(0.1), run(lambda: throughput_reference(0.1))
    slow_ours_big = throughput_ours(0.1, batch_size=500)
    hung_ref, ref_returned = run(flush_hung_reference)
    burst_ours, burst_ref = lost_in_burst_ours(), run(lost_in_burst_reference)
    emit(
        {
            "benchmark": "tracking",
            "reference": "mlsdk-python 1.0.5",
            "smoke": SMOKE,
            "setup": f"{TRACK_CALLS} track calls, {AGENT_TURNS} agent turns x 3 rounds, "
            f"{THROUGHPUT_EVENTS} events (reference {REFERENCE_EVENTS}, "
            f"{REFERENCE_EVENTS_SLOW} at 100 ms), {QUEUED} queued, "
            f"{BURST_SECONDS:g} s burst at {BURST_RATE} events/s",
            "track_call_p50_us": with_target(
                latency(ours_call["p50_us"], ref_call["p50_us"]), "<= 5 us"
            ),
            "track_call_p99_us": latency(ours_call["p99_us"], ref_call["p99_us"]),
            "handler_overhead_per_turn_us": {
                "ours": overhead["ours"],
                "reference": overhead["reference"],
                "noop_handler": overhead["noop"],
                "ours_hooks_only": overhead["hooks_only"],
                "turn_without_callbacks_us": overhead["turn_without_callbacks_us"],
            },
            "throughput_events_per_s_0ms": throughput(fast_ours, fast_ref),
            "throughput_events_per_s_100ms": with_target(
                throughput(slow_ours, slow_ref), ">= 1000"
            ),
            "throughput_events_per_s_100ms_batch_500": {"ours": slow_ours_big},
            "flush_10k_s": latency(run(flush_queued_ours), run(flush_queued_reference)),
            "flush_timeout_hung_s": with_target(
                {
                    "ours": run(flush_hung_ours),
                    "reference": hung_ref,
                    "reference_returned": ref_returned,
                    "reference_cap_s": REFERENCE_CAP,
                },
                f"<= {HUNG_TIMEOUT * 1.05:.2f} s",
            ),
            "lost_in_burst": with_target(
                {
                    "ours": burst_ours["lost"],
                    "reference": burst_ref["lost"],
                    "runs": {"ours": burst_ours, "reference": burst_ref},
                },
                "0",
            ),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
