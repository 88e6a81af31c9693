"""GDML / sGDML: kernel Hessian blocks (fast vs automatic differentiation vs finite differences), the
energy model and its forces, symmetry of the learned force field, model files, a small fit that learns,
the CLI, the rMD17 experiment's quick mode, and parity with the `sgdml` package where it is installed."""
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation
from helpers import mixed_molecules

from jaxqc.cli import main
from jaxqc.data import io
from jaxqc.data.molecules import Dataset, Molecules
from jaxqc.kernels import gdml
from jaxqc.kernels.symmetries import find_permutations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ethanol():
    return io.read("ethanol-xtb")


@pytest.fixture(scope="module")
def ethanol_perms(ethanol):
    return find_permutations(ethanol.Z[0], ethanol.R[:300])


@pytest.fixture(scope="module")
def small_model(ethanol):
    """sGDML on 30 frames (sigma from two), the model for the symmetry and file tests."""
    config = gdml.GDMLConfig(symmetric=True, sigmas=(10.0, 20.0))
    return gdml.train_gdml(ethanol.subset(np.arange(200)), config, n_train=30, n_valid=20, seed=0)


def molecules(R, z):
    R = jnp.asarray(R, jnp.float64)
    b, n = R.shape[:2]
    return Molecules(Z=jnp.tile(jnp.asarray(z), (b, 1)), R=R, mask=jnp.ones((b, n), bool),
                     mol_mask=jnp.ones(b, bool))


# ---- descriptor and kernel ----------------------------------------------------------------------
def test_descriptor_and_its_permutations(ethanol, ethanol_perms, x64):
    R = ethanol.R[0]
    x = np.asarray(gdml.descriptor(jnp.asarray(R)))
    i, j = gdml.pair_indices(9)
    np.testing.assert_allclose(x, 1 / np.linalg.norm(R[i] - R[j], axis=1), rtol=1e-14)
    dp = gdml.descriptor_permutations(ethanol_perms)
    for p, d in zip(ethanol_perms, dp):
        np.testing.assert_allclose(np.asarray(gdml.descriptor(jnp.asarray(R[p]))), x[d], rtol=1e-14)


def test_matern_is_safe_and_exact_at_zero_distance(x64):
    x0 = jnp.array([0.3, 0.5, 0.9])
    sigma = 2.0
    s2 = 5.0 / sigma**2
    k = jax.jit(lambda x: gdml.matern52(x, x0, sigma))
    assert float(k(x0)) == 1.0
    np.testing.assert_array_equal(jax.grad(k)(x0), 0.0)
    np.testing.assert_allclose(jax.hessian(k)(x0), -s2 / 3 * np.eye(3), rtol=1e-14)
    # continuous across the Taylor/closed-form switch, and the closed form away from it
    for d in (1e-6, 1e-4, 0.3):
        t = np.sqrt(s2) * d
        np.testing.assert_allclose(k(x0 + jnp.array([d, 0, 0])), (1 + t + t * t / 3) * np.exp(-t), rtol=1e-14)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("sigma", [2.0, 20.0])
def test_force_block_fast_equals_naive(ethanol, ethanol_perms, x64, symmetric, sigma):
    perms = ethanol_perms if symmetric else None
    R = jnp.asarray(ethanol.R[[0, 500, 1000]])
    naive_fn = jax.jit(lambda A, B: gdml.force_block_naive(A, B, sigma, perms))
    for a, b in [(0, 1), (1, 2), (2, 2)]:
        naive = np.asarray(naive_fn(R[a], R[b]))
        fast = np.asarray(gdml.force_block(R[a], R[b], sigma, perms))
        assert np.abs(fast - naive).max() <= 1e-10 * np.abs(naive).max()
    # the batched matrix: the same blocks, symmetric
    x, J = gdml.descriptors(np.asarray(R))
    K = gdml.kernel_matrix(x, J, sigma, ethanol_perms if symmetric else np.arange(9)[None], tile=2)
    np.testing.assert_allclose(K[27:54, 54:81], naive_fn(R[1], R[2]), rtol=0,
                               atol=1e-10 * np.abs(K).max())
    np.testing.assert_allclose(K, K.T, atol=1e-15 * np.abs(K).max())
    assert np.all(np.linalg.eigvalsh(K) > -1e-12 * np.abs(K).max())


@pytest.mark.parametrize("symmetric", [False, True])
def test_diagonal_block_matches_finite_differences(ethanol, ethanol_perms, x64, symmetric):
    """K(R, R) = d^2 k(R, R') / dR dR' at R' = R, by central differences of the scalar kernel only."""
    perms = ethanol_perms if symmetric else np.arange(9)[None]
    sigma, h = 2.0, 1e-3
    R = np.asarray(ethanol.R[7])
    k = jax.jit(lambda A, B: gdml.kernel_sym(A, B, sigma, perms))
    fast = np.asarray(gdml.force_block(jnp.asarray(R), jnp.asarray(R), sigma, perms))
    rng = np.random.default_rng(0)
    for a, b in zip(rng.integers(0, 27, 12), rng.integers(0, 27, 12)):
        ea, eb = np.zeros(27), np.zeros(27)
        ea[a], eb[b] = h, h
        ea, eb = ea.reshape(9, 3), eb.reshape(9, 3)
        fd = (k(R + ea, R + eb) - k(R + ea, R - eb) - k(R - ea, R + eb) + k(R - ea, R - eb)) / (4 * h * h)
        assert abs(float(fd) - fast[a, b]) < 1e-5 * np.abs(fast).max()


# ---- the energy model: forces are -grad E and equal the explicit kernel expansion ---------------------
def test_energy_and_forces_equal_the_kernel_expansion(ethanol, ethanol_perms, x64):
    rng = np.random.default_rng(3)
    R_train, R_new = ethanol.R[[10, 400, 900, 1500]], ethanol.R[[20, 2500]]
    alpha = rng.normal(size=(4, 27))
    sigma, c = 10.0, -3.5
    x, J = gdml.descriptors(R_train)
    params = gdml.make_params(x, gdml.descriptor_coefficients(J, alpha), ethanol_perms, sigma, c, chunk=5)
    E, F = gdml.energy_and_forces(jax.tree_util.tree_map(jnp.asarray, params), molecules(R_new, ethanol.Z[0]))
    # E(R) = c + sum_m alpha_m . dk_sym(R, R_m)/dR_m
    dk = jax.jit(jax.grad(lambda A, B: gdml.kernel_sym(A, B, sigma, ethanol_perms), argnums=1))
    for b, R in enumerate(R_new):
        e_ref = c + sum(float(np.vdot(a, dk(jnp.asarray(R), jnp.asarray(Rm))))
                        for a, Rm in zip(alpha, R_train))
        assert float(E[b]) == pytest.approx(e_ref, rel=1e-11)
    # F(R) = -sum_m K(R, R_m) alpha_m, with K from the batched fast kernel
    xn, Jn = gdml.descriptors(R_new)
    K = gdml.kernel_matrix(xn, Jn, sigma, ethanol_perms, x_cols=x, J_cols=J, tile=3)
    F_ref = -(K @ alpha.reshape(-1)).reshape(2, 9, 3)
    np.testing.assert_allclose(np.asarray(F), F_ref, rtol=0, atol=1e-10 * np.abs(F_ref).max())
    np.testing.assert_allclose(np.asarray(gdml.forces(jax.tree_util.tree_map(jnp.asarray, params),
                                                      molecules(R_new, ethanol.Z[0]))), F, atol=1e-13)
    # the batched host predictor gives the same numbers
    E2, F2 = gdml.predict(params, R_new, batch=3)
    np.testing.assert_allclose(E2, E, rtol=1e-13)
    np.testing.assert_allclose(F2, F, atol=1e-12)


def test_fit_interpolates_training_forces(ethanol, ethanol_perms):
    """With a tiny regulariser and a well-conditioned kernel (small sigma) the closed-form solution
    reproduces the training forces, and the energy constant makes the mean training energy error zero."""
    tr, va = np.arange(0, 600, 30), np.arange(1000, 1010)
    config = gdml.GDMLConfig(symmetric=True, sigmas=(2.0,), lam=1e-12)
    fit = gdml.fit(ethanol.R[tr], ethanol.F[tr], ethanol.E[tr], ethanol.R[va], ethanol.F[va], ethanol.E[va],
                   ethanol_perms, config)
    x, J = gdml.descriptors(ethanol.R[tr])
    params = gdml.make_params(x, gdml.descriptor_coefficients(J, fit["alpha"]), ethanol_perms, 2.0, fit["c"])
    E, F = gdml.predict(params, ethanol.R[tr])
    assert np.abs(F - ethanol.F[tr]).max() < 1e-4  # kcal/mol/Å, forces up to 86
    assert abs(np.mean(E - ethanol.E[tr])) < 1e-8


# ---- matrix-free solver -----------------------------------------------------------------------------
@pytest.mark.parametrize("store_bytes", [0, 2**30])  # pair coefficients recomputed / stored
def test_kernel_operator_equals_the_dense_kernel(ethanol, ethanol_perms, x64, store_bytes):
    R = ethanol.R[:40:2]
    x, J = gdml.descriptors(R)
    K = gdml.kernel_matrix(x, J, 7.0, ethanol_perms, tile=8)
    op = gdml.KernelOperator(x, J, ethanol_perms, 7.0, lam=1e-3, chunk=32, store_bytes=store_bytes)
    V = np.random.default_rng(0).standard_normal((len(K), 2))
    np.testing.assert_allclose(op(V), K @ V + 1e-3 * V, rtol=0, atol=1e-12 * np.abs(K @ V).max())
    blocks = gdml.self_blocks(x, J, 7.0, ethanol_perms, batch=7)
    for m in range(len(R)):
        np.testing.assert_allclose(blocks[m], K[27 * m:27 * (m + 1), 27 * m:27 * (m + 1)], rtol=1e-13, atol=1e-16)


def test_cg_solver_matches_the_dense_solver(ethanol, ethanol_perms):
    """Same frames, sigma and lambda: the matrix-free CG solution predicts what the Cholesky one does."""
    tr, va, te = np.arange(0, 1200, 12), np.arange(1500, 1520), np.arange(2000, 2100)
    fits = {}
    for solver in ("dense", "cg"):
        config = gdml.GDMLConfig(symmetric=True, sigmas=(20.0,), solver=solver, cg_tol=1e-6, cg_rank=540)
        fit = gdml.fit(ethanol.R[tr], ethanol.F[tr], ethanol.E[tr], ethanol.R[va], ethanol.F[va],
                       ethanol.E[va], ethanol_perms, config)
        x, J = gdml.descriptors(ethanol.R[tr])
        fits[solver] = (fit, gdml.predict(gdml.make_params(x, gdml.descriptor_coefficients(J, fit["alpha"]),
                                                           ethanol_perms, 20.0, fit["c"]), ethanol.R[te]))
    cg_fit, (E_cg, F_cg) = fits["cg"]
    _, (E_d, F_d) = fits["dense"]
    info = cg_fit["grid"][0]["cg"]
    assert cg_fit["solver"] == "cg" and info["converged"] and info["inducing_frames"] == 500 // 27  # the floor of 500 columns
    assert np.abs(F_cg - F_d).max() < 1e-3 * np.abs(F_d).max()
    assert np.abs(E_cg - E_d).max() < 1e-3
    err = {k: np.abs(v[1][1] - ethanol.F[te]).mean() for k, v in fits.items()}
    assert abs(err["cg"] - err["dense"]) < 1e-3 * err["dense"], err


def test_solver_choice_and_memory_errors():
    assert gdml.choose_solver(100, 27, "auto", budget_bytes=2**30) == "dense"
    assert gdml.choose_solver(400, 27, "auto", budget_bytes=2**34) == "cg"  # 10,800 unknowns: CG is faster
    assert gdml.choose_solver(1000, 63, "auto", budget_bytes=24 * 2**30) == "cg"  # aspirin: 30 GB dense
    assert gdml.choose_solver(100, 27, "cg") == "cg"
    with pytest.raises(gdml.JaxqcError, match="needs 29.6 GB.*use the cg solver"):
        gdml.choose_solver(1000, 63, "dense", budget_bytes=24 * 2**30)
    with pytest.raises(gdml.JaxqcError, match="unknown solver 'lu'"):
        gdml.choose_solver(10, 27, "lu")


def test_cg_that_does_not_converge_is_an_error(ethanol, ethanol_perms):
    tr = np.arange(0, 600, 20)
    config = gdml.GDMLConfig(symmetric=True, sigmas=(50.0,), solver="cg", cg_tol=1e-12, cg_maxiter=3, cg_rank=100)
    with pytest.raises(gdml.JaxqcError, match="no sigma .*CG did not reach relative residual 1e-12 in 3 iterations"):
        gdml.fit(ethanol.R[tr], ethanol.F[tr], ethanol.E[tr], ethanol.R[tr[:5]], ethanol.F[tr[:5]],
                 ethanol.E[tr[:5]], ethanol_perms, config)


# ---- symmetry of the learned force field -----------------------------------------------------------
def test_rotation_inversion_translation_and_permutations(small_model, ethanol):
    params = gdml.model_params(small_model)
    R = ethanol.R[2000:2003]
    E, F = gdml.predict(params, R)
    rot = random_rotation(np.random.default_rng(1), inversion=True)
    E2, F2 = gdml.predict(params, R @ rot.T + np.array([0.7, -3.0, 2.0]))
    # tolerances: the solution's large coefficients cancel to ~1e-8 (float64 round-off, not symmetry)
    np.testing.assert_allclose(E2, E, rtol=0, atol=1e-6)
    np.testing.assert_allclose(F2, F @ rot.T, atol=1e-6)  # forces rotate with the molecule
    np.testing.assert_allclose(F.sum(1), 0.0, atol=1e-6)  # no net force
    perms = small_model["perms"]
    assert len(perms) == 6
    for p in perms:  # sGDML: invariant energy, permuted forces
        Ep, Fp = gdml.predict(params, R[:, p])
        np.testing.assert_allclose(Ep, E, rtol=0, atol=1e-6)
        np.testing.assert_allclose(Fp, F[:, p], atol=1e-6)


def test_prediction_compiles_once_per_batch_shape(small_model, ethanol):
    params = gdml.model_params(small_model)
    gdml.predict(params, ethanol.R[:5], batch=8)
    size = gdml._energy_and_forces_jit._cache_size()
    gdml.predict(params, ethanol.R[100:119], batch=8)  # three batches, the last one padded
    assert gdml._energy_and_forces_jit._cache_size() == size


def test_save_load_round_trip(small_model, ethanol, tmp_path):
    path = tmp_path / "sgdml.npz"
    gdml.save_gdml(small_model, path)
    back = gdml.load_gdml(path)
    assert back["kind"] == "sgdml" and back["config"] == small_model["config"]
    assert back["sigma"] == small_model["sigma"] and back["c"] == small_model["c"]
    np.testing.assert_array_equal(back["perms"], small_model["perms"])
    prov = back["provenance"]
    assert prov["dataset_md5"] == ethanol.subset(np.arange(200)).md5
    np.testing.assert_array_equal(prov["train_idx"], small_model["split"]["train"])
    np.testing.assert_array_equal(prov["valid_idx"], small_model["split"]["valid"])
    assert [g["sigma"] for g in back["grid"]] == [10.0, 20.0] and back["units"]["F"] == "kcal/mol/Å"
    R = ethanol.R[2500:2504]
    for a, b in zip(gdml.predict(gdml.model_params(back), R), gdml.predict(gdml.model_params(small_model), R)):
        np.testing.assert_array_equal(a, b)


def test_wrong_molecule_is_a_one_line_error(small_model):
    with pytest.raises(gdml.DataError, match="atoms; the model is for 9 atoms"):
        gdml.predict_dataset(small_model, mixed_molecules(3))
    other = io.read("ethanol-xtb").subset(np.arange(3))
    other.Z = other.Z[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]].copy()
    other.Z[:, 0] = 8
    with pytest.raises(gdml.DataError, match="has elements OCO"):
        gdml.predict_dataset(small_model, other)


# ---- it learns -------------------------------------------------------------------------------------
def test_small_sgdml_fit_on_ethanol_xtb(ethanol):
    """100 training / 50 validation / 200 test frames of the embedded GFN2-xTB ethanol. Measured
    (2-core CPU, 2026): sGDML force MAE 0.838 kcal/mol/Å, energy MAE 0.163 kcal/mol at sigma = 20
    (GDML on the same frames: 1.56 and 0.82); the force std of the data is 22.9 kcal/mol/Å.
    Asserted with a margin of ~20% (forces) and ~50% (energies)."""
    config = gdml.GDMLConfig(symmetric=True, sigmas=(10.0, 20.0, 50.0))
    model = gdml.train_gdml(ethanol, config, n_train=100, n_valid=50, seed=0)
    used = np.concatenate([model["split"]["train"], model["split"]["valid"]])
    test = np.random.default_rng(1).choice(np.setdiff1d(np.arange(len(ethanol)), used), 200, replace=False)
    E, F = gdml.predict_dataset(model, ethanol.subset(test))
    m = gdml.metrics(E, F, ethanol.E[test], ethanol.F[test])
    assert len(model["perms"]) == 6 and model["sigma"] == 20.0
    assert m["forces_mae"] < 1.0, m
    assert m["energy_mae"] < 0.25, m
    assert [g["sigma"] for g in model["grid"]] == [10.0, 20.0, 50.0]


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_train_and_evaluate(ethanol, tmp_path, capsys):
    data_file, other_file, model = tmp_path / "eth.npz", tmp_path / "other.npz", tmp_path / "m.npz"
    io.write_npz(ethanol.subset(np.arange(100)), data_file)
    io.write_npz(ethanol.subset(np.arange(2900, 2930)), other_file)
    assert main(["train", "sgdml", "--data", str(data_file), "--n-train", "30", "--n-valid", "20",
                 "--sigma-grid", "10", "20", "--out", str(model)]) == 0
    assert "6 permutation(s)" in capsys.readouterr().out
    assert main(["evaluate", str(model), "--data", str(data_file), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["n"] == 50 and "except the model's training and validation frames" in same["frames"]
    assert same["energy"]["unit"] == "kcal/mol" and same["forces"]["unit"] == "kcal/mol/Å"
    assert 0 < same["forces"]["mae"] <= same["forces"]["rmse"] < 10
    assert main(["evaluate", str(model), "--data", str(other_file), "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["n"] == 30 and other["frames"].startswith("all of --data")
    assert main(["evaluate", str(model), "--data", str(data_file), "--split", "train", "--json"]) == 0
    train = json.loads(capsys.readouterr().out)
    assert train["n"] == 30 and train["forces"]["mae"] < 0.25 * same["forces"]["mae"]  # (nearly) interpolated
    # the matrix-free solver from the command line gives the same model to CG accuracy
    model_cg = tmp_path / "m_cg.npz"
    assert main(["train", "sgdml", "--data", str(data_file), "--n-train", "30", "--n-valid", "20", "--sigma-grid",
                 "10", "20", "--solver", "cg", "--cg-tol", "1e-7", "--out", str(model_cg)]) == 0
    assert "cg solver" in capsys.readouterr().out
    assert main(["evaluate", str(model_cg), "--data", str(data_file), "--json"]) == 0
    same_cg = json.loads(capsys.readouterr().out)
    assert abs(same_cg["forces"]["mae"] - same["forces"]["mae"]) < 1e-4 * same["forces"]["mae"]


def test_cli_bad_input_exits_2(ethanol, tmp_path, capsys):
    model, data_file, wrong = tmp_path / "m.npz", tmp_path / "eth.npz", tmp_path / "wrong.npz"
    io.write_npz(ethanol.subset(np.arange(40)), data_file)
    m = mixed_molecules(4)
    io.write_npz(Dataset(Z=m.Z, R=m.R, E=m.E, F=np.zeros_like(m.R)), wrong)
    assert main(["train", "gdml", "--data", str(data_file), "--n-train", "10", "--n-valid", "5",
                 "--sigma-grid", "20", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", str(wrong), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the model is for 9 atoms" in err
    assert main(["train", "gdml", "--data", str(data_file), "--n-train", "30", "--n-valid", "20",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "need more than the 40" in capsys.readouterr().err
    assert main(["train", "gdml", "--data", str(wrong), "--n-train", "2", "--n-valid", "1",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "one molecule" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


# ---- the rMD17 experiment runs in its quick mode -------------------------------------------------------
def test_md17_sgdml_experiment_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("md17_sgdml", ROOT / "experiments" / "md17_sgdml.py")
    exp = importlib.util.module_from_spec(spec)
    sys.modules["md17_sgdml"] = exp
    spec.loader.exec_module(exp)
    results = exp.main(["--quick", "--no-peer", "--out", str(tmp_path / "q")])
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(results["runs"]))
    rows = [r for r in results["runs"] if "jaxqc" in r]
    assert [r["n_train"] for r in rows] == sorted(r["n_train"] for r in rows) and len(rows) >= 2
    assert rows[-1]["jaxqc"]["forces_mae"] < rows[0]["jaxqc"]["forces_mae"]  # more data, smaller error
    assert rows[-1]["jaxqc"]["forces_mae"] < 0.2 * results["data"][rows[-1]["data"]]["forces_std"]
    assert (tmp_path / "q.png").exists() or not results["plot"]


# ---- parity with the reference implementation --------------------------------------------------------
def test_parity_with_sgdml_package(ethanol, tmp_path):
    """jaxqc reads a model file that the `sgdml` package trained and predicts what sgdml predicts; and
    jaxqc trained on the same frames, permutations and sigma gives the same forces."""
    if importlib.util.find_spec("sgdml") is None:
        pytest.skip("sgdml not installed (pip install 'jaxqc[peers]' with torch and numpy<2.4)")
    from sgdml.predict import GDMLPredict
    from sgdml.train import GDMLTrain

    def as_sgdml(d):
        return {"R": d.R, "z": d.Z[0], "E": d.E[:, None], "F": d.F, "name": np.array("ethanol-xtb"),
                "theory": np.array("GFN2-xTB"), "md5": np.array(d.md5), "type": "d",
                "r_unit": np.array("Ang"), "e_unit": np.array("kcal/mol")}

    train, valid, test = (ethanol.subset(np.arange(a, b)) for a, b in [(0, 60), (60, 80), (2000, 2050)])
    sigma = 20
    trainer = GDMLTrain(max_processes=1)
    task = trainer.create_task(as_sgdml(train), 60, as_sgdml(valid), 20, sig=sigma, lam=1e-10, use_sym=True)
    model = trainer.train(task)
    path = tmp_path / "sgdml_model.npz"
    np.savez_compressed(path, **model)
    with np.load(path, allow_pickle=True) as f:
        params = gdml.params_from_sgdml(dict(f))
    E_ref, F_ref = GDMLPredict(dict(np.load(path, allow_pickle=True)), max_processes=1).predict(
        test.R.reshape(len(test), -1))
    E, F = gdml.predict(params, test.R)
    np.testing.assert_allclose(E, E_ref, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(F.reshape(len(test), -1), F_ref, atol=1e-6 * np.abs(F_ref).max())
    # jaxqc's own fit on the same frames with sgdml's permutations and sigma
    idx = np.asarray(task["idxs_train"])
    config = gdml.GDMLConfig(symmetric=True, sigmas=(float(sigma),), lam=1e-10)
    ours = gdml.fit(train.R[idx], train.F[idx], train.E[idx], valid.R, valid.F, valid.E, model["perms"], config)
    x, J = gdml.descriptors(train.R[idx])
    p2 = gdml.make_params(x, gdml.descriptor_coefficients(J, ours["alpha"]), model["perms"], sigma, ours["c"])
    _, F2 = gdml.predict(p2, test.R)
    np.testing.assert_allclose(F2.reshape(len(test), -1), F_ref, atol=1e-4 * np.abs(F_ref).max())
