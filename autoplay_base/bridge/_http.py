"""HTTP plumbing of the bridge: bearer checks, capped body reads, fixed-text errors.

Error bodies are ``{"error": <fixed text>}`` and never quote what the request
sent (ids, tokens, bodies): a request can only learn *that* it was refused.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from autoplay_base._secret import Secret

__all__ = ["BodyTooLargeError", "error", "presented_token", "read_capped", "token_matches"]


class BodyTooLargeError(Exception):
    """The body is over its cap (answered 413)."""


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A JSON error answer with a fixed message."""
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def presented_token(request: Request) -> str | None:
    """The bearer token of the request, ``None`` when there is none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def token_matches(presented: str, token: Secret | None) -> bool:
    """Constant-time comparison (as bytes: ``compare_digest`` refuses non-ASCII str)."""
    if token is None or not token:
        return False
    given = presented.encode("utf-8", "replace")
    return hmac.compare_digest(given, token.reveal().encode("utf-8"))


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused (:class:`BodyTooLargeError`) as soon as it passes ``max_bytes``.

    A ``Content-Length`` over the cap is refused before a byte is read; a chunked
    body is counted while it streams, so an oversized one is never buffered whole.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)
