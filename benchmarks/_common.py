"""Helpers shared by the benchmark scripts: percentiles, machine facts, realistic payloads."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
from typing import Any

PAGES = [
    ("Dashboard", "Viewed the Dashboard page", "https://app.example.com/dashboard"),
    ("Billing", "Opened billing settings", "https://app.example.com/settings/billing"),
    ("Upgrade", "Clicked Upgrade plan", "https://app.example.com/settings/billing"),
    ("Team", "Opened the Team members page", "https://app.example.com/settings/team"),
    ("Invite", "Clicked Invite teammate", "https://app.example.com/settings/team"),
    ("Reports", "Opened Reports", "https://app.example.com/reports"),
    ("Export", "Clicked Export CSV button", "https://app.example.com/reports"),
]


def actions_event(
    product_id: str, session_id: str, batch: int, size: int, rng: random.Random
) -> dict[str, Any]:
    """One realistic ``actions`` payload as the connector sends it."""
    picked = [PAGES[rng.randrange(len(PAGES))] for _ in range(size)]
    return {
        "type": "actions",
        "product_id": product_id,
        "session_id": session_id,
        "user_id": f"usr_{session_id}",
        "email": f"{session_id}@example.com",
        "actions": [
            {
                "title": title,
                "description": f"{description} (step {batch * size + i})",
                "canonical_url": url,
                "index": batch * size + i,
                "type": "click",
            }
            for i, (title, description, url) in enumerate(picked)
        ],
        "count": size,
        "forwarded_at": 1_700_000_000.0 + batch,
    }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_us": round(p50 / 1000, 2), "p99_us": round(p99 / 1000, 2)}


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the figures as one JSON document (what ``run_all.py`` collects)."""
    print(json.dumps(result, indent=2, sort_keys=True))


def latency(ours: float, reference: float) -> dict[str, float]:
    """A time figure: ``speedup`` is how many times faster ours is."""
    return {"ours": ours, "reference": reference, "speedup": round(reference / ours, 2)}


def throughput(ours: float, reference: float) -> dict[str, float]:
    """A rate figure: ``speedup`` is how many times more ours does."""
    return {"ours": ours, "reference": reference, "speedup": round(ours / reference, 2)}


def proportion(ours: float, reference: float) -> dict[str, float]:
    """A size figure: ``ratio`` is ours over the reference (lower is better)."""
    return {"ours": ours, "reference": reference, "ratio": round(ours / reference, 3)}


def live_store(sessions: int, batches: int, batch_size: int, product: str = "bench") -> Any:
    """An in-memory ContextStore: ``sessions`` sessions of ``batches * batch_size`` actions."""
    from autoplay_base.context_store import ContextStore
    from autoplay_base.events import ActionsPayload

    rng = random.Random(1)
    store = ContextStore()
    for batch in range(batches):
        for n in range(sessions):
            payload = actions_event(product, f"ps_{n}", batch, batch_size, rng)
            store.add(ActionsPayload.model_validate(payload))
    return store
