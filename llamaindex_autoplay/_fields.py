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

__all__ = ["ReadOverridesAlias", "context_options_field"]


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
