"""The sync summarizer's worker pool: bounded threads, hung calls, close/flush deadlines.

Hung LLM calls block on a ``threading.Event`` that the fixture sets at teardown,
so no thread is left blocked after a test; every wait is on an event with a
timeout, never a sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from autoplay_base import ContextStore, SessionSummarizer
from autoplay_base._summary_book import Book, SummarizerCounters
from autoplay_base.backends.base import SessionKey
from autoplay_base.summarizer import DEFAULT_CLOSE_TIMEOUT
from tests.autoplay_base.factories import actions

WAIT = 10.0
SLACK = 1.0  # scheduling slack on a shared 2-core machine
LOGGER = "autoplay_base.summarizer"
WORKER = "autoplay-summarizer-worker"
TIMER = "autoplay-summarizer-timer"


class GatedLLM:
    """A sync LLM whose first ``hang`` calls block until the gate opens; records prompts."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.hang = 1_000_000
        self.answer: Callable[[str], str] = lambda prompt: "Summary."
        self.prompts: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, prompt: str) -> str:
        with self._changed:
            self.prompts.append(prompt)
            blocks = len(self.prompts) <= self.hang
            self._changed.notify_all()
        if blocks:
            self.gate.wait(WAIT * 6)
        return self.answer(prompt)

    def wait_calls(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.prompts) >= count, WAIT)


class LateReturns(logging.Handler):
    """Collects the pool's "a hung call returned" records, so a test can wait for them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if "hung LLM call returned" in record.getMessage():
            with self._changed:
                self.records.append(record)
                self._changed.notify_all()

    def wait(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.records) >= count, WAIT)


@pytest.fixture
def llm() -> Iterator[GatedLLM]:
    llm = GatedLLM()
    yield llm
    llm.gate.set()


@pytest.fixture
def late(caplog: pytest.LogCaptureFixture) -> Iterator[LateReturns]:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handler = LateReturns()
    logging.getLogger(LOGGER).addHandler(handler)
    yield handler
    logging.getLogger(LOGGER).removeHandler(handler)


def names(threads: set[threading.Thread]) -> list[str]:
    return sorted(thread.name for thread in threads)


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return set(threading.enumerate()) - before


def test_2000_sessions_share_a_bounded_pool_of_threads(llm: GatedLLM) -> None:
    before = set(threading.enumerate())
    seen: list[str] = []
    summarizer = SessionSummarizer(
        llm, threshold=1, max_concurrency=4, on_summary=lambda s, t: seen.append(s)
    )
    store = ContextStore(summarizer)
    for i in range(2000):
        store.add(actions(f"s{i}", "a1"))
    assert llm.wait_calls(4)
    started = new_threads(before)
    assert names(started) == [TIMER] + [WORKER] * 4
    llm.gate.set()
    assert summarizer.flush(WAIT) is True
    assert (summarizer.counters.summaries, len(llm.prompts)) == (2000, 2000)
    assert sorted(seen) == sorted(f"s{i}" for i in range(2000))
    assert new_threads(before) == started  # the same threads served every session
    store.close()
    assert [t for t in started if t.is_alive()] == []


def test_hung_calls_are_abandoned_and_the_pool_stays_bounded(
    llm: GatedLLM, late: LateReturns, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    summarizer = SessionSummarizer(llm, threshold=1, max_concurrency=2, timeout=0.1, max_retries=0)
    store = ContextStore(summarizer)
    counters = summarizer.counters
    for i in range(4):
        store.add(actions(f"s{i}", "a1"))
    # Two calls hang, time out, and their threads are replaced; the replacements hang too.
    summarizer.flush(WAIT)
    started = new_threads(before)
    assert names(started) == [TIMER] + [WORKER] * 4
    assert (counters.timeouts, counters.failures, counters.rejected) == (4, 4, 0)
    assert (len(llm.prompts), summarizer.hung_threads) == (4, 4)
    assert "all 4 worker threads are stuck in LLM calls" in caplog.text

    # Every thread is hung: a new session fails at once (counted) instead of starting one.
    store.add(actions("s4", "a1"))
    summarizer.flush(WAIT)
    assert (counters.rejected, counters.failures, len(llm.prompts)) == (1, 5, 4)
    assert new_threads(before) == started
    assert store.get("s4") == "Recent activity:\n1. a1 — /page"

    # The hung calls return: answers dropped; two threads rejoin the pool, two exit.
    llm.gate.set()
    assert late.wait(4)
    assert (counters.late_results, summarizer.hung_threads, counters.summaries) == (4, 0, 0)
    exited = {r.thread for r in late.records if r.getMessage().endswith("exits")}
    assert len(exited) == 2
    for thread in started:
        if thread.ident in exited:
            thread.join(WAIT)
    alive = {t for t in started if t.is_alive()}
    assert names(alive) == [TIMER] + [WORKER] * 2
    assert [store.get(f"s{i}") for i in range(4)] == ["Recent activity:\n1. a1 — /page"] * 4

    # A new session runs on a thread that came back: no thread is started for it.
    store.add(actions("s5", "a1"))
    summarizer.flush(WAIT)
    assert store.get("s5") == "Summary: Summary."
    assert new_threads(before) == alive
    store.close()
    assert [t for t in started if t.is_alive()] == []


def test_store_close_returns_by_the_default_deadline_on_a_hung_llm(
    llm: GatedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    summarizer = SessionSummarizer(llm, threshold=1, timeout=60)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    assert llm.wait_calls(1)
    began = time.monotonic()
    closer = threading.Thread(target=store.close, daemon=True)
    closer.start()
    closer.join(DEFAULT_CLOSE_TIMEOUT + SLACK)
    elapsed = time.monotonic() - began
    assert not closer.is_alive(), "ContextStore.close() waited for a hung LLM"
    assert DEFAULT_CLOSE_TIMEOUT <= elapsed <= DEFAULT_CLOSE_TIMEOUT + SLACK
    assert summarizer.counters.abandoned == 1
    assert "summaries abandoned: 1" in caplog.text


def test_flush_and_close_return_by_their_deadlines_and_count_what_they_abandon(
    llm: GatedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    summarizer = SessionSummarizer(llm, threshold=1, timeout=60, max_concurrency=1)
    store = ContextStore(summarizer)
    for session in ("s1", "s2", "s3"):
        store.add(actions(session, "a1"))
    assert llm.wait_calls(1)  # s1 runs (and hangs); s2 and s3 wait in the queue

    began = time.monotonic()
    assert summarizer.flush(0.2) is False
    assert 0.2 <= time.monotonic() - began <= 0.2 + SLACK

    began = time.monotonic()
    summarizer.close(0.3)
    assert 0.3 <= time.monotonic() - began <= 0.3 + SLACK
    assert summarizer.counters.abandoned == 3
    assert len(llm.prompts) == 1
    assert caplog.text.count("summaries abandoned: 3") == 1

    # The abandoned call's answer, when it finally comes, never reaches the store.
    llm.gate.set()
    for thread in new_threads(before):
        thread.join(WAIT)
        assert not thread.is_alive()
    assert summarizer.counters.summaries == 0
    assert store.get("s1") == "Recent activity:\n1. a1 — /page"


def test_a_summary_in_flight_when_its_session_is_reset_is_dropped(llm: GatedLLM) -> None:
    llm.answer = lambda prompt: "About b1." if "b1" in prompt else "About a1."
    seen: list[str] = []
    summarizer = SessionSummarizer(llm, threshold=1, on_summary=lambda s, t: seen.append(t))
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    assert llm.wait_calls(1)
    store.reset("s")
    store.add(actions("s", "b1"))  # the session starts over while the old call runs
    assert llm.wait_calls(2)
    llm.gate.set()
    summarizer.flush(WAIT)
    assert seen == ["About b1."]
    assert store.get("s") == "Summary: About b1."
    assert summarizer.counters.summaries == 1
    store.close()


def test_a_queued_summary_for_a_reset_session_never_reaches_the_llm(llm: GatedLLM) -> None:
    summarizer = SessionSummarizer(llm, threshold=1, max_concurrency=1)
    store = ContextStore(summarizer)
    store.add(actions("s1", "a1"))
    assert llm.wait_calls(1)
    store.add(actions("s2", "private step"))  # queued behind s1
    store.reset("s2")
    llm.gate.set()
    summarizer.flush(WAIT)
    assert len(llm.prompts) == 1
    assert "private step" not in llm.prompts[0]
    assert store.get("s2") == ""
    assert store.get("s1") == "Summary: Summary."
    store.close()


def test_llm_error_text_is_logged_without_credentials(caplog: pytest.LogCaptureFixture) -> None:
    def leaky(prompt: str) -> str:
        raise RuntimeError(
            "POST https://bob:pw1@api.example.com/v1/chat?key=SECRET1 failed: "
            "Authorization: Bearer SECRET2, api_key=SECRET3, sk-SECRET4abcdefgh"
        )

    summarizer = SessionSummarizer(leaky, threshold=1, max_retries=0)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    summarizer.flush(WAIT)
    assert summarizer.counters.failures == 1
    assert "RuntimeError: POST https://***@api.example.com/v1/chat?*** failed" in caplog.text
    for secret in ("pw1", "SECRET1", "SECRET2", "SECRET3", "SECRET4"):
        assert secret not in caplog.text
    store.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "the LLM returned NoneType, not text"),
        (42, "the LLM returned int, not text"),
        ("", "the LLM returned an empty summary"),
        ("  \n ", "the LLM returned an empty summary"),
    ],
    ids=["none", "int", "empty", "blank"],
)
def test_unusable_answers_fail_and_are_counted(
    answer: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    summarizer = SessionSummarizer(lambda prompt: answer, threshold=1, max_retries=0)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    summarizer.flush(WAIT)
    counters = summarizer.counters
    assert (counters.failures, counters.summaries, counters.timeouts) == (1, 0, 0)
    assert f"session='s' product='p1': SummarizerError: {message}" in caplog.text
    assert store.get("s") == "Recent activity:\n1. a1 — /page"
    store.close()


def test_retry_delays_stay_capped_for_any_number_of_failures() -> None:
    book = Book(
        threshold=1,
        max_retries=5000,
        initial_backoff=0.5,
        max_backoff=60.0,
        max_sessions=10,
        max_pending=10,
        counters=SummarizerCounters(),
    )
    job = book.record(SessionKey("p1", "s"), ["a1"], 0.0)
    assert job is not None
    delays = [book.failed(job, 0.0) for _ in range(2000)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert set(delays[8:]) == {60.0}
