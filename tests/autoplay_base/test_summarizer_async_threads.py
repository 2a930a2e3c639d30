"""The async summarizer with a sync LLM: its own bounded threads, never the loop's executor.

Hung calls block on a ``threading.Event`` that the fixture sets at teardown; the
``asyncio.run`` check runs in a subprocess with a timeout, so it cannot hang the suite.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from autoplay_base import AsyncContextStore, AsyncSessionSummarizer
from autoplay_base.summarizer import DEFAULT_MAX_CONCURRENCY
from tests.autoplay_base.factories import actions
from tests.autoplay_base.test_summarizer_threads import TIMER, WORKER, GatedLLM, names

WAIT = 10.0
SLACK = 1.0


@pytest.fixture
def llm() -> Iterator[GatedLLM]:
    llm = GatedLLM()
    yield llm
    llm.gate.set()


async def test_hung_sync_calls_leave_the_default_executor_free(llm: GatedLLM) -> None:
    loop = asyncio.get_running_loop()
    executor_size = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    sessions = executor_size + 1  # more hung calls than the default executor has threads
    max_threads = 2 * DEFAULT_MAX_CONCURRENCY  # hung threads are replaced up to this
    hung = min(sessions, max_threads)
    before = set(threading.enumerate())
    summarizer = AsyncSessionSummarizer(llm, threshold=1, timeout=0.05, max_retries=0)
    store = AsyncContextStore(summarizer)
    for i in range(sessions):
        await store.add(actions(f"s{i}", "a1"))
    await asyncio.wait_for(summarizer.flush(), WAIT)
    # This summarizer's threads, among those started since: in a whole-suite run an
    # earlier test's pool may start a replacement worker meanwhile.
    pool = summarizer._pool
    started = (set(threading.enumerate()) - before) & {*pool._threads, pool._timer}

    # Everything else that needs the default executor still runs at once.
    assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 2.0) == 42
    assert await asyncio.wait_for(asyncio.to_thread(lambda: 43), 2.0) == 43
    assert await asyncio.wait_for(loop.getaddrinfo("localhost", 80), 2.0)

    counters = summarizer.counters
    assert (counters.timeouts, counters.rejected) == (hung, sessions - hung)
    assert counters.failures == sessions
    assert (len(llm.prompts), summarizer.hung_threads) == (hung, hung)
    assert names(started) == [TIMER] + [WORKER] * hung
    assert await store.aget("s0") == "Recent activity:\n1. a1 — /page"
    llm.gate.set()
    await store.aclose()


async def test_a_sync_llm_summarizes_on_the_pool() -> None:
    calls: list[str] = []

    def llm(prompt: str) -> str:
        calls.append(threading.current_thread().name)
        return "From a worker thread."

    store = AsyncContextStore(AsyncSessionSummarizer(llm, threshold=1))
    for i in range(3):
        await store.add(actions(f"s{i}", "a1"))
    await store.flush()
    assert [await store.aget(f"s{i}") for i in range(3)] == ["Summary: From a worker thread."] * 3
    assert calls == [WORKER] * 3
    await store.aclose()


async def test_async_flush_and_aclose_return_by_their_deadlines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def stubborn(prompt: str) -> str:
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:  # hostile: it swallows cancellation
                continue
        return "late"

    summarizer = AsyncSessionSummarizer(stubborn, threshold=1, timeout=60)
    store = AsyncContextStore(summarizer)
    await store.add(actions("s", "a1"))
    await asyncio.wait_for(entered.wait(), WAIT)
    try:
        began = time.monotonic()
        assert await summarizer.flush(0.2) is False
        assert 0.2 <= time.monotonic() - began <= 0.2 + SLACK

        began = time.monotonic()
        await summarizer.aclose(0.3)
        assert 0.29 <= time.monotonic() - began <= 0.3 + SLACK
        assert summarizer.counters.abandoned == 1
        assert caplog.text.count("summaries abandoned: 1") == 1
    finally:
        release.set()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        _, pending = await asyncio.wait(others, timeout=WAIT) if others else (set(), set())
    assert pending == set()
    assert summarizer.counters.summaries == 0
    assert await store.aget("s") == "Recent activity:\n1. a1 — /page"


def test_asyncio_run_returns_with_a_hung_sync_llm() -> None:
    # asyncio.run() joins the loop's default executor at shutdown: a hung call
    # there would keep the program from ever returning.
    code = (
        "import asyncio, threading\n"
        "from autoplay_base import AsyncContextStore, AsyncSessionSummarizer\n"
        "from tests.autoplay_base.factories import actions\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    entered = asyncio.Event()\n"
        "    def stuck(prompt):\n"
        "        loop.call_soon_threadsafe(entered.set)\n"
        "        threading.Event().wait()\n"
        "    store = AsyncContextStore(AsyncSessionSummarizer(stuck, threshold=1))\n"
        "    await store.add(actions('s', 'a1'))\n"
        "    await asyncio.wait_for(entered.wait(), 10)\n"
        "    await store.aclose()\n"
        "asyncio.run(main())\n"
        "print('returned')\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("asyncio.run() never returned: a hung sync LLM held its default executor")
    assert (done.returncode, done.stdout) == (0, "returned\n"), done.stderr
