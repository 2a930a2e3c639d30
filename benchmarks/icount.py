"""Instructions per call of ``enrich`` and ``store.add`` (ours), counted by callgrind.

Timings on a shared machine are noisy; an instruction count is not. This runs
the measured calls under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0`` and fixed sizes, so the same code gives the same count
(within a fraction of a percent) on any quiet or busy machine: compare it
before and after an optimisation, on one machine and one Python build.

How: the worker process builds its store (uncounted), then makes the measured
calls through ``itertools.starmap``, and callgrind counts only inside
``starmap_next`` (``--collect-atstart=no --toggle-collect=starmap_next``):
exactly the calls, plus starmap's own few instructions per item. Figures:

* ``enrich``: ``ContextStore.enrich(session, query, product_id=...)`` over
  ``SESSIONS`` sessions of 50 actions (the ``current`` configuration), random
  sessions; the **floor** is the same loop over a dict lookup of an already
  rendered block plus one concatenation (as in ``bench_store``);
* ``enrich`` in the ``seed`` configuration (``lookback_seconds=300,
  max_actions=20``, 50 one-action events per session): the figure the seed
  documents' users see, with its own floor;
* ``store.add``: one new ``actions`` event (5 actions, already decoded, unique
  event id) into an existing session.

Needs valgrind (``apt-get install valgrind``) and a CPython whose symbols are
not stripped (pyenv and distribution builds keep ``starmap_next``). Run::

    benchmarks/.venv-ref/bin/python benchmarks/icount.py      # or: make bench

``BENCH_SMOKE=1`` shrinks the sizes (a different count: compare like with like).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CONFIGURATIONS, CURRENT, SEED, actions_event, emit, figure, size

SESSIONS = size(1_000, 50)
CALLS = size(2_000, 50)
PRODUCT = "bench"
QUERY = "How do I do this?"
MEASURES = ("enrich", "enrich-floor", "enrich-seed", "enrich-seed-floor", "add")
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def build_store(name: str = CURRENT) -> Any:
    """``SESSIONS`` sessions of a configuration's 50 actions."""
    from autoplay_base import ContextStore, decode_event

    config = CONFIGURATIONS[name]
    store = ContextStore(**config["store_options"])
    rng = random.Random(1)
    for batch in range(config["batches"]):
        for n in range(SESSIONS):
            raw = actions_event(PRODUCT, f"ps_{n}", batch, config["batch_size"], rng)
            store.add(decode_event(json.dumps(raw), event_id=f"{batch}-{n}"))
    return store


def calls(measure: str) -> tuple[Any, list[tuple[Any, ...]]]:
    """The function to count and its argument tuples, one per call."""
    store = build_store(SEED if measure.startswith("enrich-seed") else CURRENT)
    rng = random.Random(2)
    if measure == "add":
        from autoplay_base import decode_event

        events = []
        for call in range(CALLS):
            raw = actions_event(PRODUCT, f"ps_{rng.randrange(SESSIONS)}", 100 + call, 5, rng)
            events.append((decode_event(json.dumps(raw), event_id=f"new-{call}"),))
        return store.add, events
    sessions = [(f"ps_{rng.randrange(SESSIONS)}", QUERY, PRODUCT) for _ in range(CALLS)]
    if measure in ("enrich", "enrich-seed"):
        return store.enrich, sessions
    blocks: dict[tuple[str, str], str] = {
        (PRODUCT, f"ps_{n}"): store.enrich(f"ps_{n}", QUERY, PRODUCT)[: -len(QUERY)]
        for n in range(SESSIONS)
    }

    def floor(session_id: str, query: str, product_id: str) -> str:
        return blocks[(product_id, session_id)] + query

    return floor, sessions


def worker(measure: str) -> None:
    """Make the calls through ``starmap`` (the only place callgrind counts)."""
    function, arguments = calls(measure)
    for _ in itertools.starmap(function, arguments):
        pass


def count(measure: str, valgrind: str) -> float:
    """Instructions per call of ``measure``, from one callgrind run."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=starmap_next",
            f"--callgrind-out-file={Path(scratch) / 'callgrind.out'}",
            sys.executable,
            __file__,
            "--worker",
            measure,
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind failed for {measure}:\n{done.stderr[-2000:]}")
    return round(int(found.group(1)) / CALLS)


def main(argv: list[str] | None = None) -> None:
    """Count every measure and print one JSON document of figure rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=MEASURES)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        emit("icount", [], skipped="valgrind is not installed")
        return
    started = time.perf_counter()
    counts = {measure: count(measure, valgrind) for measure in MEASURES}
    where = f"{SESSIONS:,} sessions x 50 actions (current), {CALLS:,} calls, PYTHONHASHSEED=0"
    rows = [
        figure(
            "enrich instructions per call",
            where,
            unit="instructions",
            ours=counts["enrich"],
            floor=counts["enrich-floor"],
        ),
        figure(
            "enrich instructions per call",
            f"{SESSIONS:,} sessions x 50 one-action events (seed: lookback_seconds=300, "
            f"max_actions=20), {CALLS:,} calls, PYTHONHASHSEED=0",
            unit="instructions",
            ours=counts["enrich-seed"],
            floor=counts["enrich-seed-floor"],
        ),
        figure(
            "store.add instructions per call",
            f"{where}; 5 actions per event, decoded beforehand",
            unit="instructions",
            ours=counts["add"],
        ),
    ]
    emit("icount", rows, valgrind_seconds=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
