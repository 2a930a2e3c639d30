"""A ReAct agent's streamed text, split into its reasoning and its answer.

LlamaIndex's ``ReActAgent`` streams the model's raw output as ``AgentStream.delta``:
``Thought: … Action: … Action Input: {…}`` for a tool step, ``Thought: … Answer: …``
for the last one (LlamaIndex itself keeps only what follows ``Answer:`` as the
response). Sent as answer text, the scratchpad would reach the user and the chat
history. :class:`ReActText` reads one step's deltas: a step whose text starts with
``Thought:`` is ReAct, everything in it before ``Answer:`` is reasoning and what
follows is the answer; any other step's text is the answer as it comes. Until the
first characters tell which (at most ``len("Thought:")`` of them), they are held.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ANSWER", "THOUGHT", "Piece", "ReActText"]

THOUGHT = "Thought:"
ANSWER = "Answer:"
Piece = tuple[Literal["text", "reasoning"], str]


class ReActText:
    """One agent step's deltas as ``("text" | "reasoning", piece)`` pairs (see the module)."""

    def __init__(self) -> None:
        self._seen = ""  # the step's text so far
        self._react: bool | None = None  # None: not told yet
        self._sent = 0  # how much of ``_seen`` went out (reasoning, or held back)
        self._answer_at: int | None = None  # where the answer starts in ``_seen``

    def feed(self, delta: str) -> list[Piece]:
        """The pieces ``delta`` adds (none while the step's kind is not told yet)."""
        self._seen += delta
        if self._react is None:
            head = self._seen.lstrip()
            if len(head) < len(THOUGHT) and THOUGHT.startswith(head):
                return []  # could still be "Thought:"
            self._react = head.startswith(THOUGHT)
        if not self._react:
            return self._rest("text")
        if self._answer_at is None:
            found = self._seen.find(ANSWER, max(0, self._sent - len(ANSWER)))
            if found < 0:
                # Held back: the end may be the start of "Answer:".
                return self._upto(len(self._seen) - len(ANSWER) + 1)
            reasoning = self._upto(found)
            self._answer_at = self._sent = found + len(ANSWER)
            answer = self._seen[self._sent :].lstrip()
            if not answer:
                return reasoning
            self._sent = len(self._seen)
            return [*reasoning, ("text", answer)]
        if self._sent == self._answer_at:  # nothing of the answer out yet: no leading space
            answer = self._seen[self._sent :].lstrip()
            if not answer:
                return []
            self._sent = len(self._seen)
            return [("text", answer)]
        return self._rest("text")

    def flush(self) -> list[Piece]:
        """What is still held at the step's end (its kind is decided by then)."""
        if self._react is None:
            self._react = False
        if not self._react:
            return self._rest("text")
        if self._answer_at is None:
            return self._upto(len(self._seen))
        return self._rest("text") if self._sent > self._answer_at else []

    def _rest(self, kind: Literal["text", "reasoning"]) -> list[Piece]:
        piece = self._seen[self._sent :]
        self._sent = len(self._seen)
        return [(kind, piece)] if piece else []

    def _upto(self, end: int) -> list[Piece]:
        if end <= self._sent:
            return []
        piece = self._seen[self._sent : end]
        self._sent = end
        return [("reasoning", piece)]
