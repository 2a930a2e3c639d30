"""Where loaders and readers get events from, and the metadata they attach.

The LangChain loader and the LlamaIndex reader both turn connector activity into
documents; the plumbing they share lives here so each adapter is only a
conversion into its framework's document type. Three sources:

* a recorded JSONL file (the format of :mod:`autoplay_base.recording`);
* a live stream, read for a bounded window (``max_events`` and/or ``timeout``);
* a snapshot of a store's sessions (one record per session, not per event).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoplay_base.backends.base import SessionKey, SessionView
from autoplay_base.errors import ConfigError
from autoplay_base.events import ActionsPayload, Event, SummaryPayload
from autoplay_base.formatting import format_context
from autoplay_base.recording import iter_recording
from autoplay_base.stream_window import aiter_stream_events, iter_stream_events

if TYPE_CHECKING:
    from autoplay_base.context_store import AsyncContextStore, ContextStore

__all__ = [
    "LIVE_CONTEXT_SOURCE",
    "SessionSnapshot",
    "aiter_events",
    "asnapshot_sessions",
    "event_metadata",
    "iter_events",
    "session_metadata",
    "snapshot_sessions",
]

LIVE_CONTEXT_SOURCE = "autoplay_live_context"


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """One session's context at the moment of a snapshot."""

    key: SessionKey
    view: SessionView

    @property
    def text(self) -> str:
        """The formatted context body (as ``ContextStore.get`` returns it)."""
        return format_context(self.view.summary, self.view.actions)


def _known(metadata: dict[str, Any]) -> dict[str, Any]:
    # Several vector stores (Chroma, Pinecone, ...) reject None metadata values.
    return {key: value for key, value in metadata.items() if value is not None}


def event_metadata(event: Event) -> dict[str, Any]:
    """The metadata of an event document.

    Keys: ``session_id``, ``product_id``, ``user_id``, ``event_id``, ``type``,
    ``forwarded_at``; a key whose value is unknown is left out rather than set
    to ``None``, because several vector stores reject ``None`` values.
    """
    user_id = event.user_id if isinstance(event, ActionsPayload) else None
    forwarded_at = (
        event.forwarded_at if isinstance(event, (ActionsPayload, SummaryPayload)) else None
    )
    return _known(
        {
            "session_id": event.session_id,
            "product_id": event.product_id,
            "user_id": user_id,
            "event_id": event.event_id,
            "type": event.type,
            "forwarded_at": forwarded_at,
        }
    )


def session_metadata(snapshot: SessionSnapshot) -> dict[str, Any]:
    """The metadata of a per-session document (unknown values left out, as for events)."""
    return _known(
        {
            "session_id": snapshot.key.session_id,
            "product_id": snapshot.key.product_id,
            "type": "session",
            "source": LIVE_CONTEXT_SOURCE,
            "last_activity_at": snapshot.view.last_activity_at,
        }
    )


def _check_one_source(path: str | Path | None, url: str | None) -> None:
    if (path is None) == (url is None):
        raise ConfigError("pass exactly one event source: path= (a recording) or url= (a stream)")


def iter_events(
    *,
    path: str | Path | None = None,
    url: str | None = None,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
) -> Iterator[Event]:
    """Events from a recording (``path``) or from a live stream window (``url``).

    A live window ends after ``max_events`` events or ``timeout`` seconds,
    whichever comes first; at least one of them is required for a stream.
    """
    _check_one_source(path, url)
    if path is not None:
        for count, event in enumerate(iter_recording(path), 1):
            yield event
            if max_events is not None and count >= max_events:
                return
        return
    assert url is not None
    yield from iter_stream_events(url, token=token, max_events=max_events, timeout=timeout)


async def aiter_events(
    *,
    path: str | Path | None = None,
    url: str | None = None,
    token: str = "",
    max_events: int | None = None,
    timeout: float | None = None,
) -> AsyncIterator[Event]:
    """Async twin of :func:`iter_events` (the stream is read natively with httpx's async client).

    A recording is a local file read line by line; its lines are short, so it is
    read without a thread.
    """
    _check_one_source(path, url)
    if path is not None:
        for event in iter_events(path=path, max_events=max_events):
            yield event
        return
    assert url is not None
    async for event in aiter_stream_events(
        url, token=token, max_events=max_events, timeout=timeout
    ):
        yield event


def _wanted(keys: Sequence[SessionKey], product_id: str | None) -> list[SessionKey]:
    return [key for key in keys if product_id is None or key.product_id == product_id]


def snapshot_sessions(
    store: ContextStore | AsyncContextStore,
    *,
    product_id: str | None = None,
    **overrides: Any,
) -> list[SessionSnapshot]:
    """Every live session of ``store`` (of one product, if given), least recently used first."""
    snapshots = []
    for key in _wanted(store.backend.sessions(), product_id):
        view = store.view(key.session_id, key.product_id, **overrides)
        if view is not None and (view.summary or view.actions):
            snapshots.append(SessionSnapshot(key, view))
    return snapshots


async def asnapshot_sessions(
    store: ContextStore | AsyncContextStore,
    *,
    product_id: str | None = None,
    **overrides: Any,
) -> list[SessionSnapshot]:
    """Async twin of :func:`snapshot_sessions`."""
    snapshots = []
    for key in _wanted(await store.backend.asessions(), product_id):
        view = await store.aview(key.session_id, key.product_id, **overrides)
        if view is not None and (view.summary or view.actions):
            snapshots.append(SessionSnapshot(key, view))
    return snapshots
