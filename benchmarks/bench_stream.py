"""Stream clients side by side: this package vs autoplay-sdk vs the raw floor.

Scenarios, each client in its own process against an emulator process (same
events for all; the emulator's load is one action per event over 50 sessions):

* ``throughput`` — events/s from the socket into a ``ContextStore`` built with
  each configuration's store options (``seed``: ``lookback_seconds=300,
  max_actions=20``; ``current``: none), a burst of ``--throughput-events``
  events replayed from the emulator's ring as fast as the client reads;
* ``bare`` — the same burst with a callback that stores nothing: what the
  client alone (reading, SSE, decoding, dispatch) can deliver;
* the **raw floor** (``raw`` / ``raw-async`` workers) — the same burst read
  with httpx streaming and one ``json.loads`` per ``data:`` line, no
  validation, no callback, no store: what any client on httpx has to pay;
* ``freshness`` — p50/p99 milliseconds from the emulator stamping
  ``forwarded_at`` (at send time) to the event being visible in the store, at
  2,000 events/s, over the events of every run pooled, each worker past its
  startup (its imports' garbage collected first); the floor is the raw reader's
  send-to-parsed latency in the same runs (alternating with the clients), so a
  stall of the emulator or of the machine (it shows in the floor too) is told
  apart from one of a client;
* ``loss`` — events lost when the server closes the stream every 500 events,
  at 500 events/s.

The reference is the ``autoplay-sdk`` installed in the running interpreter's
environment (``run_all.py`` runs this script once per reference environment),
so every worker runs on ``sys.executable``. Backlog scenarios share one
emulator (``--replay-from-start`` serves each new stream the whole ring);
paced ones get a fresh emulator per run. Runs alternate the clients so machine
noise hits both alike; each figure is the median of ``--repeat`` runs.
Prints one JSON document (``_common.emit``).

Usage: ``benchmarks/.venv-ref/bin/python benchmarks/bench_stream.py``
(``BENCH_SMOKE=1`` for tiny sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import CONFIGURATIONS, CURRENT, ROOT, SMOKE, emit, emulator, figure, size

PYTHON = Path(sys.executable)
SESSIONS = 50
INGEST_TARGETS = {"sync": "≥ 1.3× autoplay-sdk 0.13.0", "async": "≥ 1.8× autoplay-sdk 0.13.0"}


@dataclass(frozen=True)
class Job:
    """One client run: which client, which scenario, against which emulator."""

    kind: str
    scenario: str
    url: str
    total: int
    grace: float
    config: str = CURRENT

    @property
    def options(self) -> dict[str, Any]:
        """The store's constructor options in this job's configuration."""
        options: dict[str, Any] = CONFIGURATIONS[self.config]["store_options"]
        return options


# -- worker side (runs inside one client's process) -------------------------------------
def _make_client(kind: str, url: str, options: dict[str, Any]) -> tuple[Any, Any]:
    """(client, store) for ``kind``; the store's ``add`` is the actions callback."""
    if kind == "ours":
        from autoplay_base.context_store import ContextStore
        from autoplay_base.stream import ConnectorClient

        return ConnectorClient(url, max_queue_size=100_000), ContextStore(**options)
    from autoplay_sdk import ConnectorClient as RefClient  # type: ignore[import-not-found]
    from autoplay_sdk import ContextStore as RefStore

    return RefClient(url, max_queue_size=100_000), RefStore(**options)


def _make_async_client(kind: str, url: str, options: dict[str, Any]) -> tuple[Any, Any]:
    if kind == "ours-async":
        from autoplay_base.context_store import AsyncContextStore
        from autoplay_base.stream import AsyncConnectorClient

        return AsyncConnectorClient(url, max_queue_size=100_000), AsyncContextStore(**options)
    from autoplay_sdk import AsyncConnectorClient as RefAsyncClient
    from autoplay_sdk import AsyncContextStore as RefAsyncStore

    # autoplay-sdk's async client has no max_queue_size option (0.7.4 and 0.13.0).
    return RefAsyncClient(url), RefAsyncStore(**options)


def _seq(payload: Any) -> int:
    # Synthetic descriptions end with "(#<seq>)"; the seq identifies the event.
    description: str = (
        payload["actions"][0]["description"]
        if isinstance(payload, dict)
        else payload.actions[0].description
    )
    return int(description.rsplit("#", 1)[1].rstrip(")"))


def _sent_at(payload: Any) -> float:
    """The emulator's send stamp of a typed event, or of a raw reader's parsed object."""
    sent: float = payload["forwarded_at"] if isinstance(payload, dict) else payload.forwarded_at
    return sent


class _Tally:
    """What one run observed, and the figures derived from it."""

    def __init__(self, scenario: str, total: int) -> None:
        self.scenario = scenario
        self.total = total
        self.seen: set[int] = set()
        self.latencies: list[float] = []
        # Throughput is timed from the client's start, not from its first callback: a
        # client that buffers frames before dispatching them must not look faster.
        self.first = time.perf_counter()
        self.last = 0.0
        self.count = 0

    def record(self, payload: Any) -> bool:
        """Account for one event stored; ``True`` once ``total`` were seen."""
        now = time.time()
        self.count += 1
        if self.scenario == "freshness":
            self.latencies.append(now - _sent_at(payload))
        self.seen.add(_seq(payload))
        if self.count >= self.total:
            self.last = time.perf_counter()
            return True
        return False

    def figures(self) -> dict[str, Any]:
        result: dict[str, Any] = {"received": self.count, "unique": len(self.seen)}
        if self.scenario in ("throughput", "bare"):
            elapsed = (self.last or time.perf_counter()) - self.first
            result["events_per_s"] = round(self.count / elapsed, 1)
        elif self.scenario == "freshness":
            # After a warm-up tenth; the driver pools every run's latencies (see _pooled).
            warm = self.latencies[len(self.latencies) // 10 :]
            result["latencies_ms"] = [round(latency * 1000, 4) for latency in warm]
        else:
            result["lost"] = self.total - len(self.seen)
        return result


def _raw_rate(first: float, last: float, count: int) -> dict[str, Any]:
    """The figures of a raw run, timed like :class:`_Tally` (from the start)."""
    return {"received": count, "unique": count, "events_per_s": round(count / (last - first), 1)}


class _RawCount:
    """What a raw worker counts: ``actions`` objects read and when; in freshness, a tally.

    One method call per ``data:`` line (a fraction of a percent of the floor's cost
    per event), so the sync and async raw workers share everything but the read.
    """

    def __init__(self, scenario: str, total: int) -> None:
        self.total = total
        self.tally = _Tally(scenario, total) if scenario == "freshness" else None
        self.count, self.first, self.last = 0, time.perf_counter(), 0.0

    def data(self, text: str) -> bool:
        """Account for one ``data:`` value; ``True`` once ``total`` actions were read."""
        obj = json.loads(text)
        if obj.get("type") != "actions":
            return False
        self.count += 1
        self.last = time.perf_counter()
        if self.tally is not None:
            self.tally.record(obj)  # send to parsed: what a client's callback would see
        return self.count >= self.total

    def figures(self) -> dict[str, Any]:
        if self.tally is not None:
            return self.tally.figures()
        return _raw_rate(self.first, self.last, self.count)


def _past_startup() -> None:
    """Collect the imports' garbage, once the worker built its client and before it reads.

    Every worker (ours, the reference's, the raw floor's) reads as a service past its
    startup does. Otherwise a fresh process's first full collection (20-40 ms here)
    falls inside the 3-second freshness window or not by its import-time object
    count, and sets that run's p99.
    """
    gc.collect()


def _raw_worker(url: str, total: int, scenario: str) -> dict[str, Any]:
    """The floor: httpx streaming and ``json.loads`` per ``data:`` line, nothing else."""
    import httpx

    count = _RawCount(scenario, total)
    with httpx.Client(timeout=60) as client:
        _past_startup()
        with client.stream("GET", url) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and count.data(line[5:]):
                    break
    return count.figures()


async def _araw_worker(url: str, total: int, scenario: str) -> dict[str, Any]:
    """The async floor: the same on ``httpx.AsyncClient``."""
    import httpx

    count = _RawCount(scenario, total)
    async with httpx.AsyncClient(timeout=60) as client:
        _past_startup()
        async with client.stream("GET", url) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and count.data(line[5:]):
                    break
    return count.figures()


async def _aworker(job: Job) -> Any:
    client, store = _make_async_client(job.kind, job.url, job.options)
    tally = _Tally(job.scenario, job.total)
    done = asyncio.Event()

    async def on_actions(payload: Any) -> None:
        if job.scenario != "bare":
            await store.add(payload)
        if tally.record(payload):
            done.set()

    client.on_actions(on_actions)
    _past_startup()
    task = client.run_in_background()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), job.grace)
    client.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    return tally.figures()


def _worker(job: Job) -> dict[str, Any]:
    if job.kind == "raw":
        return _raw_worker(job.url, job.total, job.scenario)
    if job.kind == "raw-async":
        figures: dict[str, Any] = asyncio.run(_araw_worker(job.url, job.total, job.scenario))
        return figures
    if job.kind.endswith("-async"):
        figures = asyncio.run(_aworker(job))
        return figures
    client, store = _make_client(job.kind, job.url, job.options)
    done = threading.Event()
    tally = _Tally(job.scenario, job.total)

    def on_actions(payload: Any) -> None:
        if job.scenario != "bare":
            store.add(payload)
        if tally.record(payload):
            done.set()

    client.on_actions(on_actions)
    _past_startup()
    client.run_in_background()
    done.wait(job.grace)  # in the loss scenario a lossy client never reaches total
    client.stop()
    return tally.figures()


# -- driver side ------------------------------------------------------------------------
def _client(job: Job) -> Any:
    """Run one worker process to completion and return its figures."""
    command = [str(PYTHON), __file__, "--worker", job.kind, "--scenario", job.scenario]
    command += ["--url", job.url, "--total", str(job.total), "--grace", str(job.grace)]
    command += ["--config", job.config]
    out = subprocess.run(
        command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    if out.returncode != 0:
        raise RuntimeError(f"{job.kind} worker failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if job.scenario in ("throughput", "bare") and result["received"] != job.total:
        raise RuntimeError(f"{job}: received {result['received']} events")
    return result


def _median(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in results))


def _bursts(label: str, n: int, repeat: int) -> dict[tuple[str, str, str], float]:
    """Median events/s of every (client, scenario, configuration) on one backlog emulator."""
    ours, ref = ("ours", "ref") if label == "sync" else ("ours-async", "ref-async")
    raw = "raw" if label == "sync" else "raw-async"
    plan = [(kind, "throughput", config) for config in CONFIGURATIONS for kind in (ours, ref)]
    plan += [(ours, "bare", CURRENT), (ref, "bare", CURRENT), (raw, "throughput", CURRENT)]
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {step: [] for step in plan}
    burst = ["--rate", "0", "--total", str(n), "--sessions", str(SESSIONS)]
    with emulator([*burst, "--replay-size", str(n)], backlog=True) as url:
        for _ in range(repeat):
            for kind, scenario, config in plan:
                runs[(kind, scenario, config)].append(
                    _client(Job(kind, scenario, url, n, 60, config))
                )
    return {step: _median(results, "events_per_s") for step, results in runs.items()}


def _paced(
    kinds: tuple[str, ...], scenario: str, args: list[str], total: int, *, repeat: int, grace: float
) -> dict[str, list[dict[str, Any]]]:
    """``repeat`` runs of each client, alternating, each on a fresh paced emulator."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(repeat):
        for kind in kinds:
            with emulator(args, backlog=False) as url:
                runs[kind].append(_client(Job(kind, scenario, url, total, grace)))
    return runs


def _burst_figures(label: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ingest throughput of one client kind, with and without a store, beside the floor."""
    ours, ref = ("ours", "ref") if label == "sync" else ("ours-async", "ref-async")
    raw = "raw" if label == "sync" else "raw-async"
    n = args.throughput_events
    rates = _bursts(label, n, args.repeat)
    floor = rates[(raw, "throughput", CURRENT)]
    where = f"{label} client; burst of {n} events, 1 action each, {SESSIONS} sessions"
    # (figure, scenario, store configuration, what the configuration column adds, target)
    plan: list[tuple[str, str, str, str, str | None]] = [
        (
            "ingest throughput",
            "throughput",
            config,
            f"store: {CONFIGURATIONS[config]['label'].split(';')[0]}",
            INGEST_TARGETS[label],
        )
        for config in CONFIGURATIONS
    ]
    plan.append(("ingest without store", "bare", CURRENT, "callback stores nothing", None))
    return [
        figure(
            f"{label} {name}",
            f"{where}; {detail}",
            unit="events/s",
            better="higher",
            ours=rates[(ours, scenario, config)],
            reference=rates[(ref, scenario, config)],
            floor=floor,
            target=target,
        )
        for name, scenario, config, detail, target in plan
    ]


def _pooled(results: list[dict[str, Any]], quantile: float) -> float:
    """The ``quantile`` of every latency of every run of one client, in ms.

    Pooled, not a median of per-run p99s: a pause in one run then weighs by the
    events it delayed, not by how many of the five runs it happened to fall in.
    """
    ordered = sorted(latency for result in results for latency in result["latencies_ms"])
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * quantile))])


def _freshness_figures(label: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Send-to-visible latency at 2,000 events/s, beside the raw reader's (the floor)."""
    kinds = ("ours", "ref", "raw") if label == "sync" else ("ours-async", "ref-async", "raw-async")
    total = int(2000 * args.freshness_seconds)
    paced = ["--rate", "2000", "--total", str(total), "--sessions", str(SESSIONS)]
    fresh = _paced(kinds, "freshness", paced, total, repeat=args.repeat, grace=60)
    return [
        figure(
            f"{label} freshness {name}",
            f"{label} client; 2,000 events/s, send to visible in the store (current), "
            f"every run's events pooled; floor: raw reader, send to parsed",
            unit="ms",
            ours=_pooled(fresh[kinds[0]], quantile),
            reference=_pooled(fresh[kinds[1]], quantile),
            floor=_pooled(fresh[kinds[2]], quantile),
        )
        for name, quantile in (("p50", 0.5), ("p99", 0.99))
    ]


def _loss_figures(label: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Events lost when the server closes the stream every 500 events."""
    kinds = ("ours", "ref") if label == "sync" else ("ours-async", "ref-async")
    m = args.loss_events
    lossy = ["--rate", "500", "--total", str(m), "--sessions", "20", "--close-every", "500"]
    # A lossy client never reaches the total: give it the send time and a margin.
    loss = _paced(kinds, "loss", lossy, m, repeat=1, grace=m / 500 + (1 if SMOKE else 5))
    return [
        figure(
            f"{label} events lost",
            f"{label} client; server closes every 500 events, {m} sent at 500/s",
            unit="events",
            ours=loss[kinds[0]][0]["lost"],
            reference=loss[kinds[1]][0]["lost"],
        )
    ]


SCENARIOS = {"burst": _burst_figures, "freshness": _freshness_figures, "loss": _loss_figures}
"""What ``--scenarios`` can pick (default: all)."""


def main(argv: list[str] | None = None) -> None:
    """Run every scenario for every client and print one JSON document of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--worker", choices=["ours", "ref", "ours-async", "ref-async", "raw", "raw-async"]
    )
    parser.add_argument("--scenario", choices=["throughput", "bare", "freshness", "loss"])
    parser.add_argument("--config", choices=list(CONFIGURATIONS), default=CURRENT)
    parser.add_argument("--url")
    parser.add_argument("--total", type=int, default=0)
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--throughput-events", type=int, default=size(20_000, 500))
    parser.add_argument("--freshness-seconds", type=float, default=0.5 if SMOKE else 3.0)
    parser.add_argument("--loss-events", type=int, default=size(3_000, 1_000))
    parser.add_argument("--clients", default="sync,async", help="sync, async or both")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="burst,freshness,loss")
    parser.add_argument("--repeat", type=int, default=size(5, 1), help="runs per figure (median)")
    args = parser.parse_args(argv)
    if args.worker:
        job = Job(args.worker, args.scenario, args.url, args.total, args.grace, args.config)
        figures = _worker(job)
        print(json.dumps(figures))
        return
    rows = [
        row
        for label in args.clients.split(",")
        for scenario in args.scenarios.split(",")
        for row in SCENARIOS[scenario](label, args)
    ]
    emit("bench_stream", rows, repeat=args.repeat, throughput_events=args.throughput_events)


if __name__ == "__main__":
    main()
