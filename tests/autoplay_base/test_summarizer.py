"""Rolling summaries: wiring both ways, never blocking, retries with backoff, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from autoplay_base import (
    AsyncContextStore,
    AsyncSessionSummarizer,
    ConfigError,
    ContextStore,
    SessionSummarizer,
)
from tests.autoplay_base.factories import FakeClock, actions, summary

WAIT = 10.0


class RecordingLLM:
    """A sync LLM stand-in: records prompts, answers from a script, can be held or fail."""

    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = answers
        self.prompts: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        self.entered.set()
        assert self.release.wait(WAIT)
        answer = self.answers[min(len(self.prompts), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def prompt_parts(prompt: str) -> tuple[str, str]:
    previous = prompt.split("Summary so far:\n", 1)[1].split("\n\nNew actions:\n", 1)[0]
    new = prompt.split("New actions:\n", 1)[1].split("\n\nUpdated summary:", 1)[0]
    return previous, new


def test_summary_replaces_the_actions_it_covers_and_rolls_forward() -> None:
    llm = RecordingLLM(["First summary.", "Second summary."])
    summarizer = SessionSummarizer(llm, threshold=3)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1", "a2"))
    store.flush(WAIT)
    assert llm.prompts == []
    store.add(actions("s", "a3", "a4"))
    store.flush(WAIT)
    assert prompt_parts(llm.prompts[0]) == (
        "(none yet)",
        "1. a1 — /page\n2. a2 — /page\n3. a3 — /page\n4. a4 — /page",
    )
    assert store.get("s") == "Summary: First summary."
    store.add(actions("s", "b1", "b2", "b3"))
    store.flush(WAIT)
    assert prompt_parts(llm.prompts[1]) == (
        "First summary.",
        "1. b1 — /page\n2. b2 — /page\n3. b3 — /page",
    )
    assert store.get("s") == "Summary: Second summary."
    assert summarizer.counters.as_dict() == {
        "abandoned": 0,
        "failures": 0,
        "late_results": 0,
        "pending_trimmed": 0,
        "rejected": 0,
        "retries": 0,
        "sessions_evicted": 0,
        "summaries": 2,
        "timeouts": 0,
    }
    store.close()


def test_summarizing_never_blocks_ingest_or_reads() -> None:
    llm = RecordingLLM(["Covers two."])
    llm.release.clear()
    store = ContextStore(SessionSummarizer(llm, threshold=2))
    store.add(actions("s", "a1", "a2"))
    assert llm.entered.wait(WAIT)
    # The LLM is stuck; ingest and reads go on, and pending actions stay visible.
    store.add(actions("s", "a3"))
    assert store.get("s") == "Recent activity:\n1. a1 — /page\n2. a2 — /page\n3. a3 — /page"
    llm.release.set()
    store.flush(WAIT)
    assert store.get("s") == "Summary: Covers two.\n\nRecent activity:\n1. a3 — /page"
    store.close()


def test_failing_llm_is_retried_with_backoff_not_on_every_event() -> None:
    llm = RecordingLLM([RuntimeError("boom"), RuntimeError("boom again"), "Finally."])
    summarizer = SessionSummarizer(llm, threshold=1, initial_backoff=0.01)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    store.add(actions("s", "a2"))  # while the job retries: no second job for the session
    store.flush(WAIT)
    # Three tries for the first job (a1), then the job a2 chained after its success.
    assert [prompt_parts(p)[1] for p in llm.prompts] == ["1. a1 — /page"] * 3 + ["1. a2 — /page"]
    assert summarizer.counters.failures == 2
    assert summarizer.counters.retries == 2
    assert summarizer.counters.summaries == 2
    assert store.get("s") == "Summary: Finally."
    store.close()


class CountingHook:
    """An ``SdkMetricsHook`` implementing one method (which raises when told to)."""

    def __init__(self, *, broken: bool = False) -> None:
        self.calls: list[tuple[str, float]] = []
        self.broken = broken

    def record_counter(self, name: str, value: float) -> None:
        self.calls.append((name, value))
        if self.broken:
            raise RuntimeError("a broken hook never breaks the summarizer")


@pytest.mark.parametrize("broken", [False, True])
def test_the_seeds_metrics_hook_counts_summaries_and_failed_calls(
    broken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    hook = CountingHook(broken=broken)
    llm = RecordingLLM([RuntimeError("boom"), "Finally."])
    summarizer = SessionSummarizer(llm, threshold=1, initial_backoff=0.01, metrics=hook)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    store.flush(WAIT)
    assert hook.calls == [("summary_failures", 1), ("summaries", 1)]
    assert store.get("s") == "Summary: Finally."  # a raising hook changed nothing
    assert summarizer.metrics_hook_errors == (2 if broken else 0)
    logged = [r.getMessage() for r in caplog.records if "metrics hook" in r.getMessage()]
    assert logged == (
        [
            "autoplay: metrics hook CountingHook.record_counter raised RuntimeError "
            "(counted in metrics_hook_errors; logged once per method)"
        ]
        if broken
        else []
    )
    store.close()


def test_after_max_retries_the_session_waits_before_trying_again() -> None:
    clock = FakeClock()
    llm = RecordingLLM([RuntimeError("down")])
    summarizer = SessionSummarizer(
        llm, threshold=1, max_retries=1, initial_backoff=0.01, max_backoff=30, clock=clock
    )
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    store.flush(WAIT)
    assert len(llm.prompts) == 2  # the first try and one retry
    store.add(actions("s", "a2"))
    store.flush(WAIT)
    assert len(llm.prompts) == 2  # still inside max_backoff: no new call
    clock.advance(31)
    store.add(actions("s", "a3"))
    store.flush(WAIT)
    assert len(llm.prompts) == 4
    assert prompt_parts(llm.prompts[-1])[1] == "1. a1 — /page\n2. a2 — /page\n3. a3 — /page"
    assert store.get("s") == "Recent activity:\n1. a1 — /page\n2. a2 — /page\n3. a3 — /page"
    store.close()


def test_a_slow_llm_times_out_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    llm = RecordingLLM(["late"])
    llm.release.clear()
    summarizer = SessionSummarizer(llm, threshold=1, timeout=0.05, max_retries=0)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1"))
    store.flush(WAIT)
    assert summarizer.counters.timeouts == 1
    assert "timed out" in caplog.text
    assert store.get("s") == "Recent activity:\n1. a1 — /page"
    llm.release.set()
    store.close()


def test_langchain_chat_model_and_user_callback() -> None:
    model = FakeListChatModel(responses=["The user is upgrading their plan."])
    seen: list[tuple[str, str]] = []
    summarizer = SessionSummarizer(model, threshold=1, on_summary=lambda s, t: seen.append((s, t)))
    store = ContextStore(summarizer)
    store.add(actions("s", "Clicked Upgrade plan"))
    store.flush(WAIT)
    assert seen == [("s", "The user is upgrading their plan.")]
    assert store.get("s") == "Summary: The user is upgrading their plan."
    store.close()


def test_connector_summary_becomes_the_rolling_summary() -> None:
    llm = RecordingLLM(["Mine."])
    store = ContextStore(SessionSummarizer(llm, threshold=2))
    store.add(actions("s", "a1"))
    store.add(summary("s", "From the connector.", replaces=1))
    store.add(actions("s", "a2", "a3"))
    store.flush(WAIT)
    assert prompt_parts(llm.prompts[0]) == ("From the connector.", "1. a2 — /page\n2. a3 — /page")
    assert store.get("s") == "Summary: Mine."
    store.close()


def test_reset_forgets_pending_actions() -> None:
    llm = RecordingLLM(["x"])
    summarizer = SessionSummarizer(llm, threshold=3)
    store = ContextStore(summarizer)
    store.add(actions("s", "a1", "a2"))
    assert summarizer.get_context("s") == "1. a1 — /page\n2. a2 — /page"
    assert summarizer.active_sessions == ["s"]
    store.reset("s")
    assert summarizer.get_context("s") == ""
    store.add(actions("s", "b1"))
    store.flush(WAIT)
    assert llm.prompts == []
    store.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SessionSummarizer(lambda p: p, threshold=0), "threshold"),
        (lambda: SessionSummarizer(lambda p: p, prompt="no placeholder"), "{actions}"),
        (lambda: SessionSummarizer(lambda p: p, prompt="{actions} {oops}"), "unknown placeholder"),
        (lambda: SessionSummarizer(lambda p: p, timeout=0), "timeout"),
    ],
)
def test_bad_configuration(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make()


def test_sync_summarizer_rejects_an_async_llm() -> None:
    async def llm(prompt: str) -> str:
        return prompt

    with pytest.raises(ConfigError, match="AsyncSessionSummarizer"):
        SessionSummarizer(llm)


def test_a_summarizer_binds_to_one_store() -> None:
    summarizer = SessionSummarizer(lambda p: "s")
    ContextStore(summarizer)
    with pytest.raises(ConfigError, match="already bound"):
        ContextStore(summarizer)
    summarizer.close()


def test_the_summarizer_retry_defaults_are_its_own_not_the_clients() -> None:
    from autoplay_base import _reconnect, summarizer

    assert summarizer.DEFAULT_SUMMARY_INITIAL_BACKOFF == 1.0
    assert summarizer.DEFAULT_SUMMARY_MAX_BACKOFF == 60.0
    assert _reconnect.DEFAULT_MAX_BACKOFF == 30.0  # the connector client's, another policy
    assert not hasattr(summarizer, "DEFAULT_MAX_BACKOFF")  # one name, one value
    # By default a session whose retries are spent waits the summarizer's 60 s, not 30 s.
    clock = FakeClock()
    llm = RecordingLLM([RuntimeError("down"), "Back."])
    store = ContextStore(SessionSummarizer(llm, threshold=1, max_retries=0, clock=clock))
    store.add(actions("s", "a1"))
    store.flush(WAIT)
    clock.advance(59.5)
    store.add(actions("s", "a2"))
    store.flush(WAIT)
    assert len(llm.prompts) == 1
    clock.advance(0.5)
    store.add(actions("s", "a3"))
    store.flush(WAIT)
    assert len(llm.prompts) == 2
    assert store.get("s") == "Summary: Back."
    store.close()


async def test_async_summarizer_binds_to_one_store_and_adopts_connector_summaries() -> None:
    prompts: list[str] = []

    async def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "Mine."

    summarizer = AsyncSessionSummarizer(llm, threshold=2)
    store = AsyncContextStore(summarizer)
    with pytest.raises(ConfigError, match="already bound"):
        AsyncContextStore(summarizer)
    await store.add(actions("s", "a1"))
    await store.add(summary("s", "From the connector.", replaces=1))
    await store.add(actions("s", "a2", "a3"))
    assert await summarizer.flush(WAIT)
    assert [prompt_parts(p) for p in prompts] == [
        ("From the connector.", "1. a2 — /page\n2. a3 — /page")
    ]
    assert await store.aget("s") == "Summary: Mine."
    await store.aclose()


async def test_async_summarizer_rolls_and_replaces() -> None:
    prompts: list[str] = []

    async def llm(prompt: str) -> str:
        prompts.append(prompt)
        return f"Summary {len(prompts)}."

    seen: list[tuple[str, str]] = []

    async def on_summary(session_id: str, text: str) -> None:
        seen.append((session_id, text))

    store = AsyncContextStore(AsyncSessionSummarizer(llm, threshold=2, on_summary=on_summary))
    await store.add(actions("s", "a1", "a2"))
    await store.add(actions("s", "a3"))
    await store.flush()
    assert prompt_parts(prompts[0]) == ("(none yet)", "1. a1 — /page\n2. a2 — /page")
    assert await store.aget("s") == "Summary: Summary 1.\n\nRecent activity:\n1. a3 — /page"
    await store.add(actions("s", "a4"))
    await store.flush()
    assert prompt_parts(prompts[1]) == ("Summary 1.", "1. a3 — /page\n2. a4 — /page")
    assert await store.aget("s") == "Summary: Summary 2."
    assert seen == [("s", "Summary 1."), ("s", "Summary 2.")]
    await store.aclose()


async def test_async_summarizer_accepts_sync_llms_and_runnables() -> None:
    model = FakeListChatModel(responses=["From a chat model."])
    store = AsyncContextStore(AsyncSessionSummarizer(model, threshold=1))
    await store.add(actions("s", "a1"))
    await store.flush()
    assert await store.aget("s") == "Summary: From a chat model."
    store2 = AsyncContextStore(
        AsyncSessionSummarizer(lambda prompt: "From a plain callable.", threshold=1)
    )
    await store2.add(actions("s", "a1"))
    await store2.flush()
    assert await store2.aget("s") == "Summary: From a plain callable."


async def test_async_summarizer_timeout_and_aclose_cancels() -> None:
    entered = asyncio.Event()

    async def stuck(prompt: str) -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never"

    summarizer = AsyncSessionSummarizer(stuck, threshold=1, timeout=0.05, max_retries=0)
    store = AsyncContextStore(summarizer)
    await store.add(actions("s", "a1"))
    await asyncio.wait_for(entered.wait(), WAIT)
    await asyncio.wait_for(store.flush(), WAIT)
    assert summarizer.counters.timeouts == 1
    assert await store.aget("s") == "Recent activity:\n1. a1 — /page"

    blocked = AsyncSessionSummarizer(stuck, threshold=1, timeout=60)
    store2 = AsyncContextStore(blocked)
    entered.clear()
    await store2.add(actions("s", "a1"))
    await asyncio.wait_for(entered.wait(), WAIT)
    await asyncio.wait_for(store2.aclose(), WAIT)
    assert blocked.counters.summaries == 0


def test_a_hung_llm_never_blocks_the_process_from_exiting() -> None:
    # Executor threads are joined at interpreter exit; ours are daemons, so a call
    # that never returns cannot hang a shutdown that forgot to call close().
    code = (
        "import threading\n"
        "from autoplay_base import ContextStore, SessionSummarizer\n"
        "from tests.autoplay_base.factories import actions\n"
        "entered = threading.Event()\n"
        "def stuck(prompt):\n"
        "    entered.set()\n"
        "    threading.Event().wait()\n"
        "store = ContextStore(SessionSummarizer(stuck, threshold=1))\n"
        "store.add(actions('s', 'a1'))\n"
        "assert entered.wait(10)\n"
        "print('exiting')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "exiting\n"), done.stderr
