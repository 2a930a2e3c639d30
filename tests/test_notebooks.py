"""Execute every notebook in ``notebooks/`` top to bottom, as a new user would.

Each notebook is one test. It runs in a fresh ``python3`` kernel with ``notebooks/``
as the working directory; a cell that raises (including the assertion cells each
notebook ends with) fails the test with that cell's source and traceback.

``kernel_name="python3"`` is ipykernel's spec, whose command is ``python``:
jupyter_client starts it with ``sys.executable``, so the kernel is the interpreter
running the tests (the project's ``.venv``) and sees the same installed packages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 120
KERNEL_START_TIMEOUT_SECONDS = 120
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_notebooks_exist() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_langchain_rag.ipynb",
        "03_llamaindex.ipynb",
        "04_scale_out_with_redis.ipynb",
    ]


def test_notebooks_are_committed_without_outputs() -> None:
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name}: clear the outputs before committing"
                assert cell.execution_count is None, f"{path.name}: clear execution counts"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_SECONDS,
        startup_timeout=KERNEL_START_TIMEOUT_SECONDS,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        # str(exc) holds the failing cell's source and the kernel's traceback.
        # (IPython colours the traceback; the colour codes only get in the way in a log).
        pytest.fail(f"{path.name} failed:\n{_ANSI.sub('', str(exc))}", pytrace=False)
