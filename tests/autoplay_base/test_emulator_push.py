"""Push mode: the emulator's signed webhooks, checked by the bridge's own verifier.

The receiving end is a tiny Starlette app under uvicorn on a free loopback port
(not the bridge app): it verifies each delivery with
:class:`autoplay_base.bridge._webhook.WebhookVerifier`, answers what it is told
to (``fail_next``), and records what it accepted, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from autoplay_base.bridge._webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookVerifier
from autoplay_base.emulator import (
    EMULATOR_WEBHOOK_SECRET_ENV_VAR,
    EmulatorServer,
    PushFaults,
    PushStats,
    WebhookPusher,
)
from autoplay_base.emulator._serving import LoopbackServer
from autoplay_base.errors import ConfigError
from tests._fixtures.emulator import EmulatorFactory

SECRET = "whsec-test-0123"
PAYLOAD = {"type": "actions", "product_id": "acme", "session_id": "s1", "actions": []}


class Hook(LoopbackServer):
    """A verifying webhook receiver: ``POST /webhook``, the bridge's verifier, a record."""

    kind = "hook"

    def __init__(self, *, require_timestamp: bool = False) -> None:
        super().__init__("127.0.0.1", 0)
        self.verifier = WebhookVerifier(SECRET, require_timestamp=require_timestamp)
        self.accepted: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.signatures: list[str] = []
        self.fail: list[int] = []  # statuses to answer next, in order, before verifying
        self._cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/webhook", self._webhook, methods=["POST"])])

    async def _webhook(self, request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get(SIGNATURE_HEADER)
        status, text = 200, "ok"
        with self._cond:
            if self.fail:
                status, text = self.fail.pop(0), "injected"
        if status == 200:
            rejection = self.verifier.check(body, signature, request.headers.get(TIMESTAMP_HEADER))
            if rejection is not None:
                status, text = rejection
            elif signature is not None and self.verifier.is_replay(signature):
                text = "duplicate"
                self.verifier.counters.duplicates += 1
            else:
                assert signature is not None
                self.verifier.stored(signature)
                with self._cond:
                    self.accepted.append(json.loads(body))
        with self._cond:
            self.answers.append(status)
            if signature is not None:
                self.signatures.append(signature)
            self._cond.notify_all()
        return PlainTextResponse(text, status)

    def wait_answers(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.answers) >= count, timeout)


@pytest.fixture
def hook() -> Iterator[Hook]:
    with Hook() as server:
        yield server


def _pushing(factory: EmulatorFactory, hook: Hook, **options: Any) -> EmulatorServer:
    return factory(push_url=hook.url, webhook_secret=SECRET, **options)


def _stats(server: EmulatorServer) -> PushStats:
    assert server.pusher is not None
    return server.pusher.stats


def _settled(server: EmulatorServer, done: int) -> bool:
    """Wait until ``done`` events had their outcome (delivered, refused or given up)."""
    stats = _stats(server)
    return server.wait_for(lambda _: stats.delivered + stats.rejected + stats.gave_up >= done)


def test_every_event_is_pushed_in_order_and_verified(
    emulator_factory: EmulatorFactory, hook: Hook
) -> None:
    server = _pushing(emulator_factory, hook)
    for n in range(5):
        server.publish("acme", {**PAYLOAD, "n": n})
    server.publish("globex", {**PAYLOAD, "product_id": "globex", "n": 5})
    assert _settled(server, 6)
    # In publish order per product (ids are per product; products interleave).
    assert [e["n"] for e in hook.accepted if e["product_id"] == "acme"] == [0, 1, 2, 3, 4]
    assert [e["n"] for e in hook.accepted if e["product_id"] == "globex"] == [5]
    assert hook.answers == [200] * 6
    assert hook.verifier.counters.as_dict()["rejected_signature"] == 0
    assert _stats(server).as_dict() == {
        "delivered": 6,
        "attempts": 6,
        "retries": 0,
        "rejected": 0,
        "gave_up": 0,
        "lost": 0,
        "duplicates_sent": 0,
        "bad_signatures_sent": 0,
        "stale_sent": 0,
        "forged_accepted": 0,
    }


def test_stamped_events_carry_forwarded_at_in_the_body(
    emulator_factory: EmulatorFactory, hook: Hook
) -> None:
    server = _pushing(emulator_factory, hook)
    server.publish("acme", {**PAYLOAD, "forwarded_at": 0.0}, stamp=True)
    assert _settled(server, 1)
    assert hook.accepted[0]["forwarded_at"] > 0


def test_the_plain_scheme_is_accepted_unless_a_timestamp_is_required(
    emulator_factory: EmulatorFactory,
) -> None:
    with Hook() as lenient, Hook(require_timestamp=True) as strict:
        for target, expected in ((lenient, 200), (strict, 401)):
            server = emulator_factory(
                push_url=target.url, webhook_secret=SECRET, push_timestamped=False
            )
            server.publish("acme", PAYLOAD)
            assert _settled(server, 1)
            assert target.answers == [expected]
            assert _stats(server).rejected == (0 if expected == 200 else 1)


def test_5xx_is_retried_with_backoff_until_delivered(
    emulator_factory: EmulatorFactory, hook: Hook
) -> None:
    hook.fail = [503, 500, 429]
    server = _pushing(emulator_factory, hook)
    server.publish("acme", {**PAYLOAD, "n": 0})
    server.publish("acme", {**PAYLOAD, "n": 1})
    assert _settled(server, 2)
    assert hook.answers == [503, 500, 429, 200, 200]
    assert [e["n"] for e in hook.accepted] == [0, 1]  # the retried one first: order kept
    stats = _stats(server)
    assert (stats.delivered, stats.attempts, stats.retries, stats.gave_up) == (2, 5, 3, 0)
    # Each attempt is signed afresh; the retries carry their own (valid) signatures.
    assert hook.verifier.counters.rejected_signature == 0


def test_a_delivery_that_keeps_failing_is_given_up_and_counted(
    emulator_factory: EmulatorFactory, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    hook.fail = [503] * 5
    server = _pushing(emulator_factory, hook)
    server.publish("acme", {**PAYLOAD, "n": 0})
    server.publish("acme", {**PAYLOAD, "n": 1})
    assert _settled(server, 2)
    stats = _stats(server)
    assert (stats.delivered, stats.attempts, stats.retries, stats.gave_up) == (1, 6, 4, 1)
    assert [e["n"] for e in hook.accepted] == [1]
    assert "given up after 5 attempts (503)" in caplog.text
    assert SECRET not in caplog.text


def test_an_unreachable_receiver_is_retried_then_given_up(
    emulator_factory: EmulatorFactory,
) -> None:
    with Hook() as gone:
        url = gone.url
    server = emulator_factory(push_url=url, webhook_secret=SECRET)
    assert server.pusher is not None
    server.pusher.max_attempts = 2
    server.publish("acme", PAYLOAD)
    assert _settled(server, 1)
    stats = _stats(server)
    assert (stats.attempts, stats.retries, stats.gave_up, stats.delivered) == (2, 1, 1, 0)


def test_faults_add_duplicates_and_forgeries_the_verifier_refuses(
    emulator_factory: EmulatorFactory, hook: Hook
) -> None:
    faults = PushFaults(duplicate_every=2, bad_signature_every=3, stale_every=4)
    server = _pushing(emulator_factory, hook, push_faults=faults)
    for n in range(1, 5):
        server.publish("acme", {**PAYLOAD, "n": n})
    assert _settled(server, 4)
    # 1: genuine; 2: genuine + duplicate; 3: bad signature + genuine;
    # 4: stale + genuine + duplicate.
    assert hook.wait_answers(8)
    assert hook.answers == [200, 200, 200, 401, 200, 401, 200, 200]
    assert [e["n"] for e in hook.accepted] == [1, 2, 3, 4]  # each exactly once
    counters = hook.verifier.counters
    assert (counters.rejected_signature, counters.rejected_stale, counters.duplicates) == (1, 1, 2)
    assert hook.signatures[1] == hook.signatures[2]  # a duplicate is byte for byte the same
    stats = _stats(server)
    assert (stats.delivered, stats.duplicates_sent) == (4, 2)
    assert (stats.bad_signatures_sent, stats.stale_sent, stats.forged_accepted) == (1, 1, 0)


def test_a_receiver_that_accepts_forgeries_is_caught(emulator_factory: EmulatorFactory) -> None:
    with Hook() as careless:
        careless.verifier = WebhookVerifier("not-" + SECRET)  # accepts the wrong key
        server = emulator_factory(
            push_url=careless.url,
            webhook_secret=SECRET,
            push_faults=PushFaults(bad_signature_every=1),
        )
        server.publish("acme", PAYLOAD)
        assert _settled(server, 1)
        assert careless.answers == [200, 401]
        assert (_stats(server).forged_accepted, _stats(server).rejected) == (1, 1)


def test_push_mode_needs_a_secret_and_a_url() -> None:
    with pytest.raises(ConfigError, match="webhook secret"):
        EmulatorServer(push_url="http://127.0.0.1:1/webhook")
    with pytest.raises(ConfigError, match="push_url"):
        EmulatorServer(webhook_secret=SECRET)
    with pytest.raises(ConfigError, match="http"):
        WebhookPusher("ftp://example/webhook", SECRET)
    assert SECRET not in repr(WebhookPusher("http://127.0.0.1:1/webhook", SECRET))


def test_cli_push_mode_needs_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != EMULATOR_WEBHOOK_SECRET_ENV_VAR}
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--push-url", "http://127.0.0.1:1/webhook"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=30)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "autoplay-live emulator: --push-url needs --webhook-secret or "
        "$AUTOPLAY_EMULATOR_WEBHOOK_SECRET\n"
    )


def test_cli_push_mode_delivers_a_script(hook: Hook) -> None:
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "acme", "--script", "upgrade_billing_plan", "--speed", "0"]
    command += ["--push-url", hook.url, "--push-duplicate-every", "5"]
    env = {**os.environ, EMULATOR_WEBHOOK_SECRET_ENV_VAR: SECRET}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("emulator: serving http://")
            assert process.stdout.readline().strip() == "emulator: published 13 events"
            assert hook.wait_answers(15)  # 13 deliveries and 2 duplicates
            assert hook.answers == [200] * 15
            assert len(hook.accepted) == 13
            assert {e["session_id"] for e in hook.accepted} == {"ps_billing_2c91"}
            assert hook.verifier.counters.duplicates == 2
        finally:
            process.terminate()
            process.wait(5)
