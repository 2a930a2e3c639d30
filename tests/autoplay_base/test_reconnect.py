"""The sans-IO reconnect policy: backoff, seen ids, status rules, resume state."""

from __future__ import annotations

import pytest

from autoplay_base._reconnect import (
    Backoff,
    ResumeState,
    SeenIds,
    StatusAction,
    classify_status,
    fatal_status_error,
)
from autoplay_base.errors import (
    ConfigError,
    ConnectorAuthError,
    ConnectorNotFoundError,
    ConnectorRetriesExhaustedError,
)


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
    ("initial", "maximum", "jitter"), [(0, 1, 0.1), (2, 1, 0.1), (1, 2, 1.5), (1, 2, -0.1)]
)
def test_backoff_rejects_bad_options(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ConfigError):
        Backoff(initial, maximum, jitter=jitter)


def test_seen_ids_is_a_bounded_window_oldest_first() -> None:
    seen = SeenIds(3)
    assert [seen.add(i) for i in ("1", "2", "3", "2")] == [True, True, True, False]
    assert seen.add("4") is True  # evicts "1"
    assert "1" not in seen
    assert len(seen) == 3
    assert seen.add("1") is True
    with pytest.raises(ConfigError):
        SeenIds(0)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, StatusAction.OK),
        (401, StatusAction.AUTH),
        (403, StatusAction.AUTH),
        (404, StatusAction.NOT_FOUND),
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


def test_request_headers_carry_token_and_resume_point() -> None:
    state = ResumeState()
    assert state.request_headers("") == {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    state.connected()
    assert state.accept("41")
    headers = state.request_headers("tok")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Last-Event-ID"] == "41"


def test_accept_drops_replayed_ids_but_not_inherited_ones() -> None:
    state = ResumeState()
    state.connected()
    assert [state.accept(i) for i in ("1", "2", "2", "")] == [True, True, True, True]
    state.connected()  # new connection: the server replays 2 then continues
    assert [state.accept(i) for i in ("2", "3")] == [False, True]
    assert state.last_event_id == "3"


def test_clean_close_reconnects_at_once_unless_the_server_asked_to_wait() -> None:
    state = ResumeState(Backoff(rng=lambda: 0.0))
    state.connected()
    state.accept("1")
    assert state.closed_cleanly() == 0.0
    state.note_retry(250)
    state.connected()
    state.frame()
    assert state.closed_cleanly() == 0.25


def test_clean_close_without_any_frame_counts_as_a_failure() -> None:
    state = ResumeState(Backoff(rng=lambda: 0.0))
    state.connected()
    assert state.closed_cleanly() == 1.0
    assert state.failures == 1


def test_failures_back_off_and_success_resets_the_streak() -> None:
    state = ResumeState(Backoff(rng=lambda: 0.0), max_retries=3)
    assert [state.failed() for _ in range(3)] == [1.0, 2.0, 4.0]
    state.connected()
    assert state.failures == 0
    assert state.failed() == 1.0


def test_server_retry_is_a_floor_on_error_delays_capped_by_max_backoff() -> None:
    state = ResumeState(Backoff(0.01, 0.5, rng=lambda: 0.0))
    state.note_retry(200)
    assert state.failed() == 0.2
    state.note_retry(60_000)
    assert state.failed() == 0.5


def test_max_retries_counts_consecutive_failures() -> None:
    state = ResumeState(Backoff(rng=lambda: 0.0), max_retries=2)
    state.failed()
    state.failed()
    with pytest.raises(ConnectorRetriesExhaustedError, match="max_retries=2"):
        state.failed()
    with pytest.raises(ConnectorRetriesExhaustedError):
        ResumeState(max_retries=0).failed()
    with pytest.raises(ConfigError):
        ResumeState(max_retries=-1)
