"""The chatbot's prompt from the live context: one text for the bridge and for LCEL.

:func:`assemble_prompt` is the pure layout (values in, text out: activity since
the user's last message, recent activity, the conversation so far, knowledge-base
excerpts, the question; empty sections left out, no placeholder ever left).
What ``POST /reply/{user_id}`` of :mod:`autoplay_base.bridge` sends the model and
what ``langchain_autoplay.AutoplayPrompt`` hands the next step of a chain are the
same text, read from the store by one flow. The conversation (and with it the
inbound watermark, the ``at`` of its last human entry) lives in the store's
backend under :func:`conversation_key`, so workers sharing a Redis agree.

Needs no optional extra.
"""

from __future__ import annotations

from autoplay_base.prompting._assembly import DEFAULT_SYSTEM_PROMPT, Turn, assemble_prompt
from autoplay_base.prompting._conversation import CONVERSATION_PREFIX, conversation_key

__all__ = [
    "CONVERSATION_PREFIX",
    "DEFAULT_SYSTEM_PROMPT",
    "Turn",
    "assemble_prompt",
    "conversation_key",
]
