"""Execute every notebook in ``notebooks/`` top to bottom, and check its committed outputs.

The notebooks are committed executed, so a reader on GitHub (or in the sdist) sees
the tables, the timeline and the plot without running anything. Each notebook is
one test: it runs in a fresh ``python3`` kernel with ``notebooks/`` as the working
directory; a cell that raises (including the assertion cells each notebook ends
with) fails the test with that cell's source and traceback; then every cell's
outputs must equal the committed ones, modulo what legitimately changes between
runs (:func:`normalized`: loopback ports, object addresses, PNG bytes, execution
counts). When they differ, the failure shows the first cell that changed; refresh
them all with::

    python -m tests.test_notebooks          # executes and writes the notebooks in place

``kernel_name="python3"`` is ipykernel's spec, whose command is ``python``:
jupyter_client starts it with ``sys.executable``, so the kernel is the interpreter
running the tests (the project's ``.venv``) and sees the same installed packages.
"""

from __future__ import annotations

import difflib
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 120
KERNEL_START_TIMEOUT_SECONDS = 120
RUN_BUDGET_SECONDS = 60.0
"""What one notebook may take to execute, kernel start included. Each takes 3-9 s on
a shared 2-core machine (the aim is under 20 s); the budget is 3x that aim so a busy
machine does not fail it, while a notebook that starts waiting on a timeout does."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What differs between two runs of the same notebook, and nothing else.
_VOLATILE = [
    (re.compile(r"(127\.0\.0\.1|localhost):\d+"), r"\1:PORT"),
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "0xADDR"),
]


def execute(path: Path) -> Any:
    """The notebook at ``path``, executed in a fresh kernel (raises on a failing cell)."""
    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits this process's environment; it finds notebook_helpers.py in
    # its working directory, notebooks/.
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_SECONDS,
        startup_timeout=KERNEL_START_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timings: never committed
    return notebook


def _text(value: Any) -> str:
    text = "".join(value) if isinstance(value, list) else str(value)
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def normalized(notebook: Any) -> list[list[dict[str, str]]]:
    """Each code cell's outputs, as plain comparable values.

    Kept: every stream's name and text (consecutive messages of one stream joined),
    and every rich output's MIME types and
    text (``text/plain``, ``text/html``), with ports and addresses masked. A PNG
    counts by its presence: its bytes depend on the installed fonts and
    matplotlib's version, not on what the notebook computed.
    """
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs: list[dict[str, str]] = []
        streams: list[tuple[dict[str, str], list[str]]] = []  # each stream's raw pieces
        for output in cell.outputs:
            if output.output_type == "stream":
                raw = "".join(output.text) if isinstance(output.text, list) else output.text
                follows = bool(streams) and outputs[-1] is streams[-1][0]
                if follows and outputs[-1]["stream"] == output.name:
                    # How the kernel cuts one stream into messages depends on timing
                    # (a busy machine flushes mid-cell): the text is what counts.
                    streams[-1][1].append(raw)
                    continue
                shown_stream = {"stream": output.name, "text": ""}
                outputs.append(shown_stream)
                streams.append((shown_stream, [raw]))
                continue
            if output.output_type == "error":
                outputs.append({"error": output.ename, "text": _text(output.evalue)})
                continue
            data = output.get("data", {})
            shown = {"type": output.output_type, "mime": ",".join(sorted(data))}
            for mime in ("text/plain", "text/html"):
                if mime in data:
                    shown[mime] = _text(data[mime])
            outputs.append(shown)
        for shown_stream, pieces in streams:
            shown_stream["text"] = _text(pieces)  # masked once joined: a port may be cut
        cells.append(outputs)
    return cells


def _first_difference(committed: Any, executed: Any) -> str:
    old, new = normalized(committed), normalized(executed)
    for number, (before, after) in enumerate(zip(old, new, strict=True)):
        if before != after:
            diff = difflib.unified_diff(
                repr(before).replace("\\n", "\n").splitlines(),
                repr(after).replace("\\n", "\n").splitlines(),
                "committed",
                "executed",
                lineterm="",
            )
            return f"code cell {number}:\n" + "\n".join(list(diff)[:60])
    return "the code cells differ in number"


def test_notebooks_exist() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_langchain_rag.ipynb",
        "03_llamaindex.ipynb",
        "04_scale_out_with_redis.ipynb",
        "05_agent_stream.ipynb",
        "06_tracking.ipynb",
    ]


def _mimes(path: Path) -> set[str]:
    notebook = nbformat.read(path, as_version=4)
    return {
        mime
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        for mime in output.get("data", {})
    }


def test_notebooks_are_committed_executed_with_tables_and_a_plot() -> None:
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), path.name
        assert all("execution" not in cell.metadata for cell in code), path.name
    assert {"text/html", "text/plain"} <= _mimes(NOTEBOOKS_DIR / "01_quickstart.ipynb")
    assert {"text/html", "image/png"} <= _mimes(NOTEBOOKS_DIR / "02_langchain_rag.ipynb")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_and_its_committed_outputs_are_current(path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    started = time.monotonic()
    try:
        executed = execute(path)
    except nbclient.exceptions.CellExecutionError as exc:
        # str(exc) holds the failing cell's source and the kernel's traceback.
        # (IPython colours the traceback; the colour codes only get in the way in a log).
        pytest.fail(f"{path.name} failed:\n{_ANSI.sub('', str(exc))}", pytrace=False)
    elapsed = time.monotonic() - started
    if normalized(executed) != normalized(committed):
        pytest.fail(
            f"{path.name}: the committed outputs are not current "
            f"(refresh them: python -m tests.test_notebooks)\n"
            f"{_first_difference(committed, executed)}",
            pytrace=False,
        )
    assert elapsed < RUN_BUDGET_SECONDS, f"{path.name} took {elapsed:.1f} s"


def main(argv: list[str]) -> int:
    """Execute the notebooks (all, or those named) and write them back with their outputs."""
    chosen = [NOTEBOOKS_DIR / name for name in argv] or NOTEBOOKS
    for path in chosen:
        started = time.monotonic()
        nbformat.write(execute(path), path)
        print(f"{path.name}: executed and written in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
