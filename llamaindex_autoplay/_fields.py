"""The ``context_options`` field the LlamaIndex components share, and its former name.

Every adapter of this package calls the store's per-call read options
``context_options`` (``lookback_seconds``, ``max_actions``, ``include_summary``, …).
The LlamaIndex components used to call them ``read_overrides``; that name is still
accepted by their constructors and by ``from_dict``, and still readable and settable
as an attribute, so existing code and serialized components keep working.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import AliasChoices, Field

from autoplay_base._store_ref import SharesStore
from autoplay_base.backends.base import SessionView
from autoplay_base.errors import ConfigError, SessionNotFoundError

__all__ = [
    "LiveStoreComponent",
    "ReadOverridesAlias",
    "StoreOnLoad",
    "context_options_field",
    "strict_errors",
]


def context_options_field(description: str) -> Any:
    """The ``context_options`` field: a dict, also accepted under ``read_overrides``."""
    return Field(
        default_factory=dict,
        validation_alias=AliasChoices("context_options", "read_overrides"),
        description=description,
    )


class _HasContextOptions(Protocol):
    context_options: dict[str, Any]


class ReadOverridesAlias:
    """Mix-in: ``read_overrides`` as the former name of the ``context_options`` field.

    A plain property rather than a second field, so serialization carries one key.
    """

    @property
    def read_overrides(self: _HasContextOptions) -> dict[str, Any]:
        """Former name of ``context_options``."""
        return self.context_options

    @read_overrides.setter
    def read_overrides(self: _HasContextOptions, value: dict[str, Any]) -> None:
        self.context_options = value


class LiveStoreComponent(SharesStore):
    """:class:`~autoplay_base._store_ref.SharesStore` for LlamaIndex components.

    ``copy.deepcopy`` copies the options and shares the store; ``pickle`` raises
    ``TypeError`` (LlamaIndex's own pickling would silently drop the store and
    leave a component that fails on first use).
    """


class StoreOnLoad(LiveStoreComponent):
    """:class:`LiveStoreComponent` for a serializable ``BaseComponent``.

    What round-trips is the configuration: ``to_dict()``/``to_json()`` leave the store
    out, so ``from_dict(data, store=store)`` needs it again and raises
    :class:`~autoplay_base.errors.ConfigError` saying so without it.
    """

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Any:
        """Rebuild from :meth:`to_dict` output; pass the live store as ``store=``."""
        if "store" not in kwargs and "store" not in data:
            raise ConfigError(
                f"{cls.__name__}.from_dict() needs the live store: from_dict(data, store=store)"
            )
        return super().from_dict(data, **kwargs)  # type: ignore[misc]


def strict_errors(
    adapter: str, session_id: str | None, product_id: str | None, view: SessionView | None
) -> None:
    """The strict mode's errors: no session named (``ConfigError``), or none found."""
    if session_id is None:
        raise ConfigError(
            f"{adapter} (strict=True): no session for this call; use "
            "autoplay_session(...), an AutoplayQueryBundle or the session_id field"
        )
    if view is None:
        raise SessionNotFoundError(adapter, session_id, product_id)
