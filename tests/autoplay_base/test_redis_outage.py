"""The Redis backend's outage buffer on its own: no sockets, no clock (``_outage.py``)."""

from __future__ import annotations

from threading import Lock

from autoplay_base.backends.redis._outage import OutageBuffer, Pending


class Recorder:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.drops: list[tuple[str, bool, str]] = []

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def drop(self, pending: Pending[str], reason: str) -> None:
        self.drops.append((pending.op, pending.sent, reason))


def make(limit: int) -> tuple[OutageBuffer[str], Recorder]:
    seen = Recorder()
    return OutageBuffer(limit, lock=Lock(), count=seen.count, report_drop=seen.drop), seen


def ops(buffer: OutageBuffer[str]) -> list[str]:
    return [pending.op for pending in buffer]


def test_past_the_bound_the_oldest_write_goes_and_is_reported() -> None:
    buffer, seen = make(2)
    for op in ("a", "b", "c"):
        buffer.enqueue(op)
    buffer.enqueue("d", sent=True)
    assert ops(buffer) == ["c", "d"]
    assert seen.drops == [("a", False, "buffer_full"), ("b", False, "buffer_full")]
    assert seen.counts == {"redis_writes_buffered": 4, "redis_writes_dropped": 2}


def test_writes_in_flight_are_never_the_ones_given_up() -> None:
    buffer, seen = make(3)
    for op in ("a", "b", "c"):
        buffer.enqueue(op)
    assert buffer.begin_drain() is True
    assert buffer.begin_drain() is False  # one replay at a time
    assert [p.op for p in buffer.take_batch(2)] == ["a", "b"]
    buffer.enqueue("d")  # "c" is the oldest not in flight
    assert ops(buffer) == ["a", "b", "d"]
    buffer.enqueue("e")  # "d"
    assert ops(buffer) == ["a", "b", "e"]
    assert [op for op, _, _ in seen.drops] == ["c", "d"]


def test_when_everything_is_in_flight_the_new_write_goes() -> None:
    buffer, seen = make(2)
    buffer.enqueue("a")
    buffer.enqueue("b")
    buffer.begin_drain()
    buffer.take_batch(10)
    buffer.enqueue("c")
    assert ops(buffer) == ["a", "b"]
    assert seen.drops == [("c", False, "buffer_full")]


def test_a_replay_that_broke_off_keeps_the_unanswered_writes_marked_sent() -> None:
    buffer, seen = make(10)
    for op in ("a", "b", "c"):
        buffer.enqueue(op)
    buffer.begin_drain()
    batch = buffer.take_batch(3)
    buffer.replayed(batch, 1, sent=True)
    buffer.end_drain()
    assert [(p.op, p.sent) for p in buffer] == [("b", True), ("c", True)]
    assert buffer.in_flight == 0
    assert seen.counts["redis_writes_replayed"] == 1
    buffer.drop_all("closed")
    assert len(buffer) == 0
    assert seen.drops == [("b", True, "closed"), ("c", True, "closed")]
    assert seen.counts["redis_writes_dropped_unknown"] == 2


def test_a_replay_not_sent_leaves_the_writes_not_applied() -> None:
    buffer, _ = make(10)
    buffer.enqueue("a")
    buffer.begin_drain()
    buffer.replayed(buffer.take_batch(5), 0, sent=False)
    assert [(p.op, p.sent) for p in buffer] == [("a", False)]


def test_a_head_cut_midway_is_replaced_by_what_is_left_of_it() -> None:
    buffer, _ = make(10)
    buffer.enqueue("write")
    buffer.enqueue("next")
    buffer.begin_drain()
    (head,) = buffer.take_batch(1)
    buffer.replace_head(head, "index steps", sent=True)
    assert [(p.op, p.sent) for p in buffer] == [("index steps", True), ("next", False)]
    assert buffer.in_flight == 0


def test_an_empty_buffer_has_nothing_to_drain() -> None:
    buffer, seen = make(1)
    assert buffer.begin_drain() is False
    assert buffer.take_batch(4) == []
    assert not buffer
    assert seen.counts == {}
