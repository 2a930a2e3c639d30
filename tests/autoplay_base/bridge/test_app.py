"""The bridge over real sockets: uvicorn on loopback, ``httpx`` as the client.

Auth on every route, the webhook's refusals and its no-loss rule, replies with
their exact prompt, readiness, shutdown time, two apps on one Redis, ``/metrics``
as Prometheus text and the run stream's resume.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from starlette.applications import Starlette
from starlette.routing import Mount

from autoplay_base.agent_stream import RunStream
from autoplay_base.backends.redis import RedisBackend
from autoplay_base.bridge import DEFAULT_SYSTEM_PROMPT, build_app
from autoplay_base.bridge._service import conversation_key
from autoplay_base.emulator import EmulatorServer
from autoplay_base.errors import ConfigError
from tests.autoplay_base.bridge.conftest import (
    ADMIN,
    API,
    SECRET,
    Served,
    actions_event,
    bearer,
    signed,
)

Serve = Callable[..., Served]
WAIT = 10.0


def app(**options: Any) -> Any:
    options.setdefault("api_token", API)
    options.setdefault("admin_token", ADMIN)
    options.setdefault("webhook_secret", SECRET)
    return build_app(**options)


def wait_ready(url: str, ready: bool) -> dict[str, Any]:
    """Poll ``/readyz`` until it says ``ready`` (a condition with a deadline)."""
    deadline = time.monotonic() + WAIT
    while True:
        response = httpx.get(f"{url}/readyz")
        if response.json()["ready"] is ready:
            assert response.status_code == (200 if ready else 503)
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.02)


def post_event(url: str, event: dict[str, Any] | bytes, **sign_options: Any) -> httpx.Response:
    body, headers = signed(event, **sign_options)
    return httpx.post(f"{url}/webhook", content=body, headers=headers)


# -- configuration ------------------------------------------------------------------------
def test_build_app_refuses_insecure_configurations(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="needs api_token="):
        build_app(webhook_secret=SECRET)
    with pytest.raises(ConfigError, match=r"push mode .* needs webhook_secret="):
        build_app(api_token=API)
    with pytest.raises(ConfigError, match="must differ"):
        build_app(api_token=API, admin_token=API, webhook_secret=SECRET)
    with pytest.raises(ConfigError, match="non-empty") as empty:
        build_app(api_token="  ", webhook_secret=SECRET)
    assert API not in str(empty.value)
    with caplog.at_level(logging.WARNING, logger="autoplay_base.bridge"):
        build_app(insecure_no_auth=True, webhook_secret=SECRET)
    assert [r.getMessage() for r in caplog.records] == [
        "bridge: insecure_no_auth=True: every route, the admin reset included, "
        "is open to anyone who can reach this server"
    ]


# -- auth -----------------------------------------------------------------------------------
ROUTES = [
    # method, path, json body, status when allowed, scope
    ("GET", "/context/u1", None, 404, "api"),
    ("GET", "/sessions/s1/context", None, 404, "api"),
    ("POST", "/reply/u1", {"message": "hi"}, 200, "api"),
    ("GET", "/runs/r1/events", None, 422, "api"),
    ("GET", "/metrics", None, 200, "api"),
    ("POST", "/admin/reset/u1", None, 200, "admin"),
    ("POST", "/admin/sessions/s1/reset", None, 200, "admin"),
]


def test_every_route_with_and_without_each_token(serve: Serve) -> None:
    served = serve(app(llm=lambda prompt: "ok", run_stream=RunStream()))
    tokens = {"none": None, "wrong": "not-a-token", "api": API, "admin": ADMIN}
    seen: dict[tuple[str, str], int] = {}
    with httpx.Client(base_url=served.url) as client:
        for method, path, body, _, _ in ROUTES:
            for name, token in tokens.items():
                headers = bearer(token) if token else {}
                response = client.request(method, path, json=body, headers=headers)
                seen[(path, name)] = response.status_code
                if response.status_code == 401:
                    assert response.json() == {"error": "missing or invalid bearer token"}
                    assert response.headers["www-authenticate"] == "Bearer"
                for secret in (API, ADMIN, "not-a-token"):
                    assert secret not in response.text
        for public in ("/healthz", "/openapi.json"):
            assert client.get(public).status_code == 200
    expected = {}
    for _, path, _, allowed, scope in ROUTES:
        other = "admin" if scope == "api" else "api"
        expected.update(
            {(path, "none"): 401, (path, "wrong"): 401, (path, scope): allowed, (path, other): 403}
        )
    assert seen == expected


def test_openapi_describes_the_routes_of_this_app(serve: Serve) -> None:
    served = serve(app())
    document = httpx.get(f"{served.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert sorted(document["paths"]) == [
        "/admin/reset/{user_id}",
        "/admin/sessions/{session_id}/reset",
        "/context/{user_id}",
        "/healthz",
        "/metrics",
        "/readyz",
        "/reply/{user_id}",
        "/sessions/{session_id}/context",
        "/webhook",
    ]


# -- webhook --------------------------------------------------------------------------------
def test_webhook_accepts_verified_events_and_refuses_the_rest(serve: Serve) -> None:
    now = time.time()
    served = serve(app(max_webhook_bytes=4096))
    url = served.url
    event = actions_event("s1", "Opened billing")
    assert post_event(url, event).json() == {"status": "stored"}
    fresh = str(int(now))
    assert post_event(url, actions_event("s1", "Opened seats"), timestamp=fresh).status_code == 200
    refused = {
        "wrong secret": post_event(url, actions_event("s1", "x"), secret="nope"),
        "stale": post_event(url, actions_event("s1", "y"), timestamp=str(int(now) - 301)),
        "oversized": post_event(url, actions_event("s1", "z" * 5000)),
        "not json": post_event(url, b"{not json"),
        "not an object": post_event(url, b'["Opened billing"]'),
        "invalid": post_event(url, {"type": "actions", "session_id": 5}),
        "unknown type": post_event(url, {"type": "usertour_trigger", "session_id": "s1"}),
        "unsigned": httpx.post(f"{url}/webhook", content=json.dumps(event).encode()),
    }
    assert {name: (r.status_code, r.json()) for name, r in refused.items()} == {
        "wrong secret": (401, {"error": "missing or invalid signature"}),
        "stale": (401, {"error": "stale or malformed timestamp"}),
        "oversized": (413, {"error": "body too large"}),
        "not json": (400, {"error": "body is not JSON"}),
        "not an object": (422, {"error": "body must be a JSON object"}),
        "invalid": (422, {"error": "body is not a valid event"}),
        "unknown type": (200, {"status": "ignored"}),  # acknowledged: no retry, no give-up
        "unsigned": (401, {"error": "missing or invalid signature"}),
    }
    # A replay of a stored delivery is acknowledged and not applied again.
    assert post_event(url, event).json() == {"status": "duplicate"}
    context = httpx.get(f"{url}/sessions/s1/context", headers=bearer(API)).json()
    assert context == {
        "session_id": "s1",
        "context": "Recent activity:\n1. Opened billing — https://app.test/0\n"
        "2. Opened seats — https://app.test/0",
    }
    figures = served.app.state.bridge.figures()
    assert figures["webhook"] == {
        "accepted": 2,
        "duplicates": 1,
        "ignored": 1,
        "received": 11,
        "rejected_invalid": 3,
        "rejected_signature": 2,
        "rejected_stale": 1,
        "rejected_too_large": 1,
        "store_failures": 0,
    }
    assert figures["store"]["actions_stored"] == 2


def test_hostile_bodies_and_stray_requests_get_json_errors(serve: Serve) -> None:
    served = serve(app(llm=lambda prompt: "ok"))
    url = served.url
    # Nested past the JSON parser's depth (under the size cap): a 400, not a 500.
    deep = b"[" * 100_000 + b"]" * 100_000
    assert (post_event(url, deep).status_code, post_event(url, deep).json()) == (
        400,
        {"error": "body is not JSON"},
    )
    reply = httpx.post(
        f"{url}/reply/u1", content=b"[" * 30_000 + b"]" * 30_000, headers=bearer(API)
    )
    assert (reply.status_code, reply.json()) == (400, {"error": "body is not JSON"})
    # Starlette's own refusals answer in JSON like every other error.
    missing = httpx.get(f"{url}/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    wrong = httpx.get(f"{url}/webhook")
    assert (wrong.status_code, wrong.json()) == (405, {"error": "Method Not Allowed"})
    assert wrong.headers["allow"] == "POST"
    # An unknown event type is acknowledged once, counted by the store as ignored.
    unknown = {"type": "usertour_trigger", "session_id": "s1", "product_id": "acme"}
    assert post_event(url, unknown).json() == {"status": "ignored"}
    # A retry signed anew (a fresh timestamp) of a stored event: the store has it.
    event = actions_event("s9", "Opened billing")
    assert post_event(url, event).json() == {"status": "stored"}
    later = str(int(time.time()) + 1)
    assert post_event(url, event, timestamp=later).json() == {"status": "duplicate"}
    # A payload with no session has nothing to store: acknowledged, not "stored".
    sessionless = {**actions_event("s9", "Opened seats"), "session_id": None}
    assert post_event(url, sessionless).json() == {"status": "ignored"}
    figures = served.app.state.bridge.figures()
    webhook = figures["webhook"]
    assert (webhook["ignored"], webhook["accepted"], webhook["duplicates"]) == (2, 1, 1)
    assert webhook["rejected_invalid"] == 2
    assert figures["store"]["unknown_events_ignored"] == 1
    assert figures["store"]["payloads_without_session"] == 1
    assert figures["store"]["actions_stored"] == 1


def test_a_verified_event_is_never_lost_when_the_store_fails(
    redis_server: Any, serve: Serve
) -> None:
    backend = RedisBackend.from_url(redis_server.url, strict=True, socket_timeout=2.0)
    served = serve(app(backend=backend))
    url = served.url
    assert wait_ready(url, True) == {"ready": True, "stream": "off", "backend": "ok"}
    redis_server.stop()
    assert wait_ready(url, False) == {"ready": False, "stream": "off", "backend": "unreachable"}
    event = actions_event("s1", "Opened billing")
    failed = post_event(url, event)
    assert (failed.status_code, failed.json()) == (
        503,
        {"error": "the event could not be stored; retry"},
    )
    assert failed.headers["retry-after"] == "1"
    scoped = {"product_id": "acme"}
    read = httpx.get(f"{url}/sessions/s1/context", params=scoped, headers=bearer(API))
    assert (read.status_code, read.json()) == (503, {"error": "the store is unavailable; retry"})
    redis_server.start()
    wait_ready(url, True)
    # The connector retries the same delivery until it is acknowledged.
    deadline = time.monotonic() + WAIT
    while (retry := post_event(url, event)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert retry.json() == {"status": "stored"}
    assert post_event(url, event).json() == {"status": "duplicate"}
    context = httpx.get(f"{url}/sessions/s1/context", headers=bearer(API)).json()["context"]
    assert context == "Recent activity:\n1. Opened billing — https://app.test/0"
    figures = served.app.state.bridge.figures()
    assert figures["store"]["actions_stored"] == 1
    assert figures["webhook"]["store_failures"] >= 1


# -- replies --------------------------------------------------------------------------------
def test_reply_prompt_has_history_activity_since_the_last_message_and_kb(serve: Serve) -> None:
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return f"Answer {len(prompts)}"

    served = serve(app(llm=llm))
    url = served.url
    assert post_event(url, actions_event("s1", "Opened billing")).status_code == 200
    first = httpx.post(
        f"{url}/reply/u1", json={"message": "Where is billing?"}, headers=bearer(API)
    )
    assert first.json() == {"user_id": "u1", "product_id": "acme", "reply": "Answer 1"}
    later = actions_event("s1", "Opened seats", forwarded_at=1_700_000_001.0)
    assert post_event(url, later).status_code == 200
    second = httpx.post(
        f"{url}/reply/u1",
        json={"message": "How do I add a seat?", "knowledge": ["Seats live under Settings."]},
        headers=bearer(API),
    )
    assert second.json()["reply"] == "Answer 2"
    assert prompts[0] == (
        f"{DEFAULT_SYSTEM_PROMPT}\n\n"
        "[Recent activity]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened billing — https://app.test/0\n\n"
        "[Question]\nWhere is billing?"
    )
    assert prompts[1] == (
        f"{DEFAULT_SYSTEM_PROMPT}\n\n"
        "[Activity since the user's last message]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened seats — https://app.test/0\n\n"
        "[Recent activity]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened billing — https://app.test/0\n2. Opened seats — https://app.test/0\n\n"
        "[Conversation so far]\nUser: Where is billing?\nAssistant: Answer 1\n\n"
        "[Knowledge base]\n1. Seats live under Settings.\n\n"
        "[Question]\nHow do I add a seat?"
    )


def test_reply_without_a_model_and_with_bad_bodies(serve: Serve) -> None:
    url = serve(app()).url
    none = httpx.post(f"{url}/reply/u1", json={"message": "hi"}, headers=bearer(API))
    assert (none.status_code, none.json()) == (
        503,
        {"error": "no LLM is configured: pass llm= to build_app"},
    )
    url = serve(app(llm=lambda p: "ok")).url
    cases = {
        b"[1]": (422, "body must be a JSON object"),
        b"nope": (400, "body is not JSON"),
        b'{"message": 3}': (422, "message must be a non-empty string"),
        b'{"message": "hi", "knowledge": [1]}': (422, "knowledge must be a list of strings"),
        b'{"message": "' + b"x" * 70_000 + b'"}': (413, "body too large"),
    }
    for body, (status, message) in cases.items():
        response = httpx.post(f"{url}/reply/u1", content=body, headers=bearer(API))
        assert (response.status_code, response.json()) == (status, {"error": message})


class ChatModel:
    """Duck-types a LangChain chat model: ``ainvoke`` returning a message with content blocks."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def ainvoke(self, prompt: str) -> Any:
        self.prompts.append(prompt)
        return type("AIMessage", (), {"content": [{"type": "text", "text": "Hi "}, "there"]})()


def test_reply_with_a_chat_model_and_a_failing_knowledge_base(serve: Serve) -> None:
    model = ChatModel()
    calls: list[str] = []

    async def knowledge(question: str) -> list[str]:
        calls.append(question)
        if len(calls) == 2:
            raise RuntimeError("vector store down")
        return ["Seats live under Settings."]

    served = serve(app(llm=model, knowledge=knowledge, system_prompt="S"))
    for n in range(2):
        body = {"message": f"q{n}", "product_id": "acme"}
        response = httpx.post(f"{served.url}/reply/u1", json=body, headers=bearer(API))
        assert response.json() == {"user_id": "u1", "product_id": "acme", "reply": "Hi there"}
    assert model.prompts == [
        "S\n\n[Knowledge base]\n1. Seats live under Settings.\n\n[Question]\nq0",
        "S\n\n[Conversation so far]\nUser: q0\nAssistant: Hi there\n\n[Question]\nq1",
    ]
    counters = served.app.state.bridge.counters
    assert (counters.replies, counters.knowledge_errors, counters.reply_errors) == (2, 1, 0)


def test_a_failing_model_is_a_502_and_nothing_is_stored(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def llm(prompt: str) -> str:
        raise RuntimeError("provider said: key sk-123 is invalid")

    served = serve(app(llm=llm))
    with caplog.at_level(logging.WARNING, logger="autoplay_base.bridge"):
        response = httpx.post(f"{served.url}/reply/u1", json={"message": "hi"}, headers=bearer(API))
    assert [r.getMessage() for r in caplog.records] == ["bridge: the model failed (RuntimeError)"]
    assert (response.status_code, response.json()) == (502, {"error": "the model failed to answer"})
    bridge = served.app.state.bridge
    assert bridge.counters.reply_errors == 1
    assert bridge.store.backend.get_messages(conversation_key("", "u1")) == []


def test_an_ambiguous_user_gets_a_count_never_the_products(serve: Serve) -> None:
    url = serve(app(llm=lambda p: "ok")).url
    assert post_event(url, actions_event("s1", "a", product_id="acme")).status_code == 200
    assert post_event(url, actions_event("s2", "b", product_id="globex")).status_code == 200
    for method, path in (("GET", "/context/u1"), ("POST", "/reply/u1")):
        response = httpx.request(
            method, f"{url}{path}", json={"message": "hi"}, headers=bearer(API)
        )
        assert (response.status_code, response.json()) == (
            409,
            {"error": "user id is known under several products: pass product_id", "products": 2},
        )
        assert "globex" not in response.text and "acme" not in response.text
    assert post_event(url, actions_event("s2", "c", product_id="acme")).status_code == 200
    for method, path, token in (
        ("GET", "/sessions/s2/context", API),
        ("POST", "/admin/sessions/s2/reset", ADMIN),
    ):
        response = httpx.request(method, f"{url}{path}", headers=bearer(token))
        assert (response.status_code, response.json()) == (
            409,
            {"error": "session id is known under several products: pass product_id", "products": 2},
        )
    scoped = httpx.get(f"{url}/context/u1", params={"product_id": "globex"}, headers=bearer(API))
    assert scoped.json() == {
        "user_id": "u1",
        "context": "Session s2 (globex):\nRecent activity:\n1. b — https://app.test/0",
    }


def test_admin_reset_forgets_the_user(serve: Serve) -> None:
    url = serve(app()).url
    assert post_event(url, actions_event("s1", "a")).status_code == 200
    assert httpx.get(f"{url}/context/u1", headers=bearer(API)).status_code == 200
    reset = httpx.post(f"{url}/admin/reset/u1", headers=bearer(ADMIN))
    assert reset.json() == {"reset": True, "sessions": 1}
    assert httpx.get(f"{url}/context/u1", headers=bearer(API)).status_code == 404
    assert httpx.get(f"{url}/sessions/s1/context", headers=bearer(API)).status_code == 404


# -- pull mode: readiness and shutdown ------------------------------------------------------
def test_readiness_follows_the_stream_and_shutdown_is_prompt(
    emulator_factory: Callable[..., EmulatorServer], serve: Serve
) -> None:
    emulator = emulator_factory(heartbeat_interval=None)  # an idle stream: no byte ever
    served = serve(app(connector_url=emulator.url_for("acme"), webhook_secret=None))
    assert wait_ready(served.url, True) == {"ready": True, "stream": "connected", "backend": "ok"}
    emulator.publish("acme", actions_event("s1", "Opened billing"))
    deadline = time.monotonic() + WAIT
    while (r := httpx.get(f"{served.url}/context/u1", headers=bearer(API))).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (
        r.json()["context"]
        == "Session s1 (acme):\nRecent activity:\n1. Opened billing — https://app.test/0"
    )
    seconds = served.stop()
    assert seconds < 0.5, f"shutdown took {seconds:.3f}s"
    print(f"bridge shutdown on an idle stream: {seconds * 1000:.0f} ms")


def test_a_mounted_bridge_ingests_when_the_host_runs_its_lifespan(
    emulator_factory: Callable[..., EmulatorServer], serve: Serve
) -> None:
    # Starlette (and FastAPI) never run a mounted app's lifespan, where the bridge starts
    # its stream client: the host passes it on, as the README shows.
    emulator = emulator_factory(heartbeat_interval=None)
    bridge = app(connector_url=emulator.url_for("acme"), webhook_secret=None)
    host = Starlette(
        routes=[Mount("/autoplay", app=bridge)],
        lifespan=lambda host: bridge.router.lifespan_context(bridge),
    )
    base = serve(host).url + "/autoplay"
    assert wait_ready(base, True) == {"ready": True, "stream": "connected", "backend": "ok"}
    emulator.publish("acme", actions_event("s1", "Opened billing"))
    deadline = time.monotonic() + WAIT
    while (r := httpx.get(f"{base}/context/u1", headers=bearer(API))).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling a condition with a deadline
    assert r.json()["context"].endswith("1. Opened billing — https://app.test/0")


def test_readiness_drops_when_the_connector_goes_away(
    emulator_factory: Callable[..., EmulatorServer], serve: Serve
) -> None:
    emulator = emulator_factory()
    served = serve(
        app(
            connector_url=emulator.url_for("acme"),
            webhook_secret=None,
            client_options={"initial_backoff": 0.05, "max_backoff": 0.1},
        )
    )
    wait_ready(served.url, True)
    emulator.close()
    assert wait_ready(served.url, False) == {"ready": False, "stream": "down", "backend": "ok"}


# -- several workers on one Redis ------------------------------------------------------------
def test_two_apps_on_one_redis_answer_the_same(
    make_redis_backend: Callable[..., Any], serve: Serve
) -> None:
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "Noted."

    a = serve(app(backend=make_redis_backend(strict=True), llm=llm)).url
    b = serve(
        app(backend=make_redis_backend(strict=True), llm=llm, push=False, webhook_secret=None)
    ).url
    assert post_event(a, actions_event("s1", "Opened billing")).status_code == 200
    answers = [httpx.get(f"{u}/context/u1", headers=bearer(API)).json() for u in (a, b)]
    assert (
        answers[0]
        == answers[1]
        == {
            "user_id": "u1",
            "context": "Session s1 (acme):\nRecent activity:\n1. Opened billing — https://app.test/0",
        }
    )
    assert (
        httpx.post(f"{a}/reply/u1", json={"message": "Hi"}, headers=bearer(API)).status_code == 200
    )
    assert (
        post_event(a, actions_event("s1", "Opened seats", forwarded_at=1_700_000_002.0)).status_code
        == 200
    )
    assert (
        httpx.post(f"{b}/reply/u1", json={"message": "Now?"}, headers=bearer(API)).status_code
        == 200
    )
    # Worker B sees worker A's turn and its watermark: only the new action is "since".
    assert (
        "[Activity since the user's last message]\nSession s1 (acme):\nRecent activity:\n"
        "1. Opened seats — https://app.test/0\n\n" in prompts[1]
    )
    assert "[Conversation so far]\nUser: Hi\nAssistant: Noted.\n\n" in prompts[1]
    assert httpx.post(f"{b}/webhook", content=b"{}").status_code == 404  # B has no push route


# -- metrics --------------------------------------------------------------------------------
SAMPLE = re.compile(
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*) (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?|[+-]Inf|NaN)$"
)
TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$")


def parse_prometheus(text: str) -> dict[str, tuple[str, float]]:
    """``{name: (type, value)}``; every line must be a TYPE line or a sample after its TYPE."""
    assert text.endswith("\n")
    parsed: dict[str, tuple[str, float]] = {}
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if (match := TYPE.match(line)) is not None:
            assert match[1] not in declared, f"declared twice: {line}"
            declared[match[1]] = match[2]
            continue
        sample = SAMPLE.match(line)
        assert sample is not None, f"not Prometheus text: {line!r}"
        name = sample[1]
        assert name in declared and name not in parsed, line
        assert (declared[name] == "counter") == name.endswith("_total"), line
        parsed[name] = (declared[name], float(sample[2]))
    return parsed


class RecordingHook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def record_counter(self, name: str, value: float) -> None:
        self.calls.append(("counter", name, value))


class BrokenHook:
    def record_counter(self, name: str, value: float) -> None:
        raise RuntimeError("hook is down")


def test_metrics_are_prometheus_text_and_hooks_cannot_break_requests(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    recording = RecordingHook()
    url = serve(app(metrics_hooks=[BrokenHook(), recording])).url
    with caplog.at_level(logging.WARNING, logger="autoplay_base.bridge"):
        assert post_event(url, actions_event("s1", "a")).status_code == 200
        assert post_event(url, actions_event("s1", "b")).status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 401
    response = httpx.get(f"{url}/metrics", headers=bearer(API))
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = parse_prometheus(response.text)
    assert metrics["autoplay_webhook_accepted_total"] == ("counter", 2.0)
    assert metrics["autoplay_store_actions_stored_total"] == ("counter", 2.0)
    assert metrics["autoplay_store_bytes"][0] == "gauge"
    assert metrics["autoplay_bridge_unauthorized_total"] == ("counter", 1.0)
    assert metrics["autoplay_bridge_hook_errors_total"] == ("counter", 3.0)
    assert recording.calls == [
        ("counter", "webhook_accepted", 1),
        ("counter", "webhook_accepted", 1),
        ("counter", "unauthorized", 1),
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "bridge: metrics hook BrokenHook.record_counter raised RuntimeError "
        "(counted in hook_errors; logged once per method)"
    ]


# -- run streams ----------------------------------------------------------------------------
def test_run_events_resume_after_last_event_id(serve: Serve) -> None:
    stream = RunStream()
    with stream.run(session_id="s1", product_id="acme", user_message="hi") as run:
        for piece in ("It ", "is ", "done."):
            run.text_delta(piece)
    url = serve(app(run_stream=stream)).url
    path = f"{url}/runs/{run.run_id}/events"
    params = {"session_id": "s1", "product_id": "acme"}

    def read(headers: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
        with (
            httpx.Client(timeout=WAIT) as client,
            connect_sse(client, "GET", path, params=params, headers=headers) as source,
        ):
            return [(sse.id, json.loads(sse.data)) for sse in source.iter_sse()]

    everything = read(bearer(API))
    assert [data["type"] for _, data in everything] == [
        "start",
        "text_delta",
        "text_delta",
        "text_delta",
        "finished",
    ]
    resumed = read({**bearer(API), "last-event-id": everything[1][0]})
    assert resumed == everything[2:]
    wrong_scope = httpx.get(path, params={**params, "product_id": "globex"}, headers=bearer(API))
    assert wrong_scope.status_code == 200 and "text_delta" not in wrong_scope.text


# -- more of the webhook's refusals and readiness with both dependencies -----------------------
def test_webhook_refuses_future_malformed_replayed_and_chunked_oversized_deliveries(
    serve: Serve,
) -> None:
    now = int(time.time())
    served = serve(app(max_webhook_bytes=4096))
    url = served.url
    event = actions_event("s1", "Opened billing")
    fresh = post_event(url, event, timestamp=str(now))
    assert fresh.json() == {"status": "stored"}
    body, headers = signed(event, timestamp=str(now))
    replayed = httpx.post(f"{url}/webhook", content=body, headers=headers)

    def chunks() -> Any:
        yield b'{"type": "actions", "session_id": "s1", "actions": ["'
        yield b"x" * 5000
        yield b'"]}'

    chunked = httpx.post(f"{url}/webhook", content=chunks(), headers=headers)
    refused = {
        "future": post_event(url, actions_event("s1", "a"), timestamp=str(now + 1000)),
        "malformed": post_event(url, actions_event("s1", "b"), timestamp="soon"),
        "too long": post_event(url, actions_event("s1", "c"), timestamp="1" * 21),
        "signed elsewhere": httpx.post(
            f"{url}/webhook",
            content=body,
            headers={**headers, "x-connector-timestamp": str(now + 1)},
        ),
        "chunked oversized": chunked,
    }
    assert "content-length" not in chunked.request.headers
    assert replayed.json() == {"status": "duplicate"}
    assert {name: (r.status_code, r.json()) for name, r in refused.items()} == {
        "future": (401, {"error": "stale or malformed timestamp"}),
        "malformed": (401, {"error": "stale or malformed timestamp"}),
        "too long": (401, {"error": "stale or malformed timestamp"}),
        "signed elsewhere": (401, {"error": "missing or invalid signature"}),
        "chunked oversized": (413, {"error": "body too large"}),
    }
    webhook = served.app.state.bridge.figures()["webhook"]
    assert (webhook["accepted"], webhook["duplicates"], webhook["received"]) == (1, 1, 7)
    assert (webhook["rejected_stale"], webhook["rejected_signature"]) == (3, 1)
    assert webhook["rejected_too_large"] == 1
    strict = serve(app(require_timestamp=True)).url
    plain = post_event(strict, actions_event("s1", "d"))
    assert (plain.status_code, plain.json()) == (
        401,
        {"error": "a signed X-Connector-Timestamp is required"},
    )


def test_readiness_flips_when_redis_goes_away_under_a_pulling_bridge(
    emulator_factory: Callable[..., EmulatorServer], redis_server: Any, serve: Serve
) -> None:
    emulator = emulator_factory()
    backend = RedisBackend.from_url(redis_server.url, strict=True, socket_timeout=2.0)
    served = serve(
        app(backend=backend, connector_url=emulator.url_for("acme"), webhook_secret=None)
    )
    assert wait_ready(served.url, True) == {"ready": True, "stream": "connected", "backend": "ok"}
    redis_server.stop()
    assert wait_ready(served.url, False) == {
        "ready": False,
        "stream": "connected",
        "backend": "unreachable",
    }
    redis_server.start()
    assert wait_ready(served.url, True) == {"ready": True, "stream": "connected", "backend": "ok"}
