"""The ingest receiver itself: routes, auth, validation, dedupe, faults (plain httpx)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from autoplay_base.emulator import IngestReceiver
from autoplay_base.errors import ConfigError
from tests._fixtures.receiver import ReceiverFactory


def post(receiver: IngestReceiver, body: object, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(receiver.url, content=content, headers=headers, timeout=5)


def test_batches_are_recorded_and_deduped(receiver: IngestReceiver) -> None:
    one = {"event_id": "a", "type": "event"}
    two = {"event_id": "b", "type": "event"}
    assert post(receiver, {"events": [one, two]}, **{"Idempotency-Key": "k1"}).status_code == 200
    assert post(receiver, {"events": [one]}).status_code == 200
    assert receiver.events == [one, two, one]
    assert receiver.unique_events() == [one, two]
    assert [r.idempotency_key for r in receiver.requests] == ["k1", None]
    assert receiver.wait_for_events(2, timeout=0.1)
    assert not receiver.wait_for_events(3, timeout=0.05)


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json", 400), ({"events": "x"}, 400), ({"events": [1]}, 400), ({"other": []}, 400)],
)
def test_bad_bodies_get_400(receiver: IngestReceiver, body: object, status: int) -> None:
    assert post(receiver, body).status_code == status
    assert receiver.batches == []
    assert [r.status for r in receiver.requests] == [status]


def test_routes(receiver: IngestReceiver) -> None:
    base = receiver.url.rsplit("/v1/batch", 1)[0]
    assert httpx.post(f"{base}/elsewhere", content=b"{}").status_code == 404
    assert httpx.get(receiver.url).status_code == 405


def test_a_token_is_required_and_never_recorded(receiver_factory: ReceiverFactory) -> None:
    receiver = receiver_factory(token="t0k3n")
    assert post(receiver, {"events": []}).status_code == 401
    assert post(receiver, {"events": []}, Authorization="Bearer nope").status_code == 401
    assert post(receiver, {"events": []}, Authorization="Bearer t0k3n").status_code == 200
    assert [r.authorization for r in receiver.requests] == ["none", "invalid", "valid"]
    assert "authorization" not in receiver.batches[0].headers
    assert "t0k3n" not in repr(receiver.requests) + repr(receiver.batches) + repr(receiver)


def test_faults(receiver_factory: ReceiverFactory) -> None:
    receiver = receiver_factory(max_body_bytes=50, latency=0.2)
    receiver.fail_next(2, 429, retry_after="7")
    first = post(receiver, {"events": []})
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert post(receiver, {"events": []}).status_code == 429
    assert post(receiver, {"events": [{"event_id": "x" * 60}]}).status_code == 413
    started = time.monotonic()
    assert post(receiver, {"events": []}).status_code == 200
    assert time.monotonic() - started >= 0.2
    receiver.drop_next(1)
    with pytest.raises(httpx.TransportError):
        post(receiver, {"events": []})
    assert [r.status for r in receiver.requests] == [429, 429, 413, 200, None]


def test_a_bad_path_is_refused() -> None:
    with pytest.raises(ConfigError):
        IngestReceiver(path="v1/batch")


def test_a_single_event_path_takes_one_object_per_post(receiver_factory: ReceiverFactory) -> None:
    receiver = receiver_factory(token="t", single_event_path="/bc/v1/events/queue")
    single = receiver.url.replace("/v1/batch", "/bc/v1/events/queue")
    auth = {"Authorization": "Bearer t"}
    assert httpx.post(single, json={"type": "turn"}, headers=auth).status_code == 200
    assert (
        httpx.post(single, json={"type": "turn", "event_id": "e1"}, headers=auth).status_code == 200
    )
    assert httpx.post(single, json={"type": "turn"}).status_code == 401
    assert httpx.post(single, json=[{"type": "turn"}], headers=auth).status_code == 400
    assert httpx.post(single, json={"events": []}, headers=auth).status_code == 400
    receiver.fail_next(1, 503)
    assert httpx.post(single, json={"type": "turn"}, headers=auth).status_code == 503
    assert httpx.get(single).status_code == 405
    events = receiver.unique_events()
    assert [e["type"] for e in events] == ["turn", "turn"]
    assert len(events[0]["event_id"]) == 32 and events[1]["event_id"] == "e1"
    assert [r.status for r in receiver.requests] == [200, 200, 401, 400, 400, 503, 405]
    with pytest.raises(ConfigError):
        receiver_factory(single_event_path="/v1/batch")
