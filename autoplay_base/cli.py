"""The ``autoplay-live`` command: ``autoplay-live emulator …``, ``demo`` and ``serve``.

``autoplay-live emulator`` serves the connector emulator until interrupted::

    autoplay-live emulator --port 8765 --product demo --script all --speed 5
    autoplay-live emulator --product demo --load --sessions 50 --rate 2000
    autoplay-live emulator --token s3cret --close-every 500 --fail-first 3

The first line printed is ``emulator: serving <url>`` (with the real port when
``--port 0``), so scripts can read where to connect. Push mode also POSTs every
event as a signed webhook (secret from ``--webhook-secret`` or
``$AUTOPLAY_EMULATOR_WEBHOOK_SECRET``; without one: one line on stderr, status 2)::

    autoplay-live emulator --script all --push-url http://127.0.0.1:8080/webhook \\
        --push-duplicate-every 5 --push-bad-signature-every 7

Scripts play once, at start-up, at their recorded pace; a client that connects
later (your chatbot, started after the emulator) still gets every scripted
event: while scripts are played, a new stream without ``Last-Event-ID`` starts
at the oldest buffered frame and then goes on live (``--no-replay-from-start``
turns that off). We chose the replay over playing at the first subscriber or
looping: every client, first or fifth, early or late, sees the same sessions
under the same ids, the first line's contract (``published N events``) keeps
its meaning, and a reconnecting client still resumes exactly by its
``Last-Event-ID``.

``autoplay-live serve`` runs the chatbot bridge (:func:`autoplay_base.bridge.build_app`)
under uvicorn (the ``serve`` extra)::

    export AUTOPLAY_BRIDGE_API_TOKEN=... AUTOPLAY_BRIDGE_ADMIN_TOKEN=...
    autoplay-live serve --connector-url https://connector/stream/acme --redis-url redis://...

Tokens and the webhook secret are read from environment variables named by
``--api-token-env`` / ``--admin-token-env`` / ``--webhook-secret-env`` /
``--connector-token-env``, never from the command line (``ps`` would show them).
A configuration the bridge refuses (no API token, push mode without a secret)
prints one line on stderr and exits with status 2.

``autoplay-live demo`` needs the ``demo`` extra; without it the command prints
one line on stderr saying what to install and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from autoplay_base._secret import TOKEN_ENV_VAR
from autoplay_base.demo import DEFAULT_DEMO_PRODUCT, DEFAULT_DEMO_SPEED, DEMO_QUESTIONS
from autoplay_base.emulator import (
    DEFAULT_COMMAND_PORT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOST,
    DEFAULT_LOAD_RATE,
    DEFAULT_LOAD_SESSIONS,
    DEFAULT_PRODUCTS,
    DEFAULT_REPEAT,
    DEFAULT_REPLAY_SIZE,
    DEFAULT_SPEED,
    EMULATOR_TOKEN_ENV_VAR,
    EMULATOR_WEBHOOK_SECRET_ENV_VAR,
    Faults,
    PushFaults,
    list_scripts,
)
from autoplay_base.emulator._types import CLOSE_MODES
from autoplay_base.errors import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from autoplay_base.emulator.server import EmulatorServer

__all__ = ["bridge_app", "build_parser", "main"]

DESCRIPTION = "autoplay-live: the connector emulator, the offline demo and the chatbot bridge."
"""``--help``'s description: plain text (the module docstring is reStructuredText)."""
MISSING_EXTRA_STATUS = 2
"""Exit status of ``autoplay-live demo`` when the ``demo`` extra is not installed."""
CONFIG_ERROR_STATUS = 2
"""Exit status of ``autoplay-live serve`` (``emulator``) when the bridge (the emulator)
refuses its configuration."""
BRIDGE_DEFAULT_PORT = 8080
API_TOKEN_ENV_VAR = "AUTOPLAY_BRIDGE_API_TOKEN"
ADMIN_TOKEN_ENV_VAR = "AUTOPLAY_BRIDGE_ADMIN_TOKEN"
WEBHOOK_SECRET_ENV_VAR = "AUTOPLAY_BRIDGE_WEBHOOK_SECRET"

# Every default below is the one of the class or function the option configures,
# imported rather than repeated, so ``--help`` and the API cannot disagree.


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``autoplay-live``."""
    parser = argparse.ArgumentParser(prog="autoplay-live", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("emulator", help="serve the SSE connector emulator")
    emulator.add_argument("--host", default=DEFAULT_HOST, help="interface (default: loopback)")
    emulator.add_argument(
        "--port", type=int, default=DEFAULT_COMMAND_PORT, help="port (0: pick a free one)"
    )
    emulator.add_argument(
        "--product",
        action="append",
        help=f"product id to serve (repeatable; default: {', '.join(DEFAULT_PRODUCTS)})",
    )
    emulator.add_argument(
        "--script",
        action="append",
        help=f"scripted session to play: {', '.join(list_scripts())}, a .jsonl path, or 'all'",
    )
    emulator.add_argument(
        "--speed", type=float, default=DEFAULT_SPEED, help="script pace multiplier"
    )
    emulator.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, help="script passes (0: forever)"
    )
    emulator.add_argument("--load", action="store_true", help="publish synthetic load")
    emulator.add_argument(
        "--sessions", type=int, default=DEFAULT_LOAD_SESSIONS, help="load: sessions"
    )
    emulator.add_argument(
        "--rate", type=float, default=DEFAULT_LOAD_RATE, help="load: events/s (0: max)"
    )
    emulator.add_argument("--total", type=int, help="load: stop after this many events")
    emulator.add_argument("--duration", type=float, help="load: stop after this many seconds")
    emulator.add_argument(
        "--wait-for-client", action="store_true", help="load: start once a client is connected"
    )
    emulator.add_argument(
        "--token",
        help=f"require this bearer token (default: ${EMULATOR_TOKEN_ENV_VAR}, else none)",
    )
    emulator.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        help="heartbeat seconds (0: none)",
    )
    emulator.add_argument("--retry-ms", type=int, help="send this retry: hint")
    emulator.add_argument(
        "--replay-size", type=int, default=DEFAULT_REPLAY_SIZE, help="replay ring size"
    )
    emulator.add_argument(
        "--replay-from-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="new streams without Last-Event-ID start at the oldest buffered frame "
        "(default: on while scripts are played, so a client that connects late gets them)",
    )
    emulator.add_argument("--close-every", type=int, help="fault: end streams every K frames")
    emulator.add_argument(
        "--close-mode", choices=CLOSE_MODES, default=Faults.close_mode, help="fault: how to end"
    )
    emulator.add_argument(
        "--fail-first",
        type=int,
        default=Faults.fail_next,
        help=f"fault: {Faults.fail_status} the first N",
    )
    emulator.add_argument(
        "--malformed-every", type=int, help="fault: a bad frame after every K load events"
    )
    emulator.add_argument(
        "--push-url", help="push mode: also POST every event as a signed webhook to this URL"
    )
    emulator.add_argument(
        "--webhook-secret",
        help=f"push mode's HMAC secret (default: ${EMULATOR_WEBHOOK_SECRET_ENV_VAR})",
    )
    emulator.add_argument(
        "--push-plain",
        action="store_true",
        help="push: sign the body alone (no X-Connector-Timestamp)",
    )
    emulator.add_argument(
        "--push-duplicate-every", type=int, help="push fault: deliver every Kth event twice"
    )
    emulator.add_argument(
        "--push-bad-signature-every",
        type=int,
        help="push fault: send every Kth event first with a wrong signature",
    )
    emulator.add_argument(
        "--push-stale-every",
        type=int,
        help="push fault: send every Kth event first with a stale timestamp",
    )
    emulator.add_argument("-v", "--verbose", action="store_true", help="log requests")

    demo = commands.add_parser(
        "demo",
        help="show live context changing a RAG answer (offline, no API key)",
        description="Plays scripted Flowdesk users through the emulator into a ContextStore and "
        "asks the same ambiguous questions of a plain BM25 retriever and of AutoplayRetriever. "
        "Set OPENAI_API_KEY (with langchain-openai installed) to generate answers too.",
    )
    demo.add_argument(
        "--product",
        default=DEFAULT_DEMO_PRODUCT,
        help=f"product id (default: {DEFAULT_DEMO_PRODUCT})",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=DEFAULT_DEMO_SPEED,
        help="script pace multiplier (0: as fast as possible)",
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
    demo.add_argument(
        "--verbose",
        action="store_true",
        help="also print each user's full live context and the prompt a chat model would get",
    )
    demo.add_argument(
        "--no-prompts", action="store_true", help="with --verbose: do not print the prompts"
    )
    _add_serve(commands)
    return parser


SERVE_ROUTES = """\
routes:
  GET  /healthz, /readyz, /openapi.json    no token
  GET  /context/{user_id}                  API token (?product_id=)
  GET  /sessions/{session_id}/context      API token (?product_id=)
  POST /reply/{user_id}                    API token, {"message": ...} (503 here:
                                           the CLI configures no LLM)
  GET  /runs/{run_id}/events               API token (404 here: no run stream)
  GET  /metrics                            API token (Prometheus text)
  POST /admin/reset/{user_id}              admin token (?product_id=)
  POST /admin/sessions/{session_id}/reset  admin token (?product_id=)
  POST /webhook                            X-Connector-Signature (push mode)

"""

SERVE_EPILOG = (
    f"""\
environment variables (rename them with the --*-env options):
  {API_TOKEN_ENV_VAR:<31} bearer token of the API routes (required
  {"":<31} unless --insecure-no-auth)
  {ADMIN_TOKEN_ENV_VAR:<31} bearer token of /admin/* (must differ; unset:
  {"":<31} the admin routes refuse every request)
  {WEBHOOK_SECRET_ENV_VAR:<31} HMAC secret of POST /webhook (set: push mode)
  {TOKEN_ENV_VAR:<31} the connector's token (pull mode)

"""
    + SERVE_ROUTES
    + f"""example:
  export {API_TOKEN_ENV_VAR}=$(openssl rand -hex 24)
  export {ADMIN_TOKEN_ENV_VAR}=$(openssl rand -hex 24)
  export {WEBHOOK_SECRET_ENV_VAR}=$(openssl rand -hex 24)
  autoplay-live serve --redis-url redis://127.0.0.1:6379/0 --port {BRIDGE_DEFAULT_PORT}
  curl -H "Authorization: Bearer ${API_TOKEN_ENV_VAR}" \\
       http://127.0.0.1:{BRIDGE_DEFAULT_PORT}/context/u1

Every route with curl, the webhook signed with openssl: docs/bridge.md.
"""
)
"""The end of ``autoplay-live serve --help``: the secrets' variables, the routes, an example."""


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the chatbot bridge over HTTP (context, replies, webhook, metrics)",
        # Wrapped by hand: the raw formatter keeps the epilog's columns, and this too.
        description="Runs the chatbot bridge under uvicorn until interrupted (Ctrl-C stops\n"
        "it at once, even on an idle stream). Secrets are read from the environment\n"
        "variables named below, never from the command line. Pull mode with\n"
        "--connector-url; push mode (POST /webhook) when the webhook secret variable\n"
        "is set; both at once are allowed. Exit status 2 when the configuration is\n"
        "refused (one line on stderr naming the option, never a value).",
        epilog=SERVE_EPILOG,
        # The epilog's layout (columns, the example) is kept as written.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--connector-url", help="the connector's stream URL (pull mode)")
    serve.add_argument(
        "--connector-token-env",
        default=TOKEN_ENV_VAR,
        help=f"variable holding the connector token (default: {TOKEN_ENV_VAR})",
    )
    serve.add_argument(
        "--redis-url",
        help="keep context and conversations in Redis at this URL, shared by every bridge "
        "worker on it (default: in this process's memory); writes are strict: a webhook "
        "delivery is acknowledged only once Redis has it",
    )
    serve.add_argument("--redis-prefix", help="key prefix in Redis (default: the backend's)")
    serve.add_argument(
        "--api-token-env",
        default=API_TOKEN_ENV_VAR,
        help=f"variable holding the API bearer token (default: {API_TOKEN_ENV_VAR})",
    )
    serve.add_argument(
        "--admin-token-env",
        default=ADMIN_TOKEN_ENV_VAR,
        help=f"variable holding the admin bearer token (default: {ADMIN_TOKEN_ENV_VAR})",
    )
    serve.add_argument(
        "--webhook-secret-env",
        default=WEBHOOK_SECRET_ENV_VAR,
        help=f"variable holding the webhook HMAC secret (default: {WEBHOOK_SECRET_ENV_VAR})",
    )
    serve.add_argument(
        "--require-timestamp",
        action="store_true",
        help="refuse webhook deliveries without a signed X-Connector-Timestamp",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without an API token (every route open; for local experiments only)",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help="interface (default: loopback)")
    serve.add_argument(
        "--port",
        type=int,
        default=BRIDGE_DEFAULT_PORT,
        help=f"port (default: {BRIDGE_DEFAULT_PORT})",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log requests")


def bridge_app(args: argparse.Namespace, environ: Mapping[str, str]) -> Starlette:
    """The bridge ``autoplay-live serve`` runs, from its arguments and the environment.

    Raises:
        ConfigError: the bridge refuses the configuration (the message names the
            option or variable, never a value).
    """
    from autoplay_base.backends.redis import RedisBackend  # noqa: PLC0415 - redis extra
    from autoplay_base.bridge import build_app  # noqa: PLC0415 - serve extra

    def secret(name: str) -> str | None:
        return environ.get(name) or None

    backend = None
    if args.redis_url:
        options = {"prefix": args.redis_prefix} if args.redis_prefix else {}
        # strict: a webhook delivery is acknowledged only once Redis has it.
        backend = RedisBackend.from_url(args.redis_url, strict=True, **options)
    try:
        return build_app(
            backend=backend,
            connector_url=args.connector_url,
            connector_token=secret(args.connector_token_env),
            webhook_secret=secret(args.webhook_secret_env),
            require_timestamp=args.require_timestamp,
            api_token=secret(args.api_token_env),
            admin_token=secret(args.admin_token_env),
            insecure_no_auth=args.insecure_no_auth,
        )
    except ConfigError:
        if backend is not None:
            backend.close()
        raise


def _serve_bridge(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: PLC0415 - serve extra

        app = bridge_app(args, os.environ)
    except ImportError as exc:
        print(f"autoplay-live serve needs the 'serve' extra ({exc.name or exc})", file=sys.stderr)
        return MISSING_EXTRA_STATUS
    except ConfigError as exc:
        print(f"autoplay-live serve: {exc}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    print(f"bridge: serving http://{args.host}:{args.port}", flush=True)
    log_level = "info" if args.verbose else "warning"
    uvicorn.run(app, host=args.host, port=args.port, log_level=log_level)
    return 0


def _missing_demo_extra(exc: ImportError) -> str:
    """The one line ``autoplay-live demo`` prints when an import of the extra failed."""
    # The module that is missing: named by the error itself, or by the one it wraps
    # (``langchain_autoplay.demo`` re-raises as MissingDependencyError from it).
    cause = exc.__cause__
    name = exc.name or (cause.name if isinstance(cause, ImportError) else None)
    missing = f" ({name.split('.')[0]} is not installed)" if name else ""
    return (
        f"autoplay-live demo needs the 'demo' extra{missing}; "
        "install it with: pip install 'autoplay-live-context[demo]'"
    )


def _demo(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the demo app is a LangChain application (the
    # ``demo`` extra), and ``autoplay_base`` never imports a framework on its own.
    # The one arrow from autoplay_base up to an adapter package, taken only when
    # the user asks for the demo.
    try:
        from langchain_autoplay.demo import DemoOptions, run_demo  # noqa: PLC0415
    except ImportError as exc:
        # One line a person can act on, not a traceback.
        print(_missing_demo_extra(exc), file=sys.stderr)
        return MISSING_EXTRA_STATUS

    options = DemoOptions(
        product=args.product,
        speed=args.speed,
        questions=args.question or DEMO_QUESTIONS,
        scripts=args.script or list_scripts(),
        redis_url=args.redis,
        show_prompts=not args.no_prompts,
        verbose=args.verbose,
    )
    return run_demo(options)


def _emulator(args: argparse.Namespace, environ: Mapping[str, str]) -> EmulatorServer:
    """The emulator ``autoplay-live emulator`` serves, from its arguments and the environment.

    Raises:
        ConfigError: an option the emulator refuses (push mode without a secret, ...).
        MissingDependencyError: the ``emulator`` extra is not installed.
    """
    from autoplay_base.emulator import EmulatorServer  # noqa: PLC0415 - emulator extra

    products = args.product or list(DEFAULT_PRODUCTS)
    scripts = _scripts(args)
    replay_from_start = bool(scripts) if args.replay_from_start is None else args.replay_from_start
    token = args.token if args.token is not None else environ.get(EMULATOR_TOKEN_ENV_VAR) or None
    faults = Faults(
        close_every=args.close_every, close_mode=args.close_mode, fail_next=args.fail_first
    )
    secret, push_faults = None, None
    if args.push_url is not None:
        secret = args.webhook_secret
        if secret is None:
            secret = environ.get(EMULATOR_WEBHOOK_SECRET_ENV_VAR) or None
        if secret is None:
            raise ConfigError(
                f"--push-url needs --webhook-secret or ${EMULATOR_WEBHOOK_SECRET_ENV_VAR}"
            )
        push_faults = PushFaults(
            duplicate_every=args.push_duplicate_every,
            bad_signature_every=args.push_bad_signature_every,
            stale_every=args.push_stale_every,
        )
    return EmulatorServer(
        host=args.host,
        port=args.port,
        products=products,
        token=token,
        heartbeat_interval=args.heartbeat if args.heartbeat > 0 else None,
        retry_ms=args.retry_ms,
        replay_size=args.replay_size,
        faults=faults,
        replay_from_start=replay_from_start,
        push_url=args.push_url,
        webhook_secret=secret,
        push_faults=push_faults,
        push_timestamped=not args.push_plain,
    )


def _scripts(args: argparse.Namespace) -> list[str]:
    scripts: list[str] = args.script or []
    return list_scripts() if "all" in scripts else scripts


async def _serve(args: argparse.Namespace, server: EmulatorServer) -> int:
    products = args.product or list(DEFAULT_PRODUCTS)
    scripts = _scripts(args)
    async with server:
        for product in products:
            print(f"emulator: serving {server.url_for(product)}", flush=True)
        jobs = []
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
        if scripts and server.replay_from_start:
            print(
                "emulator: clients that connect later get the scripted events from the start",
                flush=True,
            )
        await asyncio.Event().wait()  # serve until interrupted
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autoplay-live``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "serve":
        return _serve_bridge(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = _emulator(args, os.environ)
    except ConfigError as exc:
        print(f"autoplay-live emulator: {exc}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
