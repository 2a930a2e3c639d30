"""``TrackedSession``: one session's handle, what the application and the adapters call.

Built by ``Tracker.session()`` / ``AsyncTracker.session()``. A handle is a tuple
of ids and the tracker's capture function, so making one per request (or per
framework callback) costs next to nothing; every method is one capture call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autoplay_base.tracking import events as ev
from autoplay_base.tracking._values import Scope

__all__ = ["Capture", "TrackedSession"]

Capture = Callable[[str, Scope, dict[str, Any]], None]
"""The tracker's hot path: ``capture(type, scope, raw values)``."""


class TrackedSession:
    """One session's handle: every ``track_*`` call records an event under its ids.

    Built by :meth:`Tracker.session` / :meth:`AsyncTracker.session`. Every method
    returns at once (see the tracker's docstring); ``conversation_id=`` on a call
    overrides the handle's conversation for that event.
    """

    __slots__ = ("_capture", "_scope")

    def __init__(self, capture: Capture, scope: Scope) -> None:
        self._capture = capture
        self._scope = scope

    def __repr__(self) -> str:
        session_id, product_id, _, _, conversation_id = self._scope
        return (
            f"TrackedSession(session_id={session_id!r}, product_id={product_id!r}, "
            f"conversation_id={conversation_id!r})"
        )

    @property
    def session_id(self) -> str:
        """The session id."""
        session_id = self._scope[0]
        assert session_id is not None
        return session_id

    @property
    def product_id(self) -> str:
        """The product id."""
        return self._scope[1]

    @property
    def user_id(self) -> str | None:
        """The user id (set by :meth:`identify`)."""
        return self._scope[2]

    @property
    def conversation_id(self) -> str | None:
        """The conversation events are recorded under by default."""
        return self._scope[4]

    def track_turn(
        self,
        *,
        user: str,
        assistant: str,
        usage: Any = None,
        conversation_id: str | None = None,
    ) -> None:
        """One exchange: what the user said and what the assistant answered.

        ``usage`` is a mapping or an object with ``model`` and
        ``input_tokens``/``output_tokens`` (or ``prompt_tokens``/``completion_tokens``)
        and/or ``cost``.
        """
        self._capture(
            ev.TURN,
            self._scope,
            {
                "user": user,
                "assistant": assistant,
                "usage": usage,
                "conversation_id": conversation_id,
            },
        )

    def track_tool_call(
        self,
        *,
        name: str,
        args: Any = None,
        result: Any = None,
        runtime_ms: float | None = None,
        error: BaseException | str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """A tool the assistant called: any values for ``args``/``result`` (made JSON-safe)."""
        self._capture(
            ev.TOOL_CALL,
            self._scope,
            {
                "name": name,
                "args": args,
                "result": result,
                "runtime_ms": runtime_ms,
                "error": error,
                "conversation_id": conversation_id,
            },
        )

    def track_usage(
        self,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost: float | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """LLM usage: token counts with a model name, or a cost (or both)."""
        self._capture(
            ev.USAGE,
            self._scope,
            {
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost": cost,
                "conversation_id": conversation_id,
            },
        )

    def track_event(
        self,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        conversation_id: str | None = None,
    ) -> None:
        """A custom event with any properties (made JSON-safe)."""
        self._capture(
            ev.CUSTOM,
            self._scope,
            {"name": name, "properties": properties, "conversation_id": conversation_id},
        )

    def identify(self, user_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """The session's user is now known: later events carry ``user_id``."""
        session_id, product_id, _, device_id, conversation_id = self._scope
        self._scope = (session_id, product_id, user_id, device_id, conversation_id)
        self._capture(ev.IDENTIFY, self._scope, {"user_id": user_id, "traits": traits})

    def alias(self, user_id: str, previous_id: str) -> None:
        """``user_id`` is the new id of the user known as ``previous_id``."""
        self._capture(ev.ALIAS, self._scope, {"user_id": user_id, "previous_id": previous_id})

    def end_conversation(
        self, conversation_id: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> None:
        """The conversation (this handle's, or ``conversation_id``) is over."""
        self._capture(
            ev.CONVERSATION_END,
            self._scope,
            {"properties": properties, "conversation_id": conversation_id},
        )

    def end_session(self, properties: Mapping[str, Any] | None = None) -> None:
        """The session is over (its open conversations with it)."""
        self._capture(ev.SESSION_END, self._scope, {"properties": properties})
