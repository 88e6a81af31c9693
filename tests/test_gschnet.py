"""G-SchNet: construction traces, invariance of the likelihood, the RDKit validity checker, regeneration of a
tiny training set, one compilation per batch size, the generated-molecule file and the CLI's bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("rdkit", reason="the chemistry checks need RDKit (pip install 'jaxqc[chem]')")

from jaxqc import chem, generation  # noqa: E402
from jaxqc.cli import main  # noqa: E402
from jaxqc.data import io  # noqa: E402
from jaxqc.data.molecules import Dataset  # noqa: E402
from jaxqc.errors import DataError, JaxqcError  # noqa: E402
from jaxqc.models import gschnet as g  # noqa: E402
from jaxqc.models import registry  # noqa: E402

from conftest import random_rotation  # noqa: E402

QM9_XYZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "qm9_xyz"
SMALL = ("C", "N", "O", "C=O", "C#N", "CO")
TINY = dict(features=32, interactions=2, head_hidden=(32,), n_dist_bins=150, n_rbf=10, grid_spacing_ang=0.1,
            steps_per_molecule=16)


def embedded(smiles) -> Dataset:
    """Molecules from SMILES with RDKit 3D embedding (ETKDG + MMFF), padded."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mols = []
    for s in smiles:
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        AllChem.EmbedMolecule(m, randomSeed=1)
        AllChem.MMFFOptimizeMolecule(m)
        mols.append(([a.GetAtomicNum() for a in m.GetAtoms()], m.GetConformer().GetPositions()))
    A = max(len(z) for z, _ in mols)
    Z, R = np.zeros((len(mols), A), np.int32), np.zeros((len(mols), A, 3))
    for k, (z, r) in enumerate(mols):
        Z[k, :len(z)], R[k, :len(z)] = z, r
    return Dataset(Z=Z, R=R, meta={"name": "small-molecules"})


def test_trace_places_every_atom_once_then_finishes_each():
    data = embedded(["CCO"])
    Z, R = jnp.asarray(data.Z[0]), jnp.asarray(data.R[0])
    n = int(np.sum(data.Z[0] > 0))
    step = jax.jit(lambda t: g.trace_step(Z, R, jax.random.PRNGKey(3), t))
    labels = [step(t) for t in range(2 * n)]
    placed = [int(lab["next"]) for lab in labels if lab["has"]]
    assert sorted(placed) == list(range(n))  # every atom placed exactly once
    assert sum(not bool(lab["has"]) for lab in labels) == n  # and every atom finished once
    first = labels[0]
    com = np.asarray(first["com"])
    assert int(first["focus"]) == -1 and int(first["next"]) == int(np.argmin(np.linalg.norm(data.R[0] - com, axis=1)))
    for lab in labels[1:]:  # after the first, the next atom is bonded to the focus
        if lab["has"]:
            d = np.linalg.norm(data.R[0][int(lab["next"])] - data.R[0][int(lab["focus"])])
            assert 0.9 <= d <= 1.7


def test_trace_likelihood_is_invariant_to_rotation_and_translation():
    data = embedded(["CC(=O)N"])
    config = g.GSchNetConfig(**{**TINY, "max_atoms": 12})
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64),
                                        g.init_params(config, jax.random.PRNGKey(0), None)["net"])
        Z = jnp.asarray(data.Z[0])
        R = jnp.asarray(data.R[0], jnp.float64)
        key = jax.random.PRNGKey(7)
        ll = float(g.trace_log_likelihood(config, params, Z, R, key))
        Q = jnp.asarray(random_rotation(np.random.default_rng(1)))
        R2 = R @ Q.T + jnp.array([3.0, -1.5, 0.25])
        ll2 = float(g.trace_log_likelihood(config, params, Z, R2, key))
        stretched = R.at[0].add(jnp.array([0.05, 0.0, 0.0]))  # a real change of geometry changes it
        ll3 = float(g.trace_log_likelihood(config, params, Z, stretched, key))
    assert np.isfinite(ll)
    assert abs(ll - ll2) < 1e-9 * max(1.0, abs(ll))
    assert abs(ll - ll3) > 1e-4


@pytest.mark.skipif(not QM9_XYZ.is_dir(), reason=f"{QM9_XYZ} is absent (third-party QM9 sample)")
def test_checker_agrees_with_qm9_smiles():
    from jaxqc.elements import atomic_number

    files = sorted(QM9_XYZ.glob("*.xyz"))
    assert len(files) >= 20
    for f in files[:20]:
        lines = f.read_text().splitlines()
        n = int(lines[0])
        Z = [atomic_number(line.split()[0]) for line in lines[2:2 + n]]
        R = [[float(x.replace("*^", "e")) for x in line.split()[1:4]] for line in lines[2:2 + n]]
        c = chem.check(np.array(Z), np.array(R))
        relaxed_smiles = lines[n + 3].split()[1]  # QM9's SMILES of the relaxed geometry
        assert c.valid, (f.name, c.reason)
        assert c.smiles == chem.canonical_smiles(relaxed_smiles), f.name


def test_checker_rejects_broken_molecules():
    data = embedded(["CCO"])
    Z, R = data.Z[0], data.R[0]
    ok = chem.check(Z, R)
    assert ok.valid and ok.smiles == "CCO"
    h = int(np.nonzero(Z == 1)[0][0])
    radical = chem.check(np.delete(Z, h), np.delete(R, h, axis=0))
    assert not radical.valid and ("radical" in radical.reason or "valence" in radical.reason)
    apart = R.copy()
    o = int(np.nonzero(Z == 8)[0][0])
    apart[o] += 5.0  # the O leaves, its H stays: no valid bond orders, or two fragments
    assert not chem.check(Z, apart).valid
    assert chem.check(Z, np.full_like(R, np.nan)).reason == "non-finite coordinates"
    two = chem.check(np.concatenate([Z, Z]), np.concatenate([R, R + 10.0]))
    assert not two.valid and two.reason == "2 fragments"


def test_lookup_protocol_bond_orders_stability_and_validity():
    """The bond-length-table protocol of EDM (Hoogeboom et al. 2022): multiple bonds from their lengths,
    a stretched C-H makes two atoms unstable but stays 'valid' (RDKit adds the missing H), an over-bonded
    H is invalid, and elements outside its table are refused."""
    data = embedded(["C#C", "C#N", "C=O", "CCO"])
    heavy = [tuple(sorted(np.nonzero(z > 1)[0][:2])) for z in data.Z]
    for k, want in enumerate([3, 3, 2, 1]):
        n = int(np.sum(data.Z[k] > 0))
        orders = chem.lookup_bond_orders(data.Z[k][:n], data.R[k][:n])
        assert orders[heavy[k]] == want and np.array_equal(orders, orders.T)
    m = chem.lookup_metrics(data.Z, data.R)
    assert (m["atoms_stable"], m["molecules_stable"], m["valid"], m["valid_unique"]) == (1.0, 1.0, 1.0, 1.0)
    methane = embedded(["C"])
    Z, R = methane.Z[0], methane.R[0].copy()
    R[1] = R[0] + 1.5 * (R[1] - R[0]) / np.linalg.norm(R[1] - R[0])  # one C-H stretched to 1.5 Å
    stable, n, valid, smiles = chem.lookup_check(Z, R)
    assert (stable, n, valid, smiles) == (3, 5, True, "[H]C([H])[H]")
    R = methane.R[0].copy()
    bond = R[1] - R[0]
    side = np.cross(bond, [1.0, 0.3, 0.2])
    R[2] = R[1] + 0.8 * side / np.linalg.norm(side)  # an H 0.8 Å from another: that H has two bonds
    assert chem.lookup_bond_orders(Z, R)[1].sum() == 2
    assert chem.lookup_check(Z, R)[2] is False
    assert chem.lookup_metrics(Z[None], R[None])["molecules_stable"] == 0.0
    with pytest.raises(JaxqcError, match="H, C, N, O and F"):
        chem.lookup_bond_orders(np.array([6, 16]), np.array([[0.0, 0, 0], [1.8, 0, 0]]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny G-SchNet fitted to six small molecules (overfit on purpose)."""
    data = embedded(SMALL)
    config = g.GSchNetConfig(**{**TINY, "max_atoms": data.max_atoms + 3})
    split = {"train": np.arange(len(SMALL)), "valid": np.arange(len(SMALL))}
    budget = registry.Budget(epochs=300, options={"train": {"batch_size": len(SMALL), "lr": 3e-3, "ema_decay": 0.0,
                                                            "patience": 300}})
    out = tmp_path_factory.mktemp("gschnet") / "run"
    fitted = g.fit(config, data, split, jax.random.PRNGKey(0), budget, out=out, progress=False)
    return data, fitted, out


def test_tiny_model_regenerates_its_training_molecules(tiny_run):
    data, fitted, _ = tiny_run
    gen = g.generate(fitted.config, fitted.params, 48, jax.random.PRNGKey(1), batch=48)
    train = {chem.check(data.Z[k], data.R[k]).smiles for k in range(len(data))}
    assert train == {chem.canonical_smiles(s) for s in SMALL}
    checks = chem.check_many(gen["Z"], gen["R"])
    rate = np.mean([c.valid and c.smiles in train for c in checks])
    assert rate >= 0.8, [c.smiles or c.reason for c in checks]
    assert len({c.smiles for c in checks if c.valid}) >= 4  # not one molecule over and over


def test_generation_compiles_once_for_a_batch_size(tiny_run):
    _, fitted, _ = tiny_run
    gen = g.make_generator(fitted.config, 4)
    for seed, T in ((0, 0.1), (1, 0.5), (2, 1.0)):
        Z, R, done = gen(fitted.params["net"], jax.random.PRNGKey(seed), jnp.float32(T))
        assert Z.shape == (4, fitted.config.max_atoms) and R.shape == (4, fitted.config.max_atoms, 3)
    assert gen._cache_size() == 1
    for seed in (3, 4):  # generate() reuses the compiled function of (config, batch size)
        g.generate(fitted.config, fitted.params, 8, jax.random.PRNGKey(seed), temperature=0.2, batch=4)
    assert g.make_generator(fitted.config, 4) is gen and gen._cache_size() == 1


def test_generated_file_round_trip_and_bad_files(tmp_path):
    data = embedded(["CCO", "C#N"])
    checks = chem.check_many(data.Z, data.R)
    path = tmp_path / "mols.extxyz"
    generation.write_generated(path, data.Z, data.R, np.array([True, False]), checks, {"seed": 0})
    back = generation.read_generated(path)
    np.testing.assert_allclose(back["R"], data.R, atol=1e-7)
    assert back["Z"].tolist() == data.Z.tolist() and back["finished"].tolist() == [True, False]
    assert "CCO" in path.with_suffix(".csv").read_text()
    bad = tmp_path / "bad.extxyz"
    bad.write_text("3\ncomment\nC 0 0 0\nH 1 0 0\n")
    with pytest.raises(DataError, match="runs past the end"):
        generation.read_generated(bad)
    bad.write_text("1\ncomment\nXx 0 0 0\n")
    with pytest.raises(DataError, match="bad.extxyz:3"):
        generation.read_generated(bad)
    with pytest.raises(DataError, match="no such file"):
        generation.read_generated(tmp_path / "missing.extxyz")


def test_metrics_count_validity_uniqueness_novelty():
    data = embedded(["CCO", "CCO", "C#N", "CC"])
    checks = chem.check_many(data.Z, data.R)
    broken = chem.check(data.Z[0][:-1], data.R[0][:-1])
    m = generation.metrics(data.Z, data.R, [*checks, broken], train_smiles={"CC"}, all_smiles={"CC", "CCO"})
    assert m["n"] == 5 and m["valid"] == pytest.approx(4 / 5)
    assert m["valid_unique"] == pytest.approx(3 / 5)
    assert m["valid_unique_novel_vs_train"] == pytest.approx(2 / 5)
    assert m["valid_unique_novel_vs_qm9"] == pytest.approx(1 / 5)
    Zr, Rr = generation.random_molecules(data.Z, 10, seed=0)
    assert np.sum(Zr > 0, axis=1).min() >= 3
    assert generation.kabsch_rmsd(data.R[0], data.R[0] @ random_rotation(np.random.default_rng(0)).T + 1.0) < 1e-8


def test_cli_train_generate_evaluate(tmp_path, capsys):
    data = embedded(SMALL)
    src = tmp_path / "small.npz"
    io.write(data, src)
    run = tmp_path / "run"
    assert main(["train", "gschnet", "--data", str(src), "--n-train", "4", "--n-valid", "2", "--epochs", "2",
                 "--features", "8", "--interactions", "1", "--set", "head_hidden=[8]", "--set",
                 "grid_spacing_ang=0.2", "--set", "n_dist_bins=100", "--max-heavy-atoms", "2",
                 "--out", str(run)]) == 0
    mols = tmp_path / "mols.extxyz"
    assert main(["generate", str(run), "--n", "6", "--batch", "3", "--temperature", "0.5", "--out", str(mols)]) == 0
    out = capsys.readouterr()
    assert "molecules/s" in out.err and "generated 6 molecules" in out.out
    assert main(["evaluate", str(run), "--generated", str(mols), "--no-relax", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["generated"]["n"] == 6 and 0.0 <= res["generated"]["valid"] <= 1.0
    assert res["training_set"]["valid"] == 1.0
    # bad input: one line each, exit 2, nothing written
    for argv, msg in [(["generate", str(tmp_path / "nope"), "--out", str(tmp_path / "x.extxyz")], "nope"),
                      (["generate", str(run), "--n", "0", "--out", str(tmp_path / "x.extxyz")], "--n must be positive"),
                      (["generate", str(run), "--temperature", "0", "--out", str(tmp_path / "x.extxyz")],
                       "--temperature must be positive"),
                      (["generate", str(run), "--temperature", "-1", "--out", str(tmp_path / "x.extxyz")],
                       "--temperature must be positive"),
                      (["generate", str(run), "--out", str(mols)], "exists"),
                      (["evaluate", str(run), "--data", str(src)], "--generated"),
                      (["train", "gschnet", "--data", str(src), "--n-train", "40", "--out", str(tmp_path / "r2")],
                       "do not fit")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.extxyz").exists()


def test_training_data_falls_back_to_the_registered_name(tmp_path):
    """A model's provenance names the file it was read from and the data set's registered name: evaluate
    --generated reads the first that exists (QM9 comes from a package, not a file), and says --data else."""
    header = {"provenance": {"dataset_source": str(tmp_path / "gone.npz"), "dataset_name": "ethanol-xtb"}}
    assert generation.training_data(header).meta["name"] == "ethanol-xtb"
    header["provenance"]["dataset_name"] = "no-such-data-set"
    with pytest.raises(JaxqcError, match="give it with --data"):
        generation.training_data(header)
