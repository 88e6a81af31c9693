"""The shared force helper (-grad of the energy) and model files with provenance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation
from helpers import ethanol_frames, mixed_molecules

from jaxqc.data.graph import dense_pairs
from jaxqc.errors import FormatError, JaxqcError
from jaxqc.potential import energy_and_forces_fn, forces_fn, load_model, save_model


def morse_energy(params, mol):
    """A pairwise Morse potential (kcal/mol): a stand-in model to test the shared machinery."""
    p = dense_pairs(mol.R, mol.mask)
    d = jnp.where(p.mask, p.dist, params["r0"])
    e = params["de"] * (1 - jnp.exp(-params["a"] * (d - params["r0"]))) ** 2
    return 0.5 * jnp.sum(jnp.where(p.mask, e, 0.0), axis=(-1, -2))


PARAMS = {"de": 50.0, "a": 1.7, "r0": 1.3}


def test_forces_match_finite_differences(x64):
    mol = mixed_molecules(3, seed=1).molecules(n_atoms_pad=14, dtype=jnp.float64)
    F = np.asarray(forces_fn(morse_energy)(PARAMS, mol))
    R0 = np.asarray(mol.R)
    h = 1e-5
    for b, i, k in [(0, 0, 0), (1, 1, 2), (2, 0, 1)]:
        Rp, Rm = R0.copy(), R0.copy()
        Rp[b, i, k] += h
        Rm[b, i, k] -= h
        ep = float(morse_energy(PARAMS, mol.replace(R=jnp.asarray(Rp)))[b])
        em = float(morse_energy(PARAMS, mol.replace(R=jnp.asarray(Rm)))[b])
        assert F[b, i, k] == pytest.approx(-(ep - em) / (2 * h), rel=1e-7, abs=1e-7)
    assert np.all(F[~np.asarray(mol.mask)] == 0)


def test_forces_rotate_and_sum_to_zero(x64):
    mol = ethanol_frames(2).molecules(dtype=jnp.float64)
    rot = random_rotation(np.random.default_rng(0), inversion=True)
    E, F = energy_and_forces_fn(morse_energy)(PARAMS, mol)
    moved = mol.replace(R=mol.R @ rot.T + jnp.array([1.0, -2.0, 0.5]))
    E2, F2 = energy_and_forces_fn(morse_energy)(PARAMS, moved)
    np.testing.assert_allclose(E2, E, rtol=1e-12)
    np.testing.assert_allclose(F2, F @ rot.T, atol=1e-10)
    np.testing.assert_allclose(F.sum(1), 0.0, atol=1e-10)
    np.testing.assert_allclose(forces_fn(morse_energy)(PARAMS, mol), F, atol=1e-12)


def test_model_file_round_trip(tmp_path):
    params = {"layer": {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}, "scale": np.float64(2.0)}
    prov = {"dataset_md5": "abc", "train_idx": np.arange(10), "protocol": "test"}
    save_model(tmp_path / "m.npz", "toy", params, {"width": 3}, prov, {"energy": "kcal/mol"})
    kind, back, header = load_model(tmp_path / "m.npz")
    assert kind == "toy" and header["config"] == {"width": 3}
    np.testing.assert_array_equal(back["layer"]["w"], params["layer"]["w"])
    np.testing.assert_array_equal(header["provenance"]["train_idx"], np.arange(10))
    assert header["provenance"]["dataset_md5"] == "abc" and header["jaxqc_version"]


def test_corrupt_and_foreign_model_files(tmp_path):
    with pytest.raises(JaxqcError, match="no such model"):
        load_model(tmp_path / "missing.npz")
    save_model(tmp_path / "m.npz", "toy", {"w": np.ones(3)}, {}, {}, {})
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        load_model(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", w=np.ones(2))
    with pytest.raises(FormatError, match="not a jaxqc model"):
        load_model(tmp_path / "foreign.npz")
