"""``autoplay-live demo``: why live context changes the answer, offline, in seconds.

What it runs, all in this process and on loopback:

1. the connector emulator on a free port, playing three scripted Flowdesk users
   (inviting a teammate, upgrading a plan, exporting a report);
2. a ``ConnectorClient`` feeding a ``ContextStore`` (in memory, or Redis with
   ``--redis URL``);
3. a LangChain retriever over the bundled help centre: BM25 (the ``bm25s``
   package), real and offline, no embeddings to fetch;
4. for every user, the same ambiguous questions asked of the plain retriever
   and of ``AutoplayRetriever`` wrapping it, side by side, plus the prompt a
   chat model would get. With ``OPENAI_API_KEY`` set and ``langchain-openai``
   installed it also asks the model.

The demo is an application of both layers, so it lives here, with the
LangChain adapters, and needs the ``demo`` extra (``bm25s``); ``autoplay_base``
keeps only its data (:mod:`autoplay_base.demo`) and imports no framework.
``autoplay_base.demo.app`` is a deprecated alias of this module.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from autoplay_base.context_store import ContextStore
from autoplay_base.demo import (
    DEFAULT_DEMO_PRODUCT,
    DEFAULT_DEMO_SPEED,
    DEMO_QUESTIONS,
    HelpArticle,
    load_help_center,
)
from autoplay_base.emulator import EmulatorServer, list_scripts, load_script
from autoplay_base.errors import MissingDependencyError
from autoplay_base.stream import ConnectorClient

try:
    import bm25s
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, PrivateAttr

    from langchain_autoplay.retrievers import AutoplayRetriever
except ImportError as exc:  # exercised in a subprocess with the import blocked
    missing = f" ({exc.name} is missing)" if exc.name else ""
    raise MissingDependencyError(
        f"the demo needs langchain-core and bm25s{missing}; "
        "install them with pip install 'autoplay-live-context[demo]'"
    ) from exc

__all__ = ["DEMO_QUESTIONS", "DemoOptions", "HelpCenterRetriever", "run_demo"]

DEFAULT_SPEED = DEFAULT_DEMO_SPEED
"""The older name of :data:`autoplay_base.demo.DEFAULT_DEMO_SPEED` (one value, kept for imports)."""
STREAM_TIMEOUT_SECONDS = 60.0
"""Seconds the demo waits to connect and for the client to store what was published."""
TOP_K = 3
"""Help articles each retriever returns."""
_WIDTH = 100

PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are Flowdesk's support assistant. Answer in two or three sentences, "
            "using the help articles and what the user is doing right now.",
        ),
        ("human", "Help articles:\n{articles}\n\n{question}"),
    ]
)


@dataclass
class DemoOptions:
    """What ``autoplay-live demo`` can change (see ``--help``)."""

    product: str = DEFAULT_DEMO_PRODUCT
    speed: float = DEFAULT_DEMO_SPEED
    questions: Sequence[str] = DEMO_QUESTIONS
    scripts: Sequence[str] = field(default_factory=list_scripts)
    redis_url: str | None = None
    show_prompts: bool = True
    """With ``verbose``: also the prompt a chat model would get (``--no-prompts``: not)."""
    verbose: bool = False
    """Each user's full live context and the prompts, not only the table (``--verbose``)."""
    model: BaseChatModel | None = None
    """A chat model to answer with; by default one is built from ``OPENAI_API_KEY``."""


class HelpCenterRetriever(BaseRetriever):
    """BM25 over the help-centre articles (the ``bm25s`` package), top ``k``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    articles: list[HelpArticle]
    k: int = TOP_K
    _index: Any = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        corpus = [f"{a.title}. {a.body}" for a in self.articles]
        self._index = bm25s.BM25()
        self._index.index(
            bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
        )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        hits, scores = self._index.retrieve(tokens, k=k or self.k, show_progress=False)
        documents = []
        for position, score in zip(hits[0], scores[0], strict=True):
            article = self.articles[int(position)]
            documents.append(
                Document(
                    page_content=article.body,
                    metadata={
                        "id": article.id,
                        "title": article.title,
                        "url": article.url,
                        "score": round(float(score), 2),
                    },
                )
            )
        return documents


def _chat_model() -> BaseChatModel | None:
    """A real chat model when the user configured one; ``None`` otherwise."""
    if not os.environ.get("OPENAI_API_KEY"):
        return None
    try:
        from langchain_openai import ChatOpenAI  # noqa: PLC0415
    except ImportError:
        return None
    model: BaseChatModel = ChatOpenAI(model=os.environ.get("AUTOPLAY_DEMO_MODEL", "gpt-4o-mini"))
    return model


class _Screen:
    """Plain terminal output: a progress line redrawn on a TTY, one final line elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def rule(self, title: str) -> None:
        self.line()
        self.line(f"== {title} " + "=" * max(0, _WIDTH - len(title) - 4))

    @staticmethod
    def _bar(done: int, total: int) -> str:
        filled = int(30 * done / total) if total else 30
        bar = "#" * filled + "." * (30 - filled)
        return f"  streaming live activity [{bar}] {done}/{total} events"

    def progress(self, done: int, total: int) -> None:
        """Redraw the progress line (a TTY only: a log or a pipe gets the final line)."""
        if self.tty:
            print("\r" + self._bar(done, total), end="", file=self.out, flush=True)

    def end_progress(self, done: int, total: int) -> None:
        if self.tty:
            self.progress(done, total)
            self.line()
        else:
            self.line(self._bar(done, total))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        self.line(
            ("  " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))).rstrip()
        )
        self.line("  " + "-+-".join("-" * w for w in widths))
        for row in rows:
            cells = " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            self.line(("  " + cells).rstrip())


def _titles(documents: Sequence[Document]) -> str:
    titles = [d.metadata["title"] for d in documents if "title" in d.metadata]
    return titles[0] if titles else "(nothing)"


def _articles_block(documents: Sequence[Document]) -> str:
    return "\n".join(
        f"- {d.metadata['title']}: {d.page_content}" for d in documents if "title" in d.metadata
    )


@dataclass(frozen=True, slots=True)
class _Step:
    at: float  # seconds from the start, script time
    event: str
    payload: dict[str, Any]


def _timeline(scripts: Sequence[str]) -> tuple[list[_Step], list[tuple[str, str]]]:
    """Every script's frames on one clock, and each script's (session id, user) pair."""
    steps: list[_Step] = []
    users: list[tuple[str, str]] = []
    for script in scripts:
        elapsed = 0.0
        frames = load_script(script)
        first = frames[0].data
        users.append((str(first["session_id"]), str(first.get("email") or first["session_id"])))
        for frame in frames:
            elapsed += frame.delay
            steps.append(_Step(elapsed, frame.event, frame.data))
    steps.sort(key=lambda step: step.at)
    return steps, users


class _Player:
    """Publishes the timeline at ``speed`` and waits until the client has stored it."""

    def __init__(self, screen: _Screen, server: EmulatorServer, client: ConnectorClient) -> None:
        self.screen, self.server, self.client = screen, server, client
        self.published = 0

    def play(self, steps: Sequence[_Step], product: str, speed: float, total: int) -> None:
        started = time.monotonic()
        for step in steps:
            # Demo pacing (script time / speed), not synchronisation.
            pause = step.at / speed - (time.monotonic() - started) if speed > 0 else 0.0
            if pause > 0:
                time.sleep(pause)
            self.server.publish(product, step.payload, event=step.event)
            self.published += 1
            self.screen.progress(self.client.counters.delivered, total)
        self.wait_stored(total)

    def wait_stored(self, total: int) -> None:
        deadline = time.monotonic() + STREAM_TIMEOUT_SECONDS
        while self.client.counters.delivered < self.published and time.monotonic() < deadline:
            self.screen.progress(self.client.counters.delivered, total)
            time.sleep(0.05)  # a UI refresh: the loop condition decides
        self.screen.end_progress(self.client.counters.delivered, total)


def run_demo(options: DemoOptions | None = None, out: TextIO | None = None) -> int:
    """Run the demo, writing to ``out`` (stdout); returns the process exit code.

    By default it prints one screen per checkpoint: what each user is doing, in
    one line, and the side-by-side table of top hits (about 40 lines in all);
    ``DemoOptions(verbose=True)`` (``--verbose``) adds each user's full live
    context and, at the first checkpoint, the prompt a chat model would get.
    """
    options = options or DemoOptions()
    screen = _Screen(out or sys.stdout)
    screen.line("autoplay-live demo: the same questions, with and without the user's live context")
    screen.line("(offline: connector emulator on loopback, BM25 over a 30-article help centre)")

    backend = None
    if options.redis_url:
        from autoplay_base.backends.redis import RedisBackend  # noqa: PLC0415 - optional extra

        backend = RedisBackend.from_url(options.redis_url)
    store = ContextStore(backend=backend)
    knowledge_base = HelpCenterRetriever(articles=load_help_center())
    live = AutoplayRetriever(store=store, retriever=knowledge_base, include_context_document=True)

    steps, users = _timeline(options.scripts)
    server = EmulatorServer(products=[options.product]).start()
    client = ConnectorClient(server.url_for(options.product))
    client.on_actions(store.add).on_summary(store.add)
    connected = threading.Event()
    client.on_connect(connected.set)
    client.run_in_background()
    try:
        if not connected.wait(STREAM_TIMEOUT_SECONDS):
            screen.line("  could not connect to the emulator")
            return 1
        demo = _Checkpoint(
            screen, options, store, knowledge_base, live, options.model or _chat_model()
        )
        player = _Player(screen, server, client)
        halfway = len(steps) // 2
        for number, (part, title) in enumerate(
            ((steps[:halfway], "halfway through their sessions"), (steps[halfway:], "at the end")),
            start=1,
        ):
            screen.rule(f"{number}. Three Flowdesk users are using the app: {title}")
            player.play(part, options.product, options.speed, len(steps))
            demo.show(users, first=number == 1)
        stats = client.counters
        screen.rule("Done")
        screen.line(
            f"  received {stats.received} events, delivered {stats.delivered}, "
            f"dropped {stats.dropped}; {len(store.active_sessions)} sessions in the store"
        )
        if demo.model is None:
            screen.line(
                "  To generate answers too: pip install langchain-openai and set OPENAI_API_KEY."
            )
        if not options.verbose:
            screen.line("  --verbose shows each user's full live context and the prompt it builds.")
        screen.line(
            "  Next: notebooks/01_quickstart.ipynb, or `autoplay-live emulator` for your bot."
        )
        return 0
    finally:
        client.stop()
        server.close()
        store.close()


def _user_name(who: str) -> str:
    """The short name a table shows: an email's local part."""
    return who.split("@", 1)[0]


def _doing_now(store: ContextStore, session_id: str, product: str) -> str:
    """What a user is doing, in one line: their latest action, else their summary."""
    view = store.view(session_id, product)
    if view is None:
        return "(no live context yet)"
    if view.actions:
        return view.actions[-1].split(" — ", 1)[0]  # the description, without the page URL
    return view.summary or "(no live context yet)"


@dataclass
class _Checkpoint:
    """What the demo shows at one moment of the users' sessions."""

    screen: _Screen
    options: DemoOptions
    store: ContextStore
    knowledge_base: HelpCenterRetriever
    live: AutoplayRetriever
    model: BaseChatModel | None

    def show(self, users: Sequence[tuple[str, str]], *, first: bool) -> None:
        """Each user's current activity, the table of top hits, then answers or prompts."""
        screen, options = self.screen, self.options
        screen.line()
        width = max(len(_user_name(who)) for _, who in users)
        for session_id, who in users:
            if options.verbose:
                context = self.store.get(session_id, options.product) or "(no live context yet)"
                screen.line(f"  {who} ({session_id}) — live context:")
                screen.line(textwrap.indent(context, "    | ", lambda _: True))
            else:
                now = _doing_now(self.store, session_id, options.product)
                room = _WIDTH - width - 4
                screen.line(f"  {_user_name(who).ljust(width)}  {textwrap.shorten(now, room)}")
        rows = []
        for session_id, who in users:
            for n, question in enumerate(options.questions):
                plain = self.knowledge_base.invoke(question)
                with_context = self.live.invoke(question, config=self._config(session_id))
                name = _user_name(who) if n == 0 else ""
                rows.append((name, question, _titles(plain), _titles(with_context)))
        screen.line()
        screen.table(
            ("user", "question", "plain retriever: top hit", "with live context: top hit"), rows
        )
        for session_id, who in users:
            self._answer(
                session_id, who, show_prompt=options.verbose and options.show_prompts and first
            )

    def _config(self, session_id: str) -> Any:
        return {"configurable": {"session_id": session_id, "product_id": self.options.product}}

    def _answer(self, session_id: str, who: str, *, show_prompt: bool) -> None:
        """The model's answer to the first question, or (``show_prompt``) its prompt."""
        if self.model is None and not show_prompt:
            return
        question = self.options.questions[0]
        documents = self.live.invoke(question, config=self._config(session_id))
        inputs = {
            "articles": _articles_block(documents),
            "question": self.store.enrich(session_id, question, self.options.product),
        }
        screen = self.screen
        screen.line()
        if self.model is not None:
            answer = (PROMPT | self.model | StrOutputParser()).invoke(inputs)
            screen.line(f"  {who} ({session_id}):")
            screen.line(f"  answer to {question!r}:")
            screen.line(textwrap.indent(textwrap.fill(answer, _WIDTH - 4), "    "))
            return
        screen.line(f"  {who} ({session_id}): the prompt a chat model would get for {question!r}:")
        for message in PROMPT.format_messages(**inputs):
            text = f"[{message.type}]\n{message.content}"
            screen.line(textwrap.indent(text, "    ", lambda _: True))
