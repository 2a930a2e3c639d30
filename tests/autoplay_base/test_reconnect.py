"""The sans-IO reconnect policy: backoff, hints, status rules, health, dedupe, resume state.

No sockets and no real clock: the clock and the randomness are passed in.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from autoplay_base._reconnect import (
    HEALTHY_CONNECTION_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    Backoff,
    ResumeState,
    StatusAction,
    classify_status,
    fatal_status_error,
    parse_retry_after,
    safe_url,
)
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorNotFoundError,
    ConnectorRedirectError,
    ConnectorRetriesExhaustedError,
)
from tests.autoplay_base.factories import FakeClock


def _state(
    clock: FakeClock | None = None,
    *,
    initial: float = 1.0,
    maximum: float = 30.0,
    max_retries: int | None = None,
    seen_ids: int = 4096,
) -> ResumeState:
    return ResumeState(
        Backoff(initial, maximum, rng=lambda: 0.0),
        max_retries=max_retries,
        seen_ids=seen_ids,
        clock=clock if clock is not None else FakeClock(),
    )


# --- Backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_and_caps_at_thirty_without_jitter() -> None:
    backoff = Backoff(rng=lambda: 0.0)
    assert [backoff.delay(n) for n in range(0, 8)] == [0.0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0


def test_backoff_jitter_scales_down_by_at_most_the_jitter_fraction() -> None:
    assert Backoff(rng=lambda: 0.5, jitter=0.2).delay(3) == pytest.approx(4 * 0.9)
    assert Backoff(rng=lambda: 0.999999, jitter=0.2).delay(1) == pytest.approx(0.8, abs=1e-5)
    values = iter([0.0, 0.25, 0.75])
    custom = Backoff(0.1, 0.4, jitter=1.0, rng=lambda: next(values))
    assert [custom.delay(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.15, 0.1])


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"),
    [
        (0, 1, 0.1),
        (2, 1, 0.1),
        (1, 2, 1.5),
        (1, 2, -0.1),
        (float("nan"), 1, 0.1),
        (1, float("nan"), 0.1),
        (1, 2, float("nan")),
        (1, float("inf"), 0.1),
        (1, threading.TIMEOUT_MAX * 2, 0.1),
    ],
)
def test_backoff_rejects_bad_options(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ConfigError):
        Backoff(initial, maximum, jitter=jitter)


# --- Status rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, StatusAction.OK),
        (300, StatusAction.REDIRECT),
        (301, StatusAction.REDIRECT),
        (302, StatusAction.REDIRECT),
        (307, StatusAction.REDIRECT),
        (308, StatusAction.REDIRECT),
        (399, StatusAction.REDIRECT),
        (401, StatusAction.AUTH),
        (403, StatusAction.AUTH),
        (404, StatusAction.NOT_FOUND),
        (299, StatusAction.RETRY),
        (400, StatusAction.RETRY),
        (429, StatusAction.RETRY),
        (500, StatusAction.RETRY),
        (503, StatusAction.RETRY),
    ],
)
def test_status_classification(status: int, action: StatusAction) -> None:
    assert classify_status(status) is action


def test_fatal_status_errors_carry_status_and_no_secret() -> None:
    auth = fatal_status_error(403, "http://h/stream/p")
    assert isinstance(auth, ConnectorAuthError)
    assert auth.status_code == 403
    assert "http://h/stream/p" in str(auth)
    missing = fatal_status_error(404, "http://h/stream/p")
    assert isinstance(missing, ConnectorNotFoundError)
    assert fatal_status_error(502, "http://h/stream/p") is None


def test_a_redirect_is_fatal_and_names_the_target_without_secrets() -> None:
    error = fatal_status_error(
        302,
        "http://h:8080/stream/p",
        location="https://user:s3cret@other.example:9443/moved/p?token=s3cret#frag",
    )
    assert isinstance(error, ConnectorRedirectError)
    assert error.status_code == 302
    assert error.location == "https://other.example:9443/moved/p"
    message = str(error)
    assert message.startswith(
        "connector answered 302 for http://h:8080/stream/p: redirected to "
        "https://other.example:9443/moved/p; "
    )
    assert "not retried" in message
    assert "s3cret" not in message
    assert "user" not in message
    assert "frag" not in message


def test_a_redirect_without_location_or_with_a_relative_one() -> None:
    bare = fatal_status_error(301, "http://h/stream/p")
    assert isinstance(bare, ConnectorRedirectError)
    assert bare.location is None
    assert "redirected without a Location" in str(bare)
    relative = fatal_status_error(307, "http://h/stream/p", location="/v2/stream/p?key=abc")
    assert isinstance(relative, ConnectorRedirectError)
    assert relative.location == "/v2/stream/p"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h.example:8443/a/b?t=1#f", "https://h.example:8443/a/b"),
        ("http://[::1]:8080/s?x", "http://[::1]:8080/s"),
        ("http://h/a b\r\nX-Injected: 1", "http://h/a%20bX-Injected:%201"),  # no line break
        ("http://h/caf\u00e9", "http://h/caf%C3%A9"),
        ("http://h:notaport/x", "<unparseable URL>"),
        ("http://[::1/x", "<unparseable URL>"),
        ("", ""),
    ],
)
def test_safe_url_strips_secrets_and_never_raises(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_safe_url_is_bounded() -> None:
    assert len(safe_url("http://h/" + "a" * 100_000)) == 512


# --- Retry-After ---------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("000000000000000000042", 42.0),
        ("86400", 86_400.0),
        ("86401", MAX_RETRY_AFTER_SECONDS),
        ("9" * 11, MAX_RETRY_AFTER_SECONDS),
        ("9" * 100_000, MAX_RETRY_AFTER_SECONDS),  # int() would raise past 4300 digits
        ("-5", 0.0),
        ("Tue, 01 Dec 2026 12:00:30 GMT", 30.0),
        ("Tue, 01 Dec 2026 12:00:30 -0000", 30.0),
        ("Tue, 01 Dec 2026 11:00:00 GMT", 0.0),  # in the past
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("soon", None),
        ("1.5", None),
        ("+5", None),
        ("-", None),
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: str.isdigit() says True
        ("Sun Nov  6 08:49:37 1994", 0.0),  # asctime form, in the past
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # RFC 850 form
        ("Tue, 32 Dec 2026 12:00:30 GMT", None),
        ("Tue, 01 Dec 99999 12:00:30 GMT", None),  # a year datetime cannot hold
        ("Tue, 01 Dec 2026 12:00:30 GMT" + " " * 10 + "x" * 100, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


# --- Hints and delays ----------------------------------------------------------------------


def test_clean_close_of_a_healthy_connection_reconnects_at_once_or_after_the_hint() -> None:
    state = _state()
    state.connected()
    assert state.accept("1")
    assert state.closed_cleanly() == 0.0
    state.note_retry(250)
    state.connected()
    assert state.accept("2")
    assert state.closed_cleanly() == 0.25
    assert state.failures == 0


def test_a_huge_retry_hint_after_a_clean_close_is_capped_at_the_maximum_backoff() -> None:
    # Before: the hint was capped after errors only; a clean close slept for years.
    state = _state(maximum=30.0)
    state.note_retry(10**1000)  # a 1001-digit retry: division alone overflowed
    assert state.server_retry == 30.0
    state.connected()
    assert state.accept("1")
    assert state.closed_cleanly() == 30.0
    state.note_retry(3_600_000)
    state.connected()
    assert state.accept("2")
    assert state.closed_cleanly() == 30.0


def test_server_retry_is_a_floor_on_error_delays_capped_by_max_backoff() -> None:
    state = _state(initial=0.01, maximum=0.5)
    state.note_retry(200)
    assert state.failed() == 0.2
    state.note_retry(60_000)
    assert state.failed() == 0.5
    state.note_retry(-1)  # ignored: the previous hint stays
    assert state.server_retry == 0.5


def test_retry_after_is_a_floor_capped_by_max_backoff() -> None:
    state = _state(initial=1.0, maximum=30.0)
    assert state.failed(retry_after=10.0) == 10.0  # backoff 1, Retry-After 10
    assert state.failed(retry_after=0.5) == 2.0  # backoff 2 wins
    assert state.failed(retry_after=1e12) == 30.0
    assert state.failed(OSError("boom"), retry_after=10**400) == 30.0  # no OverflowError
    assert state.failed(retry_after=float("inf")) == 30.0
    assert state.failed(retry_after=float("nan")) == 30.0  # backoff is at the cap by now
    assert state.failures == 6


def test_failed_never_exceeds_the_maximum_and_raises_only_when_exhausted() -> None:
    state = _state(maximum=5.0, max_retries=3)
    state.note_retry(10**6)
    delays = [state.failed(retry_after=10**9) for _ in range(3)]
    assert delays == [5.0, 5.0, 5.0]
    with pytest.raises(ConnectorRetriesExhaustedError, match="max_retries=3"):
        state.failed(retry_after=float("nan"))


def test_max_retries_counts_consecutive_failures() -> None:
    state = _state(max_retries=2)
    state.failed()
    state.failed()
    with pytest.raises(ConnectorRetriesExhaustedError, match="max_retries=2"):
        state.failed()
    with pytest.raises(ConnectorRetriesExhaustedError):
        ResumeState(max_retries=0).failed()
    with pytest.raises(ConfigError):
        ResumeState(max_retries=-1)


# --- Health and flapping -------------------------------------------------------------------


def test_heartbeat_only_short_connections_back_off_exponentially() -> None:
    # Before: any frame made a clean close reconnect at once, and the 200 reset the
    # streak, so a server sending one heartbeat and closing was hit 20-30 times a second.
    clock = FakeClock()
    state = _state(clock)
    delays = []
    for _ in range(7):
        state.connected()
        clock.advance(0.05)
        state.frame()  # a heartbeat
        clock.advance(0.05)
        delays.append(state.closed_cleanly())
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert state.failures == 7


def test_a_flapping_server_exhausts_max_retries() -> None:
    clock = FakeClock()
    state = _state(clock, max_retries=2)
    for _ in range(2):
        state.connected()
        state.frame()
        state.closed_cleanly()
    state.connected()
    with pytest.raises(ConnectorRetriesExhaustedError):
        state.closed_cleanly()


def test_a_200_alone_does_not_reset_the_streak() -> None:
    clock = FakeClock()
    state = _state(clock)
    assert [state.failed() for _ in range(3)] == [1.0, 2.0, 4.0]
    state.connected()
    assert state.failures == 3
    assert state.failed() == 8.0  # the connection died before it was healthy


def test_a_connection_open_long_enough_resets_the_streak() -> None:
    clock = FakeClock()
    state = _state(clock)
    assert [state.failed() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    state.connected()
    clock.advance(HEALTHY_CONNECTION_SECONDS - 0.001)
    state.frame()
    assert state.failures == 4
    assert not state.healthy
    clock.advance(0.001)
    state.frame()  # heartbeats only, but it has lasted: healthy
    assert state.healthy
    assert state.failures == 0
    assert state.closed_cleanly() == 0.0


def test_a_long_connection_that_fails_starts_a_new_streak() -> None:
    clock = FakeClock()
    state = _state(clock)
    assert [state.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    state.connected()
    clock.advance(60.0)  # nothing called in between: measured when it ends
    assert state.failed(OSError("reset")) == 1.0
    assert state.failures == 1


def test_an_accepted_event_makes_the_connection_healthy_but_a_duplicate_does_not() -> None:
    clock = FakeClock()
    state = _state(clock)
    state.connected()
    assert state.accept("1")
    assert state.closed_cleanly() == 0.0
    assert [state.failed() for _ in range(2)] == [1.0, 2.0]
    state.connected()  # the server replays "1" only, then hangs up
    assert state.accept("1") is False
    assert state.failures == 2
    assert state.closed_cleanly() == 4.0
    state.connected()
    assert state.accept("2")
    assert state.failures == 0
    assert state.closed_cleanly() == 0.0


def test_a_clean_close_without_any_frame_counts_as_a_failure() -> None:
    state = _state()
    state.connected()
    assert state.closed_cleanly() == 1.0
    assert state.failures == 1


def test_a_frame_that_failed_to_decode_does_not_make_the_connection_healthy() -> None:
    state = _state()
    state.connected()
    state.advance("9")
    assert state.closed_cleanly() == 1.0


# --- Dedupe and resume ---------------------------------------------------------------------


def test_request_headers_carry_token_and_resume_point() -> None:
    state = _state()
    assert state.request_headers("") == {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    state.connected()
    assert state.accept("41")
    assert state.request_headers("tok") == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        "Authorization": "Bearer tok",
        "Last-Event-ID": "41",
    }


@pytest.mark.parametrize("bad", ["caf\u00e9", "a\nb", "a\x00b", "x" * 257, "\x7f"])
def test_an_invalid_resume_id_is_dropped_counted_and_logged_not_sent(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = _state()
    state.last_event_id = bad  # the decoder never yields one; a caller might set it
    with caplog.at_level("WARNING", logger="autoplay_base.stream"):
        headers = state.request_headers("tok")
    assert "Last-Event-ID" not in headers
    assert state.last_event_id is None
    assert state.dropped_resume_ids == 1
    assert state.request_headers("tok") == headers
    assert state.dropped_resume_ids == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"stream: dropped an invalid Last-Event-ID ({len(bad)} characters; ids must be "
        "printable ASCII of at most 256)"
    ]
    assert bad not in caplog.text


def test_the_longest_valid_id_is_sent() -> None:
    state = _state()
    state.connected()
    assert state.accept("~" * 256)
    assert state.request_headers("")["Last-Event-ID"] == "~" * 256


def test_accept_drops_replayed_ids_but_not_inherited_ones() -> None:
    state = _state()
    state.connected()
    assert [state.accept(i) for i in ("1", "2", "2", "")] == [True, True, True, True]
    state.connected()  # new connection: the server replays 2 then continues
    assert [state.accept(i) for i in ("2", "3")] == [False, True]
    assert state.last_event_id == "3"


def test_a_replay_one_longer_than_the_window_costs_one_event() -> None:
    # Before: plain FIFO eviction, so each replayed old id evicted the next one and
    # the whole replay of window + 1 events was delivered again.
    state = _state(seen_ids=100)
    state.connected()
    ids = [str(n) for n in range(1, 102)]
    assert all(state.accept(i, order=float(i), digest=f"d{i}") for i in ids)
    state.connected()
    again = [i for i in ids if state.accept(i, order=float(i), digest=f"d{i}")]
    assert again == ["1"]
    assert state.last_event_id == "101"


def test_ids_reused_after_a_server_restart_are_delivered_and_counted() -> None:
    # Before: a restarted server counting from 1 again lost those events as duplicates.
    state = _state()
    state.connected()
    assert [state.accept(str(n), order=float(n), digest=f"old{n}") for n in (1, 2, 3)] == [
        True,
        True,
        True,
    ]
    state.connected()
    assert [state.accept(str(n), order=float(10 + n), digest=f"new{n}") for n in (1, 2, 3)] == [
        True,
        True,
        True,
    ]
    assert state.ids_reused == 3
    assert state.id_resets == 0
    state.connected()  # and a true replay of the new ones is still dropped
    assert state.accept("2", order=12.0, digest="new2") is False


def test_a_clock_reset_at_the_source_is_exposed() -> None:
    state = _state(seen_ids=2)
    state.connected()
    assert state.accept("a", order=100.0, digest=1)
    assert state.accept("b", order=101.0, digest=2)
    # More than 4 x window events in a row older than the whole window: a new epoch.
    for n in range(9):
        assert state.accept(f"x{n}", order=float(n), digest=n)
    assert state.id_resets == 1


def test_non_finite_orders_count_as_unordered() -> None:
    # A NaN order never equals itself: the window took its stamps for stale ones,
    # popped them all, and the next event raised IndexError out of accept().
    state = _state(seen_ids=2)
    state.connected()
    assert state.accept("a", order=float("nan"), digest=1)
    assert state.accept("b", order=float("nan"), digest=2)
    assert state.accept("c", order=1.0, digest=3)
    assert state.accept("d", order=float("inf"), digest=4)
    assert state.accept("e", order=10**400, digest=5)  # no OverflowError either
    state.connected()
    # Unordered events count as the newest: the window holds d and e, c was evicted.
    assert [state.accept(i, digest=n) for i, n in (("d", 4), ("e", 5), ("c", 3))] == [
        False,
        False,
        True,
    ]


def test_advance_moves_the_resume_point_without_remembering_the_id() -> None:
    state = _state()
    state.connected()
    assert state.accept("1", digest="a")
    state.advance("2")  # frame 2 failed to decode
    assert state.last_event_id == "2"
    assert "2" not in state.seen
    assert state.request_headers("")["Last-Event-ID"] == "2"
    assert state.accept("2", digest="b")  # a frame inheriting id 2 on this connection
    assert "2" not in state.seen
    state.advance("")  # no id: the resume point stays
    assert state.last_event_id == "2"
    state.connected()
    assert state.accept("2", digest="b")  # never remembered, so not a duplicate
    state.connected()
    assert state.accept("2", digest="b") is False  # remembered now


def test_resume_state_has_no_connections_counter() -> None:
    assert not hasattr(_state(), "connections")
