"""What the notebooks share, in one place (each notebook imports it; it is not part of the package).

* :class:`EventCounter`: a client callback that keeps what arrived and lets a
  notebook *wait* for the n-th event instead of sleeping and hoping;
* :func:`timeline`: a session's events as a pandas ``DataFrame``, one row each;
* :func:`tracked`: tracking events a receiver got, as a ``DataFrame``, one row each;
* :func:`show_png`: a matplotlib figure as a PNG output, drawn with the Agg
  backend and without timestamps, so a re-run gives the same bytes;
* :func:`streaming_chat_model` (with :func:`text_turn`, :func:`tool_turn`,
  :func:`endless_turn`): a LangChain chat model that *streams* scripted turns,
  text and tool-call chunks with usage, the stand-in for an LLM in ``05``.

The notebooks run with ``notebooks/`` as their working directory (Jupyter's
default, and what ``tests/test_notebooks.py`` does), so ``import notebook_helpers``
finds this file.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import matplotlib

matplotlib.use("Agg")  # no GUI, no inline backend: the PNG is what gets committed

import pandas as pd  # type: ignore[import-untyped]  # noqa: E402
from IPython.display import Image, display  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from autoplay_base.events import ActionsPayload, Event, SummaryPayload  # noqa: E402

__all__ = [
    "EventCounter",
    "endless_turn",
    "show_png",
    "streaming_chat_model",
    "text_turn",
    "timeline",
    "tool_turn",
    "tracked",
]


class EventCounter:
    """A client callback that keeps every item it is given; ``wait_for(n)`` blocks until n."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    @property
    def count(self) -> int:
        """How many items arrived so far."""
        with self._changed:
            return len(self.items)

    def __call__(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        """Block until ``n`` items arrived; ``TimeoutError`` saying how many did otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.items) >= n, timeout):
                raise TimeoutError(f"{len(self.items)} of {n} arrived within {timeout} s")


def _what(event: Event) -> str:
    if isinstance(event, SummaryPayload):
        return f"summary (replaces {event.replaces}): {event.summary}"
    if isinstance(event, ActionsPayload):
        return "; ".join(action.description for action in event.actions)
    return event.type


def _page(event: Event) -> str:
    if isinstance(event, ActionsPayload) and event.actions:
        return urlsplit(event.actions[-1].canonical_url).path or "/"
    return ""


def _event_number(event_id: str | None) -> int | str | None:
    """The emulator's ids are numbers: sort and show them as numbers."""
    return int(event_id) if event_id is not None and event_id.isdigit() else event_id


def timeline(events: Iterable[Event], session_id: str | None = None) -> pd.DataFrame:
    """One row per event (of ``session_id``, if given): id, session, type, page, what happened."""
    rows = [
        {
            "event": _event_number(event.event_id),
            "session": event.session_id,
            "type": event.type,
            "page": _page(event),
            "what happened": _what(event),
        }
        for event in events
        if session_id is None or event.session_id == session_id
    ]
    return pd.DataFrame(rows).set_index("event")


def show_png(figure: Figure) -> bytes:
    """Display ``figure`` as a PNG output and return its bytes (no timestamp in the file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    data = buffer.getvalue()
    display(Image(data=data, format="png"))  # type: ignore[no-untyped-call]
    return data


def _tracked_what(kind: str, data: dict[str, Any]) -> str:
    if kind == "turn":
        return f"{data.get('user')!r} -> {data.get('assistant')!r}"
    if kind == "tool_call":
        failed = " [error]" if data.get("error") else ""
        return f"{data.get('name')}({data.get('args')}) -> {data.get('result')!r}{failed}"
    if kind == "usage":
        return str(data.get("model"))
    if kind == "event":
        return f"{data.get('name')} {data.get('properties')}"
    return ""


def _tracked_row(event: dict[str, Any]) -> dict[str, Any]:
    kind, data = event["type"], event["data"]
    usage = (data.get("usage") if kind == "turn" else data) or {}
    return {
        "session": event["session_id"],
        "type": kind,
        "what": _tracked_what(kind, data),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
    }


def tracked(events: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tracking events as a receiver got them (``IngestReceiver.unique_events()``), one row
    each, in arrival order; ids, timestamps and runtimes left out (they change every run)."""
    frame = pd.DataFrame([_tracked_row(event) for event in events])
    frame = frame.astype({"input_tokens": "Int64", "output_tokens": "Int64"})  # ints, or <NA>
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="#")
    return frame


# -- a streaming stand-in for an LLM (05_agent_stream) ----------------------------------------
# langchain-core is imported inside the functions: the other notebooks do not need it.
USAGE = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}


def text_turn(*pieces: str) -> list[Any]:
    """A model turn answering with ``pieces`` of text, then a chunk carrying the usage."""
    from langchain_core.messages import AIMessageChunk  # noqa: PLC0415

    return [AIMessageChunk(content=p) for p in pieces] + [
        AIMessageChunk(content="", usage_metadata=USAGE)  # type: ignore[arg-type]
    ]


def tool_turn(call_id: str, name: str, *args: str) -> list[Any]:
    """A model turn calling tool ``name``, its JSON arguments streamed as ``args`` pieces."""
    from langchain_core.messages import AIMessageChunk  # noqa: PLC0415

    first = {"name": name, "args": "", "id": call_id, "index": 0}
    rest = [{"name": None, "args": a, "id": None, "index": 0} for a in args]
    return [AIMessageChunk(content="", tool_call_chunks=[c]) for c in [first, *rest]] + [  # type: ignore[list-item]
        AIMessageChunk(content="", usage_metadata=USAGE)  # type: ignore[arg-type]
    ]


def endless_turn(words: Iterable[str]) -> Any:
    """A model turn that never ends by itself: ``words`` cycled (a cancel stops it)."""
    import itertools  # noqa: PLC0415

    from langchain_core.messages import AIMessageChunk  # noqa: PLC0415

    return (AIMessageChunk(content=w) for w in itertools.cycle(list(words)))


def streaming_chat_model(turns: list[Any], *, pause: float = 0.0) -> Any:
    """A chat model playing ``turns`` (one per call) chunk by chunk, ``pause`` s per chunk.

    ``produced`` counts the chunks it yielded (what a cancel test compares).
    ``bind_tools`` keeps the model as it is: the script decides which tool is called.
    """
    import asyncio  # noqa: PLC0415

    from langchain_core.language_models import BaseChatModel  # noqa: PLC0415
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: PLC0415

    class StreamingChatModel(BaseChatModel):
        script: list[Any]
        pause: float = 0.0
        produced: int = 0
        calls: int = 0

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _next(self) -> Any:
            self.calls += 1
            return self.script[self.calls - 1]

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            merged = None
            for chunk in self._next():
                merged = chunk if merged is None else merged + chunk
            return ChatResult(generations=[ChatGeneration(message=merged)])

        async def _astream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            for message in self._next():
                await asyncio.sleep(self.pause)
                chunk = ChatGenerationChunk(message=message)
                self.produced += 1
                if run_manager is not None:
                    await run_manager.on_llm_new_token(message.text, chunk=chunk)
                yield chunk

    return StreamingChatModel(script=list(turns), pause=pause)
