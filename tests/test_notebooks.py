"""The jupytext notebooks run top to bottom in their fast mode (JAXQC_FAST=1) and render their figures;
they convert to .ipynb with jupytext."""
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("qm9_krr.py", "schnet_training.py", "sgdml_force_field.py", "differentiable_md.py", "schnorb_water.py",
         "gschnet_qm9.py")


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
    assert max(ns["covariance_error"]) < 1e-5 and np.isfinite(ns["cormorant_scores"]["forces_mae"])


def test_sgdml_force_field_notebook(tmp_path, monkeypatch):
    import jax

    ns = _run("sgdml_force_field.py", tmp_path, monkeypatch)
    assert not jax.config.jax_enable_x64  # float64 only inside enable_x64 contexts
    assert ns["scores"]["forces_mae"] < 3.0 and ns["scores"]["energy_mae"] < 1.0
    log, stats = ns["log"], ns["stats"]
    assert len(log["step"]) == ns["STEPS"] // ns["WRITE_EVERY"] + 1 and log["step"][-1] == ns["STEPS"]
    # NVE conserves energy: the total fluctuates far less than the potential energy swings, and barely drifts
    assert stats["fluctuation_std_kcal_mol"] < 0.05 * log["potential_kcal_mol"].std()
    assert abs(stats["drift_kcal_mol_ps"]) * ns["STEPS"] * ns["DT_FS"] / 1000 < stats["fluctuation_std_kcal_mol"]
    for png in ("sgdml_parity.png", "sgdml_nve_energy.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_differentiable_md_notebook(tmp_path, monkeypatch):
    import jax

    ns = _run("differentiable_md.py", tmp_path, monkeypatch)
    assert not jax.config.jax_enable_x64
    assert {c["leaf"] for c in ns["checks"]} >= {"['beta']", "['centres']", "['sigma']", "R0"}
    assert ns["max_rel_error"] < 1e-4  # gradients through the scan agree with finite differences
    history = ns["history"]
    assert abs(history[-1] - ns["target"]) < 1e-4 and abs(history[0] - ns["target"]) > 0.005  # steered there
    for png in ("differentiable_md_gradient.png", "differentiable_md_steering.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_convert_to_ipynb(name, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    path = NOTEBOOKS / name
    nb = jupytext.read(path)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 4, path.name
    nbformat.validate(nb)
    out = tmp_path / path.with_suffix(".ipynb").name
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "notebook", "--output", str(out), str(path)],
                   check=True, capture_output=True)
    assert nbformat.read(out, as_version=4).cells[0].cell_type == "markdown"


def test_schnorb_water_notebook(tmp_path, monkeypatch):
    pytest.importorskip("pyscf")
    ns = _run("schnorb_water.py", tmp_path, monkeypatch)
    assert ns["rotation_error_ha"] < 1e-5          # D in float32
    assert ns["eps"].shape == (30, 24) and np.isfinite(ns["scores"]["H"]["mae"])
    assert (tmp_path / "schnorb_water_orbitals.png").stat().st_size > 5000


def test_gschnet_notebook(qm9_full_cache, tmp_path, monkeypatch):
    pytest.importorskip("rdkit")
    monkeypatch.setenv("JAXQC_CACHE", str(qm9_full_cache[0]))
    ns = _run("gschnet_qm9.py", tmp_path, monkeypatch)
    assert ns["summary"]["valid"] >= 0.5  # a tiny model of the 17 smallest QM9 molecules mostly makes molecules
    for png in ("gschnet_2d.png", "gschnet_3d.png"):
        assert (tmp_path / png).stat().st_size > 5000
