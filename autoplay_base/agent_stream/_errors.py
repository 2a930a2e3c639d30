"""The errors of agent run streams (defined with the whole tree in :mod:`autoplay_base.errors`)."""

from __future__ import annotations

from autoplay_base.errors import RunCancelledError, RunLiveError

__all__ = ["RunCancelledError", "RunLiveError"]
