"""``UserSessionIndex``: from a user id to the context of their recent sessions.

Chat backends often know the user, not the session. The store indexes
``(product_id, user_id) -> sessions`` as actions arrive (in its backend, so a
Redis backend shares the index between processes); this class reads that index
and joins the sessions' context into one block::

    index = UserSessionIndex(store, lookback_seconds=300)
    client.on_actions(store.add).on_actions(index.add)   # the autoplay-sdk wiring still works
    activity = index.get_user_activity("usr_456", product_id="app")

A user id names a user only within one product: two tenants' user ``"1001"``
are two people. Every read takes ``product_id=``; omitted, it resolves through
the backend's :meth:`~autoplay_base.backends.base.Backend.user_products` and
works when the user id has sessions under at most one product, else raises
:class:`~autoplay_base.errors.AmbiguousUserError` (which says how many products,
never which). ``add`` is kept for that wiring; sessions are already indexed by
the store, so it only remembers the user's latest email, per product.
``last_seen_at`` is local arrival time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from autoplay_base.backends.base import UserSessionRef
from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousUserError, ConfigError
from autoplay_base.events import ActionsPayload
from autoplay_base.formatting import format_user_activity

__all__ = ["DEFAULT_USER_LOOKBACK_SECONDS", "SessionRef", "UserSessionIndex"]

DEFAULT_USER_LOOKBACK_SECONDS = 300.0
"""Sessions last seen longer ago than this do not count as the user's recent ones."""
DEFAULT_RECENT_SESSIONS_PER_USER = 20
"""Sessions read per user (newest first) before the lookback filter."""
DEFAULT_MAX_EMAILS = 100_000
"""Users whose latest email is remembered (least recently written forgotten first)."""

SessionRef = UserSessionRef
"""The ``autoplay-sdk`` name for one indexed session of a user."""


def _pick(user_id: str, products: list[str]) -> str | None:
    """The one product of an omitted ``product_id``; ``None`` when the user is unknown."""
    if not products:
        return None
    if len(products) > 1:
        raise AmbiguousUserError(user_id, products)
    return products[0]


class UserSessionIndex:
    """Recent sessions per ``(product_id, user_id)``, and their joined context."""

    def __init__(
        self,
        context_store: ContextStore | AsyncContextStore,
        *,
        lookback_seconds: float = DEFAULT_USER_LOOKBACK_SECONDS,
        max_sessions_per_user: int = DEFAULT_RECENT_SESSIONS_PER_USER,
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
        # (product_id, user_id) -> email, least recently written first.
        self._emails: OrderedDict[tuple[str, str], str] = OrderedDict()

    # -- product resolution --------------------------------------------------------
    def _product(self, user_id: str, product_id: str | None) -> str | None:
        if product_id is not None:
            return product_id
        return _pick(user_id, self._store.backend.user_products(user_id))

    async def _aproduct(self, user_id: str, product_id: str | None) -> str | None:
        if product_id is not None:
            return product_id
        return _pick(user_id, await self._store.backend.auser_products(user_id))

    # -- emails --------------------------------------------------------------------
    def add(self, payload: ActionsPayload) -> None:
        """Remember the user's email, per product (the store indexes the sessions)."""
        if not payload.user_id or not payload.email:
            return
        scope = (payload.product_id, payload.user_id)
        with self._lock:
            self._emails[scope] = payload.email
            self._emails.move_to_end(scope)
            if len(self._emails) > self._max_users:
                self._emails.popitem(last=False)

    async def aadd(self, payload: ActionsPayload) -> None:
        """Coroutine twin of :meth:`add` for ``AsyncConnectorClient.on_actions``."""
        self.add(payload)

    async def add_async(self, payload: ActionsPayload) -> None:
        """Deprecated: use :meth:`aadd` (the ``a`` prefix names async twins).

        Kept as an alias so existing ``on_actions(index.add_async)`` wiring goes on
        working; it will be removed in a future release. It raises no warning
        because it runs once per event.
        """
        await self.aadd(payload)

    def get_email(self, user_id: str, *, product_id: str | None = None) -> str | None:
        """The last email seen for the user (of ``product_id``; see the module docstring)."""
        product = self._product(user_id, product_id)
        if product is None:
            return None
        with self._lock:
            return self._emails.get((product, user_id))

    # -- sessions and activity -------------------------------------------------------
    def _recent(self, refs: list[UserSessionRef]) -> list[UserSessionRef]:
        cutoff = self._clock() - self._lookback_seconds
        return [ref for ref in refs if ref.last_seen_at >= cutoff]

    def get_recent_sessions(
        self, user_id: str, *, product_id: str | None = None
    ) -> list[SessionRef]:
        """The user's sessions seen within ``lookback_seconds``, newest first."""
        product = self._product(user_id, product_id)
        if product is None:
            return []
        refs = self._store.backend.user_sessions(
            user_id, product_id=product, limit=self._max_sessions_per_user
        )
        return self._recent(refs)

    async def aget_recent_sessions(
        self, user_id: str, *, product_id: str | None = None
    ) -> list[SessionRef]:
        """Async twin of :meth:`get_recent_sessions`."""
        product = await self._aproduct(user_id, product_id)
        if product is None:
            return []
        refs = await self._store.backend.auser_sessions(
            user_id, product_id=product, limit=self._max_sessions_per_user
        )
        return self._recent(refs)

    def get_user_activity(self, user_id: str, *, product_id: str | None = None) -> str:
        """The context of each recent session, joined (``""`` when there is none)."""
        blocks = []
        for ref in self.get_recent_sessions(user_id, product_id=product_id):
            context = self._store.get(ref.session_id, ref.product_id)
            if context:
                blocks.append((ref.session_id, ref.product_id, context))
        return format_user_activity(blocks)

    async def aget_user_activity(self, user_id: str, *, product_id: str | None = None) -> str:
        """Async twin of :meth:`get_user_activity`."""
        blocks = []
        for ref in await self.aget_recent_sessions(user_id, product_id=product_id):
            context = await self._store.aget(ref.session_id, ref.product_id)
            if context:
                blocks.append((ref.session_id, ref.product_id, context))
        return format_user_activity(blocks)

    # -- forgetting ------------------------------------------------------------------
    def reset_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Forget the user's session index and email (their sessions' context stays)."""
        product = self._product(user_id, product_id)
        if product is None:
            # Unknown to the store's index (forgotten, evicted): an email may remain.
            product = _pick(user_id, self._email_products(user_id))
            if product is None:
                return
        self._store.backend.forget_user(user_id, product_id=product)
        self._forget_email(product, user_id)

    async def areset_user(self, user_id: str, *, product_id: str | None = None) -> None:
        """Async twin of :meth:`reset_user`."""
        product = await self._aproduct(user_id, product_id)
        if product is None:
            # Unknown to the store's index (forgotten, evicted): an email may remain.
            product = _pick(user_id, self._email_products(user_id))
            if product is None:
                return
        await self._store.backend.aforget_user(user_id, product_id=product)
        self._forget_email(product, user_id)

    def _email_products(self, user_id: str) -> list[str]:
        # A scan, but only for reset_user of a user the backend no longer knows.
        with self._lock:
            return [product for product, user in self._emails if user == user_id]

    def _forget_email(self, product_id: str, user_id: str) -> None:
        with self._lock:
            self._emails.pop((product_id, user_id), None)
