"""Fixtures of the bridge tests: a bridge app served by uvicorn on a free loopback port.

``serve(app)`` starts uvicorn on its own thread (its own event loop, as in a
deployment) and returns a :class:`Served` with the base URL; every server is shut
down at teardown. Tests talk to it with ``httpx`` only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from autoplay_base.bridge import sign
from tests._fixtures.redis import free_port

API = "api-token-0123456789"
ADMIN = "admin-token-9876543210"
SECRET = "webhook-secret-abcdef"
START_TIMEOUT = 10.0


class Served:
    """One uvicorn server on a thread (see the module docstring)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)  # polling a condition with a deadline (uvicorn has no event)
        return self

    def stop(self) -> float:
        """Shut down; the seconds it took (lifespan shutdown included)."""
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"
        return time.monotonic() - started


@pytest.fixture
def serve() -> Iterator[Callable[[Starlette], Served]]:
    """Start bridge apps under uvicorn; all are stopped at teardown."""
    started: list[Served] = []

    def start(app: Starlette) -> Served:
        served = Served(app).start()
        started.append(served)
        return served

    yield start
    for served in started:
        if served.thread.is_alive():
            served.stop()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"authorization": f"Bearer {token}"}


def actions_event(
    session_id: str,
    *descriptions: str,
    product_id: str = "acme",
    user_id: str = "u1",
    forwarded_at: float = 1_700_000_000.0,
) -> dict[str, Any]:
    """An ``actions`` event as the connector sends it."""
    return {
        "type": "actions",
        "product_id": product_id,
        "session_id": session_id,
        "user_id": user_id,
        "forwarded_at": forwarded_at,
        "actions": [
            {"title": d, "description": d, "canonical_url": f"https://app.test/{n}"}
            for n, d in enumerate(descriptions)
        ],
        "count": len(descriptions),
    }


def signed(
    event: dict[str, Any] | bytes, *, secret: str = SECRET, timestamp: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A delivery's body and headers, signed (timestamped when ``timestamp`` is given)."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {
        "content-type": "application/json",
        "x-connector-signature": sign(secret, body, timestamp),
    }
    if timestamp is not None:
        headers["x-connector-timestamp"] = timestamp
    return body, headers
