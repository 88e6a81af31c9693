"""DTNN, SchNet and Cormorant: symmetry (rotation with inversion, translation, permutation), padding, forces vs
finite differences in float64; the shared training loop: it learns, resumes exactly, stops on divergence
keeping the last good checkpoint, compiles once per bucket, and gives the same losses on 4 devices."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation

from jaxqc.data import io
from jaxqc.data.molecules import random_split
from jaxqc.errors import FormatError
from jaxqc.nn import model as nnmodel
from jaxqc.potential import energy_and_forces_fn
from jaxqc.train import loop
from jaxqc.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"schnet": dict(features=16, interactions=2, n_rbf=12), "dtnn": dict(features=8, factors=12, n_rbf=20),
        "cormorant": dict(channels=4, cg_levels=2, l_max=2, n_rbf=8, radial_hidden=8, readout_hidden=8)}


@pytest.fixture(scope="module")
def ethanol():
    return io.read("ethanol-xtb")


def build(kind, data, idx, dtype=jnp.float32, **train):
    config = nnmodel.config_for(kind, **TINY[kind])
    ref = nnmodel.atom_reference(data, "energy", config.max_z)
    stats = nnmodel.fit_stats(data, idx, "energy", ref, use_forces=True, readout="sum")
    example = data.molecules(idx[:2], dtype=dtype)
    params = nnmodel.init_params(kind, config, jax.random.PRNGKey(0), example, stats)
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    return config, nnmodel.make_energy(kind, config), params


@pytest.mark.parametrize("kind", ["schnet", "dtnn", "cormorant"])
def test_invariance_and_padding(kind, ethanol, x64):
    idx = np.arange(4)
    _, energy, params = build(kind, ethanol, idx, jnp.float64)
    ef = jax.jit(energy_and_forces_fn(energy))
    mol = ethanol.molecules(idx, dtype=jnp.float64)
    E, F = ef(params, mol)
    rot = random_rotation(np.random.default_rng(0), inversion=True)
    moved = mol.replace(R=mol.R @ jnp.asarray(rot.T) + jnp.array([1.5, -2.0, 0.3]))
    E2, F2 = ef(params, moved)
    np.testing.assert_allclose(E2, E, rtol=1e-11)
    np.testing.assert_allclose(F2, F @ rot.T, atol=1e-9)
    np.testing.assert_allclose(np.asarray(F).sum(1), 0.0, atol=1e-9)  # no net force
    perm = np.array([0, 1, 2, 4, 3, 6, 5, 7, 8])  # swap same-element atoms (H with H)
    assert np.all(ethanol.Z[0][perm] == ethanol.Z[0])
    E3, F3 = ef(params, mol.replace(R=mol.R[:, perm]))
    np.testing.assert_allclose(E3, E, rtol=1e-11)
    np.testing.assert_allclose(F3, F[:, perm], atol=1e-9)
    padded = ethanol.molecules(idx, n_atoms_pad=16, batch_pad=6, dtype=jnp.float64)  # padding adds nothing
    E4, F4 = ef(params, padded)
    np.testing.assert_allclose(E4[:4], E, rtol=1e-12)
    np.testing.assert_allclose(F4[:4, :9], F, atol=1e-12)
    assert np.all(np.isfinite(np.asarray(F4))) and np.all(np.asarray(F4)[:, 9:] == 0)


@pytest.mark.parametrize("kind", ["schnet", "dtnn", "cormorant"])
def test_forces_match_finite_differences(kind, ethanol, x64):
    idx = np.arange(2)
    _, energy, params = build(kind, ethanol, idx, jnp.float64)
    energy = jax.jit(energy)  # compiled: op-by-op e3nn (Cormorant) is ~8x slower than compiling it
    mol = ethanol.molecules(idx[:1], dtype=jnp.float64)
    _, F = jax.jit(energy_and_forces_fn(energy))(params, mol)
    h = 1e-5
    for a, k in [(0, 0), (3, 1), (8, 2)]:
        dR = jnp.zeros_like(mol.R).at[0, a, k].set(h)
        fd = -(energy(params, mol.replace(R=mol.R + dR)) - energy(params, mol.replace(R=mol.R - dR)))[0] / (2 * h)
        np.testing.assert_allclose(F[0, a, k], fd, rtol=1e-6, atol=1e-7)


def tiny_run(ethanol, tmp, epochs, **kw):
    split = random_split(len(ethanol), {"train": 32, "valid": 16}, seed=0)
    cfg = loop.TrainConfig(batch_size=8, epochs=epochs, lr=3e-3, force_weight=1.0, ema_decay=None, **kw)
    config, energy, params = build("schnet", ethanol, split["train"])
    return loop.train("schnet", config, energy, params, ethanol, split, cfg, tmp, progress=False)


def test_training_learns_and_writes_a_run_directory(ethanol, tmp_path):
    out = tiny_run(ethanol, tmp_path, epochs=12)
    rows = loop.read_log(tmp_path / "metrics.jsonl")
    assert len(rows) == 12 and out["stop_reason"] == "epochs"
    assert rows[-1]["train_loss"] < 0.3 * rows[0]["train_loss"], (rows[0], rows[-1])
    assert min(r["valid_forces_mae"] for r in rows) < rows[0]["valid_forces_mae"]
    for name in ("config.json", "checkpoint.npz", "model.npz", "metrics.csv"):
        assert (tmp_path / name).exists(), name
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["kind"] == "schnet" and cfg["model"]["features"] == 16


def test_resume_reproduces_the_uninterrupted_run(ethanol, tmp_path):
    split = random_split(len(ethanol), {"train": 32, "valid": 16}, seed=0)
    cfg = loop.TrainConfig(batch_size=8, epochs=4, lr=3e-3, force_weight=1.0)
    config, energy, params = build("schnet", ethanol, split["train"])
    full = loop.train("schnet", config, energy, params, ethanol, split, cfg, tmp_path / "a", progress=False)
    loop.train("schnet", config, energy, params, ethanol, split, cfg, tmp_path / "b", progress=False,
               stop_after_epochs=2)  # "killed" after two epochs
    resumed = loop.train("schnet", config, energy, params, ethanol, split, cfg, tmp_path / "b", resume=True,
                         progress=False)
    assert resumed["epochs"] == full["epochs"] == 4 and resumed["steps"] == full["steps"]
    for a, b in zip(jax.tree_util.tree_leaves(full["state"]), jax.tree_util.tree_leaves(resumed["state"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(ethanol, tmp_path):
    split = random_split(len(ethanol), {"train": 32, "valid": 16}, seed=0)
    config, energy, params = build("schnet", ethanol, split["train"])
    ok = loop.TrainConfig(batch_size=8, epochs=1, lr=1e-3, force_weight=1.0)
    loop.train("schnet", config, energy, params, ethanol, split, ok, tmp_path, progress=False)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    bad = loop.TrainConfig(batch_size=8, epochs=3, lr=1e6, force_weight=1.0, clip_norm=None, divergence_factor=10.0)
    # the loop must catch a NaN loss itself: conftest's jax_debug_nans would raise inside the step first
    with jax.debug_nans(False), pytest.raises(loop.TrainingDiverged,
                                              match="diverged in epoch 2.*last good checkpoint \\(after epoch 1\\)"):
        loop.train("schnet", config, energy, params, ethanol, split, bad, tmp_path, resume=True, progress=False,
                   check_same_run=False)  # other settings on purpose
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(ethanol, tmp_path):
    tiny_run(ethanol, tmp_path, epochs=1)
    split = random_split(len(ethanol), {"train": 32, "valid": 16}, seed=0)
    config, energy, params = build("dtnn", ethanol, split["train"])
    with pytest.raises(FormatError, match="arrays, this configuration needs"):
        load_checkpoint(tmp_path / "checkpoint.npz", {"net": params["net"]})
    data = (tmp_path / "checkpoint.npz").read_bytes()
    (tmp_path / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt or truncated checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.npz", params)


def test_four_devices_give_the_same_losses(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        import jax, numpy as np
        from jaxqc.data import io
        from jaxqc.data.molecules import random_split
        from jaxqc.train import loop
        from test_nn import build
        data = io.read("ethanol-xtb")
        split = random_split(len(data), {{"train": 32, "valid": 16}}, seed=0)
        cfg = loop.TrainConfig(batch_size=8, epochs=3, lr=3e-3, force_weight=1.0)
        out = {{}}
        for n in (1, 4):
            config, energy, params = build("schnet", data, split["train"])
            loop.train("schnet", config, energy, params, data, split, cfg, {str(tmp_path)!r} + f"/d{{n}}",
                       n_devices=n, progress=False)
            out[n] = [r["train_loss"] for r in loop.read_log({str(tmp_path)!r} + f"/d{{n}}/metrics.jsonl")]
        print(json.dumps({{"devices": len(jax.devices()), "losses": out}}))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    np.testing.assert_allclose(out["losses"]["4"], out["losses"]["1"], rtol=1e-4)


def test_one_compilation_per_bucket(ethanol):
    split = random_split(len(ethanol), {"train": 24, "valid": 8}, seed=0)
    cfg = loop.TrainConfig(batch_size=8, force_weight=1.0)
    config, energy, params = build("schnet", ethanol, split["train"])
    tx, train_step, _ = loop.make_steps(energy, cfg, "energy")
    step = jax.jit(train_step)
    state = loop.TrainState(net=params["net"], stats=params["stats"], opt_state=tx.init(params["net"]),
                            ema=params["net"], step=jnp.zeros((), jnp.int32))
    from jaxqc.data.molecules import batches
    for batch in batches(ethanol, split["train"], 8, buckets=(12,), shuffle=True):
        state, _ = step(state, batch, 1e-3)
    assert step._cache_size() == 1


@pytest.mark.parametrize("kind", ["schnet", "dtnn", "cormorant"])
def test_edge_lists_give_the_same_network(kind, x64):
    """pair_list='edges' has the same parameters (shapes and initial values) and gives the same energies and
    forces as the dense path, on padded batches of molecules of different sizes, with host edge lists."""
    import dataclasses

    from helpers import mixed_molecules

    from jaxqc.data.molecules import with_edges

    mol = mixed_molecules(6, seed=1).molecules(n_atoms_pad=14, batch_pad=7, dtype=jnp.float64)
    overrides = {**TINY[kind], **({"filter_grid_ang": 0.0} if kind == "schnet" else {}),
                 **({"cutoff_ang": 3.0} if kind != "dtnn" else {})}
    dense = nnmodel.config_for(kind, **overrides)
    edges = dataclasses.replace(dense, pair_list="edges")
    with_e = with_edges(mol, dense.cutoff_ang, 14 * 13)
    stats = {"scale": 2.0, "shift": -1.0, "atom_ref": np.zeros(dense.max_z + 1)}
    params = nnmodel.init_params(kind, dense, jax.random.PRNGKey(0), mol, stats)
    params_e = nnmodel.init_params(kind, edges, jax.random.PRNGKey(0), with_e, stats)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), params, params_e))
    E, F = jax.jit(energy_and_forces_fn(nnmodel.make_energy(kind, dense)))(params, mol)
    for m in (with_e, mol):  # the batch's edges, or every pair when the batch has none
        E2, F2 = jax.jit(energy_and_forces_fn(nnmodel.make_energy(kind, edges)))(params, m)
        np.testing.assert_allclose(E2, E, rtol=1e-11)
        np.testing.assert_allclose(F2, F, atol=1e-10)


def test_training_on_edges_equals_dense_and_compiles_once_per_bucket(ethanol, tmp_path):
    """The loop attaches edge lists for pair_list='edges' (budgets from train + valid): the same losses as
    the dense run, and its train step compiles once per bucket."""
    import dataclasses

    from jaxqc.data.molecules import batches, edge_options

    split = random_split(len(ethanol), {"train": 24, "valid": 8}, seed=0)
    cfg = loop.TrainConfig(batch_size=8, epochs=2, lr=3e-3, force_weight=1.0, ema_decay=None)
    config, energy, params = build("schnet", ethanol, split["train"])
    config_e = dataclasses.replace(config, pair_list="edges")
    losses = {}
    for name, c in (("dense", config), ("edges", config_e)):
        loop.train("schnet", c, nnmodel.make_energy("schnet", c), params, ethanol, split, cfg, tmp_path / name,
                   progress=False)
        losses[name] = [r["train_loss"] for r in loop.read_log(tmp_path / name / "metrics.jsonl")]
    np.testing.assert_allclose(losses["edges"], losses["dense"], rtol=1e-4)
    tx, train_step, _ = loop.make_steps(nnmodel.make_energy("schnet", config_e), cfg, "energy")
    step = jax.jit(train_step)
    state = loop.TrainState(net=params["net"], stats=params["stats"], opt_state=tx.init(params["net"]),
                            ema=params["net"], step=jnp.zeros((), jnp.int32))
    kw = edge_options(config_e, ethanol, split["train"], (12,))
    assert kw["edge_cutoff_ang"] == config.cutoff_ang and len(kw["budgets"]) == 1
    for epoch in range(2):
        for batch in batches(ethanol, split["train"], 8, buckets=(12,), shuffle=True, seed=epoch, **kw):
            assert batch.edges is not None
            state, _ = step(state, batch, 1e-3)
    assert step._cache_size() == 1


def test_cli_train_and_evaluate_schnet(tmp_path, capsys):
    from jaxqc.cli import main

    run = tmp_path / "run"
    assert main(["train", "schnet", "--data", "ethanol-xtb", "--forces", "--n-train", "16", "--n-valid", "8",
                 "--epochs", "2", "--batch-size", "8", "--features", "16", "--interactions", "1",
                 "--out", str(run)]) == 0
    assert "trained schnet on 16 frames (2 epochs" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", "ethanol-xtb", "--split", "valid", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 8 and res["energy"]["unit"] == "kcal/mol" and res["forces"]["unit"] == "kcal/mol/Å"
    assert 0 < res["forces"]["mae"] <= res["forces"]["rmse"]
    assert main(["evaluate", str(run / "model.npz"), "--data", "ethanol-xtb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3000 - 24
    assert main(["train", "schnet", "--data", "ethanol-xtb", "--target", "HOMO", "--n-train", "16",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown target 'HOMO'" in capsys.readouterr().err


@pytest.mark.slow  # an experiment script's quick run (minutes of CI time): run with -m slow
def test_qm9_nn_speed_experiment_quick(qm9_full_cache, monkeypatch, tmp_path):
    """The QM9 SchNet speed benchmark runs in its CI size and reports positive throughputs."""
    import importlib.util

    monkeypatch.setenv("JAXQC_CACHE", str(qm9_full_cache[0]))
    spec = importlib.util.spec_from_file_location("qm9_nn", ROOT / "experiments" / "qm9_nn.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.main(["--quick", "--no-peer", "--out", str(tmp_path / "q")])
    keys = [k for k in res["jaxqc"] if k.endswith("mol_per_s")]
    assert len(keys) == 4 and all(res["jaxqc"][k] > 0 for k in keys)
    assert json.loads((tmp_path / "q_speed.json").read_text())["arch"]["features"] == 16


def test_symmetric_pair_maps_and_convolution_with_derivatives(x64):
    """symmetric_to_dense places pair i < j at (i, j) and (j, i) with a zero diagonal; dense_to_symmetric is
    its transpose (<to_dense(w), G> = <w, to_pairs(G)>); first and second (reverse-mode) derivatives
    through them equal those of the same map written as a dense one-hot matrix."""
    from jaxqc.nn.layers import dense_to_symmetric, symmetric_sum, symmetric_to_dense, upper_pairs

    r = np.random.default_rng(1)
    A, P = 6, 15
    w, G = jnp.asarray(r.standard_normal((2, P, 3))), jnp.asarray(r.standard_normal((2, A, A, 3)))
    i, j = upper_pairs(A)
    S = np.zeros((A, A, P))
    S[i, j, np.arange(P)] = S[j, i, np.arange(P)] = 1.0
    dense = symmetric_to_dense(w)
    np.testing.assert_array_equal(dense, np.einsum("ijp,bpf->bijf", S, w))
    assert np.all(np.asarray(dense)[:, np.arange(A), np.arange(A)] == 0)
    np.testing.assert_allclose(jnp.vdot(dense, G), jnp.vdot(w, dense_to_symmetric(G)), rtol=1e-13)
    ref = lambda w: jnp.einsum("ijp,bpf->bijf", S, w)  # noqa: E731
    f = lambda fn: lambda w: jnp.sum(jnp.sin(fn(w)) * G)  # noqa: E731
    np.testing.assert_allclose(jax.grad(f(symmetric_to_dense))(w), jax.grad(f(ref))(w), rtol=1e-12)
    hv = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(f(fn))(w) ** 2))(w)  # noqa: E731  (reverse over reverse)
    np.testing.assert_allclose(hv(symmetric_to_dense), hv(ref), rtol=1e-11)
    g2 = lambda fn: jax.grad(lambda G: jnp.sum(jnp.cos(fn(G))))(G)  # noqa: E731
    np.testing.assert_allclose(g2(dense_to_symmetric), g2(lambda G: jnp.einsum("ijp,bijf->bpf", S, G)), rtol=1e-12)
    # the convolution on the pair list: value, first and second derivatives as the dense einsum's
    h = jnp.asarray(r.standard_normal((2, A, 3)))
    conv_ref = lambda w, h: jnp.einsum("ijp,bpf,bjf->bif", S, w, h)  # noqa: E731
    np.testing.assert_allclose(symmetric_sum(w, h), conv_ref(w, h), rtol=1e-12)
    loss = lambda fn: lambda w, h: jnp.sum(jnp.sin(fn(w, h)))  # noqa: E731
    for a, b in zip(jax.grad(loss(symmetric_sum), (0, 1))(w, h), jax.grad(loss(conv_ref), (0, 1))(w, h)):
        np.testing.assert_allclose(a, b, rtol=1e-11)
    second = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(loss(fn), 1)(w, h) ** 2))(w)  # noqa: E731
    np.testing.assert_allclose(second(symmetric_sum), second(conv_ref), rtol=1e-10)


@pytest.mark.parametrize("grid", ["exact", "tabulated"])
def test_schnet_equals_the_all_pairs_formula(ethanol, x64, grid):
    """SchNet with filters on the pairs i < j (evaluated on every pair, or tabulated: the default) gives
    the energies of the textbook all-pairs formula (filters on every ordered pair i != j, written out
    here with the same parameters)."""
    from jaxqc.nn.layers import gaussian_rbf

    c = nnmodel.config_for("schnet", features=16, interactions=2, n_rbf=12,
                           **({"filter_grid_ang": 0.0} if grid == "exact" else {}))
    mols = ethanol.molecules(np.arange(3 if grid == "exact" else 64))  # tabulated from 2 pairs per grid point
    stats = {"scale": 1.0, "shift": 0.0, "atom_ref": np.zeros(c.max_z + 1)}
    params = nnmodel.init_params("schnet", c, jax.random.PRNGKey(3), mols, stats)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["net"])
    ssp = lambda x: np.logaddexp(x, 0.0) - np.log(2.0)  # noqa: E731
    dense = lambda d, x: x @ d["kernel"] + d.get("bias", 0.0)  # noqa: E731
    R, Z = np.asarray(mols.R, np.float64), np.asarray(mols.Z)
    d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
    off = ~np.eye(R.shape[1], dtype=bool)[None, :, :, None]
    fcut = np.where(d < c.cutoff_ang, 0.5 * (np.cos(np.pi * d / c.cutoff_ang) + 1), 0.0)[..., None] * off
    rbf = np.asarray(gaussian_rbf(jnp.asarray(d), 0.0, c.cutoff_ang, c.n_rbf))
    x = p["embedding"]["embedding"][Z]
    for t in range(c.interactions):
        f = p[f"filter_{t}"]
        W = dense(f["dense_1"], ssp(dense(f["dense_0"], rbf))) * fcut
        conv = np.einsum("bijf,bjf->bif", W, dense(p[f"in2f_{t}"], x))
        o = p[f"f2out_{t}"]
        x = x + dense(o["dense_1"], ssp(dense(o["dense_0"], conv)))
    ro = p["readout"]
    y = dense(ro["dense_1"], ssp(dense(ro["dense_0"], x)))[..., 0]
    np.testing.assert_allclose(nnmodel.make_energy("schnet", c)(params, mols), y.sum(-1), rtol=1e-7)  # float32 embeddings


def test_shifted_softplus_matches_float64_reference():
    """ssp and its derivative (the logistic function) in float32 against float64, over the whole range."""
    from jaxqc.nn.layers import shifted_softplus

    x = np.linspace(-100.0, 100.0, 40001)
    ref = np.logaddexp(x, 0.0) - np.log(2.0)
    got = shifted_softplus(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-6)
    grad = jax.vmap(jax.grad(shifted_softplus))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(-x)), atol=1e-6)
    assert shifted_softplus(jnp.float32(0.0)) == 0.0


def _experiment(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    return exp


@pytest.mark.slow  # an experiment script's quick run (minutes of CI time): run with -m slow
def test_qm9_nn_accuracy_experiment_quick_overfits(qm9_full_cache, monkeypatch, tmp_path):
    """The equal-budget QM9 U0 experiment, CI-sized (200 molecules, tiny SchNet, 15 epochs): the training
    loss falls at least 3x, validation improves, and the JSON has the curve and a test MAE."""
    monkeypatch.setenv("JAXQC_CACHE", str(qm9_full_cache[0]))
    res = _experiment("qm9_nn").main(["--accuracy", "--quick", "--no-peer", "--out", str(tmp_path / "q"),
                                      "--run-dir", str(tmp_path / "run")])
    run = res["runs"]["jaxqc"]
    assert "error" not in run and run["epochs"] == 15
    c = run["curve"]
    assert c[-1]["train_loss"] < c[0]["train_loss"] / 3
    assert run["best_valid_energy_mae"] < c[0]["valid_energy_mae"]
    assert np.isfinite(run["test"]["energy_mae"]) and run["test"]["n"] == 50
    assert (tmp_path / "run" / "model.npz").exists()


def test_md17_nn_experiment_quick_overfits(monkeypatch, tmp_path):
    """The rMD17 SchNet experiment, CI-sized (20 ethanol frames, energy + forces, 100 epochs): the training
    loss falls at least 10x and the force error on validation at least 2x."""
    from conftest import shared

    shared("rmd17", "rmd17_ethanol_test_01.npz")  # skips when the optional third-party data is absent
    monkeypatch.setenv("JAXQC_SHARED_DATA", str(shared("rmd17").parent.resolve()))
    res = _experiment("md17_nn").main(["--quick", "--no-peer", "--out", str(tmp_path / "m.json"),
                                       "--run-dir", str(tmp_path / "run")])
    run = res["runs"]["jaxqc"]
    assert "error" not in run and run["epochs"] == 100
    c = run["curve"]
    assert c[-1]["train_loss"] < c[0]["train_loss"] / 10
    assert run["best_valid_forces_mae"] < c[0]["valid_forces_mae"] / 2
    assert np.isfinite(run["test"]["forces_mae"])


def test_hermite_lookup_is_exact_for_cubics_with_derivatives(x64):
    """The Hermite interpolant reproduces a cubic exactly (values and slopes tabulated from it), zero where
    masked; the written-out VJP of interval_combine gives the first and second (reverse-mode) derivatives
    of the plain gather formula, in the tables and in the distances."""
    from jaxqc.nn.layers import hermite_lookup, interval_combine

    h, G = 0.1, 31
    grid = h * np.arange(G)
    a = np.array([[0.3, -1.0], [1.2, 0.5], [-0.7, 0.2], [0.4, -0.1]])  # two cubics: sum_p a_p d^p
    f = lambda d: sum(a[p] * d[..., None] ** p for p in range(4))  # noqa: E731
    df = lambda d: sum(p * a[p] * d[..., None] ** (p - 1) for p in range(1, 4))  # noqa: E731
    d = jnp.asarray(np.random.default_rng(0).uniform(0.0, h * (G - 1), (5, 7)))
    mask = jnp.asarray(np.random.default_rng(1).random((5, 7)) < 0.8)
    values, slopes = jnp.asarray(f(grid)), jnp.asarray(h * df(grid))
    got = hermite_lookup(values, slopes, d, h, mask)
    np.testing.assert_allclose(got, np.where(np.asarray(mask)[..., None], f(np.asarray(d)), 0.0), atol=1e-12)
    dd = jax.grad(lambda d: jnp.sum(hermite_lookup(values, slopes, d, h)))(d)
    np.testing.assert_allclose(dd, df(np.asarray(d)).sum(-1), rtol=1e-10)
    # custom VJP against autodiff of the same formula
    r = np.random.default_rng(2)
    k = jnp.asarray(r.integers(0, G - 1, 40), jnp.uint32)
    coef, v, m = (jnp.asarray(r.standard_normal(s)) for s in ((40, 4), (G, 2), (G, 2)))
    plain = lambda v, m, c: c[:, :1] * v[k] + c[:, 1:2] * m[k] + c[:, 2:3] * v[k + 1] + c[:, 3:] * m[k + 1]  # noqa: E731
    np.testing.assert_allclose(interval_combine(v, m, k, coef), plain(v, m, coef), rtol=1e-13)
    loss = lambda fn: lambda v, m, c: jnp.sum(jnp.sin(fn(v, m, c)))  # noqa: E731
    ours = lambda v, m, c: interval_combine(v, m, k, c)  # noqa: E731
    for x, y in zip(jax.grad(loss(ours), (0, 1, 2))(v, m, coef), jax.grad(loss(plain), (0, 1, 2))(v, m, coef)):
        np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-13)
    second = lambda fn: jax.grad(lambda v, m, c: jnp.sum(jax.grad(loss(fn), 2)(v, m, c) ** 2), (0, 1, 2))  # noqa: E731
    for x, y in zip(second(ours)(v, m, coef), second(plain)(v, m, coef)):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def test_tabulated_filters_converge_to_the_exact_network(ethanol, x64):
    """SchNet with tabulated filters (the default) against the filter network on every pair, same
    parameters (scaled up 3x for steep filters), published 51 Gaussians: energies and forces agree to
    < 1e-7 and < 1e-5 relative at the default 0.005 Å grid, and the energy error falls ~h^4 (cubic
    Hermite interpolation): halving the grid spacing divides it by more than 8. Parameter gradients of an
    energy + force loss agree to 1e-5 of their largest entry (initial weights). A batch with fewer than
    two pairs per grid point (one molecule) takes the exact path."""
    default = nnmodel.config_for("schnet").filter_grid_ang
    mols = ethanol.molecules(np.arange(64), dtype=jnp.float64)  # 2,304 pairs: tabulated down to h = 0.005
    stats = {"scale": 1.0, "shift": 0.0, "atom_ref": np.zeros(101)}
    exact = nnmodel.config_for("schnet", features=32, interactions=3, filter_grid_ang=0.0)
    params = nnmodel.init_params("schnet", exact, jax.random.PRNGKey(0), mols, stats)
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64) * 3.0, params)
    E0, F0 = jax.jit(energy_and_forces_fn(nnmodel.make_energy("schnet", exact)))(params, mols)
    err = {}
    for h in (4 * default, 2 * default, default):
        c = nnmodel.config_for("schnet", features=32, interactions=3, filter_grid_ang=h)
        E, F = jax.jit(energy_and_forces_fn(nnmodel.make_energy("schnet", c)))(params, mols)
        err[h] = (float(jnp.max(jnp.abs(E - E0)) / jnp.max(jnp.abs(E0))), float(jnp.max(jnp.abs(F - F0)) / jnp.max(jnp.abs(F0))))
    assert err[default][0] < 1e-7 and err[default][1] < 1e-5, err
    assert err[4 * default][0] > 8 * err[2 * default][0] > 64 * err[default][0] > 0, err
    # training sees the same function: parameter gradients of an energy + force loss agree too (with the
    # initial weights; 4e-4 with the 3x weights, as the loss holds the interpolant's slope)
    def loss(config):
        ef = energy_and_forces_fn(nnmodel.make_energy("schnet", config))
        return lambda p: sum(jnp.sum(x ** 2) for x in ef(p, mols))
    init = jax.tree_util.tree_map(lambda p: p / 3.0, params)
    g_tab = jax.jit(jax.grad(loss(nnmodel.config_for("schnet", features=32, interactions=3))))(init)["net"]
    g_ref = jax.jit(jax.grad(loss(exact)))(init)["net"]
    for a, b in zip(jax.tree_util.tree_leaves(g_tab), jax.tree_util.tree_leaves(g_ref)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * float(jnp.max(jnp.abs(b))) + 1e-12
    one = ethanol.molecules(np.arange(1), dtype=jnp.float64)
    tab = nnmodel.config_for("schnet", features=32, interactions=3)
    np.testing.assert_array_equal(nnmodel.make_energy("schnet", tab)(params, one),
                                  nnmodel.make_energy("schnet", exact)(params, one))
