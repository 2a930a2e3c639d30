"""``UserSessionIndex``: from a user id to the context of their recent sessions.

Chat backends often know the user, not the session. The store indexes
``user_id -> sessions`` as actions arrive (in its backend, so a Redis backend
shares the index between processes); this class reads that index and joins the
sessions' context into one block::

    index = UserSessionIndex(store, lookback_seconds=300)
    client.on_actions(store.add).on_actions(index.add)   # the autoplay-sdk wiring still works
    activity = index.get_user_activity("usr_456")

``add`` is kept for that wiring; sessions are already indexed by the store, so it
only remembers the user's latest email. ``last_seen_at`` is local arrival time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from autoplay_base.backends.base import UserSessionRef
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError
from autoplay_base.events import ActionsPayload
from autoplay_base.formatting import format_user_activity

__all__ = ["DEFAULT_USER_LOOKBACK_SECONDS", "SessionRef", "UserSessionIndex"]

DEFAULT_USER_LOOKBACK_SECONDS = 300.0
DEFAULT_MAX_EMAILS = 100_000

SessionRef = UserSessionRef
"""The ``autoplay-sdk`` name for one indexed session of a user."""


class UserSessionIndex:
    """Recent sessions per user, and their joined context."""

    def __init__(
        self,
        context_store: ContextStore | AsyncContextStore,
        *,
        lookback_seconds: float = DEFAULT_USER_LOOKBACK_SECONDS,
        max_sessions_per_user: int = 20,
        max_users: int = DEFAULT_MAX_EMAILS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lookback_seconds <= 0:
            raise ConfigError(f"lookback_seconds must be > 0, got {lookback_seconds!r}")
        if max_sessions_per_user < 1:
            raise ConfigError(f"max_sessions_per_user must be >= 1, got {max_sessions_per_user!r}")
        self._store = context_store
        self._lookback_seconds = lookback_seconds
        self._max_sessions_per_user = max_sessions_per_user
        self._max_users = max_users
        self._clock = clock
        self._lock = Lock()
        self._emails: OrderedDict[str, str] = OrderedDict()

    def add(self, payload: ActionsPayload) -> None:
        """Remember the user's email (sessions are indexed by the store's ``add``)."""
        if not payload.user_id or not payload.email:
            return
        with self._lock:
            self._emails[payload.user_id] = payload.email
            self._emails.move_to_end(payload.user_id)
            if len(self._emails) > self._max_users:
                self._emails.popitem(last=False)

    async def add_async(self, payload: ActionsPayload) -> None:
        """Coroutine alias of :meth:`add` for ``AsyncConnectorClient.on_actions``."""
        self.add(payload)

    def get_email(self, user_id: str) -> str | None:
        """The last email seen for ``user_id``."""
        with self._lock:
            return self._emails.get(user_id)

    def _recent(self, refs: list[UserSessionRef]) -> list[UserSessionRef]:
        cutoff = self._clock() - self._lookback_seconds
        return [ref for ref in refs if ref.last_seen_at >= cutoff]

    def get_recent_sessions(self, user_id: str) -> list[SessionRef]:
        """The user's sessions seen within ``lookback_seconds``, newest first."""
        refs = self._store.backend.user_sessions(user_id, limit=self._max_sessions_per_user)
        return self._recent(refs)

    async def aget_recent_sessions(self, user_id: str) -> list[SessionRef]:
        """Async twin of :meth:`get_recent_sessions`."""
        refs = await self._store.backend.auser_sessions(user_id, limit=self._max_sessions_per_user)
        return self._recent(refs)

    def get_user_activity(self, user_id: str) -> str:
        """The context of each recent session, joined (``""`` when there is none)."""
        blocks = []
        for ref in self.get_recent_sessions(user_id):
            context = self._store.get(ref.session_id, ref.product_id)
            if context:
                blocks.append((ref.session_id, ref.product_id, context))
        return format_user_activity(blocks)

    async def aget_user_activity(self, user_id: str) -> str:
        """Async twin of :meth:`get_user_activity`."""
        blocks = []
        for ref in await self.aget_recent_sessions(user_id):
            context = await self._store.aget(ref.session_id, ref.product_id)
            if context:
                blocks.append((ref.session_id, ref.product_id, context))
        return format_user_activity(blocks)

    def reset_user(self, user_id: str) -> None:
        """Forget the user's session index and email (their sessions' context stays)."""
        self._store.backend.forget_user(user_id)
        with self._lock:
            self._emails.pop(user_id, None)

    async def areset_user(self, user_id: str) -> None:
        """Async twin of :meth:`reset_user`."""
        await self._store.backend.aforget_user(user_id)
        with self._lock:
            self._emails.pop(user_id, None)
