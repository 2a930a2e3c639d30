"""The reply prompt's reads, written once as a flow with a sync and an async driver.

What ``POST /reply/{user_id}`` sends the model and what
``langchain_autoplay.AutoplayPrompt`` hands the next LCEL step are the same text:
both run :func:`prompt_flow`. The flow is a generator that yields one command per
read (the user's products, the conversation's entries, the user's recent
sessions, one session's context, the knowledge base) and receives each answer;
:func:`run_prompt` and :func:`arun_prompt` execute the commands against a store,
line for line the same but for ``await`` (the httpx ``_auth.py`` shape). A
command that fails is thrown back into the flow, which decides: a knowledge-base
failure costs the prompt its excerpts (reported in the result), any other failure
(the backend) propagates to the caller.

The inbound watermark is read from the conversation itself: the ``at`` of its
last human entry, stored in the backend next to the messages
(:func:`conversation_key`). Every worker sharing a Redis reads the same entries,
so they agree on the watermark without a key of their own.

No Starlette here: plain code over the store, so LCEL users need no ``serve`` extra.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, NamedTuple

from autoplay_base.backends.base import SessionKey
from autoplay_base.context_store import DEFAULT_PRODUCT_ID, AsyncContextStore, ContextStore
from autoplay_base.errors import AmbiguousUserError
from autoplay_base.formatting import compose_id, format_user_activity
from autoplay_base.prompting._assembly import (
    DEFAULT_SYSTEM_PROMPT,
    assemble_prompt,
    decode_history,
    last_human_at,
)
from autoplay_base.user_index import UserSessionIndex

__all__ = [
    "CONVERSATION_PREFIX",
    "Context",
    "Excerpts",
    "KnowledgeSearch",
    "Messages",
    "Products",
    "PromptFlow",
    "PromptRequest",
    "PromptResult",
    "RecentSessions",
    "arun_prompt",
    "conversation_key",
    "pick_product",
    "prompt_flow",
    "run_prompt",
]

logger = logging.getLogger("autoplay_base.bridge")

CONVERSATION_PREFIX = "bridge-user"
"""A user's conversation lives in the chat-history key ``(product_id, "bridge-user:<user_id>")``."""

KnowledgeSearch = Callable[[str], "Sequence[str] | Awaitable[Sequence[str]]"]
"""``fn(question) -> excerpts``, sync or async (async ones only under the async driver)."""


def conversation_key(product_id: str, user_id: str) -> SessionKey:
    """Where a user's conversation with the bridge is kept (chat-history namespace)."""
    return SessionKey(product_id, compose_id(CONVERSATION_PREFIX, user_id))


def pick_product(user_id: str, products: Sequence[str]) -> str:
    """The user's one product (the default one when none is known).

    Raises:
        AmbiguousUserError: the user is known under several products.
    """
    if len(products) > 1:
        raise AmbiguousUserError(user_id, list(products))
    return products[0] if products else DEFAULT_PRODUCT_ID


# -- commands: what the flow asks its driver to read ------------------------------------
class Products(NamedTuple):
    """The products ``user_id`` is known under (``backend.user_products``)."""

    user_id: str


class Messages(NamedTuple):
    """The stored entries of a conversation (``backend.get_messages``)."""

    key: SessionKey


class RecentSessions(NamedTuple):
    """The user's recent sessions (``UserSessionIndex.get_recent_sessions``)."""

    user_id: str
    product_id: str


class Context(NamedTuple):
    """One session's context, only activity after ``since`` when it is set (``store.get``)."""

    session_id: str
    product_id: str
    since: float | None


class Excerpts(NamedTuple):
    """The knowledge base's excerpts for the question."""

    question: str


Command = Products | Messages | RecentSessions | Context | Excerpts


class PromptRequest(NamedTuple):
    """One user message to build a prompt for; ``knowledge`` are the caller's excerpts."""

    user_id: str
    message: str
    product_id: str | None = None
    knowledge: Sequence[str] = ()


class PromptResult(NamedTuple):
    """The prompt and what the caller records or counts.

    ``read_at`` is the moment the context was read: it becomes the human entry's
    ``at`` (the next watermark), so activity that happens while the model answers
    shows on the next turn. ``knowledge_error`` is the class name of a failed
    knowledge base (its excerpts are left out), else ``None``.
    """

    prompt: str
    product_id: str
    read_at: float
    bad_entries: int
    knowledge_error: str | None


PromptFlow = Generator[Command, Any, PromptResult]


def _joined(refs: Sequence[Any], since: float | None) -> Generator[Command, Any, str]:
    blocks = []
    for ref in refs:
        context = yield Context(ref.session_id, ref.product_id, since)
        if context:
            blocks.append((ref.session_id, ref.product_id, context))
    return format_user_activity(blocks)


def prompt_flow(
    request: PromptRequest,
    *,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    search: bool = False,
    clock: Callable[[], float] = time.time,
) -> PromptFlow:
    """The reads and the assembly of one prompt (see the module docstring).

    ``search`` asks the driver's knowledge base too (after the request's excerpts).
    """
    product = request.product_id
    if product is None:
        product = pick_product(request.user_id, (yield Products(request.user_id)))
    entries = yield Messages(conversation_key(product, request.user_id))
    turns, bad = decode_history(entries)
    watermark = last_human_at(turns)
    read_at = clock()
    refs = yield RecentSessions(request.user_id, product)
    recent = yield from _joined(refs, None)
    since = (yield from _joined(refs, watermark)) if watermark is not None else ""
    knowledge = list(request.knowledge)
    failed = None
    if search:
        try:
            knowledge.extend((yield Excerpts(request.message)))
        except Exception as exc:  # any knowledge-base failure costs only excerpts
            failed = type(exc).__name__
    prompt = assemble_prompt(
        request.message,
        since_last_message=since,
        recent_activity=recent,
        history=turns,
        knowledge=knowledge,
        system_prompt=system_prompt,
    )
    return PromptResult(prompt, product, read_at, bad, failed)


def _finish(store: ContextStore | AsyncContextStore, result: PromptResult) -> PromptResult:
    for _ in range(result.bad_entries):
        store.count_undecodable_history_entry()
    if result.knowledge_error is not None:
        # The answer goes on without excerpts: an outage is logged (the class only:
        # a knowledge base's error text may quote the question).
        logger.warning("bridge: the knowledge base failed (%s)", result.knowledge_error)
    return result


def _search(search: KnowledgeSearch | None, question: str) -> Sequence[str] | Awaitable[Any]:
    if search is None:
        raise RuntimeError("the flow asked for a knowledge base it was not given")
    return search(question)


def run_prompt(
    flow: PromptFlow,
    store: ContextStore | AsyncContextStore,
    index: UserSessionIndex,
    search: KnowledgeSearch | None = None,
) -> PromptResult:
    """Drive ``flow`` with the store's sync reads (a sync ``search`` only)."""

    def execute(command: Command) -> Any:
        if isinstance(command, Products):
            return store.backend.user_products(command.user_id)
        if isinstance(command, Messages):
            return store.backend.get_messages(command.key)
        if isinstance(command, RecentSessions):
            return index.get_recent_sessions(command.user_id, product_id=command.product_id)
        if isinstance(command, Context):
            options = {} if command.since is None else {"since": command.since}
            return store.get(command.session_id, command.product_id, **options)
        found = _search(search, command.question)
        if inspect.isawaitable(found):
            # A coroutine here would never run; closed so it does not warn, refused.
            getattr(found, "close", lambda: None)()
            raise TypeError("an async knowledge base needs the async driver (ainvoke)")
        return list(found)

    reply: Any = None
    failure: Exception | None = None
    while True:
        try:
            command = flow.send(reply) if failure is None else flow.throw(failure)
        except StopIteration as stop:
            return _finish(store, stop.value)
        try:
            reply, failure = execute(command), None
        except Exception as exc:  # thrown into the flow, which decides
            reply, failure = None, exc


async def arun_prompt(
    flow: PromptFlow,
    store: ContextStore | AsyncContextStore,
    index: UserSessionIndex,
    search: KnowledgeSearch | None = None,
) -> PromptResult:
    """Async twin of :func:`run_prompt` (``search`` may be sync or async)."""

    async def execute(command: Command) -> Any:
        if isinstance(command, Products):
            return await store.backend.auser_products(command.user_id)
        if isinstance(command, Messages):
            return await store.backend.aget_messages(command.key)
        if isinstance(command, RecentSessions):
            return await index.aget_recent_sessions(command.user_id, product_id=command.product_id)
        if isinstance(command, Context):
            options = {} if command.since is None else {"since": command.since}
            return await store.aget(command.session_id, command.product_id, **options)
        found = _search(search, command.question)
        if inspect.isawaitable(found):
            found = await found
        return list(found)

    reply: Any = None
    failure: Exception | None = None
    while True:
        try:
            command = flow.send(reply) if failure is None else flow.throw(failure)
        except StopIteration as stop:
            return _finish(store, stop.value)
        try:
            reply, failure = await execute(command), None
        except Exception as exc:  # thrown into the flow, which decides
            reply, failure = None, exc
