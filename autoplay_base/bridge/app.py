"""``build_app``: the chatbot bridge as a Starlette ASGI app, secure by default.

Run it as is (``autoplay-live serve``, or ``uvicorn`` on the app) or mount it in
a FastAPI/Starlette app. Its lifespan owns the ingest: an
:class:`~autoplay_base.stream.AsyncConnectorClient` in pull mode (``connector_url``)
and/or ``POST /webhook`` in push mode, both feeding one
:class:`~autoplay_base.context_store.AsyncContextStore`. On shutdown the client
stops at once, even on an idle stream (it never waits for the next byte).

Routes (JSON; ``/openapi.json`` describes them):

==========================================  ======  ==========================================
``GET /healthz``, ``GET /readyz``           none    liveness; readiness (stream + backend)
``GET /openapi.json``                       none    this table, as OpenAPI 3.1
``GET /context/{user_id}``                  api     the user's recent sessions' context
``GET /sessions/{session_id}/context``      api     one session's context
``POST /reply/{user_id}``                   api     the prompt assembled, the LLM's answer
``GET /runs/{run_id}/events``               api     a run stream as SSE (``Last-Event-ID``)
``GET /metrics``                            api     Prometheus text
``POST /admin/reset/{user_id}``             admin   forget the user's sessions and conversation
``POST /admin/sessions/{session_id}/reset`` admin   forget one session
``POST /webhook``                           HMAC    push mode only (see :mod:`._webhook`)
==========================================  ======  ==========================================

Security: without ``api_token`` the app is not built (``ConfigError``) unless
``insecure_no_auth=True`` is passed, which logs a warning; ``admin_token`` must
differ from it (unset: admin routes refuse every request). Missing or unknown
token: 401; the other scope's token: 403. Push mode without a webhook secret is
a ``ConfigError`` (fail-closed). A 409 for an id known under several products
gives their count, never their ids.

For push mode with Redis, build the ``RedisBackend`` with ``strict=True``: a
delivery is acknowledged only once the store accepted it, and a strict backend
raises during an outage (503, the connector retries) instead of buffering the
write in this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from autoplay_base._secret import Secret, resolve_token
from autoplay_base.agent_stream import AsyncRunStream, RunStream
from autoplay_base.backends.base import Backend
from autoplay_base.bridge._llm import check_llm
from autoplay_base.bridge._metrics import BridgeCounters, Hooks
from autoplay_base.bridge._openapi import openapi_document
from autoplay_base.bridge._service import Bridge, Knowledge, ambiguous, http_error, store_failed
from autoplay_base.bridge._webhook import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMESTAMP_TOLERANCE,
    WebhookVerifier,
)
from autoplay_base.context_store import AsyncContextStore
from autoplay_base.errors import (
    AmbiguousSessionError,
    AmbiguousUserError,
    BackendError,
    ConfigError,
)
from autoplay_base.prompting._assembly import DEFAULT_SYSTEM_PROMPT
from autoplay_base.stream import AsyncConnectorClient
from autoplay_base.user_index import DEFAULT_USER_LOOKBACK_SECONDS, UserSessionIndex

__all__ = ["DEFAULT_STOP_TIMEOUT", "build_app"]

logger = logging.getLogger("autoplay_base.bridge")

DEFAULT_STOP_TIMEOUT = 5.0
"""Seconds the lifespan waits for the client's end on shutdown (its drain included)."""


def _token(value: str | None, name: str) -> Secret | None:
    if value is None:
        return None
    secret = resolve_token(value) if value.strip() else Secret("")
    if not secret:
        raise ConfigError(f"{name} must be a non-empty string (the value is not shown)")
    return secret


def _tokens(
    api_token: str | None, admin_token: str | None, insecure_no_auth: bool
) -> tuple[Secret | None, Secret | None]:
    api, admin = _token(api_token, "api_token"), _token(admin_token, "admin_token")
    if api is None and not insecure_no_auth:
        raise ConfigError(
            "build_app needs api_token= (routes are authenticated by default); "
            "pass insecure_no_auth=True to serve without authentication"
        )
    if api is not None and admin is not None and api.reveal() == admin.reveal():
        raise ConfigError("admin_token must differ from api_token")
    if insecure_no_auth:
        logger.warning(
            "bridge: insecure_no_auth=True: every route, the admin reset included, "
            "is open to anyone who can reach this server"
        )
    return api, admin


def _store(
    store: AsyncContextStore | None, backend: Backend | None
) -> tuple[AsyncContextStore, bool]:
    if store is not None and backend is not None:
        raise ConfigError("pass store= or backend=, not both (a store has its backend)")
    if store is not None:
        return store, False
    return AsyncContextStore(backend=backend), True


def build_app(
    *,
    store: AsyncContextStore | None = None,
    backend: Backend | None = None,
    connector_url: str | None = None,
    connector_token: str | None = None,
    webhook_secret: str | None = None,
    push: bool | None = None,
    require_timestamp: bool = False,
    webhook_tolerance: float = DEFAULT_TIMESTAMP_TOLERANCE,
    max_webhook_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api_token: str | None = None,
    admin_token: str | None = None,
    insecure_no_auth: bool = False,
    llm: Any = None,
    knowledge: Knowledge | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    run_stream: RunStream | AsyncRunStream | None = None,
    metrics_hooks: Iterable[object] = (),
    user_lookback_seconds: float = DEFAULT_USER_LOOKBACK_SECONDS,
    client_options: Mapping[str, Any] | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The bridge app (see the module docstring).

    Args:
        store: the context store to serve (default: a new ``AsyncContextStore``
            on ``backend``, closed with the app).
        backend: the backend of the default store (in memory when ``None``).
        connector_url: ``GET /stream/{product_id}`` of the connector: pull mode.
        connector_token: its bearer token (default ``$AUTOPLAY_APP_UNKEY_TOKEN``).
        webhook_secret: the HMAC secret of ``POST /webhook``: push mode.
        push: serve ``POST /webhook`` (default: when a secret is given, or when
            there is no ``connector_url``); push mode without a secret is an error.
        require_timestamp: refuse deliveries without ``X-Connector-Timestamp``.
        webhook_tolerance: seconds a delivery's timestamp may be off (300).
        max_webhook_bytes: webhook body cap (413 beyond it; 1 MiB).
        api_token, admin_token: bearer tokens of the API and the admin routes.
        insecure_no_auth: serve without ``api_token`` (a warning is logged).
        llm: a LangChain chat model / ``Runnable`` (``ainvoke``/``invoke``) or a
            callable taking the prompt; ``POST /reply`` answers 503 without one.
        knowledge: ``fn(question) -> excerpts`` (sync or async) for the prompt's
            knowledge-base section, added to the excerpts a request sends.
        system_prompt: the prompt's first paragraph.
        run_stream: serve ``GET /runs/{run_id}/events`` from it.
        metrics_hooks: :class:`~autoplay_base.bridge.SdkMetricsHook` objects.
        user_lookback_seconds: what counts as a user's recent session.
        client_options: keyword options of the ``AsyncConnectorClient``.
        stop_timeout: seconds shutdown waits for the client.
        clock: ``time.time`` (tests).
    """
    api, admin = _tokens(api_token, admin_token, insecure_no_auth)
    if llm is not None and not check_llm(llm):
        raise ConfigError("llm must have ainvoke/invoke or be callable")
    push = push if push is not None else (webhook_secret is not None or connector_url is None)
    if push and webhook_secret is None:
        raise ConfigError(
            "push mode (POST /webhook) needs webhook_secret=: unsigned deliveries are never "
            "accepted; pass connector_url= for pull mode, or push=False"
        )
    verifier = (
        WebhookVerifier(
            webhook_secret,
            tolerance=webhook_tolerance,
            require_timestamp=require_timestamp,
            max_body_bytes=max_webhook_bytes,
            clock=clock,
        )
        if push and webhook_secret is not None
        else None
    )
    context_store, owns_store = _store(store, backend)
    counters = BridgeCounters()
    bridge = Bridge(
        store=context_store,
        index=UserSessionIndex(context_store, lookback_seconds=user_lookback_seconds, clock=clock),
        api_token=api,
        admin_token=admin,
        insecure_no_auth=insecure_no_auth,
        verifier=verifier,
        llm=llm,
        knowledge=knowledge,
        run_stream=run_stream,
        system_prompt=system_prompt,
        counters=counters,
        clock=clock,
    )
    if connector_url is not None:
        bridge.client = _client(bridge, connector_url, connector_token, client_options or {})
    hooks = tuple(metrics_hooks)
    bridge.hooks = Hooks(hooks, counters)
    for hook in hooks:
        observe = getattr(hook, "observe", None)
        if observe is not None:
            observe(bridge.figures)  # the optional hook method: pull-style exporters
    app = Starlette(
        routes=_routes(bridge),
        lifespan=_lifespan(bridge, owns_store, stop_timeout),
        exception_handlers={
            HTTPException: http_error,
            BackendError: store_failed,
            AmbiguousSessionError: ambiguous,
            AmbiguousUserError: ambiguous,
        },
    )
    app.state.bridge = bridge  # for mounting apps and tests: bridge.figures(), bridge.store
    return app


def _client(
    bridge: Bridge, url: str, token: str | None, options: Mapping[str, Any]
) -> AsyncConnectorClient:
    client = AsyncConnectorClient(url, token or "", **options)
    client.on_actions(bridge.store.add).on_summary(bridge.store.add)

    def connected() -> None:
        bridge.connected = True

    def disconnected(*_: object) -> None:
        bridge.connected = False

    def dropped(_payload: object, _total: int) -> None:
        bridge.hooks.emit("record_drop", "stream", 1)

    client.on_connect(connected).on_disconnect(disconnected).on_drop(dropped)
    return client


def _routes(bridge: Bridge) -> list[Route]:
    document = openapi_document(
        push=bridge.verifier is not None, runs=bridge.run_stream is not None
    )

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes = [
        Route("/healthz", bridge.healthz),
        Route("/readyz", bridge.readyz),
        Route("/openapi.json", openapi),
        Route("/context/{user_id}", bridge.user_context),
        Route("/sessions/{session_id}/context", bridge.session_context),
        Route("/reply/{user_id}", bridge.reply, methods=["POST"]),
        Route("/runs/{run_id}/events", bridge.run_events),
        Route("/metrics", bridge.metrics),
        Route("/admin/reset/{user_id}", bridge.reset_user, methods=["POST"]),
        Route("/admin/sessions/{session_id}/reset", bridge.reset_session, methods=["POST"]),
    ]
    if bridge.verifier is not None:
        routes.append(Route("/webhook", bridge.webhook, methods=["POST"]))
    return routes


def _lifespan(
    bridge: Bridge, owns_store: bool, stop_timeout: float
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = bridge.client
        task = client.run_in_background() if client is not None else None
        if task is not None:
            task.add_done_callback(lambda done: _client_ended(bridge, done))
        try:
            yield
        finally:
            if client is not None and task is not None:
                client.stop()
                await asyncio.wait({task}, timeout=stop_timeout)
                if not task.done():
                    logger.warning("bridge: the stream client did not stop in %ss", stop_timeout)
                    task.cancel()
            if owns_store:
                await bridge.store.aclose()

    return lifespan


def _client_ended(bridge: Bridge, task: asyncio.Task[None]) -> None:
    bridge.connected = False
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    # The client's errors are scrubbed of its token; the class and text are safe to log.
    bridge.stream_error = type(error).__name__
    logger.error("bridge: the stream client stopped: %s: %s", type(error).__name__, error)
