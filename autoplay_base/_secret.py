"""The bearer token as a secret: validated once, never shown, scrubbed from error text.

:func:`resolve_token` takes the token given (or ``$AUTOPLAY_APP_UNKEY_TOKEN``),
strips it and refuses what cannot be an HTTP header value, without echoing
it. :class:`Secret` never shows itself in a ``repr``; :func:`scrub_error` and
:func:`log_exception` make sure no error text that reaches a log line,
``on_error`` or a raised exception carries it, in any form it may be quoted in.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Iterator

from autoplay_base.errors import AutoplayError, ConfigError

__all__ = ["TOKEN_ENV_VAR", "Secret", "log_exception", "resolve_token", "scrub_error"]

TOKEN_ENV_VAR = "AUTOPLAY_APP_UNKEY_TOKEN"
"""Environment variable read when no token is passed."""

# What an HTTP header value can carry and a token can be: printable ASCII, inner
# spaces allowed. Anything else (non-ASCII, control characters, an inner CR/LF)
# makes httpx refuse the header with an error that quotes it.
_HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_SCRUBBED = "***"


class Secret:
    """A string that never shows itself in ``repr``/``str`` (tokens)."""

    __slots__ = ("_forms", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        # The token as it may be quoted in error text: as is, and escaped by a
        # str or bytes repr (a backslash or quote changes those forms).
        forms = {value, repr(value)[1:-1], repr(value.encode("utf-8", "replace"))[2:-1]}
        self._forms = tuple(sorted((f for f in forms if f), key=len, reverse=True))

    def reveal(self) -> str:
        """The secret itself (only to build the Authorization header)."""
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the secret replaced by ``***``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, _SCRUBBED)
        return text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def resolve_token(token: str) -> Secret:
    """``token``, or ``$AUTOPLAY_APP_UNKEY_TOKEN`` when it is empty, validated.

    Surrounding whitespace is stripped (a token read from a secret file ends in
    a newline). A value that cannot be an HTTP header (non-ASCII, control
    characters, an inner CR/LF) raises :class:`ConfigError` without echoing it:
    sent as is, httpx would refuse the header with an error that quotes it.
    """
    value = token.strip()
    source = "token"
    if not value:
        value = os.environ.get(TOKEN_ENV_VAR, "").strip()
        source = f"${TOKEN_ENV_VAR}"
    if value and _HEADER_SAFE.fullmatch(value) is None:
        raise ConfigError(
            f"{source} cannot be sent as an HTTP header: it holds non-ASCII or control "
            f"characters ({len(value)} characters; the value is not shown)"
        )
    return Secret(value)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception in its ``__cause__``/``__context__`` chain (once each)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def scrub_error(exc: Exception, secret: Secret) -> Exception:
    """``exc`` if no text in it or its chain holds ``secret``; else a scrubbed stand-in.

    The stand-in is an :class:`~autoplay_base.errors.AutoplayError` naming the
    original type, with the scrubbed message and no chain (the chain is what
    leaked). Every error we raise or hand to ``on_error`` goes through here.
    """
    if not secret:
        return exc
    for link in _chain(exc):
        try:
            text = f"{link!s}\n{link!r}\n{link.args!r}"
        except Exception:  # a broken __str__: nothing of it can be shown, so replace it
            text = secret.reveal()
        if secret.scrub(text) != text:
            try:
                message = secret.scrub(f"{type(exc).__name__}: {exc}")
            except Exception:
                message = f"{type(exc).__name__} (its message could not be shown)"
            safe = AutoplayError(message)
            safe.__suppress_context__ = True
            return safe
    return exc


def log_exception(
    log: logging.Logger, level: int, message: str, exc: BaseException, secret: Secret
) -> None:
    """Log ``message`` with ``exc``'s traceback, every line scrubbed of ``secret``.

    The traceback is formatted here rather than passed as ``exc_info``: a
    handler would format it (chained causes included) after we lost the chance
    to scrub it.
    """
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.log(level, "%s\n%s", secret.scrub(message), secret.scrub(trace.rstrip()))
