"""Both connector clients against a hostile SSE server (tests/_fixtures/hostile.py).

Every test runs for ``ConnectorClient`` and ``AsyncConnectorClient``: the async
client runs on its own loop in a thread, so one driver interface serves both
(start, wait on what was delivered, stop, read the counters).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from autoplay_base._connection import MAX_WAIT_SECONDS, ClientCounters, StreamCore, bounded_wait
from autoplay_base._reconnect import ResumeState
from autoplay_base._secret import Secret, scrub_error
from autoplay_base._sse import SSEFrame
from autoplay_base.errors import (
    AutoplayError,
    ConfigError,
    ConnectorRedirectError,
    ConnectorRetriesExhaustedError,
    EventDecodeError,
)
from autoplay_base.events import ActionsPayload
from autoplay_base.stream import AsyncConnectorClient, ConnectorClient
from tests._fixtures.emulator import Collector
from tests._fixtures.hostile import HostileConnection, HostileServer, sse_frame

TOKEN = "uk_live_HOSTILE_SECRET_9000"


def actions_json(n: int, session: str = "s1") -> str:
    return json.dumps(
        {
            "type": "actions",
            "product_id": "acme",
            "session_id": session,
            "actions": [{"title": f"T{n}", "description": f"D{n}", "canonical_url": f"/p/{n}"}],
            "forwarded_at": float(n),
        },
        separators=(",", ":"),
    )


def frame(n: int, *, id: str | None = None) -> bytes:
    return sse_frame(actions_json(n), event="actions", id=str(n) if id is None else id)


def titles(items: list[Any]) -> list[int]:
    return [int(p.actions[0].title[1:]) for p in items]


_RUNNING: list[Driver] = []


@pytest.fixture(autouse=True)
def _stop_every_driver() -> Iterator[None]:
    # A failing test must not leave a client reconnecting behind the next ones.
    yield
    while _RUNNING:
        _RUNNING.pop().client.stop()


class Driver:
    """One client of either kind, running in the background, observed from the test thread."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        options.setdefault("initial_backoff", 0.01)
        options.setdefault("max_backoff", 0.05)
        options.setdefault("rng", lambda: 0.0)
        self.kind = kind
        self.got = Collector()
        self.errors = Collector()
        self.drops = Collector()
        self.connects = Collector()
        self.failure: BaseException | None = None
        self.done = threading.Event()
        factory = ConnectorClient if kind == "sync" else AsyncConnectorClient
        self.client: Any = factory(url, **options)
        self.others = Collector()
        self.client.on_actions(self.got).on_error(self.errors).on_drop(self.drops)
        self.client.on_event(self.others)
        self.client.on_connect(lambda: self.connects(1))
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> Driver:
        _RUNNING.append(self)
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            if self.kind == "sync":
                self.client.run()
            else:
                asyncio.run(self._arun())
        except BaseException as exc:
            self.failure = self.failure or exc
        finally:
            self.done.set()

    async def _arun(self) -> None:
        # ``done`` is set when run() returns, before asyncio.run's teardown (which
        # waits for tasks a stuck callback may still hold).
        try:
            await self.client.run()
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            self.done.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the client; ``True`` when its run ended within ``timeout``."""
        self.client.stop()
        ended = self.done.wait(timeout)
        self._thread.join(0.1)
        return ended

    @property
    def counters(self) -> Any:
        return self.client.counters


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[HostileConnection], None]], HostileServer]]:
    servers: list[HostileServer] = []

    def make(handler: Callable[[HostileConnection], None]) -> HostileServer:
        server = HostileServer(handler).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
        assert server.handler_errors == []


def exceptions_in(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def assert_no_secret(secret: str, *texts: str, errors: tuple[BaseException, ...] = ()) -> None:
    for text in texts:
        assert secret not in text
    for error in errors:
        for link in exceptions_in(error):
            for text in (str(link), repr(link), repr(link.args)):
                assert secret not in text, (type(link), text)


# -- server hints -------------------------------------------------------------------------
def test_a_huge_retry_hint_then_a_clean_close_reconnects_within_the_cap(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        if conn.request.index == 0:
            conn.send(b"retry: " + b"9" * 400 + b"\n\n" + b"retry: 99999999999999999999\n\n")
            conn.send(frame(1))
            return  # clean close
        conn.send(frame(2))
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url, max_backoff=0.5).start()
    assert driver.got.wait_for(2), (driver.failure, driver.counters)
    assert server.wait_requests(2)
    gap = server.requests[1].at - server.requests[0].at
    assert gap < 2.0  # max_backoff (0.5 s) plus scheduling slack, not 10**17 s
    assert driver.stop()
    assert driver.failure is None
    assert titles(driver.got.items) == [1, 2]
    assert server.requests[1].headers["last-event-id"] == "1"


@pytest.mark.parametrize(
    "bad_id",
    ["caf\u00e9", "a\x01b", "tab\there", "x" * (1 << 20)],
    ids=["non-ascii", "control", "tab", "1MB"],
)
def test_hostile_ids_never_reach_last_event_id(
    kind: str, serve: Callable[..., HostileServer], bad_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        if conn.request.index == 0:
            conn.send(frame(1))
            conn.send(frame(2, id=bad_id))
            return
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url, max_event_bytes=4 << 20).start()
    assert server.wait_requests(2), (driver.failure, driver.counters)
    assert server.requests[1].headers["last-event-id"] == "1"  # the last *valid* id
    assert driver.stop()
    assert driver.failure is None
    assert driver.counters.rejected_ids == 1
    assert "ignored 1 id field(s)" in caplog.text
    assert bad_id not in caplog.text  # never the value
    # The frame with the bad id inherits the last valid one, "1" (the SSE rule);
    # on the same connection that is not a replay, so its event is delivered.
    assert titles(driver.got.items) == [1, 2]


def test_a_leading_bom_is_stripped(kind: str, serve: Callable[..., HostileServer]) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(b"\xef\xbb\xbf" + sse_frame("", event="heartbeat") + frame(1))
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url).start()
    assert driver.got.wait_for(1)
    assert driver.stop()
    assert titles(driver.got.items) == [1]
    counters = driver.counters
    assert (counters.heartbeats, counters.decode_errors) == (1, 0)


def test_retry_after_on_503_is_honoured(kind: str, serve: Callable[..., HostileServer]) -> None:
    def handler(conn: HostileConnection) -> None:
        if conn.request.index == 0:
            conn.respond(503, {"retry-after": "2", "content-type": "text/plain"})
            return
        conn.respond(200)
        conn.send(frame(1))
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url, max_backoff=5.0).start()
    assert driver.got.wait_for(1, timeout=10)
    gap = server.requests[1].at - server.requests[0].at
    assert 1.9 <= gap < 4.0
    assert driver.stop()


def test_a_server_that_heartbeats_once_then_closes_is_not_hammered(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(sse_frame("", event="heartbeat"))  # then a clean close, every time

    server = serve(handler)
    driver = Driver(kind, server.url, initial_backoff=0.25, max_backoff=1.0).start()
    assert server.wait_requests(5, timeout=15)
    assert driver.stop()
    # Each of the 4 waits is at least initial_backoff (jitter is 0 here); a
    # flapping server reconnected at once would need a few milliseconds.
    assert server.requests[4].at - server.requests[0].at >= 0.9
    assert driver.failure is None


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_fatal_reported_once_and_never_followed(
    kind: str, serve: Callable[..., HostileServer], status: int
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(
            status,
            {
                "location": "http://evil.example:8080/steal?key=QUERYSECRET#frag",
                "content-type": "text/plain",
            },
        )

    server = serve(handler)
    driver = Driver(kind, server.url, token=TOKEN).start()
    assert driver.done.wait(5)
    error = driver.failure
    assert isinstance(error, ConnectorRedirectError)
    assert error.status_code == status
    assert error.location == "http://evil.example:8080/steal"
    assert "QUERYSECRET" not in str(error)
    assert driver.errors.items == [error]
    assert len(server.requests) == 1
    assert_no_secret(TOKEN, errors=(error,))


# -- dedupe after decoding ------------------------------------------------------------------
def test_a_replay_is_dropped_but_a_reused_id_with_new_content_is_delivered(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        if conn.request.index == 0:
            conn.send(frame(1) + frame(2))
            return
        # A replay of 2 (same bytes), then a restarted server reusing id "1" for
        # a new event, then 3.
        conn.send(frame(2) + frame(99, id="1") + frame(3))
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url).start()
    assert driver.got.wait_for(4), driver.counters
    assert driver.stop()
    assert titles(driver.got.items) == [1, 2, 99, 3]
    counters = driver.counters
    assert (counters.received, counters.duplicates, counters.ids_reused) == (4, 1, 1)
    assert server.requests[1].headers["last-event-id"] == "2"


def test_an_unknown_event_with_a_400_digit_forwarded_at_is_delivered(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    huge = '{"type":"usertour_trigger","session_id":"s1","forwarded_at":' + "9" * 400 + "}"

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(sse_frame(huge, event="usertour_trigger", id="u1") + frame(1))
        conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url).start()
    assert driver.got.wait_for(1)
    assert driver.stop()
    assert [e.type for e in driver.others.items] == ["usertour_trigger"]
    assert (driver.counters.received, driver.counters.decode_errors) == (2, 0)


def test_whatever_fails_while_handling_a_frame_costs_that_frame_only() -> None:
    reported: list[EventDecodeError] = []
    core = StreamCore(
        "http://127.0.0.1:1/stream/acme",
        Secret(TOKEN),
        ResumeState(),
        max_event_bytes=1024,
        on_bad_frame=reported.append,
    )
    broken = SSEFrame("actions", None, "7", None)  # type: ignore[arg-type]
    assert core.on_frame(broken) is None
    assert [(e.reason, e.event_id) for e in reported] == [("unexpected", None)]
    assert core.counters.decode_errors == 1
    event = core.on_frame(SSEFrame("actions", actions_json(1).encode(), "8", None))
    assert isinstance(event, ActionsPayload)
    assert core.counters.received == 1
    assert core.resume.last_event_id == "8"


def test_the_counters_read_the_one_last_event_id_the_client_resumes_from() -> None:
    core = StreamCore(
        "http://127.0.0.1:1/stream/acme", Secret(TOKEN), ResumeState(), max_event_bytes=1024
    )
    broken = SSEFrame("actions", None, "7", None)  # type: ignore[arg-type]
    assert core.on_frame(broken) is None
    # The resume point moved past the frame that failed: the counters say so too.
    assert (core.resume.last_event_id, core.counters.last_event_id) == ("7", "7")
    core.resume.last_event_id = "bad\nid"  # set by hand: dropped when the next request is built
    assert "Last-Event-ID" not in core.resume.request_headers("")
    assert (core.resume.last_event_id, core.counters.last_event_id) == (None, None)
    assert core.counters.as_dict()["last_event_id"] is None
    assert ClientCounters().last_event_id is None


def test_every_wait_is_bounded() -> None:
    assert bounded_wait(float("inf")) == MAX_WAIT_SECONDS
    assert bounded_wait(1e300) == MAX_WAIT_SECONDS
    assert bounded_wait(float("nan")) == 0.0
    assert bounded_wait(-1.0) == 0.0
    assert bounded_wait(2.5) == 2.5


def test_secret_scrubs_every_quoted_form_and_error_chain() -> None:
    secret = Secret("to'k\\en")
    assert secret.scrub("a to'k\\en b") == "a *** b"
    assert secret.scrub(repr("to'k\\en")) == '"***"'
    assert secret.scrub(repr(b"to'k\\en")) == 'b"***"'
    try:
        try:
            raise OSError("header Bearer to'k\\en refused")
        except OSError:
            raise RuntimeError("outer") from None
    except RuntimeError as leaky:
        safe = scrub_error(leaky, secret)
    assert isinstance(safe, AutoplayError)
    assert str(safe) == "RuntimeError: outer"
    assert (safe.__cause__, safe.__context__) == (None, None)
    clean = ValueError("nothing secret")
    assert scrub_error(clean, secret) is clean


def test_retries_exhausted_carries_no_chained_network_error(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(500, {"content-type": "text/plain"})

    server = serve(handler)
    driver = Driver(kind, server.url, token=TOKEN, max_retries=2).start()
    assert driver.done.wait(5)
    error = driver.failure
    assert isinstance(error, ConnectorRetriesExhaustedError)
    # Raised outside the except block: no httpx error (whose text may quote a
    # header) rides along as __context__.
    assert (error.__cause__, error.__context__) == (None, None)
    assert driver.errors.items == [error]
    assert len(server.requests) == 3


# -- the watchdog -------------------------------------------------------------------------
def test_a_junk_trickle_is_cut_by_the_watchdog(
    kind: str, serve: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(frame(conn.request.index + 1))
        if conn.request.index == 0:
            conn.trickle(b"junkjunk", interval=0.02)  # bytes, never a frame
        else:
            conn.hold()

    server = serve(handler)
    driver = Driver(kind, server.url, heartbeat_timeout=0.5).start()
    assert driver.got.wait_for(2, timeout=10), driver.counters
    gap = server.requests[1].at - server.requests[0].at
    assert 0.5 <= gap < 3.0
    assert driver.stop()
    assert driver.counters.stalls == 1
    assert caplog.text.count("(bytes only); reconnecting") == 1
    assert titles(driver.got.items) == [1, 2]


def test_a_50mb_line_without_newline_is_discarded_in_bounded_memory(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    junk = b"x" * (1 << 16)

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(frame(1))
        conn.send(b"data: ")
        for _ in range(50 * 16):  # 50 MiB, no newline
            if not conn.send(junk):
                return
        conn.send(b"\n\n")
        conn.send(frame(2))
        conn.hold()

    server = serve(handler)
    tracemalloc.start()
    try:
        started = time.monotonic()
        driver = Driver(kind, server.url, max_event_bytes=256 * 1024).start()
        assert driver.got.wait_for(2, timeout=60), driver.counters
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert driver.stop()
    assert titles(driver.got.items) == [1, 2]
    assert driver.counters.decode_errors == 1
    assert [e.reason for e in driver.errors.items] == ["oversized"]
    assert peak < 16 << 20, peak  # the 50 MiB never sat in a buffer
    assert elapsed < 45


# -- the token ----------------------------------------------------------------------------
@pytest.mark.parametrize("via", ["argument", "env"])
def test_a_token_with_a_trailing_newline_is_stripped_and_works(
    kind: str,
    serve: Callable[..., HostileServer],
    via: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(frame(conn.request.index + 1))
        if conn.request.index > 0:
            conn.hold()

    server = serve(handler)
    if via == "env":
        monkeypatch.setenv("AUTOPLAY_APP_UNKEY_TOKEN", f"  {TOKEN}\r\n")
        driver = Driver(kind, server.url)
    else:
        monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
        driver = Driver(kind, server.url, token=f"{TOKEN}\n")
    driver.start()
    assert driver.got.wait_for(2), driver.counters
    assert driver.stop()
    assert [r.headers["authorization"] for r in server.requests[:2]] == [f"Bearer {TOKEN}"] * 2
    assert driver.counters.reconnects == 1
    assert_no_secret(TOKEN, caplog.text, repr(driver.client))


@pytest.mark.parametrize(
    "shape",
    [f"{TOKEN}\r\nX-Evil: 1", f"{TOKEN}\x00", f"{TOKEN}\u00e9", f"{TOKEN}\x7f", f"{TOKEN}\nmore"],
    ids=["crlf-inside", "nul", "non-ascii", "del", "lf-inside"],
)
@pytest.mark.parametrize("via", ["argument", "env"])
def test_a_token_that_cannot_be_a_header_is_a_config_error_that_never_echoes_it(
    kind: str,
    shape: str,
    via: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    factory = ConnectorClient if kind == "sync" else AsyncConnectorClient
    if via == "env":
        if "\x00" in shape:
            pytest.skip("an environment variable cannot hold a NUL")
        monkeypatch.setenv("AUTOPLAY_APP_UNKEY_TOKEN", shape)
        with pytest.raises(ConfigError) as caught:
            factory("http://127.0.0.1:1/stream/acme")
        assert "AUTOPLAY_APP_UNKEY_TOKEN" in str(caught.value)
    else:
        monkeypatch.delenv("AUTOPLAY_APP_UNKEY_TOKEN", raising=False)
        with pytest.raises(ConfigError) as caught:
            factory("http://127.0.0.1:1/stream/acme", token=shape)
    assert_no_secret(TOKEN, caplog.text, errors=(caught.value,))
    assert "HOSTILE" not in str(caught.value) + repr(caught.value)


def test_errors_raised_in_callbacks_are_scrubbed_before_on_error_and_the_logs(
    kind: str, serve: Callable[..., HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(frame(1))
        conn.hold()

    def leaky(payload: ActionsPayload) -> None:
        try:
            raise RuntimeError(f"upstream said: Authorization: Bearer {TOKEN}")
        except RuntimeError as inner:
            raise ValueError("wrapped") from inner

    server = serve(handler)
    driver = Driver(kind, server.url, token=TOKEN)
    driver.client.on_actions(leaky)
    driver.start()
    assert driver.got.wait_for(1)
    assert driver.errors.wait_for(1)
    assert driver.stop()
    (error,) = driver.errors.items
    assert isinstance(error, AutoplayError)
    assert "***" in str(error) or "wrapped" in str(error)
    assert_no_secret(TOKEN, caplog.text, errors=(error,))
    assert "upstream said" in caplog.text  # the traceback is logged, scrubbed
    assert driver.counters.callback_errors == 1


# -- stop ---------------------------------------------------------------------------------
def test_stop_with_a_stuck_callback_keeps_the_books(
    kind: str, serve: Callable[..., HostileServer]
) -> None:
    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(frame(1) + frame(2) + frame(3))
        conn.hold()

    release = threading.Event()
    entered = threading.Event()
    returned = threading.Event()
    server = serve(handler)
    driver = Driver(kind, server.url, drain_timeout=0.05)
    if kind == "sync":

        def stuck(payload: ActionsPayload) -> None:
            entered.set()
            release.wait(30)
            returned.set()

        driver.client.on_actions(stuck)
    else:

        async def astuck(payload: ActionsPayload) -> None:
            entered.set()
            while not release.is_set():  # swallows stop's cancellation, like a careless retry loop
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    continue
            returned.set()

        driver.client.on_actions(astuck)
    driver.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert driver.stop(timeout=10), "stop() hung on a stuck callback"
    assert time.monotonic() - started < 5
    counters = driver.counters
    assert counters.received == 3
    assert (counters.delivered, counters.dropped) == (0, 3)
    assert [(raw["actions"][0]["title"], total) for raw, total in driver.drops.items] == [
        ("T1", 1),
        ("T2", 2),
        ("T3", 3),
    ]
    release.set()
    # The stuck callback returns later: its event stays dropped, never also delivered.
    assert returned.wait(5)
    assert (counters.received, counters.delivered, counters.dropped) == (3, 0, 3)
