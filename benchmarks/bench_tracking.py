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
  tool call, ``ainvoke``) with ``AutoplayTrackingHandler`` minus the callback-free
  turn run next to it (the median of those paired differences, every configuration
  interleaved turn by turn; mlsdk in a phase of its own), vs mlsdk's
  ``MLChatRecorderCallback``; ``noop_handler`` is what an empty inline handler costs
  (LangChain's own callback machinery) and
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

``reference`` is ``None`` (autoplay-sdk has no tracking); every row's ``peer`` is
mlsdk's figure for the same measurement when ``mlsdk`` is importable (it is in the
headline environment ``benchmarks/.venv-ref``; elsewhere install it next to this
project, e.g. ``pip install -e .[langchain] mlsdk-python==1.0.5``), with how it was
taken in ``details["mlsdk_notes"]``; ``None`` without it. Where mlsdk cannot do
what is measured (its flush has no timeout) the figure is the hard bound it was
given, said so in the notes and ``details["mlsdk"]["flush_hung_returned"]``.
The full run takes about 3 minutes (both 30 s bursts; mlsdk's one request per
event for its 10,000 measured calls and at 100 ms; the exact-100 row's 20,000
events at 100 ms); ``BENCH_SMOKE=1`` about 25 s.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from _common import emit, figure, percentiles, size

from autoplay_base.emulator import IngestReceiver
from autoplay_base.tracking import HttpBatchSink, Tracker

TRACK_CALLS = size(50_000, 2_000)
AGENT_TURNS = size(300, 40)
THROUGHPUT_EVENTS = size(20_000, 2_000)
REFERENCE_EVENTS = size(2_000, 200)
REFERENCE_EVENTS_SLOW = size(100, 10)
QUEUED = size(10_000, 1_000)
HUNG_TIMEOUT = 1.0
REFERENCE_CAP = size(10, 3)
BURST_SECONDS = size(30, 3)
BURST_RATE = size(200, 50)
"""Events per second tracked during the burst (ours: 6,000 in the full run, under the
10,000-event queue bound)."""
MLSDK = "mlsdk-python 1.0.5"
REFERENCE_PATH = "/bc/v1/events/queue"
USER, ASSISTANT = "How do I export a report?", "Open Reports, then click Export CSV."


@contextmanager
def receiver(reference: bool, latency_s: float = 0.0) -> Iterator[IngestReceiver]:
    # mlsdk posts one event object per request: the receiver's single-event path.
    extra = {"single_event_path": REFERENCE_PATH} if reference else {}
    server = IngestReceiver(latency=latency_s, **extra)
    server.start()
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


async def turn_time(agent: Any, callbacks: list[Any], metadata: dict[str, str]) -> float:
    config = {"callbacks": callbacks, "metadata": metadata}
    start = time.perf_counter()
    await agent.ainvoke({"messages": [("user", USER)]}, config=config)
    return time.perf_counter() - start


async def handler_overhead(with_reference: bool) -> dict[str, float]:
    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_autoplay.tracking import AutoplayTrackingHandler

    class NoOpHandler(BaseCallbackHandler):
        """What any inline callback costs in LangChain itself (its run managers)."""

        run_inline = True

    agent = agent_and_model()
    meta = {"session_id": "ps_1", "product_id": "bench"}
    for _ in range(5):  # warm up
        await turn_time(agent, [], meta)
    with receiver(False) as ours_server:
        tracker = ours_tracker(ours_server)
        # Sends nothing while measured: the hooks' own cost, without the lane's sending.
        held = ours_tracker(ours_server, flush_interval=3600, batch_size=100_000)
        ours = await paired_overheads(
            agent,
            meta,
            {
                "noop": [NoOpHandler()],
                "ours": [AutoplayTrackingHandler(tracker)],
                "hooks_only": [AutoplayTrackingHandler(held)],
            },
        )
        tracker.close(timeout=30)
        held.close(timeout=30)
    if not with_reference:
        return ours
    # mlsdk in a phase of its own: its background tasks (one request per event) share
    # the loop with every turn measured while they run, the callback-free ones too; in
    # one phase with ours they slowed our baseline turns and made our figure negative.
    with receiver(True) as ref_server:
        from mlsdk.helpers.langchain import MLChatRecorderCallback

        session = reference_session(ref_server)
        theirs = await paired_overheads(
            agent, meta, {"reference": [MLChatRecorderCallback(session)]}
        )
        await asyncio.wait_for(session.flush(), REFERENCE_CAP * 10)
    return ours | {"reference": theirs["reference"]}


async def paired_overheads(
    agent: Any, meta: dict[str, str], callbacks: dict[str, list[Any]]
) -> dict[str, float]:
    """Each configuration's median added time per turn over the callback-free turn (µs).

    Interleaved turn by turn (in a rotating order), so machine noise and drift hit
    every configuration alike; each figure is the median, over 3 x AGENT_TURNS
    rounds, of a turn's time minus the callback-free turn of the same round (paired:
    a burst of load from elsewhere slows both sides of a pair, and cancels out).
    """
    configurations: dict[str, list[Any]] = {"none": [], **callbacks}
    rounds: dict[str, list[float]] = {name: [] for name in configurations}
    names = list(configurations)
    for turn in range(AGENT_TURNS * 3):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            rounds[name].append(await turn_time(agent, configurations[name], meta))
    base = rounds["none"]
    return {
        name: round(statistics.median(t - b for t, b in zip(times, base, strict=True)) * 1e6, 1)
        for name, times in rounds.items()
        if name != "none"
    } | {"turn_without_callbacks_us": round(statistics.median(base) * 1e6, 1)}


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


def run(step: Callable[[], Any]) -> Any:
    result = step()
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def reference_figures(overhead: dict[str, float]) -> dict[str, Any]:
    """mlsdk's side of every figure (one POST per event, async only, no flush timeout)."""
    call = run(track_call_reference)
    hung, returned = run(flush_hung_reference)
    return {
        "call": call,
        "overhead": overhead.get("reference"),
        "throughput_0": run(lambda: throughput_reference(0.0)),
        "throughput_100ms": run(lambda: throughput_reference(0.1)),
        "flush_queued": run(flush_queued_reference),
        "flush_hung": hung,
        "flush_hung_returned": returned,
        "burst": run(lost_in_burst_reference),
    }


def main() -> None:
    with_reference = importlib.util.find_spec("mlsdk") is not None
    call = track_call_ours()
    overhead = run(lambda: handler_overhead(with_reference))
    burst = lost_in_burst_ours()
    peer = reference_figures(overhead) if with_reference else None

    def of_peer(key: str, inner: str | None = None) -> Any:
        if peer is None:
            return None
        value = peer[key]
        return value[inner] if inner is not None else value

    tracker = "sync Tracker, HttpBatchSink defaults, loopback receiver"
    agent = (
        f"create_agent turn (fake model, 1 tool call), ainvoke, median of {AGENT_TURNS * 3} "
        "paired differences, turns interleaved with the other configurations of the same side "
        "(ours and mlsdk in separate phases)"
    )
    rows = [
        figure(
            "track_turn call p50",
            tracker,
            unit="µs",
            ours=call["p50_us"],
            peer=of_peer("call", "p50_us"),
            target="<= 5 µs",
        ),
        figure(
            "track_turn call p99",
            tracker,
            unit="µs",
            ours=call["p99_us"],
            peer=of_peer("call", "p99_us"),
        ),
        figure(
            "handler added per agent turn (floor: empty inline handler)",
            agent,
            unit="µs",
            ours=overhead["ours"],
            floor=overhead["noop"],
            peer=of_peer("overhead"),
        ),
        figure(
            "throughput, receiver answers at once",
            tracker,
            unit="events/s",
            better="higher",
            ours=throughput_ours(0.0),
            peer=of_peer("throughput_0"),
        ),
        figure(
            "throughput, receiver answers in 100 ms",
            tracker,
            unit="events/s",
            better="higher",
            ours=throughput_ours(0.1),
            peer=of_peer("throughput_100ms"),
            target=">= 1000",
        ),
        figure(
            "throughput, receiver answers in 100 ms",
            "sync Tracker, HttpBatchSink(batch_size=100): exact batches of 100 (the previous "
            "default), loopback receiver",
            unit="events/s",
            better="higher",
            ours=throughput_ours(0.1, batch_size=100),
            peer=of_peer("throughput_100ms"),
            target=">= 1000",
        ),
        figure(
            f"flush with {QUEUED} queued",
            tracker,
            unit="s",
            ours=flush_queued_ours(),
            peer=of_peer("flush_queued"),
        ),
        figure(
            "flush(timeout=1) against a hung receiver",
            tracker,
            unit="s",
            ours=flush_hung_ours(),
            peer=of_peer("flush_hung"),
            target=f"<= {HUNG_TIMEOUT * 1.05:.2f} s",
        ),
        figure(
            f"events lost in a {BURST_SECONDS:g} s 503/429 burst",
            f"{tracker}, {BURST_RATE} events/s tracked through the burst",
            unit="events",
            ours=burst["lost"],
            peer=of_peer("burst", "lost"),
            target="0",
        ),
    ]
    notes = {
        "track_turn call": "mlsdk: one `await session.track_conversation_turn(...)` (a coroutine "
        "that queues the event); measured on its first "
        f"{min(TRACK_CALLS, REFERENCE_EVENTS * 5)} calls, since each becomes one request",
        "flush queued": f"mlsdk: `flush_and_continue()` with {min(QUEUED, REFERENCE_EVENTS)} "
        f"queued (one POST per event), scaled to {QUEUED}",
        "flush hung": "mlsdk's flush has no timeout: capped with asyncio.wait_for at "
        f"{REFERENCE_CAP} s; its figure is the cap when it did not return",
        "throughput": "mlsdk: one POST per event, in order, one at a time "
        f"({REFERENCE_EVENTS} events at 0 ms, {REFERENCE_EVENTS_SLOW} at 100 ms)",
        "burst": "mlsdk does not retry a non-200 answer (its backoff only wraps exceptions "
        "its own request function already catches): every event answered 503/429 is lost",
    }
    emit(
        "bench_tracking",
        rows,
        peer=MLSDK if with_reference else None,
        handler_overhead_us=overhead,
        burst=burst,
        compared_with=MLSDK if with_reference else f"{MLSDK} not installed here",
        mlsdk=peer,
        mlsdk_notes=notes if with_reference else None,
    )


if __name__ == "__main__":
    main()
