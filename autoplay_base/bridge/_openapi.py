"""The OpenAPI 3.1 description of the bridge, written by hand (a handful of routes)."""

from __future__ import annotations

from typing import Any

from autoplay_base._version import __version__

__all__ = ["openapi_document"]

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_API: list[dict[str, list[str]]] = [{"api": []}]
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]


def _param(name: str, where: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string"}}


def _op(
    summary: str, security: list[Any] | None, *params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {"200": {"description": "ok"}, "4XX": _ERROR, "5XX": _ERROR},
    }
    if security is not None:
        op["security"] = security
    op.update(extra)
    return op


def openapi_document(*, push: bool, runs: bool) -> dict[str, Any]:
    """The document ``/openapi.json`` serves (only the routes this app has)."""
    product = _param("product_id", "query", required=False)
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("liveness", [])},
        "/readyz": {"get": _op("readiness: stream connected, backend reachable (503 if not)", [])},
        "/context/{user_id}": {
            "get": _op("the user's recent context", _API, _param("user_id", "path"), product)
        },
        "/sessions/{session_id}/context": {
            "get": _op("one session's context", _API, _param("session_id", "path"), product)
        },
        "/reply/{user_id}": {
            "post": _op(
                "answer the user's message with their live context",
                _API,
                _param("user_id", "path"),
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Reply"}}
                    },
                },
            )
        },
        "/metrics": {"get": _op("Prometheus text", _API)},
        "/admin/reset/{user_id}": {
            "post": _op(
                "forget the user's sessions and conversation",
                _ADMIN,
                _param("user_id", "path"),
                product,
            )
        },
        "/admin/sessions/{session_id}/reset": {
            "post": _op("forget one session", _ADMIN, _param("session_id", "path"), product)
        },
    }
    if runs:
        paths["/runs/{run_id}/events"] = {
            "get": _op(
                "a run's events as Server-Sent Events (resumes after Last-Event-ID)",
                _API,
                _param("run_id", "path"),
                _param("session_id", "query"),
                _param("product_id", "query"),
                _param("Last-Event-ID", "header", required=False),
            )
        }
    if push:
        paths["/webhook"] = {
            "post": _op(
                "push delivery of one event, HMAC-SHA256 signed",
                [],
                _param("X-Connector-Signature", "header"),
                _param("X-Connector-Timestamp", "header", required=False),
            )
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "autoplay-live chatbot bridge", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "api": {"type": "http", "scheme": "bearer"},
                "admin": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Reply": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "product_id": {"type": "string"},
                        "knowledge": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["message"],
                },
            },
        },
    }
