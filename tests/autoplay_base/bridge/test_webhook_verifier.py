"""``WebhookVerifier`` (pure): both signature schemes, freshness, replays, refusals counted."""

from __future__ import annotations

import pytest

from autoplay_base.bridge import WebhookVerifier, sign
from autoplay_base.errors import ConfigError

SECRET = "s3cret"
NOW = 1_700_000_000.0
BODY = b'{"type":"actions"}'


def verifier(**options: object) -> WebhookVerifier:
    return WebhookVerifier(SECRET, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def test_plain_scheme_accepts_the_right_signature_only() -> None:
    v = verifier()
    assert v.check(BODY, sign(SECRET, BODY), None) is None
    assert v.check(BODY, sign("other", BODY), None) == (401, "missing or invalid signature")
    assert v.check(BODY + b" ", sign(SECRET, BODY), None) == (401, "missing or invalid signature")
    assert v.check(BODY, None, None) == (401, "missing or invalid signature")
    assert v.check(BODY, "sha256=é\x00", None) == (401, "missing or invalid signature")
    assert v.counters.rejected_signature == 4


def test_timestamped_scheme_signs_the_timestamp_and_checks_freshness() -> None:
    v = verifier()
    ts = str(int(NOW) - 299)
    assert v.check(BODY, sign(SECRET, BODY, ts), ts) is None
    # The plain signature with a timestamp header: the timestamp is not covered, refused.
    assert v.check(BODY, sign(SECRET, BODY), ts) == (401, "missing or invalid signature")
    for stale in (str(int(NOW) - 301), str(int(NOW) + 301), "nan", "inf", "x", "1" * 40):
        assert v.check(BODY, sign(SECRET, BODY, stale), stale) == (
            401,
            "stale or malformed timestamp",
        )
    assert v.counters.rejected_stale == 6


def test_require_timestamp_refuses_the_plain_scheme() -> None:
    v = verifier(require_timestamp=True)
    assert v.check(BODY, sign(SECRET, BODY), None) == (
        401,
        "a signed X-Connector-Timestamp is required",
    )
    ts = str(int(NOW))
    assert v.check(BODY, sign(SECRET, BODY, ts), ts) is None


def test_only_stored_deliveries_count_as_replays() -> None:
    v = verifier(replay_window=2)
    first, second, third = (sign(SECRET, BODY + bytes([n])) for n in range(3))
    assert not v.is_replay(first)
    v.stored(first)
    assert v.is_replay(first)
    v.stored(second)
    v.stored(third)  # the window holds two: the oldest is forgotten
    assert not v.is_replay(first) and v.is_replay(third)


@pytest.mark.parametrize("bad", ["", "   "])
def test_an_empty_secret_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        WebhookVerifier(bad)


def test_the_secret_never_shows() -> None:
    assert SECRET not in repr(verifier())
