"""A hand-written, hostile SSE server on a free 127.0.0.1 port, with byte-level control.

The emulator speaks correct SSE through a real ASGI stack; to test what a
*broken or malicious* server can do (any status, any bytes, a trickle, a close
at any point) we need a server that does exactly what the test says and
nothing else, so this one is a plain socket server with a thread per
connection. It speaks just enough HTTP/1.1: it reads one request's headers,
records them, and hands the connection to the test's ``handler``, which writes
the status line, headers and body it likes (``Connection: close``, body until
EOF, so no framing gets in the way).

Usage::

    def handler(conn: HostileConnection) -> None:
        conn.respond(200)
        conn.send(b"retry: 99999999999999999999\\n\\n")
        if conn.request.index > 0:
            conn.hold()          # keep the stream open until the client leaves

    with HostileServer(handler) as server:
        ...  # connect a client to server.url
        assert server.wait_requests(2)
        server.requests[1].headers["last-event-id"]
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["HostileConnection", "HostileServer", "RecordedRequest", "sse_frame"]

_MAX_HEADER_BYTES = 64 * 1024
_LINGER_ZERO = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server read it (header names lower-cased)."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    at: float = field(compare=False)  # time.monotonic() when its headers were read


def sse_frame(data: str | bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame (``event:``, ``id:``, ``data:`` lines and the blank line)."""
    raw = data.encode() if isinstance(data, str) else data
    lines = []
    if event is not None:
        lines.append(b"event: " + event.encode())
    if id is not None:
        lines.append(b"id: " + id.encode("utf-8", "surrogateescape"))
    lines.append(b"data: " + raw)
    return b"\n".join(lines) + b"\n\n"


class HostileConnection:
    """The server side of one accepted connection, driven by the test's handler."""

    def __init__(self, sock: socket.socket, request: RecordedRequest, closing: threading.Event):
        self.sock = sock
        self.request = request
        self.closing = closing

    def respond(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Send the status line and headers (an event stream unless ``headers`` says otherwise)."""
        merged = {"content-type": "text/event-stream", "cache-control": "no-store"}
        merged.update(headers or {})
        merged["connection"] = "close"
        head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in merged.items()
        )
        self.send((head + "\r\n").encode("latin-1"))

    def send(self, data: bytes) -> bool:
        """Write ``data``; ``False`` once the client has gone (or the server is closing)."""
        if self.closing.is_set():
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def trickle(self, data: bytes, *, interval: float, limit: float = 30.0) -> None:
        """Send ``data`` one byte every ``interval`` seconds (repeating) until the client leaves."""
        deadline = time.monotonic() + limit
        i = 0
        while time.monotonic() < deadline:
            if not self.send(data[i % len(data) : i % len(data) + 1]):
                return
            i += 1
            if self.closing.wait(interval):  # pacing, and an early exit at teardown
                return

    def hold(self, limit: float = 30.0) -> None:
        """Keep the connection open until the client closes it or the server shuts down."""
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + limit
        while not self.closing.is_set() and time.monotonic() < deadline:
            try:
                if not self.sock.recv(4096):
                    return  # the client closed its side
            except TimeoutError:
                continue
            except OSError:
                return

    def abort(self) -> None:
        """Reset the connection (RST) instead of a clean close."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        with contextlib.suppress(OSError):
            self.sock.close()


Handler = Callable[[HostileConnection], None]


class HostileServer:
    """A threaded socket server; ``handler(conn)`` decides everything after the request.

    After the handler returns, the connection is closed cleanly (FIN).
    ``requests`` lists every request in arrival order; ``wait_requests(n)``
    blocks until ``n`` have arrived (``False`` on timeout).
    """

    def __init__(self, handler: Handler, *, path: str = "/stream/acme") -> None:
        self.handler = handler
        self.path = path
        self.requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    @property
    def url(self) -> str:
        """The stream URL to give a client."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, cut every open connection and join every thread."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._cond:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` requests have arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with self._cond:
            self._socks.add(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = self._read_request(sock)
            if request is None:
                return
            try:
                self.handler(HostileConnection(sock, request, self._closing))
            except Exception as exc:  # surfaced by tests that look; never kills the server
                self.handler_errors.append(exc)
        finally:
            with self._cond:
                self._socks.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                sock.close()

    def _read_request(self, sock: socket.socket) -> RecordedRequest | None:
        raw = b""
        sock.settimeout(5)
        while b"\r\n\r\n" not in raw:
            try:
                chunk = sock.recv(4096)
            except OSError:
                return None
            if not chunk or len(raw) > _MAX_HEADER_BYTES:
                return None
            raw += chunk
        sock.settimeout(None)
        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        with self._cond:
            recorded = RecordedRequest(len(self.requests), method, path, headers, time.monotonic())
            self.requests.append(recorded)
            self._cond.notify_all()
        return recorded
