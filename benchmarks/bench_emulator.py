"""The connector emulator's own maximum rates: what it can serve, so it never limits a client.

Both figures read with the cheapest reader there is, in this process, against an
emulator process (``autoplay-live emulator``, the one every stream benchmark
uses): httpx streaming the raw bytes and counting frames (``\\nid: ``), no
SSE parsing, no JSON, no validation. A client figure (``bench_stream.py``)
is meaningful only while it stays well under these.

* ``backlog replay`` — a burst of ``--events`` synthetic events published
  before the reader connects, replayed from the ring (``--replay-from-start``)
  as fast as the socket takes it; timed from the request to the last frame.
* ``live publish`` — the same number of events published by the emulator's
  synthetic load as fast as it can (``--rate 0``) once the reader is
  connected, each written to the open stream as it is published; timed from
  the first frame to the last (a fresh emulator per run).

Figures only: no reference and no floor (the reader is the floor). Each figure
is the median of ``--repeat`` runs. Prints one JSON document (``_common.emit``).

Usage: ``benchmarks/.venv-ref/bin/python benchmarks/bench_emulator.py``
(``BENCH_SMOKE=1`` for tiny sizes). A full run (100,000 events, 5 runs per figure)
takes about a minute; the emulator holds ~1.3 KB per ring frame (~130 MB).
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from _common import emit, emulator, figure, size

SESSIONS = 50
_MARK = b"\nid: "


def read_frames(url: str, total: int, *, from_first_frame: bool) -> float:
    """Read ``total`` frames from ``url``; events/s (from the request, or the first frame)."""
    count, tail = 0, b""
    first = 0.0
    with httpx.Client(timeout=120) as client:
        started = time.perf_counter()  # after the client's set-up (its TLS context)
        with client.stream("GET", url) as response:
            for chunk in response.iter_raw():
                if not first:
                    first = time.perf_counter()
                # A mark split across two reads is counted once: the tail is shorter.
                count += (tail + chunk).count(_MARK)
                tail = chunk[-(len(_MARK) - 1) :]
                if count >= total:
                    break
    last = time.perf_counter()
    if count < total:
        raise RuntimeError(f"{url}: read {count} of {total} frames")
    return total / (last - (first if from_first_frame else started))


def backlog_rate(events: int, repeat: int) -> float:
    """Median events/s of ``repeat`` replays of one backlog."""
    load = ["--rate", "0", "--total", str(events), "--sessions", str(SESSIONS)]
    with emulator([*load, "--replay-size", str(events)], backlog=True) as url:
        rates = [read_frames(url, events, from_first_frame=False) for _ in range(repeat)]
    return statistics.median(rates)


def live_rate(events: int, repeat: int) -> float:
    """Median events/s of ``repeat`` live runs, each on a fresh emulator."""
    load = ["--rate", "0", "--total", str(events), "--sessions", str(SESSIONS)]
    rates = []
    for _ in range(repeat):
        with emulator([*load, "--replay-size", str(events)], backlog=False) as url:
            rates.append(read_frames(url, events, from_first_frame=True))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    """Measure both rates and print one JSON document of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=size(100_000, 2_000))
    parser.add_argument("--repeat", type=int, default=size(5, 1), help="runs per figure (median)")
    args = parser.parse_args(argv)
    where = f"{args.events} events, 1 action each, {SESSIONS} sessions; raw httpx reader"
    plan = [
        ("emulator backlog replay rate", "replayed from the ring", backlog_rate),
        ("emulator live publish rate", "synthetic load at --rate 0 to one open stream", live_rate),
    ]
    rows = [
        figure(
            name,
            f"{where}; {detail}",
            unit="events/s",
            better="higher",
            ours=round(measure(args.events, args.repeat), 1),
        )
        for name, detail, measure in plan
    ]
    emit("bench_emulator", rows, repeat=args.repeat, events=args.events)


if __name__ == "__main__":
    main()
