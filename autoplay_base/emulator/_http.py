"""The little HTTP/1.1 the emulator speaks: parse a request head, answer, write chunks.

Written by hand rather than taken from a web framework so the ``emulator``
extra stays empty; it only ever needs ``GET`` heads, short plain-text answers
and a chunked event stream (so a client can tell a clean end of stream, the
terminating chunk, from a cut connection).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = [
    "MAX_REQUEST_HEAD",
    "STREAM_HEAD",
    "Request",
    "chunk",
    "end_chunks",
    "parse_head",
    "respond",
]

MAX_REQUEST_HEAD = 64 * 1024
"""Bytes a request line and its headers may take (the reader's limit)."""

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    b"X-Accel-Buffering: no\r\n\r\n"
)
"""The head of an event stream response."""

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Request:
    """A request head: method, path without query, headers with lower-case names."""

    method: str
    path: str
    headers: dict[str, str]


def parse_head(head: bytes) -> Request | None:
    """The request in ``head`` (up to and including the blank line); ``None`` if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], headers)


async def respond(writer: asyncio.StreamWriter, status: int, body: str) -> None:
    """A complete plain-text answer; the connection closes after it."""
    payload = body.encode()
    reason = REASONS.get(status, "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


def chunk(writer: asyncio.StreamWriter, body: bytes) -> None:
    """Queue ``body`` as one chunk of a chunked response (the caller drains)."""
    writer.write(b"%x\r\n%s\r\n" % (len(body), body))


def end_chunks(writer: asyncio.StreamWriter) -> None:
    """Queue the terminating chunk: a clean end of the stream."""
    writer.write(b"0\r\n\r\n")
