"""The one exception tree of the package.

Every error this package raises on purpose derives from :class:`AutoplayError`,
so ``except AutoplayError`` catches all of them::

    AutoplayError
    ├── ConfigError                 bad constructor option or per-call override   (also ValueError)
    ├── EventDecodeError            a frame that is not a valid event              (also ValueError)
    ├── InvalidPayloadError         store.add() given something that is no payload  (also TypeError)
    ├── SessionLookupError          a read the store cannot answer unambiguously
    │   └── AmbiguousSessionError   session id known under several products     (also LookupError)
    ├── ConnectorError              talking to the event connector
    │   ├── ConnectorAuthError      401 / 403: wrong or missing token, never retried
    │   ├── ConnectorNotFoundError  404: wrong URL or product, never retried
    │   └── ConnectorRetriesExhaustedError  ``max_retries`` consecutive failures
    ├── BackendError                a storage backend failed
    │   └── BackendUnavailableError the backend cannot be reached (Redis down, timeout)
    ├── SummarizerError             the summarizer's LLM failed or timed out
    └── MissingDependencyError      an optional extra is not installed           (also ImportError)

Third-party errors (httpx, redis, pydantic) are translated at one boundary with
``raise ... from exc`` so the original stays attached as ``__cause__``. Messages
never contain tokens or other secrets.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousSessionError",
    "AutoplayError",
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorNotFoundError",
    "ConnectorRetriesExhaustedError",
    "EventDecodeError",
    "InvalidPayloadError",
    "MissingDependencyError",
    "SessionLookupError",
    "SummarizerError",
]


class AutoplayError(Exception):
    """Root of every error raised by autoplay-live-context."""


class ConfigError(AutoplayError, ValueError):
    """An option has a value that cannot work (negative bound, unknown override, ...)."""


class EventDecodeError(AutoplayError, ValueError):
    """A frame could not be turned into an event.

    ``reason`` is a short machine-readable tag (``"oversized"``, ``"not_json"``,
    ``"not_object"``, ``"invalid"``); ``event_id`` is the SSE id of the frame, if any.
    """

    def __init__(self, message: str, *, reason: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.event_id = event_id


class InvalidPayloadError(AutoplayError, TypeError):
    """A store was handed something that is neither a payload nor its JSON object."""


class SessionLookupError(AutoplayError):
    """A store read could not be resolved to one session."""


class AmbiguousSessionError(SessionLookupError, LookupError):
    """``product_id`` was omitted and the session id exists under several products."""

    def __init__(self, session_id: str, product_ids: list[str]) -> None:
        products = ", ".join(sorted(product_ids))
        super().__init__(
            f"session {session_id!r} exists under several products ({products}); "
            "pass product_id= to choose one"
        )
        self.session_id = session_id
        self.product_ids = sorted(product_ids)


class ConnectorError(AutoplayError):
    """Talking to the event connector failed."""


class ConnectorAuthError(ConnectorError):
    """The connector answered 401 or 403: the token is missing or wrong. Never retried."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConnectorNotFoundError(ConnectorError):
    """The connector answered 404: the URL or product id is wrong. Never retried."""

    def __init__(self, message: str, *, status_code: int = 404) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConnectorRetriesExhaustedError(ConnectorError):
    """``max_retries`` consecutive connection attempts failed."""


class BackendError(AutoplayError):
    """A storage backend failed."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached or did not answer in time."""


class SummarizerError(AutoplayError):
    """The summarizer's LLM call failed, returned nothing usable, or timed out."""


class MissingDependencyError(AutoplayError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """Build the error raised when ``package`` (from extra ``extra``) is not installed."""
    return MissingDependencyError(
        f"{package} is required for this feature; install it with "
        f"pip install 'autoplay-live-context[{extra}]'"
    )
