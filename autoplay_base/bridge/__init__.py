"""The chatbot bridge: an HTTP service for context, replies, push webhooks and run streams.

::

    from autoplay_base.bridge import build_app

    app = build_app(
        connector_url="https://connector.example/stream/acme",
        connector_token=os.environ["AUTOPLAY_APP_UNKEY_TOKEN"],
        api_token=os.environ["BRIDGE_API_TOKEN"],
        admin_token=os.environ["BRIDGE_ADMIN_TOKEN"],
        llm=ChatOpenAI(model="gpt-4o-mini"),      # any ainvoke/invoke object or callable
    )
    # uvicorn module:app, autoplay-live serve ..., or mounted in a host app that runs
    # its lifespan: FastAPI(lifespan=lambda host: app.router.lifespan_context(app))

Secure by default: bearer tokens on every API and admin route, the webhook
fail-closed and HMAC-verified with replay protection, fixed error texts that
never echo input or secrets. Needs the ``serve`` extra (Starlette; uvicorn to
run it standalone). See :mod:`autoplay_base.bridge.app` for routes and rules,
:mod:`autoplay_base.bridge._webhook` for the signature schemes, ``docs/bridge.md``
for every route with ``curl``. LCEL chains get the reply prompt itself from
``langchain_autoplay.prompt.AutoplayPrompt`` (the same reads and text).
"""

from __future__ import annotations

from autoplay_base.errors import missing_extra

try:
    import starlette  # noqa: F401
except ImportError as exc:  # the optional ``serve`` extra
    raise missing_extra("starlette", "serve") from exc

from autoplay_base.bridge._metrics import SdkMetricsHook, render_prometheus
from autoplay_base.bridge._webhook import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMESTAMP_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerifier,
    sign,
)
from autoplay_base.bridge.app import build_app
from autoplay_base.prompting import DEFAULT_SYSTEM_PROMPT, Turn, assemble_prompt

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_TIMESTAMP_TOLERANCE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SdkMetricsHook",
    "Turn",
    "WebhookVerifier",
    "assemble_prompt",
    "build_app",
    "render_prometheus",
    "sign",
]
