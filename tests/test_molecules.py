"""Dataset container, splits, fixed padding buckets (no recompilation), Molecules pytree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ethanol_frames, mixed_molecules

from jaxqc.data.molecules import Molecules, atom_buckets, batches, bucket_of, random_split
from jaxqc.errors import DataError


def test_summary_and_md5():
    data = ethanol_frames(5)
    s = data.summary()
    assert s["n_molecules"] == 5 and s["n_atoms"] == {"min": 9, "max": 9}
    assert s["elements"] == ["H", "C", "O"] and s["labels"] == {"E": "kcal/mol", "F": "kcal/mol/Å"}
    other = ethanol_frames(5)
    assert other.md5 == data.md5
    other.R[0, 0, 0] += 1e-9
    assert other.md5 != data.md5


def test_subset_keeps_labels_and_provenance():
    data = mixed_molecules(10)
    sub = data.subset([3, 1])
    np.testing.assert_array_equal(sub.Z, data.Z[[3, 1]])
    np.testing.assert_array_equal(sub.props["mu"], data.props["mu"][[3, 1]])
    assert sub.meta["parent_md5"] == data.md5


def test_random_split_is_deterministic_disjoint_and_nested():
    a = random_split(100, {"test": 10, "valid": 5, "train": None}, seed=3)
    b = random_split(100, {"test": 10, "valid": 5, "train": None}, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert sum(len(v) for v in a.values()) == 100
    assert len(set(a["test"]) | set(a["valid"]) | set(a["train"])) == 100
    c = random_split(100, {"test": 10, "valid": 20}, seed=3)  # growing a later split keeps earlier ones
    np.testing.assert_array_equal(a["test"], c["test"])
    assert set(a["valid"]) <= set(c["valid"])
    with pytest.raises(DataError, match="need more than"):
        random_split(10, {"train": 11})


def test_molecules_padding_and_masks():
    data = mixed_molecules(6)
    mol = data.molecules([0, 1, 2], n_atoms_pad=16, batch_pad=4)
    assert mol.R.shape == (4, 16, 3) and mol.Z.shape == (4, 16)
    np.testing.assert_array_equal(mol.mask, mol.Z > 0)
    np.testing.assert_array_equal(mol.mol_mask, [True, True, True, False])
    np.testing.assert_array_equal(mol.n_atoms[:3], data.n_atoms[:3])
    assert float(jnp.abs(mol.R[3]).sum()) == 0.0
    with pytest.raises(DataError, match="padding"):
        data.molecules([0, 1, 2], n_atoms_pad=16, batch_pad=2)


def test_molecules_is_a_pytree():
    mol = ethanol_frames(2).molecules()
    leaves = jax.tree_util.tree_leaves(mol)
    assert len(leaves) == 6  # Z, R, mask, mol_mask, E, F
    doubled = jax.tree_util.tree_map(lambda x: x * 2, mol)
    assert isinstance(doubled, Molecules)


def test_buckets_cover_all_molecules():
    data = mixed_molecules(50)
    buckets = atom_buckets(data.n_atoms, n_buckets=3)
    assert buckets[-1] >= data.n_atoms.max() and all(b % 4 == 0 for b in buckets)
    b = bucket_of(data.n_atoms, buckets)
    assert np.all(np.asarray(buckets)[b] >= data.n_atoms)
    with pytest.raises(DataError, match="does not fit"):
        bucket_of([buckets[-1] + 1], buckets)


def test_batches_cover_each_molecule_once():
    data = mixed_molecules(50)
    seen = []
    for mol in batches(data, np.arange(50), batch_size=8, shuffle=True, seed=1):
        assert mol.R.shape[0] == 8
        e = np.asarray(mol.E)[np.asarray(mol.mol_mask)]
        seen += list(e)
    np.testing.assert_allclose(sorted(seen), sorted(data.E), rtol=1e-6)


def test_jitted_function_compiles_once_per_bucket():
    data = mixed_molecules(64, seed=2)
    traces = []

    @jax.jit
    def mean_distance(mol):
        traces.append(mol.R.shape)  # runs only when jax traces (compiles) the function
        d = jnp.linalg.norm(mol.R[:, :, None] - mol.R[:, None], axis=-1)
        pair = mol.mask[:, :, None] & mol.mask[:, None, :]
        return jnp.sum(jnp.where(pair, d, 0.0)) / jnp.maximum(pair.sum(), 1)

    buckets = atom_buckets(data.n_atoms, n_buckets=2)
    n_batches = 0
    for epoch in range(2):
        for mol in batches(data, np.arange(64), batch_size=8, buckets=buckets, shuffle=True, seed=epoch):
            mean_distance(mol).block_until_ready()
            n_batches += 1
    assert n_batches > 2 * len(buckets)
    assert len(traces) == len(buckets), f"compiled {len(traces)} times for {len(buckets)} buckets"
