"""Sessions, docs and the exact texts the LlamaIndex adapter tests expect."""

from __future__ import annotations

from llama_index.core.schema import TextNode

from autoplay_base.context_store import ContextStore
from autoplay_base.events import ActionsPayload, SlimAction

ACME = "acme"
GLOBEX = "globex"
START = 1_700_000_000.0


class FakeClock:
    """A settable clock: tests move time explicitly instead of sleeping."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def actions(
    session_id: str,
    *steps: tuple[str, str],
    product_id: str = ACME,
    user_id: str | None = None,
    event_id: str | None = None,
    forwarded_at: float = START,
) -> ActionsPayload:
    """An ``actions`` payload with one action per ``(description, url)`` step."""
    return ActionsPayload(
        product_id=product_id,
        session_id=session_id,
        user_id=user_id,
        actions=tuple(
            SlimAction(title=description, description=description, canonical_url=url)
            for description, url in steps
        ),
        forwarded_at=forwarded_at,
        event_id=event_id,
    )


ALICE_SUMMARY = "User exported a CSV from the Dashboard."
ALICE_STEPS = (
    ("Viewed the Dashboard page", "https://app.example.com/dashboard"),
    ("Opened billing settings", "/settings/billing"),
    ("Clicked Upgrade plan", "/settings/billing"),
)
BOB_STEPS = (("Opened team settings", "/settings/team"),)

ALICE_CONTEXT = (
    "[Session context]\n"
    "Summary: User exported a CSV from the Dashboard.\n"
    "\n"
    "Recent activity:\n"
    "1. Viewed the Dashboard page — https://app.example.com/dashboard\n"
    "2. Opened billing settings — /settings/billing\n"
    "3. Clicked Upgrade plan — /settings/billing"
)
ALICE_MEMORY = ALICE_CONTEXT.removeprefix("[Session context]\n")
BOB_CONTEXT = "[Session context]\nRecent activity:\n1. Opened team settings — /settings/team"
CAROL_ACME_CONTEXT = "[Session context]\nRecent activity:\n1. Opened API keys — /developer"
CAROL_GLOBEX_CONTEXT = "[Session context]\nRecent activity:\n1. Opened reports — /reports"


def fill(store: ContextStore) -> None:
    """Alice and Bob under ``acme``; Carol's session id under both products."""
    store.add(actions("ps_alice", *ALICE_STEPS[:1], event_id="e1", user_id="u_alice"))
    store.add(actions("ps_alice", *ALICE_STEPS[1:], event_id="e2", user_id="u_alice"))
    store.on_summary("ps_alice", ALICE_SUMMARY, product_id=ACME)
    store.add(actions("ps_bob", *BOB_STEPS, event_id="e3", user_id="u_bob"))
    store.add(actions("ps_carol", ("Opened API keys", "/developer"), event_id="e4"))
    store.add(actions("ps_carol", ("Opened reports", "/reports"), product_id=GLOBEX, event_id="e5"))


def context_id(session_id: str, product_id: str | None = ACME) -> str:
    """The node id the postprocessor gives a session's context node."""
    return f"autoplay-live-context:{product_id or ''}:{session_id}"


# One doc per app area; each names its page under a different metadata key.
DOCS = (
    TextNode(
        id_="doc-team",
        text="To add a team member, open Settings and click Invite on the Team page.",
        metadata={"url": "https://docs.example.com/settings/team/"},
    ),
    TextNode(
        id_="doc-billing",
        text="To change your plan, open Settings and click Upgrade on the Billing page.",
        metadata={"path": "/settings/billing"},
    ),
    TextNode(
        id_="doc-export",
        text="To export data, open the Dashboard and click Export CSV.",
        metadata={"canonical_url": "https://docs.example.com/dashboard"},
    ),
    TextNode(
        id_="doc-api",
        text="API keys are listed under Developer settings.",
        metadata={"url": "/developer/keys"},
    ),
)
DOC_IDS = [doc.node_id for doc in DOCS]


def docs() -> list[TextNode]:
    """Fresh copies of the docs (indexes take ownership of the nodes they get)."""
    return [doc.model_copy(deep=True) for doc in DOCS]
