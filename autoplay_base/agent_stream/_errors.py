"""The errors of agent run streams (both :class:`~autoplay_base.errors.AutoplayError`)."""

from __future__ import annotations

from autoplay_base.errors import AutoplayError

__all__ = ["RunCancelledError", "RunLiveError"]


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
