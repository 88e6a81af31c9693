"""Cormorant: every CG level's features rotate with the Wigner-D matrices (float32 at l_max = 2,
float64 at l_max = 3), the two CG aggregations are the same function, training through the shared loop overfits a small
set, and the CLI trains and evaluates it. (Energy invariance, padding and forces vs finite differences: in
test_nn.py with the other networks.)"""
import dataclasses
import json

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation

from jaxqc.data import io
from jaxqc.nn.cormorant import Cormorant, CormorantConfig, aggregate_e3nn, aggregate_fused, feature_irreps

SMALL = dict(channels=3, cg_levels=3, n_rbf=8, radial_hidden=8, readout_hidden=8)


def level_features(config, Z, R, mask):
    net = Cormorant(config)
    params = net.init(jax.random.PRNGKey(1), Z, R, mask)
    return jax.jit(lambda R: net.apply(params, Z, R, mask, return_features=True))


def covariance_errors(l_max, dtype, inversion, pair_list="dense"):
    """Relative error |F(Q R) - D(Q) F(R)| / |F(R)| of every level, for a random rotation Q (times -1)."""
    ethanol = io.read("ethanol-xtb")
    mol = ethanol.molecules(np.arange(2), dtype=dtype)
    Q = random_rotation(np.random.default_rng(l_max), inversion=inversion)
    config = CormorantConfig(l_max=l_max, pair_list=pair_list, **SMALL)
    apply = level_features(config, mol.Z, mol.R, mol.mask)
    y, levels = apply(mol.R)
    y_rot, levels_rot = apply(mol.R @ jnp.asarray(Q.T, dtype))
    assert levels[0].dtype == dtype
    errors = []
    for F, F_rot in zip(levels, levels_rot):
        expected = F.transform_by_matrix(jnp.asarray(Q, dtype))  # Wigner-D of Q on every irrep (parity for det -1)
        errors.append(float(jnp.linalg.norm(F_rot.array - expected.array) / jnp.linalg.norm(F.array)))
    return errors, float(jnp.max(jnp.abs(y_rot - y)) / jnp.max(jnp.abs(y)))


def test_every_level_rotates_with_wigner_d_float32():
    """float32 at l_max = 2 (the network's default), with and without inversion."""
    for inversion in (False, True):
        errors, y_err = covariance_errors(2, jnp.float32, inversion)
        assert max(errors) < 1e-5, errors
        assert y_err < 1e-5


def test_every_level_rotates_with_wigner_d_float64(x64):
    """float64 at l_max = 3: every CG path of l_max 1 and 2 is a path here too."""
    for inversion in (False, True):
        errors, y_err = covariance_errors(3, jnp.float64, inversion)
        assert max(errors) < 1e-10, errors
        assert y_err < 1e-10


def test_edge_path_levels_rotate_with_wigner_d(x64):
    """The same covariance on the edge list (segment sums over receivers): l_max = 2, float64, with inversion.
    (That the edge path is the same function as the dense one: test_nn.test_edge_lists_give_the_same_network.)"""
    errors, y_err = covariance_errors(2, jnp.float64, inversion=True, pair_list="edges")
    assert max(errors) < 1e-10 and y_err < 1e-10, errors


def test_edges_within_a_smaller_cutoff_are_refused():
    from jaxqc.data.molecules import with_edges

    mol = io.read("ethanol-xtb").molecules(np.arange(2))
    net = Cormorant(CormorantConfig(l_max=1, cutoff_ang=3.0, pair_list="edges", **{**SMALL, "cg_levels": 1}))
    params = net.init(jax.random.PRNGKey(0), mol.Z, mol.R, mol.mask)
    with pytest.raises(ValueError, match="less than the cutoff"):
        net.apply(params, mol.Z, mol.R, mol.mask, edges=with_edges(mol, 2.0, 64).edges)


def test_features_are_not_trivially_covariant(x64):
    """The check above can fail: features with l > 0 are non-zero and differ from the unrotated ones."""
    ethanol = io.read("ethanol-xtb")
    mol = ethanol.molecules(np.arange(1), dtype=jnp.float64)
    apply = level_features(CormorantConfig(l_max=1, **{**SMALL, "cg_levels": 2}), mol.Z, mol.R, mol.mask)
    Q = random_rotation(np.random.default_rng(5))
    F = apply(mol.R)[1][-1]
    F_rot = apply(mol.R @ jnp.asarray(Q.T))[1][-1]
    vectors = F.filter(keep="1o").array
    assert float(jnp.linalg.norm(vectors)) > 1e-2
    assert float(jnp.linalg.norm(F_rot.filter(keep="1o").array - vectors)) > 1e-2 * float(jnp.linalg.norm(vectors))


@pytest.mark.parametrize("parity", ["both", "natural"])
def test_fused_aggregation_equals_e3nn_tensor_product(parity, x64):
    irreps = feature_irreps(CormorantConfig(channels=2, l_max=2, parity=parity))
    E = e3nn.normal("3x0e + 3x1o + 3x2e", jax.random.PRNGKey(0), (2, 4, 4))
    F = e3nn.normal(irreps, jax.random.PRNGKey(1), (2, 4))
    a, b = aggregate_fused(E, F, irreps), aggregate_e3nn(E, F, irreps)
    assert a.regroup().irreps == b.regroup().irreps
    np.testing.assert_allclose(a.regroup().array, b.regroup().array, atol=1e-12)
    # and the whole network with the same parameters
    ethanol = io.read("ethanol-xtb")
    mol = ethanol.molecules(np.arange(2), dtype=jnp.float64)
    nets = [Cormorant(CormorantConfig(cg_product=p, parity=parity, **SMALL)) for p in ("fused", "e3nn")]
    params = nets[0].init(jax.random.PRNGKey(0), mol.Z, mol.R, mol.mask)
    y = [jax.jit(n.apply)(params, mol.Z, mol.R, mol.mask) for n in nets]
    np.testing.assert_allclose(y[0], y[1], rtol=1e-11, atol=1e-11)


def test_cormorant_training_overfits_a_small_set(tmp_path):
    """The shared loop trains Cormorant on energies and forces: 16 frames, the force loss falls > 5x."""
    from jaxqc.train import loop
    from jaxqc.train.run import train_network

    data = io.read("ethanol-xtb")
    cfg = loop.TrainConfig(epochs=60, batch_size=8, lr=5e-3, seed=0, n_buckets=1)
    split = {"train": np.arange(16), "valid": np.arange(16, 24), "test": np.arange(24, 32)}
    out = train_network("cormorant", data, "energy", True, 16, 8, cfg, tmp_path / "run",
                        model_overrides=dict(channels=8, cg_levels=2, l_max=1, n_rbf=8, radial_hidden=16,
                                             readout_hidden=16), split=split, progress=False)
    rows = loop.read_log(tmp_path / "run" / "metrics.jsonl")
    assert out["epochs"] == 60 and np.isfinite(rows[-1]["train_loss"])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 5, (rows[0]["train_loss"], rows[-1]["train_loss"])


def test_cli_train_and_evaluate_cormorant(tmp_path, capsys):
    from jaxqc.cli import main

    run = tmp_path / "cm"
    assert main(["train", "cormorant", "--data", "ethanol-xtb", "--forces", "--n-train", "12", "--n-valid", "6",
                 "--epochs", "2", "--batch-size", "6", "--features", "3", "--interactions", "1", "--l-max", "1",
                 "--out", str(run)]) == 0
    assert "trained cormorant on 12 frames (2 epochs" in capsys.readouterr().out
    header = json.loads((run / "config.json").read_text())
    assert header["kind"] == "cormorant" and header["model"]["channels"] == 3 and header["model"]["l_max"] == 1
    assert main(["evaluate", str(run), "--data", "ethanol-xtb", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] > 0 and res["forces"]["mae"] > 0 and res["forces"]["unit"] == "kcal/mol/Å"
    # the run directory is a force field: jaxqc md and the ASE calculator take it
    from jaxqc.md.calculator import JaxqcCalculator
    from jaxqc.train.run import load_network, predict_network

    assert main(["md", str(run), "--start", "ethanol-xtb", "--steps", "20", "--dt-fs", "0.5", "--quiet",
                 "--out", str(tmp_path / "traj.extxyz")]) == 0
    assert (tmp_path / "traj.extxyz").stat().st_size > 0
    from jaxqc.units import EV_KCAL_MOL

    data = io.read("ethanol-xtb")
    _, _, energy, params, _ = load_network(run)
    E, F = predict_network(energy, params, data, [0], forces=True)
    calc = JaxqcCalculator(run)
    from ase import Atoms

    atoms = Atoms(numbers=data.Z[0], positions=data.R[0], calculator=calc)
    np.testing.assert_allclose(atoms.get_potential_energy() * EV_KCAL_MOL, E[0], rtol=1e-5)
    np.testing.assert_allclose(atoms.get_forces() * EV_KCAL_MOL, F[0], atol=2e-3)
    capsys.readouterr()
    assert main(["train", "schnet", "--data", "ethanol-xtb", "--n-train", "12", "--l-max", "2",
                 "--out", str(tmp_path / "s")]) == 2
    assert "--l-max is not a schnet option" in capsys.readouterr().err


def _experiment(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # an experiment script's quick run (minutes of CI time): run with -m slow
def test_cormorant_vs_schnet_experiment_quick(tmp_path):
    """The equal-budget experiment, CI-sized: both networks train in their own processes, learn, and the
    JSON has the curves, test errors, throughput, memory and the ratios."""
    res = _experiment("cormorant_vs_schnet").main(["--quick", "--out", str(tmp_path / "c.json"),
                                                  "--run-dir", str(tmp_path / "runs")])
    assert set(res["runs"]) == {"cormorant", "schnet"}
    for code, r in res["runs"].items():
        assert "error" not in r, (code, r)
        assert r["epochs"] == 40 and r["steps_per_s"] > 0 and r["peak_rss_mb"] > 100
        loss = [row["train_loss"] for row in r["curve"]]
        assert loss[-1] < loss[0] / 3, (code, loss[0], loss[-1])
    assert set(res["ratios_cormorant_over_schnet"]) >= {"test_forces_mae", "steps_per_s", "peak_rss"}
    assert json.loads((tmp_path / "c.json").read_text())["task"] == "md17"


@pytest.mark.slow  # an experiment script's quick run (minutes of CI time): run with -m slow
def test_cormorant_profile_experiment_quick(tmp_path):
    res = _experiment("cormorant_profile").main(["--quick", "--out", str(tmp_path / "p.json")])
    assert len(res["rows"]) == 4 and all(r["train step"]["step_s"] > 0 for r in res["rows"])
    assert set(res["speedup_fused_over_e3nn"]) == {"tiny 2 x 5, both", "tiny 2 x 5, natural"}
