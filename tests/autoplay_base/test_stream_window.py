"""iter_stream_events / aiter_stream_events: bounded windows of a live stream."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autoplay_base.emulator import EmulatorServer, bad_frames
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorError,
    ConnectorNotFoundError,
    ConnectorUnavailableError,
)
from autoplay_base.events import ActionsPayload, Event, UnknownEvent
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events
from tests._fixtures.emulator import Collector, EmulatorFactory
from tests._fixtures.hostile import HostileConnection, HostileServer, sse_frame


def actions(n: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "product_id": "acme",
        "session_id": "s1",
        "actions": [{"title": f"T{n}", "description": f"D{n}", "canonical_url": "/x"}],
        "forwarded_at": 1.0,
    }


def test_max_events_with_replay_resume_and_dedupe(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 3
    emulator.faults.replay_overlap = 1
    for n in range(1, 11):
        emulator.publish("acme", actions(n))
    events = list(
        iter_stream_events(
            emulator.url_for("acme"), max_events=10, last_event_id="0", initial_backoff=0.01
        )
    )
    assert [e.event_id for e in events] == [str(n) for n in range(1, 11)]
    assert all(isinstance(e, ActionsPayload) for e in events)


def test_timeout_ends_an_idle_window_promptly(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)
    server.publish("acme", actions(1))
    result: list[list[Event]] = []
    finished = threading.Event()

    def consume() -> None:
        url = server.url_for("acme")
        result.append(list(iter_stream_events(url, timeout=0.3, last_event_id="0")))
        finished.set()

    threading.Thread(target=consume).start()
    assert finished.wait(3), "the window did not end soon after its timeout"
    assert [e.event_id for e in result[0]] == ["1"]


def test_bad_frames_are_skipped_and_reported(emulator: EmulatorServer) -> None:
    frames = bad_frames()
    emulator.publish_raw("acme", next(frames)[1])
    emulator.publish("acme", {"type": "usertour_trigger", "product_id": "acme"})
    emulator.publish("acme", actions(3))
    errors = Collector()
    events = list(
        iter_stream_events(
            emulator.url_for("acme"), max_events=2, last_event_id="0", on_error=errors
        )
    )
    assert [type(e) for e in events] == [UnknownEvent, ActionsPayload]
    assert [e.reason for e in errors.items] == ["not_json"]


def test_errors_and_options(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
    server = emulator_factory(token="tkn")
    with pytest.raises(ConnectorAuthError):
        list(iter_stream_events(server.url_for("acme"), token="bad", max_events=1))
    with pytest.raises(ConnectorNotFoundError):
        list(iter_stream_events(server.url_for("zzz"), token="tkn", max_events=1))
    with pytest.raises(ConfigError):
        iter_stream_events(server.url_for("acme"), max_events=-1)
    with pytest.raises(ConfigError):
        aiter_stream_events(server.url_for("acme"), timeout=0)
    assert list(iter_stream_events(server.url_for("acme"), max_events=0)) == []


async def test_async_window_resumes_and_stops_at_max_events(emulator: EmulatorServer) -> None:
    emulator.faults.close_every = 4
    for n in range(1, 13):
        emulator.publish("acme", actions(n))
    url = emulator.url_for("acme")
    ids = [
        e.event_id
        async for e in aiter_stream_events(
            url, max_events=12, last_event_id="0", initial_backoff=0.01
        )
    ]
    assert ids == [str(n) for n in range(1, 13)]


async def test_async_window_timeout_on_an_idle_stream(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory(heartbeat_interval=None)

    async def collect() -> list[Event]:
        return [e async for e in aiter_stream_events(server.url_for("acme"), timeout=0.2)]

    assert await asyncio.wait_for(collect(), 2) == []


async def test_async_window_raises_fatal_errors(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
    server = emulator_factory(token="tkn")
    with pytest.raises(ConnectorAuthError):
        async for _ in aiter_stream_events(server.url_for("acme"), max_events=1):
            pass


def _hostile_handler(conn: HostileConnection) -> None:
    # A bad frame, a huge retry hint, an id no header can carry, then a clean
    # close; the next connection sends the rest after the last valid id.
    conn.respond(200)
    if conn.request.index == 0:
        conn.send(sse_frame("{not json", event="actions", id="1"))
        conn.send(b"retry: " + b"9" * 300 + b"\n\n")
        conn.send(sse_frame(json.dumps(actions(2)), event="actions", id="2"))
        conn.send(sse_frame(json.dumps(actions(3)), event="actions", id="caf\u00e9"))
        return
    conn.send(sse_frame(json.dumps(actions(4)), event="actions", id="4"))
    conn.hold()


def test_window_survives_a_hostile_server_and_a_raising_on_error() -> None:
    def on_error(exc: Exception) -> None:
        raise RuntimeError("a broken on_error callback")

    with HostileServer(_hostile_handler) as server:
        events = list(
            iter_stream_events(
                server.url, max_events=3, initial_backoff=0.01, max_backoff=0.05, on_error=on_error
            )
        )
        assert server.requests[1].headers["last-event-id"] == "2"
    assert [e.actions[0].title for e in events if isinstance(e, ActionsPayload)] == [
        "T2",
        "T3",
        "T4",
    ]


async def test_async_window_survives_a_hostile_server_and_a_raising_on_error() -> None:
    errors: list[Exception] = []

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        raise RuntimeError("a broken on_error callback")

    with HostileServer(_hostile_handler) as server:
        window = aiter_stream_events(
            server.url, max_events=3, initial_backoff=0.01, max_backoff=0.05, on_error=on_error
        )
        events = [e async for e in window]
        assert server.requests[1].headers["last-event-id"] == "2"
    assert [e.actions[0].title for e in events if isinstance(e, ActionsPayload)] == [
        "T2",
        "T3",
        "T4",
    ]
    assert [getattr(e, "reason", None) for e in errors] == ["not_json"]


def dead_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/stream/acme"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/stream/acme"


def test_a_window_on_a_connector_that_is_down_raises() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectorError, match=r"did not answer with an event stream within 0\.3s"):
        list(iter_stream_events(dead_url(), max_events=5, timeout=0.3, initial_backoff=0.01))
    assert time.monotonic() - started < 3


async def test_async_window_on_a_connector_that_is_down_raises() -> None:
    with pytest.raises(ConnectorError, match=r"did not answer with an event stream within 0\.3s"):
        async for _ in aiter_stream_events(
            dead_url(), max_events=5, timeout=0.3, initial_backoff=0.01
        ):
            pass


def test_a_connector_that_never_answers_cannot_hold_the_window(silent_url: str) -> None:
    # It accepts the TCP connection and never sends a status line: the read would wait
    # for the heartbeat timeout (60 s) unless it is capped at the window's timeout.
    outcome: list[BaseException] = []
    finished = threading.Event()

    def consume() -> None:
        try:
            list(iter_stream_events(silent_url, max_events=5, timeout=0.3))
        except BaseException as exc:
            outcome.append(exc)
        finished.set()

    threading.Thread(target=consume, daemon=True).start()
    assert finished.wait(5), "the window outlived its timeout on a silent connector"
    assert [type(e) for e in outcome] == [ConnectorUnavailableError]


async def test_async_window_on_a_silent_connector_raises(silent_url: str) -> None:
    async def consume() -> list[Event]:
        return [e async for e in aiter_stream_events(silent_url, max_events=5, timeout=0.3)]

    with pytest.raises(ConnectorError):
        await asyncio.wait_for(consume(), 5)


def test_a_window_failing_with_5xx_throughout_raises(emulator_factory: EmulatorFactory) -> None:
    server = emulator_factory()
    server.fail_for(30)
    with pytest.raises(ConnectorError, match=r"\([1-9]\d* failed attempt\(s\)\)"):
        list(iter_stream_events(server.url_for("acme"), timeout=0.3, initial_backoff=0.01))


def test_a_quiet_stream_is_an_empty_window_not_an_error(
    emulator_factory: EmulatorFactory,
) -> None:
    server = emulator_factory(heartbeat_interval=None)
    assert list(iter_stream_events(server.url_for("acme"), max_events=5, timeout=0.3)) == []
