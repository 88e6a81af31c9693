"""A model written outside jaxqc (tests/plugins/pair_potential.py, one file) served by the unchanged
jaxqc: train (with --config and --set), evaluate, md, compare and the ASE calculator, through
`jaxqc --plugin FILE` in-process and through JAXQC_PLUGINS in a `jaxqc` subprocess."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxqc import cli, models
from jaxqc.data import io
from jaxqc.data import registry as data_registry
from jaxqc.errors import JaxqcError
from jaxqc.models import registry
from jaxqc.units import EV_KCAL_MOL

PLUGIN = Path(__file__).parent / "plugins" / "pair_potential.py"
N_TRAIN, N_VALID = 40, 20


@pytest.fixture(scope="module")
def restore_registry():
    """The plugin's registration undone after this module (other tests see the built-in models only)."""
    before = dict(registry._SPECS)
    yield
    registry._SPECS.clear()
    registry._SPECS.update(before)
    sys.modules.pop(f"jaxqc_plugin_{PLUGIN.stem}", None)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    data = data_registry.load("ethanol-xtb").subset(np.arange(300))
    path = tmp_path_factory.mktemp("data") / "ethanol.npz"
    io.write_npz(data, path)
    return path, data


def jaxqc(*argv) -> int:
    return cli.main(["--plugin", str(PLUGIN), *map(str, argv)])


@pytest.fixture(scope="module")
def trained(restore_registry, data_file, tmp_path_factory):
    """`jaxqc --plugin pair_potential.py train pair --config cfg.py --set ...`: the run directory."""
    tmp = tmp_path_factory.mktemp("pair")
    cfg = tmp / "cfg.py"
    cfg.write_text("def get_config():\n    return {'n_basis': 10, 'cutoff_ang': 4.5}\n")
    run = tmp / "run"
    assert jaxqc("train", "pair", "--data", data_file[0], "--n-train", N_TRAIN, "--n-valid", N_VALID,
                 "--config", cfg, "--set", "n_basis=6", "--out", run) == 0
    return run


def test_train_saves_the_plugin_model_with_its_settings(trained):
    model = models.load(trained)
    assert model.spec.name == "pair" and model.is_force_field
    assert (model.config.n_basis, model.config.cutoff_ang) == (6, 4.5)  # --set over --config over defaults
    assert model.params["c"].shape == (10, 6)  # 4 elements: 10 element pairs x 6 Gaussians


def test_evaluate_beats_predicting_zero_forces(trained, data_file, capsys):
    capsys.readouterr()
    assert jaxqc("evaluate", trained, "--data", data_file[0], "--split", "test", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    maes = {k: v for k, v in _numbers(out).items() if "mae" in k.lower()}
    f_mae = [v for k, v in maes.items() if "force" in k.lower() or k.lower().startswith("f")]
    assert f_mae and all(math.isfinite(v) for v in maes.values()), out
    zero_mae = np.abs(data_file[1].F).mean()  # the error of predicting no force at all
    assert f_mae[0] < 0.6 * zero_mae, (f_mae, zero_mae)


def test_md_conserves_energy(trained, data_file, tmp_path):
    from jaxqc.md.run import read_log_csv

    traj = tmp_path / "traj.extxyz"
    assert jaxqc("md", trained, "--start", data_file[0], "--frame", 150, "--steps", 200, "--dt-fs", 0.5,
                 "--write-every", 5, "--quiet", "--out", traj) == 0
    log = read_log_csv(traj.with_suffix(".csv"))
    assert log["step"][-1] == 200
    error = np.abs(log["total_kcal_mol"] - log["total_kcal_mol"][0]).max()
    assert error < 0.05 * log["kinetic_kcal_mol"].mean()


def test_compare_row(trained, data_file, tmp_path):
    out = tmp_path / "cmp"
    assert jaxqc("compare", "--data", data_file[0], "--budget", "tiny", "--methods", "pair", "--in-process",
                 "--json", "--quiet", "--out", out) == 0
    rows = [r for r in json.loads((out / "compare.json").read_text())["rows"] if r["method"] == "pair"]
    assert rows and all(r.get("applicable", True) for r in rows), rows
    maes = [r[k] for r in rows for k in r if k.endswith("_mae")]
    assert maes and all(math.isfinite(x) for x in maes), rows


def test_ase_calculator_gives_the_model_in_ev(trained, data_file):
    from ase import Atoms

    from jaxqc.md.calculator import JaxqcCalculator

    data = data_file[1]
    i = 200
    atoms = Atoms(numbers=data.Z[i], positions=data.R[i])
    atoms.calc = JaxqcCalculator(trained)
    E, F = models.load(trained).predictor(forces=True)(data, [i])
    assert atoms.get_potential_energy() * EV_KCAL_MOL == pytest.approx(E[0], rel=1e-10)
    np.testing.assert_allclose(atoms.get_forces() * EV_KCAL_MOL, F[0], rtol=1e-8, atol=1e-8)


def test_without_the_plugin_the_model_is_unknown(tmp_path):
    """A subprocess without --plugin cannot load a pair model; with JAXQC_PLUGINS it trains one."""
    env = {**os.environ, "JAXQC_HUGE_PAGES": "0", "JAXQC_PLUGINS": ""}
    cmd = [sys.executable, "-m", "jaxqc.cli", "train", "pair", "--data", "ethanol-xtb", "--n-train", "20",
           "--n-valid", "10", "--out", str(tmp_path / "m.npz")]
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "pair" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    good = subprocess.run(cmd, env={**env, "JAXQC_PLUGINS": str(PLUGIN)}, capture_output=True, text=True,
                          timeout=300)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "m.npz").exists()


def test_a_broken_plugin_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import jaxqc\nraise RuntimeError('boom')\n")
    with pytest.raises(JaxqcError, match="plugin .*broken.py: RuntimeError: boom"):
        models.load_plugin(str(path))


def _numbers(tree, prefix="") -> dict:
    """{dotted key: number} of the numbers in a JSON tree."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix[:-1]: float(tree)}
    return {}
