"""ConnectorClient against the real emulator over loopback sockets."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from autoplay_base.context_store import ContextStore
from autoplay_base.emulator import EmulatorServer, bad_frames
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorNotFoundError,
    ConnectorRetriesExhaustedError,
    EventDecodeError,
)
from autoplay_base.events import ActionsPayload, SummaryPayload, UnknownEvent
from autoplay_base.stream import ConnectorClient
from tests._fixtures.emulator import Collector, EmulatorFactory

TOKEN = "uk_live_TOPSECRET_42"


def actions(n: int, session: str = "s1", product: str = "acme") -> dict[str, Any]:
    return {
        "type": "actions",
        "product_id": product,
        "session_id": session,
        "actions": [
            {"title": f"T{n}", "description": f"Did thing {n}", "canonical_url": f"/p/{n}"}
        ],
        "forwarded_at": 1.0,
    }


def client_for(server: EmulatorServer, product: str = "acme", **options: Any) -> ConnectorClient:
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.05)
    return ConnectorClient(server.url_for(product), **options)


def connected(client: ConnectorClient) -> threading.Event:
    event = threading.Event()
    client.on_connect(event.set)
    return event


def test_seed_api_chaining_properties_and_background_thread(emulator: EmulatorServer) -> None:
    got = Collector()
    client = client_for(emulator, max_queue_size=10)
    assert client.on_actions(got).on_summary(got).on_drop(got) is client
    assert (client.dropped_count, client.queue_size) == (0, 0)
    is_up = connected(client)
    with client:
        thread = client.run_in_background()
        assert isinstance(thread, threading.Thread)
        assert thread.daemon
        assert is_up.wait(5)
        emulator.publish("acme", actions(1))
        assert got.wait_for(1)
    assert not thread.is_alive()
    assert isinstance(got.items[0], ActionsPayload)
    assert got.items[0].event_id == "1"


def test_end_to_end_into_context_store_exact_text(emulator: EmulatorServer) -> None:
    store = ContextStore()
    done = Collector()
    client = client_for(emulator).on_actions(store.add).on_summary(store.add)
    client.on_actions(done).on_summary(done)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    emulator.publish("acme", actions(2))
    emulator.publish("acme", actions(3))
    emulator.publish(
        "acme",
        {
            "type": "summary",
            "product_id": "acme",
            "session_id": "s1",
            "summary": "The user did things one and two.",
            "replaces": 2,
            "forwarded_at": 2.0,
        },
    )
    assert done.wait_for(4)
    client.stop()
    assert store.enrich("s1", "How do I export?", product_id="acme") == (
        "[Session context]\n"
        "Summary: The user did things one and two.\n"
        "\n"
        "Recent activity:\n"
        "1. Did thing 3 — /p/3\n"
        "\n"
        "[Query]\n"
        "How do I export?"
    )


@pytest.mark.parametrize("mode", ["clean", "abort"])
def test_resume_with_zero_loss_and_zero_duplicates_when_cut_every_k(
    emulator: EmulatorServer, mode: str
) -> None:
    emulator.faults.close_every = 7
    emulator.faults.close_mode = mode  # type: ignore[assignment]
    got = Collector()
    client = client_for(emulator).on_actions(lambda p: got(p.event_id))
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 101):
        emulator.publish("acme", actions(n))
    assert got.wait_for(100, timeout=10), (
        len(got),
        client.counters,
        emulator.stats,
        list(emulator.requests)[-3:],
    )
    client.stop()
    assert got.items == [str(n) for n in range(1, 101)]
    counters = client.counters
    assert counters.duplicates == 0
    assert counters.received == counters.delivered == 100
    assert counters.reconnects >= 100 // 7
    resumed = [r.last_event_id for r in emulator.requests][1:]
    assert all(r is not None for r in resumed)
    assert counters.last_event_id == "100"


def test_clean_close_reconnects_at_once_not_after_backoff(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 1
    got = Collector()
    # A 30 s backoff would blow the wait below if a clean close ever slept.
    client = client_for(emulator, initial_backoff=30, max_backoff=30).on_actions(got)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 21):
        emulator.publish("acme", actions(n))
    assert got.wait_for(20, timeout=5)
    client.stop()
    assert client.counters.reconnects >= 19


def test_replayed_duplicates_are_dropped_by_id(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 5
    emulator.faults.replay_overlap = 2  # the server resends 2 frames on every resume
    got = Collector()
    client = client_for(emulator).on_actions(lambda p: got(p.event_id))
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 31):
        emulator.publish("acme", actions(n))
    assert got.wait_for(30, timeout=10)
    client.stop()
    assert got.items == [str(n) for n in range(1, 31)]
    assert client.counters.duplicates >= 2 * 5
    assert client.counters.received == 30


@pytest.mark.parametrize(
    ("token", "status"), [("", 401), ("wrong-token", 403)], ids=["missing", "wrong"]
)
def test_auth_errors_raise_at_once_without_retry(
    emulator_factory: EmulatorFactory, token: str, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
    server = emulator_factory(token=TOKEN)
    client = client_for(server, token=token)
    with pytest.raises(ConnectorAuthError) as caught:
        client.run()
    assert caught.value.status_code == status
    assert [r.status for r in server.requests] == [status]
    assert TOKEN not in str(caught.value)


def test_not_found_raises_at_once(emulator: EmulatorServer) -> None:
    client = client_for(emulator, product="nope")
    with pytest.raises(ConnectorNotFoundError):
        client.run()
    assert len(emulator.requests) == 1


def test_fatal_error_in_background_goes_to_on_error_and_is_reraised(
    emulator_factory: EmulatorFactory,
) -> None:
    server = emulator_factory(token=TOKEN)
    errors = Collector()
    client = client_for(server, token="bad").on_error(errors)
    thread = client.run_in_background()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors.items) == 1
    assert isinstance(errors.items[0], ConnectorAuthError)
    with pytest.raises(ConnectorAuthError):
        client.join()
    with pytest.raises(ConnectorAuthError):
        client.stop()


def test_5xx_burst_backs_off_then_connects(emulator: EmulatorServer) -> None:
    emulator.fail_next(3, status=503)
    got = Collector()
    client = client_for(emulator, rng=lambda: 0.0).on_actions(got)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    assert got.wait_for(1)
    client.stop()
    assert [r.status for r in emulator.requests] == [503, 503, 503, 200]
    assert client.counters.reconnects == 3
    assert client.counters.connections == 1


def test_max_retries_exhausted(emulator: EmulatorServer) -> None:
    emulator.fail_next(10, status=500)
    client = client_for(emulator, max_retries=2)
    with pytest.raises(ConnectorRetriesExhaustedError):
        client.run()
    assert [r.status for r in emulator.requests] == [500, 500, 500]


def test_heartbeat_timeout_reconnects_and_resumes(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)  # a silent, dead-looking stream
    got = Collector()
    client = client_for(server, heartbeat_timeout=0.3).on_actions(lambda p: got(p.event_id))
    client.run_in_background()
    assert server.wait_for(lambda s: s.streams_opened == 1)
    server.publish("acme", actions(1))
    server.publish("acme", actions(2))
    assert got.wait_for(2)
    assert server.wait_for(lambda s: s.streams_opened >= 2)  # the watchdog fired
    server.publish("acme", actions(3))
    assert got.wait_for(3)
    client.stop()
    assert got.items == ["1", "2", "3"]
    assert client.counters.reconnects >= 1
    assert server.requests[1].last_event_id == "2"


def test_heartbeats_keep_an_idle_connection_alive(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=0.05)
    client = client_for(server, heartbeat_timeout=0.5)
    client.run_in_background()
    assert server.wait_for(lambda s: s.heartbeats_sent >= 20, timeout=10)
    client.stop()
    assert client.counters.connections == 1
    assert client.counters.heartbeats >= 19
    assert client.counters.received == 0


def test_bad_frames_are_counted_reported_and_skipped(emulator: EmulatorServer) -> None:
    got = Collector()
    errors = Collector()
    client = client_for(emulator).on_actions(lambda p: got(p.event_id)).on_error(errors)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    frames = bad_frames()
    for _ in range(4):
        emulator.publish_raw("acme", next(frames)[1])
    emulator.publish("acme", actions(6))
    assert got.wait_for(2)
    assert errors.wait_for(4)
    client.stop()
    assert got.items == ["1", "6"]
    assert [e.reason for e in errors.items] == ["not_json", "not_object", "invalid", "oversized"]
    assert all(isinstance(e, EventDecodeError) for e in errors.items)
    # The oversized frame is discarded by the decoder while it buffers, id and all.
    assert [e.event_id for e in errors.items] == ["2", "3", "4", None]
    assert client.counters.decode_errors == 4
    assert client.counters.connections == 1  # the connection stayed up


def test_unknown_types_go_to_on_event_and_callbacks_fan_out(emulator: EmulatorServer) -> None:
    first, second, unknown = Collector(), Collector(), Collector()
    client = client_for(emulator).on_actions(first).on_actions(second).on_event(unknown)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", {"type": "usertour_trigger", "product_id": "acme", "tour": "t1"})
    emulator.publish("acme", actions(2))
    assert second.wait_for(1)
    assert unknown.wait_for(1)
    client.stop()
    assert [p.event_id for p in first.items] == ["2"]
    assert [p.event_id for p in second.items] == ["2"]
    event = unknown.items[0]
    assert isinstance(event, UnknownEvent)
    assert (event.type, event.data["tour"], event.event_id) == ("usertour_trigger", "t1", "1")


def test_a_raising_callback_is_reported_and_the_stream_goes_on(emulator: EmulatorServer) -> None:
    errors = Collector()
    got = Collector()

    def boom(payload: ActionsPayload) -> None:
        if payload.event_id == "1":
            raise RuntimeError("callback failed")

    client = client_for(emulator).on_actions(boom).on_actions(got).on_error(errors)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    emulator.publish("acme", actions(2))
    assert got.wait_for(2)
    assert errors.wait_for(1)
    client.stop()
    assert str(errors.items[0]) == "callback failed"
    assert client.counters.callback_errors == 1
    assert client.counters.delivered == 2


class RecordingHook:
    """An ``SdkMetricsHook`` (the seed's ``metrics=``) recording what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    def record_drop(self, source: str, count: float) -> None:
        with self.lock:
            self.calls.append(("drop", source, count))

    def record_counter(self, name: str, value: float) -> None:
        with self.lock:
            self.calls.append(("counter", name, value))
        if name == "connects":
            raise RuntimeError("a broken hook never breaks the client")


def test_the_seeds_metrics_hook_is_told_of_connects_and_drops(emulator: EmulatorServer) -> None:
    gate, entered, hook = threading.Event(), threading.Event(), RecordingHook()
    drops = Collector()

    def slow(payload: ActionsPayload) -> None:
        entered.set()
        assert gate.wait(10)

    client = client_for(emulator, max_queue_size=1, metrics=hook)
    client.on_actions(slow).on_drop(drops)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    assert entered.wait(5)
    for n in range(2, 5):
        emulator.publish("acme", actions(n))
    assert drops.wait_for(2)  # one waits in the queue, two are dropped
    gate.set()
    client.stop()
    assert hook.calls == [
        ("counter", "connects", 1),
        ("drop", "stream", 1),
        ("drop", "stream", 1),
        ("counter", "disconnects", 1),
    ]
    assert client.metrics_hook_errors == 1  # the raising connects call, swallowed
    assert client.counters.callback_errors == 0


def test_slow_callback_fills_the_queue_and_drops_are_exact(emulator: EmulatorServer) -> None:
    gate = threading.Event()
    entered = threading.Event()
    delivered = Collector()
    drops = Collector()

    def slow(payload: ActionsPayload) -> None:
        entered.set()
        assert gate.wait(10)
        delivered(payload.event_id)

    client = client_for(emulator, max_queue_size=2).on_actions(slow).on_drop(drops)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    assert entered.wait(5)  # the worker holds event 1; the reader is free
    for n in range(2, 7):
        emulator.publish("acme", actions(n))
    assert drops.wait_for(3)
    assert client.queue_size == 2
    gate.set()
    assert delivered.wait_for(3)
    client.stop()
    assert delivered.items == ["1", "2", "3"]
    assert [total for _, total in drops.items] == [1, 2, 3]
    assert [raw["actions"][0]["title"] for raw, _ in drops.items] == ["T4", "T5", "T6"]
    assert client.dropped_count == 3
    counters = client.counters
    assert counters.received == counters.delivered + counters.dropped == 6


def test_a_burst_overflowing_the_queue_mid_chunk_drops_exactly_the_excess(
    emulator: EmulatorServer,
) -> None:
    # The reader hands each chunk's events over in one batch; a batch that only
    # partly fits must keep the accepted prefix in order and drop the rest one by one.
    gate = threading.Event()
    entered = threading.Event()
    delivered = Collector()
    drops = Collector()
    sizes: list[int] = []

    def slow(payload: ActionsPayload) -> None:
        entered.set()
        assert gate.wait(10)
        sizes.append(client.queue_size)
        delivered(payload.event_id)

    client = client_for(emulator, max_queue_size=5).on_actions(slow).on_drop(drops)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    assert entered.wait(5)  # the worker holds event 1, so exactly 5 more fit
    for n in range(2, 51):
        emulator.publish("acme", actions(n))
    assert drops.wait_for(44)
    assert client.queue_size == 5
    gate.set()
    assert delivered.wait_for(6)
    client.stop()
    assert delivered.items == ["1", "2", "3", "4", "5", "6"]
    assert sizes == [5, 4, 3, 2, 1, 0]
    assert [total for _, total in drops.items] == list(range(1, 45))
    assert [raw["actions"][0]["title"] for raw, _ in drops.items] == [f"T{n}" for n in range(7, 51)]
    counters = client.counters
    assert (counters.received, counters.delivered, counters.dropped) == (50, 6, 44)


def test_stop_delivers_what_is_queued_within_drain_timeout(emulator: EmulatorServer) -> None:
    gate = threading.Event()
    entered = threading.Event()
    delivered = Collector()

    def slow(payload: ActionsPayload) -> None:
        entered.set()
        gate.wait(10)
        delivered(payload.event_id)

    probe = Collector()
    client = client_for(emulator, max_queue_size=10).on_actions(slow).on_error(probe)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 5):
        emulator.publish("acme", actions(n))
    emulator.publish_raw("acme", "not json")  # reported by the reader once 1-4 are in
    assert entered.wait(5)
    assert probe.wait_for(1)
    threading.Timer(0.05, gate.set).start()
    client.stop()
    assert delivered.items == ["1", "2", "3", "4"]
    assert client.counters.dropped == 0


def test_stop_counts_what_it_cannot_deliver(emulator: EmulatorServer) -> None:
    entered = threading.Event()
    drops = Collector()
    delivered = Collector()

    def slow(payload: ActionsPayload) -> None:
        entered.set()
        assert drops.wait_for(3)  # held until stop() has dropped what is queued
        delivered(payload.event_id)

    probe = Collector()
    client = client_for(emulator, max_queue_size=10, drain_timeout=0).on_actions(slow)
    client.on_drop(drops).on_error(probe)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 5):
        emulator.publish("acme", actions(n))
    emulator.publish_raw("acme", "not json")  # reported by the reader once 1-4 are in
    assert entered.wait(5)
    assert probe.wait_for(1)
    assert client.counters.received == 4
    client.stop()
    assert delivered.items == ["1"]
    assert [raw["actions"][0]["title"] for raw, _ in drops.items] == ["T2", "T3", "T4"]
    assert [total for _, total in drops.items] == [1, 2, 3]
    counters = client.counters
    assert (counters.delivered, counters.dropped) == (1, 3)


def test_stop_is_prompt_on_an_idle_stream(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)
    client = client_for(server)  # default 60 s heartbeat timeout: a read-timeout wait would hang
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    assert server.wait_for(lambda s: s.streams_active == 1)
    stopped = threading.Event()

    def stop() -> None:
        client.stop()
        stopped.set()

    threading.Thread(target=stop).start()
    assert stopped.wait(1.0), "stop() did not return within 1 s on an idle stream"


def test_stop_from_inside_a_callback(emulator: EmulatorServer) -> None:
    got = Collector()
    client = client_for(emulator)

    def handle(payload: ActionsPayload) -> None:
        got(payload.event_id)
        client.stop()

    client.on_actions(handle)
    is_up = connected(client)
    thread = client.run_in_background()
    assert is_up.wait(5)
    emulator.publish("acme", actions(1))
    thread.join(5)
    assert not thread.is_alive()
    assert got.items == ["1"]


def test_connect_and_disconnect_callbacks(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 1
    ups, downs, got = Collector(), Collector(), Collector()
    client = client_for(emulator).on_connect(lambda: ups(1)).on_disconnect(lambda: downs(1))
    client.on_actions(got)
    client.run_in_background()
    assert ups.wait_for(1)
    emulator.publish("acme", actions(1))
    assert got.wait_for(1)
    assert ups.wait_for(2)
    assert downs.wait_for(1)
    client.stop()


def test_token_from_env_never_in_logs_repr_or_errors(
    emulator_factory: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = emulator_factory(token=TOKEN)
    monkeypatch.setenv("AUTOPLAY_APP_UNKEY_TOKEN", TOKEN)
    got = Collector()
    client = client_for(server).on_actions(got)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    server.publish("acme", actions(1))
    assert got.wait_for(1)
    server.drop_connections()  # a warning path that logs the failure
    assert server.wait_for(lambda s: s.streams_opened == 2)
    client.stop()
    assert server.requests[0].authorization == "valid"
    assert "token=set" in repr(client)
    bad = client_for(server, token="wrong" + TOKEN)
    with pytest.raises(ConnectorAuthError) as caught:
        bad.run()
    for text in (caplog.text, repr(client), repr(bad), str(caught.value), repr(caught.value)):
        assert TOKEN not in text
    assert "stream: connected" in caplog.text


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        ConnectorClient("http://127.0.0.1:1/stream/p", max_queue_size=0)
    with pytest.raises(ConfigError):
        ConnectorClient("ftp://example/stream/p")
    with pytest.raises(ConfigError):
        ConnectorClient("http://127.0.0.1:1/stream/p", heartbeat_timeout=0)


def test_summary_payloads_reach_on_summary(emulator: EmulatorServer) -> None:
    got = Collector()
    client = client_for(emulator).on_summary(got)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    emulator.publish(
        "acme",
        {
            "type": "summary",
            "product_id": "acme",
            "session_id": "s",
            "summary": "x",
            "forwarded_at": 1,
        },
    )
    assert got.wait_for(1)
    client.stop()
    assert isinstance(got.items[0], SummaryPayload)


def test_counters_as_dict_lists_every_counter(emulator: EmulatorServer) -> None:
    client = client_for(emulator)
    assert client.counters.as_dict() == {
        "callback_errors": 0,
        "connections": 0,
        "decode_errors": 0,
        "delivered": 0,
        "dropped": 0,
        "duplicates": 0,
        "heartbeats": 0,
        "id_resets": 0,
        "ids_reused": 0,
        "last_event_id": None,
        "received": 0,
        "reconnects": 0,
        "rejected_ids": 0,
        "rejected_retries": 0,
        "stalls": 0,
    }
    assert client.last_event_id is None
    assert client.url == emulator.url_for("acme")


def test_url_secrets_never_reach_repr_or_errors(emulator: EmulatorServer) -> None:
    url = emulator.url_for("nope").replace("http://", "http://user:pw@") + "?key=SECRET"
    client = ConnectorClient(url, max_queue_size=1)
    with pytest.raises(ConnectorNotFoundError) as caught:
        client.run()
    for text in (repr(client), str(caught.value)):
        assert "SECRET" not in text
        assert "pw@" not in text


def test_a_stuck_callback_cannot_hang_stop(emulator: EmulatorServer) -> None:
    release = threading.Event()
    entered = threading.Event()
    probe = Collector()

    def stuck(payload: ActionsPayload) -> None:
        entered.set()
        release.wait(30)

    client = client_for(emulator, drain_timeout=0.05).on_actions(stuck).on_error(probe)
    is_up = connected(client)
    client.run_in_background()
    assert is_up.wait(5)
    for n in range(1, 4):
        emulator.publish("acme", actions(n))
    emulator.publish_raw("acme", "not json")  # reported by the reader once 1-3 are in
    assert entered.wait(5)
    assert probe.wait_for(1)
    stopped = threading.Event()

    def stop() -> None:
        client.stop()
        stopped.set()

    threading.Thread(target=stop).start()
    assert stopped.wait(5), "stop() hung on a stuck callback"
    counters = client.counters
    # Events 2 and 3 never started; event 1, still in the stuck callback, is dropped too.
    assert (counters.received, counters.delivered, counters.dropped) == (3, 0, 3)
    release.set()
