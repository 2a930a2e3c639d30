"""The chatbot bridge over HTTP, side by side with autoplay-sdk's ``build_copilot_app``.

Two servers, each in a process of its own under uvicorn on a loopback port, hold
the same data: ``USERS`` users with one session of ``ACTIONS`` actions each,
loaded straight into each one's store before it serves (ours:
``AsyncContextStore.add`` under ``build_app(store=...)``; theirs: its pipeline's
context store and its user index, the two things its stream callback fills). The
published bridge's lifespan only starts its connector client, so it is served
with ``lifespan="off"``; ours runs in push mode (no client either).

One load client (this process: ``CONCURRENCY`` keep-alive connections, one
request in flight on each; see :class:`Connection` for why not httpx) sends ``REQUESTS`` ``GET
/context/{user_id}?query=…`` requests spread over all the users, to each server
in turn. Ours carries the bearer token; autoplay-sdk's bridge has no
authentication at all (and requires ``query``, which ours ignores), so ours does
the constant-time token check on every request and theirs does not.

Figures:

* ``context route p50/p99``: per-request latency under that concurrency, after a
  warm-up (the first 10 % are not counted), and the request rate;
* ``webhook ingest rate``: ``WEBHOOK_DELIVERIES`` signed deliveries (HMAC-SHA256
  over the raw body, the published connector's scheme), ``CONCURRENCY`` in
  flight, each a new event stored before it is acknowledged. autoplay-sdk's
  bridge has no webhook route (its ``WebhookReceiver`` is a helper for an app of
  your own), so this row has no peer figure;
* ``bridge RSS`` (``VmRSS`` of the server process) after the whole request run,
  and ``RSS end ÷ half-way``: the growth over the run's second half (1.00 is
  flat; memory must not grow with the number of requests once every user was
  read).

Every request must answer 200, and both servers' context of one user must hold
all of its actions (checked; the two format an action slightly differently, so
their lengths are in ``details``). Full run: under three minutes on a 2-core
machine (estimated from the smoke run, 7 s: about 2,500 requests/s for ours
and 1,200 for autoplay-sdk on a busy machine, plus loading, plus 20,000
deliveries at about 1,700/s). ``BENCH_SMOKE=1``: seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import actions_event, emit, figure, percentiles, size

USERS = size(10_000, 200)
ACTIONS = 10
REQUESTS = size(100_000, 2_000)
CONCURRENCY = 200
WEBHOOK_DELIVERIES = size(20_000, 400)
WARMUP = REQUESTS // 10
PRODUCT = "bench"
TOKEN = "bench-api-token-0123456789"
ADMIN = "bench-admin-token-9876543210"
SECRET = "bench-webhook-secret-abcdef"
START_TIMEOUT = 120.0
PEER = "autoplay-sdk[serve] 0.13.0"
HERE = Path(__file__).resolve().parent


# -- the servers (each runs in its own process: ``bench_bridge.py --serve ours|theirs``) ----
def events(at: float) -> list[dict[str, Any]]:
    """The same users, sessions and actions for both servers."""
    rng = random.Random(7)
    return [actions_event(PRODUCT, f"s{n}", 0, ACTIONS, rng, at=at) for n in range(USERS)]


async def ours_app() -> Any:
    from autoplay_base.bridge import build_app
    from autoplay_base.context_store import AsyncContextStore

    store = AsyncContextStore()
    for raw in events(time.time()):
        await store.add(raw)
    return build_app(store=store, api_token=TOKEN, admin_token=ADMIN, webhook_secret=SECRET)


async def theirs_app() -> Any:
    from autoplay_sdk.api.fastapi import build_copilot_app
    from autoplay_sdk.core.models import ActionsPayload

    async def llm(prompt: str) -> str:
        return ""

    # A summary threshold no run reaches: the figures are the route's, not an LLM's.
    app = build_copilot_app(
        stream_url="http://127.0.0.1:9/unused", token="unused", llm=llm, summary_threshold=10**9
    )
    # forwarded_at is now: the published store drops actions older than its 300 s lookback.
    for raw in events(time.time()):
        payload = ActionsPayload.from_dict(raw)
        await app.state.pipeline.context_store.add(payload)
        app.state.user_index.add(payload)
    return app


def serve(which: str, port: int) -> None:
    import uvicorn

    async def main() -> None:
        app = await (ours_app() if which == "ours" else theirs_app())
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on" if which == "ours" else "off",
            backlog=4096,
            timeout_keep_alive=600,  # the load client's connections idle while RSS is read
        )
        await uvicorn.Server(config).serve()

    asyncio.run(main())


class Server:
    """One bridge in a child process (``--serve``), stopped on exit."""

    def __init__(self, which: str) -> None:
        self.which = which
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", which, str(self.port)],
            cwd=HERE,
            env={**os.environ},
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process.poll() is None, f"{self.which} bridge exited during start-up"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.which} bridge did not start"
            time.sleep(0.05)  # polling a condition with a deadline (the loading takes a while)

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 2)
        raise RuntimeError("no VmRSS in /proc/<pid>/status")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the load client ------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection: a request out, its response (status, body) back.

    Written here rather than using ``httpx.AsyncClient``: at 200 connections httpx's
    pool spends more CPU per request than either server does (it found about 150
    requests/s on this machine where a bare connection does thousands), so the figures
    would measure the client. This sends the same bytes and reads the
    ``Content-Length`` body; every answer must be 200.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes = b"") -> bytes:
        self.writer.write(head + body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = header[9:12]
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {payload[:200]!r}")
        return payload

    def close(self) -> None:
        self.writer.close()


def get_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "host: 127.0.0.1",
        f"content-length: {length}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def load(
    connections: list[Connection],
    first: int,
    count: int,
    request: Callable[[int], tuple[bytes, bytes]],
) -> tuple[list[int], float]:
    """``count`` requests numbered from ``first``, one in flight per connection: latencies, s."""
    latencies: list[int] = []
    numbers = iter(range(first, first + count))

    async def worker(connection: Connection) -> None:
        for n in numbers:
            head, body = request(n)
            started = time.perf_counter_ns()
            await connection.request(head, body)
            latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    return latencies, time.perf_counter() - started


def auth(server: Server) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"} if server.which == "ours" else {}


async def connect(server: Server) -> list[Connection]:
    return [await Connection.open(server.port) for _ in range(CONCURRENCY)]


async def context_run(server: Server) -> dict[str, Any]:
    """The context route under load, with RSS after warm-up, half-way and at the end."""
    connections = await connect(server)
    heads = [get_head(f"/context/usr_s{n}?query=help", auth(server)) for n in range(USERS)]

    def get(n: int) -> tuple[bytes, bytes]:
        return heads[n % USERS], b""

    try:
        await load(connections, 0, WARMUP, get)
        rss = {"warm": server.rss_mib()}
        half = REQUESTS // 2
        first, first_s = await load(connections, WARMUP, half - WARMUP, get)
        rss["half"] = server.rss_mib()
        second, second_s = await load(connections, half, REQUESTS - half, get)
        rss["end"] = server.rss_mib()
        sample = json.loads(await connections[0].request(heads[0]))
    finally:
        for connection in connections:
            connection.close()
    measured = first + second
    return {
        **percentiles(measured),
        "rate": round(len(measured) / (first_s + second_s), 1),
        "rss": rss,
        "context": sample["context"],
    }


async def webhook_run(server: Server) -> float:
    """Signed deliveries per second, each a new event the store accepted (200 ``stored``)."""
    from autoplay_base.bridge import sign

    rng = random.Random(11)
    bodies = [
        json.dumps(actions_event(PRODUCT, f"w{n}", 0, 1, rng, at=time.time())).encode()
        for n in range(WEBHOOK_DELIVERIES)
    ]
    heads = [
        post_head(
            "/webhook",
            {"content-type": "application/json", "x-connector-signature": sign(SECRET, body)},
            len(body),
        )
        for body in bodies
    ]
    connections = await connect(server)
    try:
        _, seconds = await load(connections, 0, WEBHOOK_DELIVERIES, lambda n: (heads[n], bodies[n]))
    finally:
        for connection in connections:
            connection.close()
    return round(WEBHOOK_DELIVERIES / seconds, 1)


def main() -> None:
    with Server("ours") as ours:
        mine = asyncio.run(context_run(ours))
        ingest = asyncio.run(webhook_run(ours))
        stored = httpx.get(f"{ours.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    with Server("theirs") as theirs:
        peer = asyncio.run(context_run(theirs))
    accepted = next(
        float(line.split()[1])
        for line in stored.splitlines()
        if line.startswith("autoplay_webhook_accepted_total ")
    )
    assert accepted == WEBHOOK_DELIVERIES, f"{accepted} of {WEBHOOK_DELIVERIES} deliveries stored"
    configuration = (
        f"{USERS:,} users x 1 session x {ACTIONS} actions; {REQUESTS:,} GET /context requests, "
        f"{CONCURRENCY} concurrent (first {WARMUP:,} warm-up); ours with its bearer token, "
        "autoplay-sdk's bridge has no auth"
    )
    for name, run in (("ours", mine), ("autoplay-sdk", peer)):
        missing = [k for k in range(ACTIONS) if f"(step {k})" not in run["context"]]
        assert not missing, f"{name}: the context lacks actions {missing}"
    growth = (mine["rss"]["end"] / mine["rss"]["half"], peer["rss"]["end"] / peer["rss"]["half"])
    rows = [
        figure(
            "context route p50", configuration, unit="µs", ours=mine["p50_us"], peer=peer["p50_us"]
        ),
        figure(
            "context route p99", configuration, unit="µs", ours=mine["p99_us"], peer=peer["p99_us"]
        ),
        figure(
            "context route rate",
            configuration,
            unit="requests/s",
            better="higher",
            ours=mine["rate"],
            peer=peer["rate"],
        ),
        figure(
            "webhook ingest rate",
            f"{WEBHOOK_DELIVERIES:,} signed deliveries (HMAC over the body), {CONCURRENCY} "
            "concurrent; autoplay-sdk's bridge has no webhook route",
            unit="events/s",
            better="higher",
            ours=ingest,
        ),
        figure(
            "bridge RSS after the request run",
            configuration,
            unit="MiB",
            ours=mine["rss"]["end"],
            peer=peer["rss"]["end"],
        ),
        figure(
            "RSS end / half-way (1.00 = flat)",
            configuration,
            unit="x",
            ours=round(growth[0], 3),
            peer=round(growth[1], 3),
        ),
    ]
    emit(
        "bench_bridge",
        rows,
        peer=PEER,
        rss_mib={"ours": mine["rss"], "autoplay-sdk": peer["rss"]},
        context_chars={"ours": len(mine["context"]), "autoplay-sdk": len(peer["context"])},
        webhook_deliveries_stored=int(accepted),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("WHICH", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
    else:
        main()
