"""One TLS context per process for every HTTP client of the package, built off the loop.

An ``httpx`` client made with the default ``verify=True`` builds an
``ssl.SSLContext`` of its own and loads the whole CA bundle into it: 40-80 ms
on a small machine, every time a client is made. For an ``AsyncClient`` that
happens on the event loop, which then serves nothing else meanwhile (each
``AsyncConnectorClient.run``, each async stream window, the first batch of an
async tracking sink). :func:`tls_context` builds one verifying context, the one
``httpx`` would (the CA bundle of ``certifi``, or ``$SSL_CERT_FILE`` /
``$SSL_CERT_DIR`` when set), once per process, and every client of the package
shares it; :func:`atls_context` builds it on a thread of its own the first time,
so the loop never waits for the bundle. The variables are read when it is built.

A client that only ever requests one ``http://`` URL (none of them follows
redirects) never starts TLS, so :func:`tls_context_for` /
:func:`atls_context_for` give it a context that trusts nothing instead: no bundle
is loaded (a plain-HTTP stream connects 40-80 ms sooner), and a handshake that
somehow happened would fail verification rather than go unverified.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import certifi

__all__ = ["atls_context", "atls_context_for", "tls_context", "tls_context_for"]

_lock = threading.Lock()
_context: ssl.SSLContext | None = None
_trusts_nothing: ssl.SSLContext | None = None


def _build() -> ssl.SSLContext:
    """A verifying client context with the CA certificates httpx's default would load."""
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    capath = os.environ.get("SSL_CERT_DIR")
    if capath:
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def tls_context() -> ssl.SSLContext:
    """The process's verifying TLS context (built on first use, by the calling thread)."""
    context = _context
    if context is None:
        with _lock:
            context = _context
            if context is None:
                context = _set(_build())
    return context


def _plain_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "http"


def _untrusting() -> ssl.SSLContext:
    """A verifying client context with no CA certificate: every handshake fails (cached)."""
    global _trusts_nothing  # noqa: PLW0603 - one per process, like the verifying one
    with _lock:
        if _trusts_nothing is None:
            _trusts_nothing = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return _trusts_nothing


def tls_context_for(url: str) -> ssl.SSLContext:
    """The context for a client that requests ``url`` only: the shared verifying one for
    ``https://``, one that trusts nothing (and loads nothing) for ``http://``."""
    return _untrusting() if _plain_http(url) else tls_context()


async def atls_context_for(url: str) -> ssl.SSLContext:
    """:func:`tls_context_for` for a coroutine (the verifying one built off the loop)."""
    if _plain_http(url):
        return _trusts_nothing or await _off_the_loop(_untrusting)
    return await atls_context()


def _set(context: ssl.SSLContext) -> ssl.SSLContext:
    global _context  # noqa: PLW0603 - the one process-wide context, set once under _lock
    _context = context
    return context


async def atls_context() -> ssl.SSLContext:
    """:func:`tls_context` for a coroutine: the first build runs on a thread of its own.

    Not on the loop's default executor either: an application's blocking work
    there must not delay a stream's start.
    """
    return _context or await _off_the_loop(tls_context)


async def _off_the_loop(make: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """``make()`` on a thread of its own; its result or error reaches the awaiting task."""
    loop = asyncio.get_running_loop()
    built: asyncio.Future[ssl.SSLContext] = loop.create_future()

    def settle(context: ssl.SSLContext | None, error: BaseException | None) -> None:
        if built.done():  # the awaiting task was cancelled meanwhile
            return
        if error is not None:
            built.set_exception(error)
        else:
            built.set_result(context)  # type: ignore[arg-type]

    def build() -> None:
        context: ssl.SSLContext | None = None
        error: BaseException | None = None
        try:
            context = make()
        except BaseException as exc:  # handed to the awaiting task, never lost
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, context, error)

    threading.Thread(target=build, name="autoplay-tls", daemon=True).start()
    return await built
