"""The benchmarks still run and still say what they measure.

Every ``benchmarks/bench_*.py`` runs in smoke mode (``BENCH_SMOKE=1``: tiny
sizes, figures meaningless) inside the headline reference environment
``benchmarks/.venv-ref``, or its peer's own (``bench_agent_stream``:
``benchmarks/.venv-pais``); ``make bench`` creates them, without them these
tests skip. Its JSON document must have the shape ``run_all.py`` merges: the
exact figures, each row complete, a reference value wherever the script
measures one. ``bench_stream`` runs only its sync burst here (its full smoke run
takes a minute); ``run_all.py --smoke`` runs everything. ``run_all``'s merge and
table are plain functions, tested without any environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
REF_PYTHON = BENCHMARKS / ".venv-ref" / "bin" / "python"
PEER_PYTHONS = {"bench_agent_stream": BENCHMARKS / ".venv-pais" / "bin" / "python"}
"""Scripts run in their peer's own environment (``run_all.PEER_ENVIRONMENTS``): no reference."""
PEERS = {"bench_agent_stream": "pydantic-ai-stream 0.1.1"}
COUNT_UNITS = {"events", "keys"}
"""Units of counts, where 0 is a result (nothing lost, nothing left)."""
ROW_KEYS = {
    "figure",
    "configuration",
    "unit",
    "better",
    "ours",
    "reference",
    "floor",
    "peer",
    "target",
}
SEED = "seed docs: lookback_seconds=300, max_actions=20; 1 action per event"
CURRENT = "current: no lookback, no cap; 10 batches of 5 actions"

EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "bench_tracking": (
        [
            "track_turn call p50",
            "track_turn call p99",
            "handler added per agent turn (floor: empty inline handler)",
            "throughput, receiver answers at once",
            "throughput, receiver answers in 100 ms",
            "throughput, receiver answers in 100 ms",
            "flush with 1000 queued",
            "flush(timeout=1) against a hung receiver",
            "events lost in a 3 s 503/429 burst",
        ],
        [],
    ),
    # script: (its figure names in order, extra arguments for the smoke run)
    "bench_store": (["enrich p50", "enrich p99", "memory per session"] * 2, []),
    "bench_emulator": (["emulator backlog replay rate", "emulator live publish rate"], []),
    "bench_stream": (
        ["sync ingest throughput", "sync ingest throughput", "sync ingest without store"],
        ["--clients", "sync", "--scenarios", "burst"],
    ),
    "bench_redis": (
        [
            "Redis sync enrich p50 (floor: bare GET)",
            "in-memory sync enrich p50",
            "Redis sync enrich p99 (floor: bare GET)",
            "in-memory sync enrich p99",
            "Redis async enrich p50 (floor: bare GET)",
            "in-memory async enrich p50",
            "Redis async enrich p99 (floor: bare GET)",
            "in-memory async enrich p99",
            "Redis ingest, pipelined (chunks of 256)",
            "Redis ingest, one store.add at a time",
            "in-memory ingest, one store.add at a time",
        ],
        [],
    ),
    "bench_contention": (
        [
            "sync enrich p50 under ingest",
            "sync enrich p99 under ingest",
            "async enrich p50 under ingest",
            "async enrich p99 under ingest",
        ],
        [],
    ),
    "bench_langchain": (
        ["retriever added p50 (sync)", "retriever added p50 (async)", "enrich p50 (for scale)"],
        [],
    ),
    "bench_bridge": (
        [
            "context route p50",
            "context route p99",
            "context route rate",
            "webhook ingest rate",
            "bridge RSS after the request run",
            "RSS end / half-way (1.00 = flat)",
        ],
        [],
    ),
    "bench_agent_stream": (
        [
            *["handler overhead per token"] * 2,
            *["token-to-listener latency p50", "token-to-listener latency p99"] * 12,
            *["events lost on reconnect", "events duplicated on reconnect"] * 6,
            *["cancel to the model's stream stopping", "tokens produced after cancel"] * 2,
            "run keys left after retention",
        ],
        [],
    ),
    "bench_llamaindex": (
        [
            "postprocessor added p50 (sync)",
            "postprocessor added p50 (async)",
            "postprocessor added p50 (sync, boost)",
            "postprocessor added p50 (async, boost)",
            "postprocess_nodes p50 (hook alone)",
        ],
        [],
    ),
}
WITH_REFERENCE = {"bench_store", "bench_stream"}
WITH_FLOOR = {"bench_store", "bench_stream", "bench_contention"}


def load_run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_script_has_an_expectation() -> None:
    assert sorted(p.stem for p in BENCHMARKS.glob("bench_*.py")) == sorted(EXPECTED)
    assert set(PEER_PYTHONS) == set(load_run_all().PEER_ENVIRONMENTS)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_smoke_run_has_the_merged_shape(script: str) -> None:
    python = PEER_PYTHONS.get(script, REF_PYTHON)
    if not python.exists():
        pytest.skip(f"no {python.parent.parent.name} (make bench creates it)")
    names, extra = EXPECTED[script]
    env = {**os.environ, "BENCH_SMOKE": "1"}
    env.pop("AUTOPLAY_BENCH_REDIS_URL", None)  # the smoke run starts its own server
    done = subprocess.run(
        [str(python), f"{script}.py", *extra],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(done.stdout)
    assert sorted(document) == [
        "benchmark",
        "details",
        "figures",
        "machine",
        "peer",
        "reference",
        "smoke",
    ]
    assert document["benchmark"] == script
    assert document["smoke"] is True
    if script in PEER_PYTHONS:  # the peer's own environment holds no autoplay-sdk
        assert document["reference"] is None and document["peer"] == PEERS[script]
    else:
        assert document["reference"].startswith("autoplay-sdk ")
    rows: list[dict[str, Any]] = document["figures"]
    assert [row["figure"] for row in rows] == names
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert row["better"] in ("lower", "higher"), row
        assert isinstance(row["ours"], (int, float)), row
        if " added " not in row["figure"]:  # a difference of two timings may be noise-negative
            assert row["ours"] > 0 or (row["unit"] in COUNT_UNITS and row["ours"] == 0), row
        assert row["configuration"] and row["unit"], row
        if script in WITH_REFERENCE:
            assert isinstance(row["reference"], (int, float)) and row["reference"] > 0, row
        else:
            assert row["reference"] is None, row
    if script == "bench_agent_stream":  # the peer's figure beside ours wherever it has one
        assert [row["configuration"] for row in rows if row["peer"] is None] == [
            "in-process",
            *[
                f"in-process, {r} tok/s, {n} run{'s' * (n > 1)}"
                for r in (200, 1000)
                for n in (1, 20)
                for _ in range(2)
            ],
            *[
                f"in-process, reconnect every {k} event{'s' * (k > 1)}"
                for k in (1, 10, 100)
                for _ in range(2)
            ],
        ]
        assert all(isinstance(row["peer"], (int, float)) for row in rows if row["peer"] is not None)
        configurations = [row["configuration"] for row in rows]
        apart = [c for c in configurations if "in another process" in c]
        assert apart == [
            f"Redis (loopback), listeners in another process, {r} tok/s, {n} run{'s' * (n > 1)}"
            for r in (200, 1000)
            for n in (1, 20)
            for _ in range(2)
        ]
    if script in WITH_FLOOR:
        assert any(row["floor"] for row in rows)
    if script == "bench_store":
        assert [row["configuration"] for row in rows] == [SEED] * 3 + [CURRENT] * 3
        assert [row["floor"] is not None for row in rows] == [True, True, False] * 2


def run(version: str, rows: list[tuple[str, float, float | None, float | None]]) -> dict[str, Any]:
    return {
        "benchmark": "bench_x",
        "reference": f"autoplay-sdk {version}",
        "smoke": True,
        "machine": {"cpus": 2},
        "details": {},
        "figures": [
            {
                "figure": name,
                "configuration": "c",
                "unit": "µs" if name.startswith("t") else "events/s",
                "better": "lower" if name.startswith("t") else "higher",
                "ours": ours,
                "reference": reference,
                "floor": floor,
                "peer": None,
                "target": None,
            }
            for name, ours, reference, floor in rows
        ],
    }


def test_merge_takes_each_reference_from_its_own_environment() -> None:
    run_all = load_run_all()
    merged = run_all.merge(
        {
            "0.13.0": run("0.13.0", [("time", 10.0, 20.0, 2.0), ("rate", 300.0, 100.0, 600.0)]),
            "0.7.4": run("0.7.4", [("time", 11.0, 40.0, 2.0), ("rate", 290.0, 50.0, 600.0)]),
        }
    )
    assert [(row["figure"], row["ours"], row["references"]) for row in merged] == [
        ("time", 10.0, {"0.13.0": 20.0, "0.7.4": 40.0}),
        ("rate", 300.0, {"0.13.0": 100.0, "0.7.4": 50.0}),
    ]


def test_table_rows_read_above_one_when_ours_is_better() -> None:
    run_all = load_run_all()
    lines = run_all.table(
        {
            "bench_x": {
                "0.13.0": run("0.13.0", [("time", 10.0, 20.0, 2.0), ("rate", 300.0, 100.0, 600.0)]),
                "0.7.4": run("0.7.4", [("time", 11.0, 40.0, 2.0), ("rate", 290.0, 50.0, 600.0)]),
            },
            "bench_y": {"0.13.0": {"error": ["boom"]}},
        }
    )
    assert lines[0] == (
        "| benchmark | figure | configuration | unit | ours | autoplay-sdk 0.13.0 | × vs 0.13.0 "
        "| autoplay-sdk 0.7.4 | × vs 0.7.4 | other peer (× vs it) | floor | ours ÷ floor | target |"
    )
    assert lines[2:] == [
        "| bench_x | time | c | µs | 10.00 | 20.00 | 2.00× | 40.00 | 4.00× |  | 2.00 | 5.00 |  |",
        "| bench_x | rate | c | events/s | 300.00 | 100.00 | 3.00× | 50.00 | 6.00× |  | 600.00 "
        "| 0.50 |  |",
        "| bench_y | failed: {'0.13.0': ['boom']} |" + " |" * 11,
    ]


def test_a_peer_figure_is_named_with_its_ratio() -> None:
    run_all = load_run_all()
    document = run("0.13.0", [("time", 10.0, None, None), ("rate", 300.0, None, None)])
    document["peer"] = "mlsdk-python 1.0.5"
    document["figures"][0]["peer"] = 25.0
    lines = run_all.table({"bench_x": {"0.13.0": document}})
    assert lines[2:] == [
        "| bench_x | time | c | µs | 10.00 |  |  |  |  "
        "| mlsdk-python 1.0.5: 25.00 (2.50×) |  |  |  |",
        "| bench_x | rate | c | events/s | 300.00 |  |  |  |  |  |  |  |  |",
    ]
