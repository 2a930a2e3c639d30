"""The ``autoplay-live`` command: ``autoplay-live emulator …`` and ``autoplay-live demo``.

``autoplay-live emulator`` serves the connector emulator until interrupted::

    autoplay-live emulator --port 8765 --product demo --script all --speed 5
    autoplay-live emulator --product demo --load --sessions 50 --rate 2000
    autoplay-live emulator --token s3cret --close-every 500 --fail-first 3

The first line printed is ``emulator: serving <url>`` (with the real port when
``--port 0``), so scripts can read where to connect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from autoplay_base.emulator import EmulatorServer, Faults, list_scripts

__all__ = ["build_parser", "main"]

TOKEN_ENV_VAR = "AUTOPLAY_EMULATOR_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoplay-live``."""
    parser = argparse.ArgumentParser(prog="autoplay-live", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("emulator", help="serve the SSE connector emulator")
    emulator.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
    emulator.add_argument("--port", type=int, default=8765, help="port (0: pick a free one)")
    emulator.add_argument(
        "--product", action="append", help="product id to serve (repeatable; default: demo)"
    )
    emulator.add_argument(
        "--script",
        action="append",
        help=f"scripted session to play: {', '.join(list_scripts())}, a .jsonl path, or 'all'",
    )
    emulator.add_argument("--speed", type=float, default=1.0, help="script pace multiplier")
    emulator.add_argument("--repeat", type=int, default=1, help="script passes (0: forever)")
    emulator.add_argument("--load", action="store_true", help="publish synthetic load")
    emulator.add_argument("--sessions", type=int, default=10, help="load: sessions")
    emulator.add_argument("--rate", type=float, default=100.0, help="load: events/s (0: max)")
    emulator.add_argument("--total", type=int, help="load: stop after this many events")
    emulator.add_argument("--duration", type=float, help="load: stop after this many seconds")
    emulator.add_argument(
        "--wait-for-client", action="store_true", help="load: start once a client is connected"
    )
    emulator.add_argument(
        "--token", help=f"require this bearer token (default: ${TOKEN_ENV_VAR}, else none)"
    )
    emulator.add_argument("--heartbeat", type=float, default=15.0, help="heartbeat seconds")
    emulator.add_argument("--retry-ms", type=int, help="send this retry: hint")
    emulator.add_argument("--replay-size", type=int, default=10_000, help="replay ring size")
    emulator.add_argument(
        "--replay-from-start",
        action="store_true",
        help="new streams without Last-Event-ID start at the oldest buffered frame",
    )
    emulator.add_argument("--close-every", type=int, help="fault: end streams every K frames")
    emulator.add_argument(
        "--close-mode", choices=["clean", "abort"], default="clean", help="fault: how to end"
    )
    emulator.add_argument("--fail-first", type=int, default=0, help="fault: 503 the first N")
    emulator.add_argument(
        "--malformed-every", type=int, help="fault: a bad frame after every K load events"
    )
    emulator.add_argument("-v", "--verbose", action="store_true", help="log requests")

    demo = commands.add_parser(
        "demo",
        help="show live context changing a RAG answer (offline, no API key)",
        description="Plays scripted Flowdesk users through the emulator into a ContextStore and "
        "asks the same ambiguous questions of a plain BM25 retriever and of AutoplayRetriever. "
        "Set OPENAI_API_KEY (with langchain-openai installed) to generate answers too.",
    )
    demo.add_argument("--product", default="demo", help="product id (default: demo)")
    demo.add_argument(
        "--speed", type=float, default=20.0, help="script pace multiplier (0: as fast as possible)"
    )
    demo.add_argument(
        "--question",
        action="append",
        help="a question to ask every user (repeatable; default: two ambiguous ones)",
    )
    demo.add_argument(
        "--script",
        action="append",
        choices=list_scripts(),
        help="scripted user to play (repeatable; default: all)",
    )
    demo.add_argument("--redis", metavar="URL", help="keep context in Redis at URL")
    demo.add_argument("--no-prompts", action="store_true", help="do not print the prompts")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from autoplay_base.demo.app import DEMO_QUESTIONS, DemoOptions, run_demo  # noqa: PLC0415

    options = DemoOptions(
        product=args.product,
        speed=args.speed,
        questions=args.question or DEMO_QUESTIONS,
        scripts=args.script or list_scripts(),
        redis_url=args.redis,
        show_prompts=not args.no_prompts,
    )
    return run_demo(options)


async def _serve(args: argparse.Namespace) -> int:
    products = args.product or ["demo"]
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV_VAR) or None
    faults = Faults(
        close_every=args.close_every, close_mode=args.close_mode, fail_next=args.fail_first
    )
    server = EmulatorServer(
        host=args.host,
        port=args.port,
        products=products,
        token=token,
        heartbeat_interval=args.heartbeat if args.heartbeat > 0 else None,
        retry_ms=args.retry_ms,
        replay_size=args.replay_size,
        faults=faults,
        replay_from_start=args.replay_from_start,
    )
    async with server:
        for product in products:
            print(f"emulator: serving {server.url_for(product)}", flush=True)
        jobs = []
        scripts = args.script or []
        if "all" in scripts:
            scripts = list_scripts()
        for product in products:
            for script in scripts:
                jobs.append(server.play(product, script, speed=args.speed, repeat=args.repeat))
            if args.load:
                jobs.append(
                    server.load(
                        product,
                        sessions=args.sessions,
                        rate=args.rate,
                        total=args.total,
                        duration=args.duration,
                        malformed_every=args.malformed_every,
                        wait_for_client=args.wait_for_client,
                    )
                )
        for job in jobs:
            published = await asyncio.wrap_future(job)
            print(f"emulator: published {published} events", flush=True)
        await asyncio.Event().wait()  # serve until interrupted
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoplay-live``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
