"""``CallbackThreads`` on its own: real threads, callbacks that record, gates that hold them.

The sync client hands ``CallbackThreads`` its callbacks and its drop and
error handlers; here they record what they were given (and on which thread),
so the worker, the notifier, the bounds and the bounded ``finish`` are
checked without a server. Every wait is on an event with a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from autoplay_base._connection import ClientCounters
from autoplay_base._threads import CallbackThreads
from autoplay_base.events import ActionsPayload, Event
from tests.autoplay_base.factories import actions

WAIT = 5.0  # seconds any wait below may take before the test fails


def event(n: int, session: str = "a") -> ActionsPayload:
    return actions(session, f"e{n}", product_id="acme")


def label(event: Event) -> str:
    assert isinstance(event, ActionsPayload)
    return event.actions[0].description


class Books:
    """What the threads reported: drops, callback failures, notification failures."""

    def __init__(self) -> None:
        self.drops: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str]] = []
        self.notice_failures: list[str] = []
        self.on_drop: Callable[[], None] = lambda: None

    def dropped(self, event: Event, why: str) -> None:
        self.drops.append((label(event), why))
        self.on_drop()

    def callback_failed(self, event: Event, exc: Exception) -> None:
        self.failures.append((label(event), str(exc)))

    def notice_failed(self, exc: Exception) -> None:
        self.notice_failures.append(str(exc))


def make(
    callbacks: Sequence[Callable[[Event], Any]],
    books: Books,
    *,
    max_queue_size: int = 100,
    drain_timeout: float = 5.0,
    stuck_grace: float = 1.0,
    notice_grace: float = 1.0,
    max_notices: int = 100,
) -> tuple[CallbackThreads, ClientCounters]:
    counters = ClientCounters()
    threads = CallbackThreads(
        lambda event: callbacks,
        books.callback_failed,
        books.notice_failed,
        books.dropped,
        counters,
        max_queue_size=max_queue_size,
        drain_timeout=drain_timeout,
        stuck_grace=stuck_grace,
        notice_grace=notice_grace,
        max_notices=max_notices,
    )
    threads.start()
    return threads, counters


class Gate:
    """A callback that records each event and, while closed, holds the worker."""

    def __init__(self, *, closed: bool = True) -> None:
        self.seen: list[str] = []
        self.threads: list[threading.Thread] = []
        self.entered = threading.Event()
        self.opened = threading.Event()
        if not closed:
            self.opened.set()
        self._count = threading.Condition()

    def __call__(self, event: Event) -> None:
        self.threads.append(threading.current_thread())
        self.entered.set()
        assert self.opened.wait(WAIT)
        with self._count:
            self.seen.append(label(event))
            self._count.notify_all()

    def until(self, count: int) -> bool:
        with self._count:
            return self._count.wait_for(lambda: len(self.seen) >= count, WAIT)


def test_the_worker_runs_every_callback_in_order_on_its_own_thread() -> None:
    books = Books()
    first, second = Gate(closed=False), Gate(closed=False)
    threads, counters = make([first, second], books)
    threads.put_many([event(1), event(2)])
    threads.put_many([event(3)])
    assert second.until(3)
    threads.finish()
    assert first.seen == second.seen == ["e1", "e2", "e3"]
    assert {t.name for t in first.threads} == {"autoplay-stream-worker"}
    assert threads.owns(first.threads[0]) and not threads.owns(threading.current_thread())
    assert (counters.delivered, books.drops, books.failures) == (3, [], [])


def test_a_raising_callback_is_reported_and_the_next_still_runs() -> None:
    books = Books()
    after = Gate(closed=False)

    def boom(event: Event) -> None:
        raise ValueError(f"bad {label(event)}")

    threads, counters = make([boom, after], books)
    threads.put_many([event(1), event(2)])
    assert after.until(2)
    threads.finish()
    assert books.failures == [("e1", "bad e1"), ("e2", "bad e2")]
    assert (after.seen, counters.delivered) == (["e1", "e2"], 2)


def test_a_full_queue_drops_what_does_not_fit_and_never_blocks_the_reader() -> None:
    books = Books()
    gate = Gate()
    threads, counters = make([gate], books, max_queue_size=2)
    threads.put_many([event(1)])
    assert gate.entered.wait(WAIT)  # e1 is in flight: the queue is empty again
    threads.put_many([event(2), event(3), event(4)])
    threads.put_many([event(5)])
    assert books.drops == [("e4", "buffer full"), ("e5", "buffer full")]
    assert threads.queue_size == 2
    gate.opened.set()
    assert gate.until(3)
    threads.finish()
    assert (gate.seen, counters.delivered, len(books.drops)) == (["e1", "e2", "e3"], 3, 2)


def test_finish_delivers_what_is_queued_within_the_drain_timeout() -> None:
    books = Books()
    gate = Gate()
    threads, counters = make([gate], books, drain_timeout=WAIT)
    threads.put_many([event(1), event(2), event(3)])
    assert gate.entered.wait(WAIT)
    finisher = threading.Thread(target=threads.finish)
    finisher.start()
    gate.opened.set()
    finisher.join(WAIT)
    assert not finisher.is_alive()
    assert (gate.seen, counters.delivered, books.drops) == (["e1", "e2", "e3"], 3, [])


def test_finish_with_no_drain_timeout_drops_the_queue_at_once() -> None:
    books = Books()
    gate = Gate()
    books.on_drop = gate.opened.set  # the event in flight may finish once the rest is dropped
    threads, counters = make([gate], books, drain_timeout=0)
    threads.put_many([event(1), event(2), event(3)])
    assert gate.entered.wait(WAIT)
    threads.finish()
    why = "stopped with drain_timeout=0"
    assert books.drops == [("e2", why), ("e3", why)]
    assert (gate.seen, counters.delivered, threads.queue_size) == (["e1"], 1, 0)


def test_a_stuck_callback_is_given_up_on_and_the_books_still_balance() -> None:
    books = Books()
    gate, later = Gate(), Gate(closed=False)
    threads, counters = make([gate, later], books, drain_timeout=0.02, stuck_grace=0.02)
    threads.put_many([event(1), event(2)])
    assert gate.entered.wait(WAIT)
    threads.finish()  # returns by its deadline although the callback is still running
    assert books.drops == [
        ("e1", "its callback was stuck when the client stopped"),
        ("e2", "a callback was stuck when the client stopped"),
    ]
    assert counters.delivered == 0
    gate.opened.set()
    worker = gate.threads[0]
    worker.join(WAIT)
    assert not worker.is_alive()  # it ended as soon as its callback returned
    # It ran nothing more and counted nothing: e1 is already counted as dropped.
    assert (gate.seen, later.seen, counters.delivered, len(books.drops)) == (["e1"], [], 0, 2)


def test_notices_run_in_order_on_the_notifier_and_a_raising_one_is_reported() -> None:
    books = Books()
    threads, _ = make([], books)
    got: list[tuple[str, tuple[Any, ...]]] = []
    names: list[str] = []

    def record(*args: Any) -> None:
        names.append(threading.current_thread().name)
        got.append(("record", args))

    def boom(*args: Any) -> None:
        raise RuntimeError("notice failed")

    threads.notice([record, boom, record], 1, "x")
    threads.notice([record])
    threads.notice([])  # nothing to run: nothing queued
    threads.finish()  # the notifier delivers what is pending before it ends
    assert got == [("record", (1, "x")), ("record", (1, "x")), ("record", ())]
    assert set(names) == {"autoplay-stream-notifier"}
    assert (books.notice_failures, threads.lost_notices) == (["notice failed"], 0)


def test_a_full_notice_backlog_loses_new_notices_and_counts_them() -> None:
    books = Books()
    threads, _ = make([], books, max_notices=2)
    entered, release = threading.Event(), threading.Event()
    got: list[int] = []

    def hold(n: int) -> None:
        entered.set()
        assert release.wait(WAIT)
        got.append(n)

    threads.notice([hold], 1)
    assert entered.wait(WAIT)  # the first is running: two more fit
    for n in (2, 3, 4, 5):
        threads.notice([hold], n)
    assert threads.lost_notices == 2
    release.set()
    threads.finish()
    assert got == [1, 2, 3]


def test_notices_still_pending_after_the_notice_grace_are_counted_lost() -> None:
    books = Books()
    threads, _ = make([], books, notice_grace=0.02, stuck_grace=0.02, drain_timeout=0)
    entered, release = threading.Event(), threading.Event()
    got: list[int] = []
    notifier: list[threading.Thread] = []

    def hold(n: int) -> None:
        notifier.append(threading.current_thread())
        entered.set()
        assert release.wait(WAIT)
        got.append(n)

    threads.notice([hold], 1)
    assert entered.wait(WAIT)
    threads.notice([hold], 2)
    threads.notice([hold], 3)
    threads.finish()  # returns although a notice is stuck
    release.set()
    notifier[0].join(WAIT)
    assert not notifier[0].is_alive()
    assert (got, threads.lost_notices) == ([1], 2)
