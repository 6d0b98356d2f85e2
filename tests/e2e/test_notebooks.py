"""The notebooks in notebooks/ run top to bottom on the session workspace (CDP_HOME points at it)
and draw their figures inline, so they cannot silently rot. They read the workspace only: no data
is regenerated here. MPLBACKEND is left unset, as in Jupyter: the kernel picks the inline backend,
whose figures are the image/png outputs checked here."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
FIGURES = {"01": 3, "02": 4, "03": 3}  # inline figures each notebook draws on a synthetic workspace


def test_there_is_a_notebook_per_audience():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_states_its_question_and_uses_public_functions_only(path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and "**The question:**" in first.source
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "matplotlib.use(" not in code  # would stop inline rendering in Jupyter
    assert not re.search(r"import\s+(\w+\s*,\s*)*_\w+|\b\w+\._[a-z]\w*\(", code), "private helper used"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_and_draws_its_figures(path, pipeline_ws, monkeypatch, tmp_path):
    monkeypatch.setenv("CDP_HOME", str(pipeline_ws.root))  # the kernel inherits it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= FIGURES[path.name[:2]], f"{path.name}: {len(figures)} inline figures"
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert str(pipeline_ws.root) in text  # it read the workspace it was given, not ./data
    assert "Warning" not in text  # third-party deprecation notes do not reach the reader
    as_text = [o for o in outputs if "<Figure" in str(o.get("data", {}).get("text/plain", "")) and o not in figures]
    assert not as_text  # every figure rendered as an image, none only as its text repr


def test_committed_notebooks_carry_the_figures_of_a_demo_run():
    """`make notebooks` refreshes them; a notebook committed without outputs shows only code."""
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= FIGURES[path.name[:2]], path.name
        assert not [o for o in outputs if o.get("output_type") == "error"], path.name
