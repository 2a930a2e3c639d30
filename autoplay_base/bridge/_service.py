"""The bridge's request handlers over one store, index, client and verifier.

:class:`Bridge` holds what the handlers share; :func:`~autoplay_base.bridge.app.build_app`
builds it from validated options and mounts its handlers. Each handler does its
checks in a fixed order (auth, input, then the store) and answers with fixed
error text (:mod:`._http`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from autoplay_base._secret import Secret
from autoplay_base.agent_stream import AsyncRunStream, RunStream
from autoplay_base.bridge._http import (
    BodyTooLargeError,
    error,
    presented_token,
    read_capped,
    token_matches,
)
from autoplay_base.bridge._llm import call_llm
from autoplay_base.bridge._metrics import CONTENT_TYPE, BridgeCounters, Hooks, render_prometheus
from autoplay_base.bridge._webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerifier,
    event_id_for,
)
from autoplay_base.context_store import AsyncContextStore
from autoplay_base.errors import AmbiguousUserError, EventDecodeError
from autoplay_base.events import UnknownEvent, decode_object
from autoplay_base.prompting._assembly import DEFAULT_SYSTEM_PROMPT, assistant_entry, human_entry
from autoplay_base.prompting._conversation import (
    CONVERSATION_PREFIX,
    KnowledgeSearch,
    PromptRequest,
    PromptResult,
    arun_prompt,
    conversation_key,
    pick_product,
    prompt_flow,
)
from autoplay_base.stream import AsyncConnectorClient
from autoplay_base.user_index import UserSessionIndex

__all__ = [
    "CONVERSATION_PREFIX",
    "DEFAULT_MAX_REQUEST_BYTES",
    "PING_TIMEOUT",
    "Bridge",
    "ambiguous",
    "conversation_key",
    "store_failed",
]

logger = logging.getLogger("autoplay_base.bridge")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
"""Cap of a ``/reply`` body (413 beyond it)."""
PING_TIMEOUT = 1.0
"""Seconds ``/readyz`` waits for the backend's ping."""

Scope = Literal["api", "admin"]
Knowledge = KnowledgeSearch  # the name app.py and build_app's signature use


@dataclass
class Bridge:
    """State and handlers of one bridge app (see :func:`~autoplay_base.bridge.build_app`)."""

    store: AsyncContextStore
    index: UserSessionIndex
    api_token: Secret | None
    admin_token: Secret | None
    insecure_no_auth: bool
    client: AsyncConnectorClient | None = None
    verifier: WebhookVerifier | None = None
    llm: Any = None
    knowledge: Knowledge | None = None
    run_stream: RunStream | AsyncRunStream | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    hooks: Hooks = field(default_factory=lambda: Hooks((), BridgeCounters()))
    counters: BridgeCounters = field(default_factory=BridgeCounters)
    clock: Callable[[], float] = time.time
    connected: bool = False
    stream_error: str | None = None

    # -- auth ----------------------------------------------------------------------
    def refused(self, request: Request, scope: Scope) -> Response | None:
        """401 without a known token, 403 with the other scope's; ``None`` when allowed."""
        if self.insecure_no_auth:
            return None
        wanted, other = (
            (self.api_token, self.admin_token)
            if scope == "api"
            else (self.admin_token, self.api_token)
        )
        presented = presented_token(request)
        if presented is not None and token_matches(presented, wanted):
            return None
        if presented is not None and token_matches(presented, other):
            self.counters.forbidden += 1
            self.hooks.emit("record_counter", "forbidden", 1)
            return error(403, "this token may not use this route")
        self.counters.unauthorized += 1
        self.hooks.emit("record_counter", "unauthorized", 1)
        return error(401, "missing or invalid bearer token")

    # -- probes --------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the stream (in pull mode) is connected and the backend answers."""
        stream = "off" if self.client is None else ("connected" if self.connected else "down")
        if self.stream_error is not None:
            stream = "failed"  # a fatal connector answer (401/404): it will not come back
        backend = await self._backend_state()
        ready = stream in ("off", "connected") and backend == "ok"
        body = {"ready": ready, "stream": stream, "backend": backend}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _backend_state(self) -> str:
        aping = getattr(self.store.backend, "aping", None)
        if aping is None:
            return "ok"
        try:
            await asyncio.wait_for(aping(), PING_TIMEOUT)
        except Exception as exc:  # any failure means "not ready"; the class is logged
            logger.info("bridge: readiness: backend ping failed (%s)", type(exc).__name__)
            return "unreachable"
        return "ok"

    # -- context -------------------------------------------------------------------
    async def user_context(self, request: Request) -> Response:
        """``GET /context/{user_id}``: the user's recent sessions' context, joined."""
        if (refusal := self.refused(request, "api")) is not None:
            return refusal
        user_id = request.path_params["user_id"]
        product_id = request.query_params.get("product_id")
        context = await self.index.aget_user_activity(user_id, product_id=product_id)
        if not context:
            return error(404, "no recent activity for this user")
        return JSONResponse({"user_id": user_id, "context": context})

    async def session_context(self, request: Request) -> Response:
        """``GET /sessions/{session_id}/context``: one session's context."""
        if (refusal := self.refused(request, "api")) is not None:
            return refusal
        session_id = request.path_params["session_id"]
        product_id = request.query_params.get("product_id")
        context = await self.store.aget(session_id, product_id)
        if not context:
            return error(404, "no live context for this session")
        return JSONResponse({"session_id": session_id, "context": context})

    # -- reply ---------------------------------------------------------------------
    async def reply(self, request: Request) -> Response:
        """``POST /reply/{user_id}`` with ``{"message": ..., "product_id"?, "knowledge"?}``."""
        if (refusal := self.refused(request, "api")) is not None:
            return refusal
        if self.llm is None:
            return error(503, "no LLM is configured: pass llm= to build_app")
        body = await self._json_body(request)
        if isinstance(body, Response):
            return body
        message, product_id, excerpts = (
            body.get("message"),
            body.get("product_id"),
            body.get("knowledge", []),
        )
        if not isinstance(message, str) or not message.strip():
            return self._bad(422, "message must be a non-empty string")
        if product_id is not None and not isinstance(product_id, str):
            return self._bad(422, "product_id must be a string")
        if not isinstance(excerpts, list) or not all(isinstance(e, str) for e in excerpts):
            return self._bad(422, "knowledge must be a list of strings")
        user_id = request.path_params["user_id"]
        started = time.monotonic()
        # The flow resolves the product (409 when the user is known under several).
        prompt = await self._prompt(PromptRequest(user_id, message, product_id, excerpts))
        try:
            answer = await call_llm(self.llm, prompt.prompt)
        except Exception as exc:
            return self._reply_failed("the model", exc)
        product = prompt.product_id
        entries = [
            human_entry(message, at=prompt.read_at),
            assistant_entry(answer, at=self.clock()),
        ]
        await self.store.backend.aappend_messages(conversation_key(product, user_id), entries)
        self.counters.replies += 1
        self.hooks.emit("record_counter", "replies", 1)
        self.hooks.emit("record_latency", "reply", time.monotonic() - started)
        return JSONResponse({"user_id": user_id, "product_id": product, "reply": answer})

    async def prompt_for(
        self, user_id: str, product: str, message: str, excerpts: Sequence[str]
    ) -> tuple[str, float]:
        """The prompt for the user's new message, and the moment its context was read.

        That moment becomes the human message's ``at`` (the next watermark), so
        activity that happens while the model answers shows on the next turn.
        """
        result = await self._prompt(PromptRequest(user_id, message, product, excerpts))
        return result.prompt, result.read_at

    async def _prompt(self, request: PromptRequest) -> PromptResult:
        flow = prompt_flow(
            request,
            system_prompt=self.system_prompt,
            search=self.knowledge is not None,
            clock=self.clock,
        )
        result = await arun_prompt(flow, self.store, self.index, self.knowledge)
        if result.knowledge_error is not None:
            self.counters.knowledge_errors += 1
        return result

    def _reply_failed(self, what: str, exc: Exception) -> Response:
        self.counters.reply_errors += 1
        self.hooks.emit("record_counter", "reply_errors", 1)
        logger.warning("bridge: %s failed (%s)", what, type(exc).__name__)
        return error(502, f"{what} failed to answer")

    async def _product(self, user_id: str, product_id: str | None) -> str:
        if product_id is not None:
            return product_id
        return pick_product(user_id, await self.store.backend.auser_products(user_id))

    async def _json_body(self, request: Request) -> dict[str, Any] | Response:
        try:
            raw = await read_capped(request, DEFAULT_MAX_REQUEST_BYTES)
        except BodyTooLargeError:
            return self._bad(413, "body too large")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            return self._bad(400, "body is not JSON")
        if not isinstance(body, dict):
            return self._bad(422, "body must be a JSON object")
        return body

    def _bad(self, status: int, message: str) -> Response:
        self.counters.bad_requests += 1
        return error(status, message)

    # -- admin ---------------------------------------------------------------------
    async def reset_user(self, request: Request) -> Response:
        """``POST /admin/reset/{user_id}``: the user's sessions, index and conversation."""
        if (refusal := self.refused(request, "admin")) is not None:
            return refusal
        user_id = request.path_params["user_id"]
        product = await self._product(user_id, request.query_params.get("product_id"))
        refs = await self.index.aget_recent_sessions(user_id, product_id=product)
        for ref in refs:
            await self.store.areset(ref.session_id, ref.product_id)
        await self.index.areset_user(user_id, product_id=product)
        await self.store.backend.aclear_messages(conversation_key(product, user_id))
        return JSONResponse({"reset": True, "sessions": len(refs)})

    async def reset_session(self, request: Request) -> Response:
        """``POST /admin/sessions/{session_id}/reset``: one session's context."""
        if (refusal := self.refused(request, "admin")) is not None:
            return refusal
        session_id = request.path_params["session_id"]
        await self.store.areset(session_id, request.query_params.get("product_id"))
        return JSONResponse({"reset": True})

    # -- runs ----------------------------------------------------------------------
    async def run_events(self, request: Request) -> Response:
        """``GET /runs/{run_id}/events?session_id=&product_id=``: the run as SSE."""
        if (refusal := self.refused(request, "api")) is not None:
            return refusal
        if self.run_stream is None:
            return error(404, "no run stream is configured")
        session_id = request.query_params.get("session_id")
        product_id = request.query_params.get("product_id")
        if not session_id or product_id is None:
            return self._bad(422, "session_id and product_id are required")
        # Imported here: the sse extra is needed only by apps given a run stream.
        from autoplay_base.agent_stream.starlette import event_source_response  # noqa: PLC0415

        return event_source_response(
            self.run_stream,
            request.path_params["run_id"],
            session_id=session_id,
            product_id=product_id,
            request=request,
        )

    # -- webhook -------------------------------------------------------------------
    async def webhook(self, request: Request) -> Response:
        """``POST /webhook``: verify, parse, store, and only then acknowledge."""
        verifier = self.verifier
        assert verifier is not None  # the route exists only in push mode
        counters = verifier.counters
        counters.received += 1
        try:
            body = await read_capped(request, verifier.max_body_bytes)
        except BodyTooLargeError:
            counters.rejected_too_large += 1
            logger.warning("bridge: webhook refused: body too large")
            return error(413, "body too large")
        signature = request.headers.get(SIGNATURE_HEADER)
        rejection = verifier.check(body, signature, request.headers.get(TIMESTAMP_HEADER))
        if rejection is not None:
            logger.warning("bridge: webhook refused: %s", rejection.message)
            return error(rejection.status, rejection.message)
        assert signature is not None
        if verifier.is_replay(signature):
            counters.duplicates += 1
            return JSONResponse({"status": "duplicate"})
        event = self._webhook_event(body)
        if isinstance(event, Response):
            return event
        if isinstance(event, UnknownEvent):
            # A type this version does not know (the seed's ``usertour_trigger``, a newer
            # connector's): acknowledged and ignored, as the stream clients ignore it; a
            # refusal would make the sender give up on it (4xx) or retry it for ever (5xx).
            await self.store.add(event)  # counted there: unknown_events_ignored
            verifier.stored(signature)
            counters.ignored += 1
            return JSONResponse({"status": "ignored"})
        try:
            stored = await self.store.add(event)
        except Exception as exc:  # the connector retries: nothing acknowledged is lost
            counters.store_failures += 1
            logger.warning(
                "bridge: webhook event not stored (%s); answered 503", type(exc).__name__
            )
            return JSONResponse(
                {"error": "the event could not be stored; retry"},
                status_code=503,
                headers={"retry-after": "1"},
            )
        verifier.stored(signature)
        if not stored and not event.session_id:  # counted and logged by the store
            counters.ignored += 1
            return JSONResponse({"status": "ignored"})
        if not stored:  # a retry signed anew (a fresh timestamp): the store had the event
            counters.duplicates += 1
            return JSONResponse({"status": "duplicate"})
        counters.accepted += 1
        self.hooks.emit("record_counter", "webhook_accepted", 1)
        return JSONResponse({"status": "stored"})

    def _webhook_event(self, body: bytes) -> Any:
        assert self.verifier is not None
        counters = self.verifier.counters
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            counters.rejected_invalid += 1
            logger.warning("bridge: webhook refused: body is not JSON")
            return error(400, "body is not JSON")
        if not isinstance(data, dict):
            counters.rejected_invalid += 1
            logger.warning("bridge: webhook refused: body is not a JSON object")
            return error(422, "body must be a JSON object")
        try:
            event = decode_object(data, event_id=event_id_for(body))
        except EventDecodeError as exc:
            counters.rejected_invalid += 1
            logger.warning("bridge: webhook body is not a valid event (%s)", exc.reason)
            return error(422, "body is not a valid event")
        return event

    # -- metrics -------------------------------------------------------------------
    def figures(self) -> dict[str, dict[str, object]]:
        """Every counter group, as ``/metrics`` shows them."""
        groups: dict[str, dict[str, object]] = {
            "bridge": {
                **self.counters.as_dict(),
                "stream_connected": int(self.connected),
            },
            "store": dict(self.store.stats()),
        }
        if self.client is not None:
            groups["client"] = {
                **self.client.counters.as_dict(),
                "queue_size": self.client.queue_size,
            }
            self.hooks.emit("record_queue_depth", "stream", self.client.queue_size)
        if self.store.summarizer is not None:
            groups["summarizer"] = dict(self.store.summarizer.counters.as_dict())
        if self.verifier is not None:
            groups["webhook"] = dict(self.verifier.counters.as_dict())
        return groups

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text (API token)."""
        if (refusal := self.refused(request, "api")) is not None:
            return refusal
        return PlainTextResponse(render_prometheus(self.figures()), media_type=CONTENT_TYPE)


async def ambiguous(request: Request, exc: Exception) -> Response:
    """The exception handler of an id known under several products: 409 with their count.

    The count only, never which products (other tenants' ids), as the store's own
    error message does; a ``product_id`` query parameter (or body field) resolves it.
    """
    kind = "user" if isinstance(exc, AmbiguousUserError) else "session"
    count = len(getattr(exc, "product_ids", ()))
    return error(409, f"{kind} id is known under several products: pass product_id", products=count)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (an unknown path, a wrong method) as JSON, like every other."""
    assert isinstance(exc, HTTPException)
    answer = error(exc.status_code, str(exc.detail))
    answer.headers.update(exc.headers or {})  # 405's Allow
    return answer


async def store_failed(request: Request, exc: Exception) -> Response:
    """The exception handler of a backend failure on any route: 503, so callers retry."""
    logger.warning(
        "bridge: %s %s: the store failed (%s)", request.method, request.url.path, type(exc).__name__
    )
    return error(503, "the store is unavailable; retry")
