"""The one exception tree of the package.

Every error this package raises on purpose derives from :class:`AutoplayError`,
so ``except AutoplayError`` catches all of them::

    AutoplayError
    ├── ConfigError                 bad constructor option or per-call override   (also ValueError)
    ├── EventDecodeError            a frame that is not a valid event              (also ValueError)
    ├── InvalidPayloadError         store.add() given something that is no payload  (also TypeError)
    ├── SessionLookupError          a read the store cannot answer unambiguously
    │   ├── AmbiguousSessionError   session id known under several products     (also LookupError)
    │   ├── AmbiguousUserError      user id known under several products        (also LookupError)
    │   └── SessionNotFoundError    a strict adapter found no such session      (also LookupError)
    ├── ConnectorError              talking to the event connector
    │   ├── ConnectorAuthError      401 / 403: wrong or missing token, never retried
    │   ├── ConnectorNotFoundError  404: wrong URL or product, never retried
    │   ├── ConnectorRedirectError  3xx: the URL moved, never followed nor retried
    │   ├── ConnectorRetriesExhaustedError  ``max_retries`` consecutive failures
    │   └── ConnectorUnavailableError  a bounded read's connector never answered in time
    ├── BackendError                a storage backend failed
    │   ├── BackendUnavailableError the backend cannot be reached (Redis down, timeout)
    │   └── BackendAuthError        the backend refused the credentials: fails fast, never buffered
    ├── RunCancelledError           run.raise_if_cancelled(): the agent run was cancelled
    ├── RunLiveError                run(if_live="reject") while a run of the session is live
    ├── SummarizerError             the summarizer's LLM failed or timed out
    │   └── SummarizerTimeoutError  one LLM call took longer than ``timeout``
    └── MissingDependencyError      an optional extra is not installed           (also ImportError)

Third-party errors (httpx, redis, pydantic) are translated at one boundary with
``raise ... from exc`` so the original stays attached as ``__cause__``. Messages
never contain tokens or other secrets, and a lookup error never names another
tenant's products in its message: the caller learns *that* a session or user id
is ambiguous and how many products hold it, not which ones (the attribute
``product_ids`` keeps them for the program that owns the store; do not show it
to end users).
"""

from __future__ import annotations

__all__ = [
    "AmbiguousSessionError",
    "AmbiguousUserError",
    "AutoplayError",
    "BackendAuthError",
    "BackendError",
    "BackendUnavailableError",
    "ConfigError",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorNotFoundError",
    "ConnectorRedirectError",
    "ConnectorRetriesExhaustedError",
    "ConnectorUnavailableError",
    "EventDecodeError",
    "InvalidPayloadError",
    "MissingDependencyError",
    "RunCancelledError",
    "RunLiveError",
    "SessionLookupError",
    "SessionNotFoundError",
    "SummarizerError",
    "SummarizerTimeoutError",
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
    """``product_id`` was omitted and the session id exists under several products.

    The message gives the number of products, never their ids (they belong to
    other tenants); ``product_ids`` holds them, sorted, for the owning program.
    """

    def __init__(self, session_id: str, product_ids: list[str]) -> None:
        super().__init__(
            f"session {session_id!r} exists under {len(product_ids)} products; "
            "pass product_id= to choose one"
        )
        self.session_id = session_id
        self.product_ids = sorted(product_ids)


class AmbiguousUserError(SessionLookupError, LookupError):
    """``product_id`` was omitted and the user id has sessions under several products.

    Same disclosure rule as :class:`AmbiguousSessionError`.
    """

    def __init__(self, user_id: str, product_ids: list[str]) -> None:
        super().__init__(
            f"user {user_id!r} has sessions under {len(product_ids)} products; "
            "pass product_id= to choose one"
        )
        self.user_id = user_id
        self.product_ids = sorted(product_ids)


class SessionNotFoundError(SessionLookupError, LookupError):
    """A strict adapter asked for a session the store does not know.

    Unknown id, wrong product, or expired. Raised only with ``strict=True``;
    otherwise the read is empty, counted in ``stats()["sessions_not_found"]`` and
    logged once at debug level.
    """

    def __init__(self, adapter: str, session_id: str, product_id: str | None) -> None:
        super().__init__(
            f"{adapter} (strict=True): no live context for session {session_id!r} "
            f"(product_id={product_id!r}): the session is unknown, expired, or under "
            "another product"
        )
        self.session_id = session_id
        self.product_id = product_id


class RunCancelledError(AutoplayError):
    """Raised by ``run.raise_if_cancelled()``; leaving the run's block with it ends the run
    as ``cancelled`` and the ``with`` statement swallows it."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} was cancelled")
        self.run_id = run_id


class RunLiveError(AutoplayError):
    """``stream.run(..., if_live="reject")`` while another run of the session is live."""

    def __init__(self, live_run_ids: list[str]) -> None:
        super().__init__(f"{len(live_run_ids)} run(s) of this session are live")
        self.live_run_ids = live_run_ids


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


class ConnectorRedirectError(ConnectorError):
    """The connector answered 3xx: the stream URL moved. Never followed (the bearer
    token must not travel to another address) and never retried; ``location`` is the
    target without user info or query string."""

    def __init__(self, message: str, *, status_code: int, location: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.location = location


class ConnectorRetriesExhaustedError(ConnectorError):
    """``max_retries`` consecutive connection attempts failed."""


class ConnectorUnavailableError(ConnectorError):
    """A bounded read (a loader's or reader's live window) ended by its ``timeout``
    without the connector ever answering with an event stream (refused, silent, 5xx).

    A connector that answered and then sent nothing is a quiet stream, not this.
    """


class BackendError(AutoplayError):
    """A storage backend failed."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached or did not answer in time."""


class BackendAuthError(BackendError):
    """The backend refused the credentials (wrong password, unknown user, no permission).

    A configuration error, not an outage: raised at once, never buffered or retried.
    """


class SummarizerError(AutoplayError):
    """The summarizer's LLM call failed, returned nothing usable, or timed out."""


class SummarizerTimeoutError(SummarizerError):
    """One LLM call took longer than the summarizer's ``timeout``."""


class MissingDependencyError(AutoplayError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """Build the error raised when ``package`` (from extra ``extra``) is not installed."""
    return MissingDependencyError(
        f"{package} is required for this feature; install it with "
        f"pip install 'autoplay-live-context[{extra}]'"
    )
