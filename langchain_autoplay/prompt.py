"""``AutoplayPrompt``: the bridge's reply prompt as a LangChain ``Runnable``.

An LCEL chain gets exactly the prompt ``POST /reply/{user_id}`` of
:mod:`autoplay_base.bridge` sends its model: the same reads (the user's recent
sessions, the activity since their last message, the conversation so far, the
knowledge base) and the same text, because both run one flow
(:func:`autoplay_base.prompting._conversation.prompt_flow`)::

    chain = AutoplayPrompt(store, knowledge=search) | ChatOpenAI(model="gpt-4o-mini")
    chain.invoke("How do I add a seat?", config={"configurable": {"user_id": "u1"}})

**Input**: the user's message as a string, or a mapping with ``"message"`` and
optionally ``"user_id"``, ``"product_id"`` and ``"knowledge"`` (excerpts of your
own, before the knowledge base's). The user and product come from the input,
else from ``config["configurable"]`` under the same names (per call, never from
the instance). No user is a :class:`~autoplay_base.errors.ConfigError`. A user
known under several products without a product is an
:class:`~autoplay_base.errors.AmbiguousUserError`, as on the bridge.

**Output**: a :class:`~langchain_core.prompt_values.StringPromptValue` of the
text :func:`~autoplay_base.bridge.assemble_prompt` returns. Chosen over a
``ChatPromptValue`` of several messages because it is what the bridge sends: a
chat model turns it into one ``HumanMessage`` holding the whole text (as it does
the bridge's string), so a model behind the chain and behind the bridge sees the
same single message; a completion LLM gets the text itself, and
``.to_string()`` gives it to code.

**Watermark**: the activity "since the user's last message" starts at the ``at``
of the conversation's last human entry, stored in the backend under
:func:`~autoplay_base.prompting.conversation_key` (``product_id``,
``"bridge-user:<user_id>"``). The runnable only reads it: the bridge's ``/reply``
writes each turn there, and an LCEL app that answers on its own writes its turns
with :class:`~langchain_autoplay.AutoplayChatMessageHistory` on that key (the
same entry shape). With a Redis backend every worker reads the same entries, so
they agree on the watermark.

``invoke`` uses the store's sync reads and a sync knowledge base; ``ainvoke``
its async reads and a sync or async knowledge base. Needs the ``serve`` extra
for now (the flow lives in :mod:`autoplay_base.bridge`, whose package imports
Starlette).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.prompt_values import StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from autoplay_base.context_store import AsyncContextStore, ContextStore
from autoplay_base.errors import ConfigError, InvalidPayloadError
from autoplay_base.prompting._assembly import DEFAULT_SYSTEM_PROMPT
from autoplay_base.prompting._conversation import (
    KnowledgeSearch,
    PromptFlow,
    PromptRequest,
    arun_prompt,
    prompt_flow,
    run_prompt,
)
from autoplay_base.user_index import DEFAULT_USER_LOOKBACK_SECONDS, UserSessionIndex

__all__ = ["AutoplayPrompt", "PromptInput"]

PromptInput = str | Mapping[str, Any]
"""The user's message, or ``{"message", "user_id"?, "product_id"?, "knowledge"?}``."""


class AutoplayPrompt(Runnable[PromptInput, StringPromptValue]):
    """The bridge's reply prompt for a user's message (see the module docstring).

    Args:
        store: the context store the bridge (or your ingest) fills; sync or async.
        knowledge: ``fn(question) -> excerpts`` (async ones under ``ainvoke`` only).
        system_prompt: the prompt's first paragraph (the bridge's default).
        user_lookback_seconds: what counts as a user's recent session.
        clock: ``time.time`` (tests).
    """

    def __init__(
        self,
        store: ContextStore | AsyncContextStore,
        *,
        knowledge: KnowledgeSearch | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        user_lookback_seconds: float = DEFAULT_USER_LOOKBACK_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.knowledge = knowledge
        self.system_prompt = system_prompt
        self.clock = clock
        self.index = UserSessionIndex(store, lookback_seconds=user_lookback_seconds, clock=clock)

    def __repr__(self) -> str:
        return f"AutoplayPrompt(store={self.store!r})"

    def _flow(self, value: PromptInput, config: RunnableConfig | None) -> PromptFlow:
        return prompt_flow(
            _request_of(value, ensure_config(config)),
            system_prompt=self.system_prompt,
            search=self.knowledge is not None,
            clock=self.clock,
        )

    def invoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> StringPromptValue:
        """The prompt for ``input`` (the store's sync reads)."""
        flow = self._flow(input, config)
        result = run_prompt(flow, self.store, self.index, self.knowledge)
        return StringPromptValue(text=result.prompt)

    async def ainvoke(
        self, input: PromptInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> StringPromptValue:
        """Async twin of :meth:`invoke` (the store's async reads)."""
        flow = self._flow(input, config)
        result = await arun_prompt(flow, self.store, self.index, self.knowledge)
        return StringPromptValue(text=result.prompt)


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidPayloadError(f"AutoplayPrompt: {name} must be a string")
    return value


def _request_of(value: PromptInput, config: RunnableConfig) -> PromptRequest:
    """The bridge's prompt request for one input and its config (see the module docstring)."""
    fields: Mapping[str, Any] = {"message": value} if isinstance(value, str) else value
    if not isinstance(fields, Mapping):
        raise InvalidPayloadError("AutoplayPrompt: the input must be a string or a mapping")
    configurable = config.get("configurable") or {}
    message = _text(fields.get("message"), "message")
    if message is None or not message.strip():
        raise InvalidPayloadError("AutoplayPrompt: message must be a non-empty string")
    user_id = _text(fields.get("user_id"), "user_id") or _text(
        configurable.get("user_id"), "user_id"
    )
    if user_id is None:
        raise ConfigError(
            "AutoplayPrompt: the call names no user; pass input['user_id'] or "
            "config['configurable']['user_id']"
        )
    # The product comes from where the user came from, so the two are never mixed.
    source = fields if fields.get("user_id") else configurable
    product_id = _text(source.get("product_id"), "product_id")
    knowledge = fields.get("knowledge", ())
    if not isinstance(knowledge, (list, tuple)) or not all(isinstance(e, str) for e in knowledge):
        raise InvalidPayloadError("AutoplayPrompt: knowledge must be a list of strings")
    return PromptRequest(user_id, message, product_id, tuple(knowledge))
