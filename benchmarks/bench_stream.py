"""Stream clients side by side: this package vs the published ``autoplay-sdk`` client.

Three scenarios, each against a fresh emulator process (same events for both):

* ``throughput`` — events/s from the socket into a ``ContextStore`` (a burst of
  ``--throughput-events`` events sent as fast as the client reads);
* ``bare`` — the same burst with a callback that stores nothing: what the
  client alone (reading, SSE, decoding, dispatch) can deliver, so the share of
  the store in the ``throughput`` figure can be read off;
* ``freshness`` — p50/p99 milliseconds from the emulator stamping
  ``forwarded_at`` (at send time) to the event being visible in the store, at
  2,000 events/s;
* ``loss`` — events lost when the server closes the stream every 500 events,
  at 500 events/s.

Each client runs in its own process (the reference one from
``benchmarks/.venv-ref``, where ``autoplay-sdk==0.7.4`` is installed), the
emulator in another, so no two share a GIL. Prints one JSON dict.

Usage::

    python3 -m venv benchmarks/.venv-ref
    benchmarks/.venv-ref/bin/pip install -e '.[all]' autoplay-sdk==0.7.4
    .venv/bin/python benchmarks/bench_stream.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REF_PYTHON = ROOT / "benchmarks" / ".venv-ref" / "bin" / "python"
OUR_PYTHON = Path(sys.executable)


# -- worker side (runs inside one client's process) -------------------------------------
def _make_client(kind: str, url: str) -> tuple[Any, Any]:
    """(client, store) for ``kind``; the store's ``add`` is the actions callback."""
    if kind == "ours":
        from autoplay_base.context_store import ContextStore
        from autoplay_base.stream import ConnectorClient

        return ConnectorClient(url, max_queue_size=100_000), ContextStore()
    from autoplay_sdk import ConnectorClient as RefClient  # type: ignore[import-not-found]
    from autoplay_sdk import ContextStore as RefStore

    return RefClient(url, max_queue_size=100_000), RefStore()


def _make_async_client(kind: str, url: str) -> tuple[Any, Any]:
    if kind == "ours-async":
        from autoplay_base.context_store import AsyncContextStore
        from autoplay_base.stream import AsyncConnectorClient

        return AsyncConnectorClient(url, max_queue_size=100_000), AsyncContextStore()
    from autoplay_sdk import AsyncConnectorClient as RefAsyncClient
    from autoplay_sdk import AsyncContextStore as RefAsyncStore

    return RefAsyncClient(url), RefAsyncStore()


def _seq(payload: Any) -> int:
    # Synthetic descriptions end with "(#<seq>)"; the seq identifies the event.
    description: str = payload.actions[0].description
    return int(description.rsplit("#", 1)[1].rstrip(")"))


class _Tally:
    """What one run observed, and the figures derived from it."""

    def __init__(self, scenario: str, total: int) -> None:
        self.scenario = scenario
        self.total = total
        self.seen: set[int] = set()
        self.latencies: list[float] = []
        self.first = 0.0
        self.last = 0.0
        self.count = 0

    def record(self, payload: Any) -> bool:
        """Account for one event stored; ``True`` once ``total`` were seen."""
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.scenario == "freshness":
            self.latencies.append(now - payload.forwarded_at)
        self.seen.add(_seq(payload))
        if self.count >= self.total:
            self.last = time.perf_counter()
            return True
        return False

    def figures(self) -> dict[str, Any]:
        result: dict[str, Any] = {"received": self.count, "unique": len(self.seen)}
        if self.scenario in ("throughput", "bare"):
            elapsed = (self.last or time.perf_counter()) - self.first
            result["events_per_s"] = round((self.count - 1) / elapsed, 1) if elapsed > 0 else 0
        elif self.scenario == "freshness":
            ordered = sorted(self.latencies[len(self.latencies) // 10 :]) or [float("nan")]
            result["p50_ms"] = round(statistics.median(ordered) * 1000, 3)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            result["p99_ms"] = round(p99 * 1000, 3)
        else:
            result["lost"] = self.total - len(self.seen)
        return result


async def _aworker(kind: str, scenario: str, url: str, total: int, grace: float) -> Any:
    client, store = _make_async_client(kind, url)
    tally = _Tally(scenario, total)
    done = asyncio.Event()

    async def on_actions(payload: Any) -> None:
        if scenario != "bare":
            await store.add(payload)
        if tally.record(payload):
            done.set()

    client.on_actions(on_actions)
    task = client.run_in_background()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), grace)
    client.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    return tally.figures()


def _worker(kind: str, scenario: str, url: str, total: int, grace: float) -> dict[str, Any]:
    if kind.endswith("-async"):
        figures: dict[str, Any] = asyncio.run(_aworker(kind, scenario, url, total, grace))
        return figures
    client, store = _make_client(kind, url)
    done = threading.Event()
    tally = _Tally(scenario, total)

    def on_actions(payload: Any) -> None:
        if scenario != "bare":
            store.add(payload)
        if tally.record(payload):
            done.set()

    client.on_actions(on_actions)
    client.run_in_background()
    done.wait(grace)  # in the loss scenario a lossy client never reaches total
    client.stop()
    return tally.figures()


# -- driver side ------------------------------------------------------------------------
def _start_emulator(extra: list[str], backlog: bool) -> tuple[subprocess.Popen[str], str]:
    command = [str(OUR_PYTHON), "-m", "autoplay_base.cli", "emulator", "--port", "0"]
    command += ["--product", "bench", "--load", "--heartbeat", "5"]
    # A backlog is published before any client connects and streamed from the replay
    # ring at socket speed, so the emulator is never what limits the throughput figure.
    command += ["--replay-from-start"] if backlog else ["--wait-for-client"]
    process = subprocess.Popen(command + extra, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("emulator: serving "):
        process.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    if backlog:
        published = process.stdout.readline().strip()
        if not published.startswith("emulator: published"):
            process.kill()
            raise RuntimeError(f"emulator did not publish its backlog: {published!r}")
    return process, line.rsplit(" ", 1)[1]


def _run(kind: str, scenario: str, emulator_args: list[str], total: int, grace: float) -> Any:
    emulator, url = _start_emulator(emulator_args, backlog=scenario in ("throughput", "bare"))
    python = OUR_PYTHON if kind.startswith("ours") else REF_PYTHON
    try:
        command = [str(python), __file__, "--worker", kind, "--scenario", scenario]
        command += ["--url", url, "--total", str(total), "--grace", str(grace)]
        out = subprocess.run(
            command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        emulator.terminate()
        emulator.wait(10)


def _ratio(ours: float, ref: float) -> float | None:
    return round(ours / ref, 2) if ref else None


def _median_run(
    kinds: tuple[str, str], scenario: str, args: list[str], total: int, *, repeat: int, key: str
) -> dict[str, dict[str, Any]]:
    """Alternate the two clients ``repeat`` times; keep each one's run with the median ``key``."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(repeat):
        for kind in kinds:
            runs[kind].append(_run(kind, scenario, args, total, 60))
    picked = {}
    for kind, results in runs.items():
        ordered = sorted(results, key=lambda r: float(r[key]))
        picked[kind] = {**ordered[len(ordered) // 2], f"all_{key}": [r[key] for r in results]}
    return picked


def _throughput_figure(runs: dict[str, dict[str, Any]], ours: str, ref: str) -> dict[str, Any]:
    return {
        "ours": runs[ours]["events_per_s"],
        "ref": runs[ref]["events_per_s"],
        "ratio": _ratio(runs[ours]["events_per_s"], runs[ref]["events_per_s"]),
        "runs": {"ours": runs[ours]["all_events_per_s"], "ref": runs[ref]["all_events_per_s"]},
    }


def main(argv: list[str] | None = None) -> None:
    """Run every scenario for both clients and print one JSON dict of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["ours", "ref", "ours-async", "ref-async"])
    parser.add_argument("--scenario", choices=["throughput", "bare", "freshness", "loss"])
    parser.add_argument("--url")
    parser.add_argument("--total", type=int, default=0)
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--throughput-events", type=int, default=20_000)
    parser.add_argument("--freshness-seconds", type=float, default=3.0)
    parser.add_argument("--loss-events", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median kept)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.scenario, args.url, args.total, args.grace)))
        return
    if not REF_PYTHON.exists():
        raise SystemExit(f"reference venv missing: {REF_PYTHON} (see this file's docstring)")

    n = args.throughput_events
    burst = ["--rate", "0", "--total", str(n), "--sessions", "50", "--replay-size", str(n)]
    fresh_total = int(2000 * args.freshness_seconds)
    paced = ["--rate", "2000", "--total", str(fresh_total), "--sessions", "50"]
    m = args.loss_events
    lossy = ["--rate", "500", "--total", str(m), "--sessions", "20", "--close-every", "500"]

    figures: dict[str, Any] = {"reference": "autoplay-sdk==0.7.4", "repeat": args.repeat}
    for label, kinds in (("sync", ("ours", "ref")), ("async", ("ours-async", "ref-async"))):
        ours, ref = kinds
        throughput = {
            scenario: _throughput_figure(
                _median_run(kinds, scenario, burst, n, repeat=args.repeat, key="events_per_s"),
                ours,
                ref,
            )
            for scenario in ("throughput", "bare")
        }
        fresh = _median_run(
            kinds, "freshness", paced, fresh_total, repeat=args.repeat, key="p99_ms"
        )
        loss = {kind: _run(kind, "loss", lossy, m, m / 500 + 5) for kind in kinds}
        figures[label] = {
            "throughput_events_per_s": throughput["throughput"],
            "throughput_without_store_events_per_s": throughput["bare"],
            "freshness_at_2000_per_s_ms": {
                "ours": {"p50": fresh[ours]["p50_ms"], "p99": fresh[ours]["p99_ms"]},
                "ref": {"p50": fresh[ref]["p50_ms"], "p99": fresh[ref]["p99_ms"]},
                "p99_ratio_ref_over_ours": _ratio(fresh[ref]["p99_ms"], fresh[ours]["p99_ms"]),
                "p99_runs": {"ours": fresh[ours]["all_p99_ms"], "ref": fresh[ref]["all_p99_ms"]},
            },
            "lost_close_every_500_at_500_per_s": {
                "sent": m,
                "ours": loss[ours]["lost"],
                "ref": loss[ref]["lost"],
            },
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
