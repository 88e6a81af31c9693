"""The jupytext notebooks run top to bottom in their fast mode (JAXQC_FAST=1) and render their figures;
they convert to .ipynb with jupytext."""
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXQC_FAST", "1")
    monkeypatch.setenv("JAXQC_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return runpy.run_path(str(NOTEBOOKS / name), run_name="__main__")


def test_qm9_krr_notebook(qm9_full_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXQC_CACHE", str(qm9_full_cache[0]))
    ns = _run("qm9_krr.py", tmp_path, monkeypatch)
    curve = ns["curve"]
    assert set(curve) == {"cm", "cm-eigen", "bob"}
    assert curve["bob"][-1] < curve["bob"][0] and curve["cm"][-1] < curve["cm"][0]  # learning curves fall
    for png in ("qm9_krr_representations.png", "qm9_krr_learning_curve.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_schnet_training_notebook(tmp_path, monkeypatch):
    ns = _run("schnet_training.py", tmp_path, monkeypatch)
    assert set(ns["results"]) == set(ns["SIZES"])
    for png in ("schnet_training_run.png", "schnet_parity.png", "schnet_learning_curve.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_notebooks_convert_to_ipynb(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    for path in sorted(NOTEBOOKS.glob("*.py")):
        nb = jupytext.read(path)
        kinds = [c.cell_type for c in nb.cells]
        assert kinds.count("markdown") >= 3 and kinds.count("code") >= 4, path.name
        nbformat.validate(nb)
    out = tmp_path / "qm9_krr.ipynb"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "notebook", "--output", str(out),
                    str(NOTEBOOKS / "qm9_krr.py")], check=True, capture_output=True)
    assert nbformat.read(out, as_version=4).cells[0].cell_type == "markdown"
