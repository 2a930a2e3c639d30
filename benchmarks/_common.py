"""Helpers shared by the benchmark scripts: sizes, configurations, payloads, figure rows.

Every script prints one JSON document (see :func:`emit`)::

    {"benchmark": "...", "reference": "autoplay-sdk 0.13.0" | null,
     "peer": "mlsdk-python 1.0.5" | null, "smoke": bool,
     "machine": {...}, "figures": [row, ...], "details": {...}}

and every row (see :func:`figure`) names its figure, its configuration, its
unit, which direction is better, ``ours`` and, where measured in the same
process, ``reference`` (the autoplay-sdk installed in the running environment),
``floor`` (the least any implementation could do), ``peer`` (the same figure for
another published package doing the same job, named by the document's ``peer``:
``pydantic-ai-stream``, ``mlsdk-python``, the ``autoplay-sdk[serve]`` bridge) and a
``target``.
``run_all.py`` merges the rows of the runs in both reference environments.

``BENCH_SMOKE=1`` shrinks every size so each script finishes in seconds; smoke
figures only prove the scripts run and are never results.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SMOKE = os.environ.get("BENCH_SMOKE") == "1"
"""Tiny sizes: ``tests/test_benchmarks.py`` and ``run_all.py --smoke`` set it."""


def size(full: int, smoke: int) -> int:
    """``full`` for a real run, ``smoke`` under ``BENCH_SMOKE=1``."""
    return smoke if SMOKE else full


SEED = "seed"
CURRENT = "current"
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    SEED: {
        "label": "seed docs: lookback_seconds=300, max_actions=20; 1 action per event",
        "store_options": {"lookback_seconds": 300, "max_actions": 20},
        "batches": 50,
        "batch_size": 1,
    },
    CURRENT: {
        "label": "current: no lookback, no cap; 10 batches of 5 actions",
        "store_options": {},
        "batches": 10,
        "batch_size": 5,
    },
}
"""The two store configurations every store figure is measured in.

``seed`` is what the seed documents (and autoplay-sdk's own docstring) recommend:
``ContextStore(lookback_seconds=300, max_actions=20)`` fed one action per event;
``current`` is this project's defaults with actions arriving in batches. Both
give every session 50 actions; the constructor options are the same keywords in
both packages.
"""

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
    product_id: str,
    session_id: str,
    batch: int,
    size: int,
    rng: random.Random,
    *,
    at: float = 1_700_000_000.0,
) -> dict[str, Any]:
    """One realistic ``actions`` payload as the connector sends it, sent at ``at + batch`` ms.

    Pass ``at=time.time()`` wherever a lookback applies: autoplay-sdk filters on
    ``forwarded_at``, so payloads stamped in the past would all be dropped.
    """
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
        "forwarded_at": at + batch / 1000,
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


def reference_version() -> str | None:
    """``"autoplay-sdk X.Y.Z"`` for the reference installed here, ``None`` without one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"autoplay-sdk {version('autoplay-sdk')}"
    except PackageNotFoundError:
        return None


def figure(
    name: str,
    configuration: str,
    *,
    unit: str,
    ours: float,
    reference: float | None = None,
    floor: float | None = None,
    peer: float | None = None,
    better: str = "lower",
    target: str | None = None,
) -> dict[str, Any]:
    """One row of results; ``better`` is ``"lower"`` (times, bytes) or ``"higher"`` (rates)."""
    assert better in ("lower", "higher"), better
    return {
        "figure": name,
        "configuration": configuration,
        "unit": unit,
        "better": better,
        "ours": ours,
        "reference": reference,
        "floor": floor,
        "peer": peer,
        "target": target,
    }


def emit(
    benchmark: str, figures: list[dict[str, Any]], *, peer: str | None = None, **details: Any
) -> None:
    """Print the figures as one JSON document (what ``run_all.py`` collects).

    ``peer`` names the package (with its version) whose figures fill the rows' ``peer``.
    """
    document = {
        "benchmark": benchmark,
        "reference": reference_version(),
        "peer": peer,
        "smoke": SMOKE,
        "machine": machine(),
        "figures": figures,
        "details": details,
    }
    print(json.dumps(document, indent=2, sort_keys=True))


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


@contextlib.contextmanager
def emulator(extra: list[str], *, backlog: bool) -> Iterator[str]:
    """An emulator process serving product ``bench`` with synthetic load; yields its URL.

    With ``backlog`` the load is published before any client connects and every
    new stream replays it from the ring at socket speed (so the emulator never
    limits a throughput figure and one emulator serves many runs); otherwise the
    load starts once a client is connected, at the ``--rate`` in ``extra``.
    """
    command = [sys.executable, "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "bench", "--load", "--heartbeat", "5"]
    command += ["--replay-from-start"] if backlog else ["--wait-for-client"]
    process = subprocess.Popen(command + extra, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("emulator: serving "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        if backlog:
            published = process.stdout.readline().strip()
            if not published.startswith("emulator: published"):
                raise RuntimeError(f"emulator did not publish its backlog: {published!r}")
        yield line.rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(10)
